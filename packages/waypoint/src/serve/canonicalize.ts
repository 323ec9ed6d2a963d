/**
 * The first stage of a request: from what the client sent to what the
 * waypoint routes and forwards (Envoy's HTTP connection manager before the
 * filter chain, as Istio configures it for a waypoint: use_remote_address
 * false, request ids on, path normalization BASE, no client certificate on
 * the inner connection). Pure: no I/O, the randomness injected.
 *
 * - The path is normalized per RFC 3986 as Envoy's `normalize_path` does
 *   (percent-encoded unreserved characters decoded, `\` read as `/`, dot
 *   segments removed; slashes not merged, escaped slashes kept); a path that
 *   cannot be normalized is refused (400, path_normalization_failed).
 * - Hop-by-hop headers go (Connection and what it nominates, Keep-Alive,
 *   Proxy-Connection, Transfer-Encoding, Upgrade unless this is a WebSocket
 *   upgrade, HTTP2-Settings, TE other than `trailers`, Expect: 100-continue
 *   which was already answered).
 * - Identity and control headers a client could forge are removed: every
 *   `x-envoy-*` (Envoy honours them only from trusted internal peers; a
 *   waypoint's peers are workloads, and retries/timeouts are the route's),
 *   `x-forwarded-client-cert` (the inner connection has no client
 *   certificate, so Envoy sanitizes it; with the
 *   `ambient.istio.io/xfcc-include-client-identity` opt-in it is rewritten
 *   as `By=<waypoint>;URI=<peer>` from the verified peer), and `x-istio-*`.
 * - `x-request-id` is kept when present (not an edge request) and generated
 *   (UUID v4) when absent; `x-forwarded-proto` is set to `http` when absent;
 *   `x-forwarded-for` and trace headers (B3, W3C, ot, grpc-trace-bin, cloud,
 *   Datadog) pass unchanged.
 */
import type { RandomBytes } from '@ambient/control';
import { HeaderList } from '../routing/headers.js';
import { parseQuery, splitPathAndQuery } from '../routing/select.js';
import type { RequestView } from '../routing/types.js';
import { L7Error } from './errors.js';
import type { DownstreamRequest } from './exchange.js';

export interface CanonicalRequest {
  /** The normalized path, without the query. */
  readonly path: string;
  /** The raw query without `?` (undefined: none). */
  readonly query: string | undefined;
  readonly authority: string;
  /** The headers to forward (mutable: filters edit it). */
  readonly headers: HeaderList;
  readonly requestId: string;
  readonly grpc: boolean;
  readonly view: RequestView;
}

export interface CanonicalizeOptions {
  readonly randomBytes: RandomBytes;
  /** The XFCC value to set (the opt-in synthesis), or undefined to remove any. */
  readonly xfcc: string | undefined;
  /** Keep Upgrade/Connection (a WebSocket upgrade being proxied). */
  readonly upgrade: boolean;
}

/** Removed whatever their value. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'expect', 'x-forwarded-client-cert']);

const HEX: string[] = [];
for (let i = 0; i < 256; i++) HEX.push(i.toString(16).padStart(2, '0'));

/** A random (version 4) UUID, as Envoy's request id extension generates. */
export function uuidV4(randomBytes: RandomBytes): string {
  const b = randomBytes(16);
  const h = (i: number) => HEX[(i === 6 ? ((b[6] as number) & 0x0f) | 0x40 : i === 8 ? ((b[8] as number) & 0x3f) | 0x80 : (b[i] as number))] as string;
  return `${h(0)}${h(1)}${h(2)}${h(3)}-${h(4)}${h(5)}-${h(6)}${h(7)}-${h(8)}${h(9)}-${h(10)}${h(11)}${h(12)}${h(13)}${h(14)}${h(15)}`;
}

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

function isUnreserved(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

/**
 * RFC 3986 normalization of an origin-form path (no query), as Envoy's
 * PathUtil::canonicalPath: undefined when it cannot be normalized (a control
 * character, a malformed percent-escape, or not starting with `/`).
 */
export function normalizePath(path: string): string | undefined {
  if (path.charCodeAt(0) !== 0x2f) return undefined;
  let needsWork = false;
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x21 || c === 0x7f) return undefined;
    if (c === 0x25 /* % */ || c === 0x5c /* \ */ || (c === 0x2e /* . */ && path.charCodeAt(i - 1) === 0x2f)) needsWork = true;
  }
  if (!needsWork) return path;
  // 1. Decode escapes of unreserved characters, normalize the others to upper case; `\` → `/`.
  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c === 0x5c) {
      decoded += '/';
    } else if (c === 0x25) {
      const hi = hexValue(path.charCodeAt(i + 1));
      const lo = hexValue(path.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return undefined;
      const byte = hi * 16 + lo;
      decoded += isUnreserved(byte) ? String.fromCharCode(byte) : `%${path.charAt(i + 1).toUpperCase()}${path.charAt(i + 2).toUpperCase()}`;
      i += 2;
    } else {
      decoded += path.charAt(i);
    }
  }
  // 2. Remove dot segments (RFC 3986 5.2.4).
  const segments = decoded.split('/');
  const out: string[] = [];
  for (let i = 1; i < segments.length; i++) {
    const seg = segments[i] as string;
    const last = i === segments.length - 1;
    if (seg === '.') {
      if (last) out.push('');
    } else if (seg === '..') {
      out.pop();
      if (last) out.push('');
    } else {
      out.push(seg);
    }
  }
  return `/${out.join('/')}`;
}

/** Canonicalizes a routed request, or the reason it is refused. */
export function canonicalize(req: DownstreamRequest, options: CanonicalizeOptions): CanonicalRequest | L7Error {
  const { path: rawPath, query } = req.target === '*' ? { path: '*', query: undefined } : splitPathAndQuery(req.target);
  const path = rawPath === '*' ? rawPath : normalizePath(rawPath);
  if (path === undefined) return new L7Error('PATH_NORMALIZATION_FAILED', `the path "${rawPath.slice(0, 200)}" cannot be normalized (RFC 3986)`);

  let nominated: string[] | undefined;
  const pairs: Array<readonly [string, string]> = [];
  let requestId: string | undefined;
  let forwardedProto = false;
  let grpc = false;
  for (const pair of req.headers) {
    const name = pair[0];
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) {
      if (lower === 'connection') {
        for (const token of pair[1].split(',')) {
          const t = token.trim().toLowerCase();
          if (t !== '' && t !== 'close' && t !== 'keep-alive' && t !== 'upgrade') (nominated ??= []).push(t);
        }
        if (options.upgrade) pairs.push(pair);
      } else if (lower === 'upgrade' && options.upgrade) {
        pairs.push(pair);
      }
      continue;
    }
    if (lower.startsWith('x-envoy-') || lower.startsWith('x-istio-')) continue;
    if (lower === 'te') {
      if (pair[1].trim().toLowerCase() === 'trailers') pairs.push(pair);
      continue;
    }
    if (lower === 'x-request-id') requestId ??= pair[1];
    else if (lower === 'x-forwarded-proto') forwardedProto = true;
    else if (lower === 'content-type') grpc = pair[1].startsWith('application/grpc');
    pairs.push(pair);
  }
  const headers = HeaderList.fromPairs(pairs);
  if (nominated !== undefined) for (const name of nominated) headers.remove(name);
  if (requestId === undefined || requestId === '') {
    requestId = uuidV4(options.randomBytes);
    headers.set('x-request-id', requestId);
  }
  if (!forwardedProto) headers.add('x-forwarded-proto', 'http');
  if (options.xfcc !== undefined) headers.set('x-forwarded-client-cert', options.xfcc);

  const parsedQuery = parseQuery(query);
  const method = req.method;
  const authority = req.authority ?? '';
  const view: RequestView = {
    method,
    path,
    query: parsedQuery,
    header: (name) => {
      const lower = name.toLowerCase();
      if (lower === 'host' || lower === ':authority') return [authority];
      return headers.getAll(lower);
    },
  };
  return { path, query, authority, headers, requestId, grpc, view };
}
