/**
 * The arithmetic of RequestRedirect and URLRewrite (Gateway API HTTPPathModifier, as Istio configures
 * Envoy for mesh routes: conversion.go createRedirectFilter/createRewriteFilter, route.go ApplyRedirect).
 *
 * Paths here never carry the query; callers split it off first and re-append it (Envoy's rewrites
 * and redirects keep the query string).
 *
 * ReplacePrefixMatch is element-wise, per the Gateway API table (httproute_types.go HTTPPathModifier):
 * the matched prefix (trailing `/` ignored) is replaced by the value (trailing `/` ignored), and an
 * empty or `/` value strips the prefix, leaving at least `/`:
 *   /foo/bar + prefix /foo + /xyz  → /xyz/bar     /foo/ + /foo + /xyz → /xyz/
 *   /foo/bar + prefix /foo + /xyz/ → /xyz/bar     /foo/bar + /foo + / → /bar     /foo + /foo + / → /
 * Istio gets the same results for URLRewrite (prefix_rewrite, or the regex `^<prefix>(/?)(.*)` → `/\2`
 * for `/`) except with a match prefix of `/`, where Envoy's plain prefix_rewrite glues the value to the
 * rest (`/` + `/xyz` on `/foo` gives `/xyzfoo`); we give the spec's `/xyz/foo`. For RequestRedirect Istio
 * passes the value to Envoy untrimmed, so a value ending in `/` or equal to `/` doubles a slash there
 * (`/xyz//bar`, `//bar`); we follow the spec table instead. Both differences are deliberate.
 *
 * Redirect ports (createRedirectFilter + ApplyRedirect): an explicit port is used; no port with a
 * scheme means the scheme's default port (so none is written); no port and no scheme means the
 * port the request arrived on (for a waypoint: the service port). Port 80 with http and 443 with
 * https are never written. Where Envoy would keep a non-default port taken from the request's Host
 * header while the scheme changes, we follow Gateway API ("the well-known port of the redirect scheme").
 */
import type { HttpRouteMatch, PathModifier, RequestRedirect, UrlRewrite } from '../resources/types.js';

/** What a redirect reads of the request. */
export interface RedirectRequest {
  /** `http` or `https` as the request arrived (inside the waypoint: `http`). */
  readonly scheme: string;
  /** The request's host name without a port (see splitAuthority). */
  readonly host: string;
  /** The port the request arrived on (the service port); undefined when unknown. */
  readonly port: number | undefined;
  /** Path without the query. */
  readonly path: string;
  /** Raw query without the leading `?` ('' or undefined: none). */
  readonly query: string | undefined;
}

export interface RedirectResult {
  readonly status: number;
  readonly location: string;
}

/** Splits `host`, `host:port`, `[v6]` or `[v6]:port` into host and port (undefined when absent or not a port). */
export function splitAuthority(authority: string): { readonly host: string; readonly port: number | undefined } {
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0) return { host: authority, port: undefined };
    const host = authority.slice(1, close);
    const rest = authority.slice(close + 1);
    return { host, port: rest.startsWith(':') ? parsePort(rest.slice(1)) : undefined };
  }
  const colon = authority.lastIndexOf(':');
  if (colon < 0 || authority.indexOf(':') !== colon) return { host: authority, port: undefined };
  const port = parsePort(authority.slice(colon + 1));
  return port === undefined ? { host: authority, port: undefined } : { host: authority.slice(0, colon), port };
}

function parsePort(text: string): number | undefined {
  if (text.length === 0 || text.length > 5) return undefined;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 48 || c > 57) return undefined;
  }
  const n = Number(text);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/**
 * A PathPrefix match value as Istio hands it to Envoy: one trailing `/` dropped; what is left of `/`
 * (or `//`) is '' and matches every path.
 */
export function normalizePrefix(value: string): string {
  const trimmed = value.endsWith('/') ? value.slice(0, -1) : value;
  return trimmed === '/' ? '' : trimmed;
}

/**
 * Element-wise prefix replacement (the Gateway API table). `prefix` is the match's PathPrefix value,
 * `path` a path it matched. A path the prefix does not match is returned unchanged.
 */
export function replacePrefix(prefix: string, replacement: string, path: string): string {
  const p = normalizePrefix(prefix);
  if (!path.startsWith(p) || (path.length > p.length && path.charCodeAt(p.length) !== 47 /* / */ && p.length > 0)) {
    return path;
  }
  const remainder = path.slice(p.length);
  const r = normalizePrefix(replacement);
  if (r.length === 0) return remainder.length === 0 ? '/' : remainder;
  return r + remainder;
}

/**
 * The new path of a path modifier. ReplaceFullPath: the value. ReplacePrefixMatch: element-wise on a
 * PathPrefix match; on an Exact match the whole matched path is the prefix (Envoy's prefix_rewrite);
 * a RegularExpression match leaves the path alone (Gateway API forbids that combination).
 */
export function rewritePath(modifier: PathModifier, match: HttpRouteMatch, path: string): string {
  if (modifier.type === 'ReplaceFullPath') return modifier.value;
  switch (match.path.type) {
    case 'PathPrefix':
      return replacePrefix(match.path.value, modifier.value, path);
    case 'Exact':
      return modifier.value.length === 0 ? '/' : modifier.value;
    case 'RegularExpression':
      return path;
  }
}

/** The authority after URLRewrite: the rewrite's hostname, else unchanged. */
export function rewriteAuthority(rewrite: UrlRewrite | undefined, authority: string): string {
  return rewrite?.hostname ?? authority;
}

function formatHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/** The redirect's status and Location. */
export function redirectLocation(redirect: RequestRedirect, match: HttpRouteMatch, req: RedirectRequest): RedirectResult {
  const scheme = redirect.scheme ?? req.scheme;
  let port: number | undefined;
  if (redirect.port !== undefined) port = redirect.port;
  else if (redirect.scheme !== undefined) port = undefined;
  else port = req.port;
  if ((port === 80 && scheme === 'http') || (port === 443 && scheme === 'https')) port = undefined;

  const host = formatHost(redirect.hostname ?? req.host);
  let path = req.path;
  let query = req.query !== undefined && req.query.length > 0 ? req.query : undefined;
  if (redirect.path !== undefined) {
    path = rewritePath(redirect.path, match, req.path);
    if (redirect.path.type === 'ReplaceFullPath') {
      // Envoy's path_redirect: a query written in the new path replaces the request's.
      const q = path.indexOf('?');
      if (q >= 0) {
        query = path.length > q + 1 ? path.slice(q + 1) : undefined;
        path = path.slice(0, q);
      }
    }
  }
  const location = `${scheme}://${host}${port === undefined ? '' : `:${port}`}${path}${query === undefined ? '' : `?${query}`}`;
  return { status: redirect.statusCode, location };
}
