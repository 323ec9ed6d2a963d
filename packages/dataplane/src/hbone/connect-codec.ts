/**
 * The HBONE CONNECT request and response headers as a pure codec
 * (ztunnel.md 3.3; ztunnel `outbound.rs` create_hbone_request, `baggage.rs`,
 * `proxy.rs` TraceParent / parse_forwarded_host):
 *
 *   :method CONNECT, :authority ip:port | [v6]:port | hostname:port (no :path, no :scheme)
 *   baggage: k8s.cluster.name=…,k8s.namespace.name=…,k8s.<type>.name=…,service.name=…,
 *            service.version=…,cloud.region=…,cloud.availability_zone=…   (non-empty entries only)
 *   forwarded: for="<ip:port>"[;host=<service hostname>]
 *   traceparent: 00-<32 hex>-<16 hex>-00
 *   x-forwarded-network: <network>      (inner CONNECT of double HBONE only)
 *
 * Decoding never throws. Only the method, the pseudo-headers and the authority
 * can refuse a request (HBONE 400); the informational headers are parsed
 * leniently, like ztunnel, and never influence authorization.
 */
import type { OutgoingHttpHeaders } from 'node:http2';
import { canonicalPeerIp, formatSocketAddress, type SocketAddress } from '../net/address.js';
import { canonicalIp, fail, ok, type RandomBytes, type Rejection, type Result, type Workload, type WorkloadType } from '@ambient/control';

export const BAGGAGE_HEADER = 'baggage';
export const FORWARDED_HEADER = 'forwarded';
export const TRACEPARENT_HEADER = 'traceparent';
export const X_FORWARDED_NETWORK_HEADER = 'x-forwarded-network';

/** The CONNECT target: a socket address, or a service hostname (double HBONE). */
export type HboneAuthority =
  | { readonly kind: 'address'; readonly ip: string; readonly port: number }
  | { readonly kind: 'hostname'; readonly hostname: string; readonly port: number };

/** Workload metadata carried in `baggage` (ztunnel `Baggage`). */
export interface Baggage {
  readonly clusterId?: string;
  readonly namespace?: string;
  /** Which k8s.<type>.name key carried `workloadName`. */
  readonly workloadType?: WorkloadType;
  readonly workloadName?: string;
  readonly serviceName?: string;
  readonly serviceVersion?: string;
  readonly region?: string;
  readonly zone?: string;
}

export interface ConnectRequestFields {
  readonly authority: HboneAuthority;
  /** The application's source socket address. */
  readonly forwardedFor?: SocketAddress;
  /** The intended destination service hostname, when known. */
  readonly forwardedHost?: string;
  readonly baggage?: Baggage;
  readonly traceparent?: string;
  /** Only on the inner CONNECT of double HBONE. */
  readonly forwardedNetwork?: string;
}

export interface Traceparent {
  readonly version: string;
  readonly traceId: string;
  readonly parentId: string;
  readonly flags: string;
}

export interface DecodedConnectRequest {
  readonly authority: HboneAuthority;
  readonly forwardedFor?: SocketAddress;
  readonly forwardedHost?: string;
  readonly baggage: Baggage;
  readonly traceparent?: Traceparent;
  readonly forwardedNetwork?: string;
}

export interface ConnectRejection extends Rejection {
  readonly code: 'NOT_CONNECT' | 'BAD_AUTHORITY';
}

/** Incoming headers as node:http2 delivers them (and anything else, untrusted). */
export type IncomingHeaders = Readonly<Record<string, string | readonly string[] | number | undefined>>;


const WORKLOAD_TYPES: readonly WorkloadType[] = ['deployment', 'cronjob', 'pod', 'job'];

// --- authority -------------------------------------------------------------

export function formatAuthority(a: HboneAuthority): string {
  return a.kind === 'address' ? formatSocketAddress(a) : `${a.hostname}:${a.port}`;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** Why `name` is not a DNS hostname, or undefined. `name` must already be lower-case. */
function hostnameProblem(name: string): string | undefined {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  if (bare === '' || bare.length > 253) return 'hostname must be 1 to 253 characters';
  const labels = bare.split('.');
  if (!labels.every((l) => LABEL.test(l))) return 'hostname may only hold letters, digits, "-" and "_" in dot-separated labels';
  if (/^[0-9]+$/.test(labels[labels.length - 1] as string)) return 'neither a valid IP address nor a hostname (numeric top-level label)';
  return undefined;
}

function parsePort(text: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(text)) return undefined;
  const port = Number(text);
  return port >= 1 && port <= 65535 ? port : undefined;
}

/**
 * Parses `ip:port`, `[v6]:port` or `hostname:port` (ztunnel HboneAddress),
 * stricter than ztunnel: port 0, user info, IPv6 zone ids, unbracketed IPv6
 * and hostnames with characters DNS does not allow are refused here rather
 * than failing later. Hostnames are lower-cased; IPs canonical.
 */
export function parseAuthority(text: string): Result<HboneAuthority, ConnectRejection> {
  const bad = (reason: string) => fail<ConnectRejection>({ code: 'BAD_AUTHORITY', field: ':authority', reason: `${JSON.stringify(text.slice(0, 300))}: ${reason}` });
  if (text === '') return bad('is empty');
  if (text.length > 300) return bad('is too long');
  if (/[^\x21-\x7e]/.test(text)) return bad('contains spaces, control or non-ASCII characters');
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return bad('expected [ipv6]:port');
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    // IPv4-mapped IPv6 becomes IPv4 (the one unmapping rule, net/address.ts): policy and upstreams see one form.
    const ip = host.includes(':') && !host.includes('%') ? canonicalPeerIp(host) : undefined;
    if (ip === undefined) return bad('brackets must hold an IPv6 address without a zone');
    const port = parsePort(portText);
    if (port === undefined) return bad('port must be 1 to 65535');
    return ok({ kind: 'address', ip, port });
  }
  const colon = text.lastIndexOf(':');
  if (colon < 0) return bad('missing port');
  host = text.slice(0, colon);
  portText = text.slice(colon + 1);
  if (host.includes(':')) return bad('an IPv6 address must be written in brackets');
  const port = parsePort(portText);
  if (port === undefined) return bad('port must be 1 to 65535');
  if (host === '') return bad('missing host');
  const ip = canonicalIp(host);
  if (ip !== undefined) return ok({ kind: 'address', ip, port });
  const hostname = host.toLowerCase();
  const problem = hostnameProblem(hostname);
  if (problem !== undefined) return bad(problem);
  return ok({ kind: 'hostname', hostname, port });
}

/** `ip:port` or `[v6]:port` as a canonical SocketAddress; undefined for anything else. */
export function parseHostPort(text: string): SocketAddress | undefined {
  const parsed = parseAuthority(text);
  return parsed.ok && parsed.value.kind === 'address' ? { ip: parsed.value.ip, port: parsed.value.port } : undefined;
}

// --- baggage ---------------------------------------------------------------

/** A value we can put on the wire unescaped (ztunnel does not escape either). */
function safeValue(v: string | undefined): v is string {
  return v !== undefined && v !== '' && /^[\x21-\x7e]+$/.test(v) && !/[,;="\\]/.test(v);
}

/** Baggage for a workload, as ztunnel's Workload::baggage (empty fields omitted). */
export function baggageForWorkload(w: Workload): Baggage {
  const b: { -readonly [K in keyof Baggage]: Baggage[K] } = {};
  if (w.clusterId !== '') b.clusterId = w.clusterId;
  if (w.namespace !== '') b.namespace = w.namespace;
  if (w.workloadName !== '') {
    b.workloadType = w.workloadType;
    b.workloadName = w.workloadName;
  }
  if (w.canonicalName !== '') b.serviceName = w.canonicalName;
  if (w.canonicalRevision !== '') b.serviceVersion = w.canonicalRevision;
  if (w.locality !== undefined && w.locality.region !== '') b.region = w.locality.region;
  if (w.locality !== undefined && w.locality.zone !== '') b.zone = w.locality.zone;
  return b;
}

/** The `baggage` header value: non-empty entries in ztunnel's order, joined by ','. */
export function encodeBaggage(b: Baggage): string {
  const entries: string[] = [];
  const add = (key: string, value: string | undefined) => {
    if (safeValue(value)) entries.push(`${key}=${value}`);
  };
  add('k8s.cluster.name', b.clusterId);
  add('k8s.namespace.name', b.namespace);
  add(`k8s.${b.workloadType ?? 'deployment'}.name`, b.workloadName);
  add('service.name', b.serviceName);
  add('service.version', b.serviceVersion);
  add('cloud.region', b.region);
  add('cloud.availability_zone', b.zone);
  return entries.join(',');
}

/** Parses one or more `baggage` values; unknown keys, empty and malformed entries are ignored. */
export function parseBaggage(value: string | readonly string[] | undefined): Baggage {
  const b: { -readonly [K in keyof Baggage]: Baggage[K] } = {};
  for (const text of typeof value === 'string' ? [value] : value ?? []) {
    if (typeof text !== 'string') continue;
    for (const entry of text.split(',')) {
      const [rawKey, rawValue] = entry.split('=');
      if (rawKey === undefined || rawValue === undefined) continue;
      const key = rawKey.trim();
      const v = (rawValue.split(';')[0] ?? '').trim();
      if (!safeValue(v)) continue;
      switch (key) {
        case 'k8s.cluster.name': b.clusterId = v; break;
        case 'k8s.namespace.name': b.namespace = v; break;
        case 'service.name': b.serviceName = v; break;
        case 'service.version': b.serviceVersion = v; break;
        case 'cloud.region': b.region = v; break;
        case 'cloud.availability_zone': b.zone = v; break;
        default: {
          const m = /^k8s\.([a-z]+)\.name$/.exec(key);
          const type = WORKLOAD_TYPES.find((t) => t === m?.[1]);
          if (type !== undefined) {
            b.workloadType = type;
            b.workloadName = v;
          }
        }
      }
    }
  }
  return b;
}

// --- forwarded -------------------------------------------------------------

/** `for="ip:port"` plus `;host=<hostname>` when the intended service is known. */
export function encodeForwarded(forwardedFor: SocketAddress, host?: string): string {
  const base = `for="${formatSocketAddress(forwardedFor)}"`;
  return host !== undefined && safeValue(host) ? `${base};host=${host}` : base;
}

function forwardedParam(text: string, name: string): string | undefined {
  for (const part of text.split(/[;,]/)) {
    const p = part.trim();
    if (p.length <= name.length + 1 || p.slice(0, name.length + 1).toLowerCase() !== `${name}=`) continue;
    let v = p.slice(name.length + 1);
    if (v.startsWith('"')) v = v.slice(1);
    if (v.endsWith('"')) v = v.slice(0, -1);
    return v === '' ? undefined : v;
  }
  return undefined;
}

/** The first `for` (as a socket address) and `host` of a `forwarded` header (quotes stripped, as ztunnel). */
export function parseForwarded(value: string | readonly string[] | undefined): { for?: SocketAddress; host?: string } {
  const text = typeof value === 'string' ? value : Array.isArray(value) ? value.filter((v) => typeof v === 'string').join(',') : '';
  if (text === '' || /[^\x20-\x7e]/.test(text)) return {};
  const out: { for?: SocketAddress; host?: string } = {};
  const f = forwardedParam(text, 'for');
  const parsedFor = f === undefined ? undefined : parseHostPort(f);
  if (parsedFor !== undefined) out.for = parsedFor;
  const host = forwardedParam(text, 'host');
  if (safeValue(host)) out.host = host;
  return out;
}

// --- traceparent -----------------------------------------------------------

/** A random `00-<trace id>-<parent id>-00`, one per outbound connection (ztunnel TraceParent::new). */
export function newTraceparent(random: RandomBytes): string {
  const bytes = random(24);
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset, Math.min(24, bytes.byteLength)).toString('hex').padEnd(48, '0');
  let traceId = hex.slice(0, 32);
  let parentId = hex.slice(32, 48);
  // All-zero IDs are invalid in W3C trace context.
  if (/^0+$/.test(traceId)) traceId = `${traceId.slice(0, 31)}1`;
  if (/^0+$/.test(parentId)) parentId = `${parentId.slice(0, 15)}1`;
  return `00-${traceId}-${parentId}-00`;
}

export function parseTraceparent(value: unknown): Traceparent | undefined {
  if (typeof value !== 'string') return undefined;
  const m = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/.exec(value.trim());
  if (!m) return undefined;
  return { version: m[1] as string, traceId: m[2] as string, parentId: m[3] as string, flags: m[4] as string };
}

export function formatTraceparent(t: Traceparent): string {
  return `${t.version}-${t.traceId}-${t.parentId}-${t.flags}`;
}

// --- request ---------------------------------------------------------------

export function encodeConnectRequest(r: ConnectRequestFields): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = {
    ':method': 'CONNECT',
    ':authority': formatAuthority(r.authority),
  };
  const baggage = r.baggage === undefined ? '' : encodeBaggage(r.baggage);
  if (baggage !== '') headers[BAGGAGE_HEADER] = baggage;
  if (r.forwardedFor !== undefined) headers[FORWARDED_HEADER] = encodeForwarded(r.forwardedFor, r.forwardedHost);
  if (r.traceparent !== undefined && parseTraceparent(r.traceparent) !== undefined) headers[TRACEPARENT_HEADER] = r.traceparent;
  if (safeValue(r.forwardedNetwork)) headers[X_FORWARDED_NETWORK_HEADER] = r.forwardedNetwork;
  return headers;
}

function single(v: IncomingHeaders[string]): string | undefined {
  if (typeof v === 'string') return v;
  if (typeof v === 'number') return String(v);
  if (Array.isArray(v)) return v.every((x) => typeof x === 'string') ? v.join(',') : undefined;
  return undefined;
}

/**
 * Validates a CONNECT request (RFC 9113 8.5: :method CONNECT and :authority,
 * no :scheme, :path or :protocol) and reads its HBONE headers.
 */
export function decodeConnectRequest(headers: IncomingHeaders): Result<DecodedConnectRequest, ConnectRejection> {
  const method = single(headers[':method']);
  if (method !== 'CONNECT') {
    const shown = method === undefined ? 'missing' : JSON.stringify(method.slice(0, 40));
    return fail({ code: 'NOT_CONNECT', field: ':method', reason: `method ${shown} is not CONNECT; HBONE only tunnels CONNECT` });
  }
  for (const pseudo of [':path', ':scheme', ':protocol']) {
    if (headers[pseudo] !== undefined) {
      return fail({ code: 'NOT_CONNECT', field: pseudo, reason: `a CONNECT request must not carry ${pseudo} (RFC 9113 8.5)` });
    }
  }
  const authorityText = single(headers[':authority']);
  if (authorityText === undefined) return fail({ code: 'BAD_AUTHORITY', field: ':authority', reason: 'missing :authority' });
  const authority = parseAuthority(authorityText);
  if (!authority.ok) return authority;

  const out: { -readonly [K in keyof DecodedConnectRequest]: DecodedConnectRequest[K] } = {
    authority: authority.value,
    baggage: parseBaggage(single(headers[BAGGAGE_HEADER])),
  };
  const forwarded = parseForwarded(single(headers[FORWARDED_HEADER]));
  if (forwarded.for !== undefined) out.forwardedFor = forwarded.for;
  if (forwarded.host !== undefined) out.forwardedHost = forwarded.host;
  const traceparent = parseTraceparent(single(headers[TRACEPARENT_HEADER]));
  if (traceparent !== undefined) out.traceparent = traceparent;
  const network = single(headers[X_FORWARDED_NETWORK_HEADER])?.trim();
  if (safeValue(network)) out.forwardedNetwork = network;
  return ok(out);
}

// --- response --------------------------------------------------------------

/** The CONNECT answer; a 200 may describe the destination workload in `baggage` (ENABLE_RESPONSE_BAGGAGE). */
export function encodeConnectResponse(status: number, baggage?: Baggage): OutgoingHttpHeaders {
  const headers: OutgoingHttpHeaders = { ':status': status };
  const value = baggage === undefined ? '' : encodeBaggage(baggage);
  if (value !== '') headers[BAGGAGE_HEADER] = value;
  return headers;
}

export interface DecodedConnectResponse {
  /** undefined when :status is missing or not a 3-digit code. */
  readonly status: number | undefined;
  readonly baggage: Baggage;
}

export function decodeConnectResponse(headers: IncomingHeaders): DecodedConnectResponse {
  const raw = single(headers[':status']);
  const status = raw !== undefined && /^[1-5][0-9]{2}$/.test(raw) ? Number(raw) : undefined;
  return { status, baggage: parseBaggage(single(headers[BAGGAGE_HEADER])) };
}
