import { describe, expect, it } from 'vitest';
import type { PathModifier, RequestRedirect } from '../resources/types.js';
import { normalizePrefix, redirectLocation, replacePrefix, rewriteAuthority, rewritePath, splitAuthority, type RedirectRequest } from './rewrite.js';
import { aMatch, pathMatch } from './test-fixtures.js';

const redirect = (over: Partial<RequestRedirect>): RequestRedirect => ({
  scheme: undefined,
  hostname: undefined,
  path: undefined,
  port: undefined,
  statusCode: 302,
  ...over,
});
const prefixMatch = (value: string) => aMatch({ path: pathMatch('PathPrefix', value) });
/** The conformance client: `http://echo/<path>` to Service port 80 (Host `echo`). */
const echoRequest = (path: string, query?: string): RedirectRequest => ({ scheme: 'http', host: 'echo', port: 80, path, query });
const prefix = (value: string): PathModifier => ({ type: 'ReplacePrefixMatch', value });
const full = (value: string): PathModifier => ({ type: 'ReplaceFullPath', value });

describe('redirectLocation: every redirect case of the mesh conformance tests (derivedLocation)', () => {
  const cases: Array<[string, RequestRedirect, string, string, number, string]> = [
    // [test/case, filter, match prefix, request path, status, Location]
    ['MeshHTTPRoute303Redirect', redirect({ statusCode: 303 }), '/redirect', '/redirect', 303, 'http://echo/redirect'],
    ['MeshHTTPRoute307Redirect', redirect({ statusCode: 307 }), '/temporary', '/temporary', 307, 'http://echo/temporary'],
    ['MeshHTTPRoute308Redirect', redirect({ statusCode: 308 }), '/permanent', '/permanent', 308, 'http://echo/permanent'],
    ['HostAndStatus 0', redirect({ hostname: 'example.org' }), '/hostname-redirect', '/hostname-redirect', 302, 'http://example.org/hostname-redirect'],
    ['HostAndStatus 1', redirect({ hostname: 'example.org', statusCode: 301 }), '/host-and-status', '/host-and-status', 301, 'http://example.org/host-and-status'],
    ['RedirectPath 0', redirect({ path: prefix('/replacement-prefix') }), '/original-prefix', '/original-prefix/lemon', 302, 'http://echo/replacement-prefix/lemon'],
    ['RedirectPath 1', redirect({ path: full('/full-path-replacement') }), '/full', '/full/path/original', 302, 'http://echo/full-path-replacement'],
    ['RedirectPath 2', redirect({ hostname: 'example.org', path: prefix('/replacement-prefix') }), '/path-and-host', '/path-and-host', 302, 'http://example.org/replacement-prefix'],
    ['RedirectPath 3', redirect({ path: prefix('/replacement-prefix'), statusCode: 301 }), '/path-and-status', '/path-and-status', 301, 'http://echo/replacement-prefix'],
    ['RedirectPath 4', redirect({ hostname: 'example.org', path: full('/replacement-full') }), '/full-path-and-host', '/full-path-and-host', 302, 'http://example.org/replacement-full'],
    ['RedirectPath 5', redirect({ path: full('/replacement-full'), statusCode: 301 }), '/full-path-and-status', '/full-path-and-status', 301, 'http://echo/replacement-full'],
    ['RedirectPort 0', redirect({ port: 8083 }), '/port', '/port', 302, 'http://echo:8083/port'],
    ['RedirectPort 1', redirect({ hostname: 'example.org', port: 8083 }), '/port-and-host', '/port-and-host', 302, 'http://example.org:8083/port-and-host'],
    ['RedirectPort 2', redirect({ port: 8083, statusCode: 301 }), '/port-and-status', '/port-and-status', 301, 'http://echo:8083/port-and-status'],
    ['RedirectPort 3', redirect({ port: 8083, hostname: 'example.org', statusCode: 302 }), '/port-and-host-and-status', '/port-and-host-and-status', 302, 'http://example.org:8083/port-and-host-and-status'],
    ['SchemeRedirect 0', redirect({ scheme: 'https' }), '/scheme', '/scheme', 302, 'https://echo/scheme'],
    ['SchemeRedirect 1', redirect({ hostname: 'example.org', scheme: 'https' }), '/scheme-and-host', '/scheme-and-host', 302, 'https://example.org/scheme-and-host'],
    ['SchemeRedirect 2', redirect({ scheme: 'https', statusCode: 301 }), '/scheme-and-status', '/scheme-and-status', 301, 'https://echo/scheme-and-status'],
    ['SchemeRedirect 3', redirect({ scheme: 'https', statusCode: 302, hostname: 'example.org' }), '/scheme-and-host-and-status', '/scheme-and-host-and-status', 302, 'https://example.org/scheme-and-host-and-status'],
  ];
  it.each(cases)('%s', (_name, filter, matchPrefix, path, status, location) => {
    expect(redirectLocation(filter, prefixMatch(matchPrefix), echoRequest(path))).toEqual({ status, location });
  });
});

describe('redirectLocation: ports, schemes, hosts, queries', () => {
  const m = prefixMatch('/');
  it('no port and no scheme: the port the request arrived on, written unless it is the scheme default', () => {
    expect(redirectLocation(redirect({}), m, { ...echoRequest('/a'), port: 8080 }).location).toBe('http://echo:8080/a');
    expect(redirectLocation(redirect({}), m, { ...echoRequest('/a'), port: 80 }).location).toBe('http://echo/a');
    expect(redirectLocation(redirect({}), m, { ...echoRequest('/a'), port: 443 }).location).toBe('http://echo:443/a');
    expect(redirectLocation(redirect({}), m, { ...echoRequest('/a'), port: undefined }).location).toBe('http://echo/a');
  });
  it('a scheme without a port: that scheme default port, i.e. none written, even from a non-default request port', () => {
    expect(redirectLocation(redirect({ scheme: 'https' }), m, { ...echoRequest('/a'), port: 8080 }).location).toBe('https://echo/a');
    expect(redirectLocation(redirect({ scheme: 'http' }), m, { scheme: 'https', host: 'echo', port: 8443, path: '/a', query: undefined }).location).toBe('http://echo/a');
  });
  it('an explicit port is written unless it is the default of the resulting scheme', () => {
    expect(redirectLocation(redirect({ scheme: 'https', port: 443 }), m, echoRequest('/a')).location).toBe('https://echo/a');
    expect(redirectLocation(redirect({ scheme: 'https', port: 80 }), m, echoRequest('/a')).location).toBe('https://echo:80/a');
    expect(redirectLocation(redirect({ port: 80 }), m, { ...echoRequest('/a'), port: 9000 }).location).toBe('http://echo/a');
  });
  it('keeps the query string; a ReplaceFullPath with its own query replaces it', () => {
    expect(redirectLocation(redirect({ hostname: 'example.org' }), m, echoRequest('/a', 'x=1&y=2')).location).toBe('http://example.org/a?x=1&y=2');
    expect(redirectLocation(redirect({ path: prefix('/b') }), prefixMatch('/a'), echoRequest('/a/c', 'q')).location).toBe('http://echo/b/c?q');
    expect(redirectLocation(redirect({ path: full('/new?z=9') }), m, echoRequest('/a', 'x=1')).location).toBe('http://echo/new?z=9');
    expect(redirectLocation(redirect({ path: full('/new') }), m, echoRequest('/a', '')).location).toBe('http://echo/new');
  });
  it('brackets an IPv6 host', () => {
    expect(redirectLocation(redirect({ port: 8083 }), m, { scheme: 'http', host: 'fd00::1', port: 80, path: '/', query: undefined }).location).toBe('http://[fd00::1]:8083/');
  });
});

describe('ReplacePrefixMatch (the Gateway API table)', () => {
  const table: Array<[string, string, string, string]> = [
    // request path, match prefix, replacement, result
    ['/foo/bar', '/foo', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo', '/xyz/', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz', '/xyz/bar'],
    ['/foo/bar', '/foo/', '/xyz/', '/xyz/bar'],
    ['/foo', '/foo', '/xyz', '/xyz'],
    ['/foo/', '/foo', '/xyz', '/xyz/'],
    ['/foo/bar', '/foo', '', '/bar'],
    ['/foo/', '/foo', '', '/'],
    ['/foo', '/foo', '', '/'],
    ['/foo/', '/foo', '/', '/'],
    ['/foo', '/foo', '/', '/'],
    // MeshHTTPRouteRewritePath expectedRequest.path
    ['/prefix/one/two', '/prefix/one', '/one', '/one/two'],
    ['/strip-prefix/three', '/strip-prefix', '/', '/three'],
    ['/strip-prefix', '/strip-prefix', '/', '/'],
    ['/prefix/rewrite-path-and-modify-headers/one', '/prefix/rewrite-path-and-modify-headers', '/prefix', '/prefix/one'],
    // edges
    ['/', '/', '/xyz', '/xyz/'],
    ['/foo/bar', '/', '/xyz', '/xyz/foo/bar'],
    ['/foo/bar', '/', '/', '/foo/bar'],
    ['/foo//bar', '/foo', '/x', '/x//bar'],
    ['/foobar', '/foo', '/x', '/foobar'], // not an element-wise match: unchanged
  ];
  it.each(table)('%s with prefix %s and %s → %s', (path, matchPrefix, replacement, result) => {
    expect(replacePrefix(matchPrefix, replacement, path)).toBe(result);
    expect(rewritePath(prefix(replacement), prefixMatch(matchPrefix), path)).toBe(result);
  });

  it('normalizes prefixes as Istio hands them to Envoy', () => {
    expect(normalizePrefix('/')).toBe('');
    expect(normalizePrefix('//')).toBe('');
    expect(normalizePrefix('/v2/')).toBe('/v2');
    expect(normalizePrefix('/v2')).toBe('/v2');
  });
});

describe('rewritePath and rewriteAuthority', () => {
  it('ReplaceFullPath replaces the whole path (MeshHTTPRouteRewritePath /full/one and /full/rewrite-path-and-modify-headers)', () => {
    expect(rewritePath(full('/one'), prefixMatch('/full/one'), '/full/one/two')).toBe('/one');
    expect(rewritePath(full('/test'), prefixMatch('/full/rewrite-path-and-modify-headers'), '/full/rewrite-path-and-modify-headers/test')).toBe('/test');
  });
  it('ReplacePrefixMatch on an Exact match replaces the matched path; on a regex match leaves it', () => {
    expect(rewritePath(prefix('/b'), aMatch({ path: pathMatch('Exact', '/a') }), '/a')).toBe('/b');
    expect(rewritePath(prefix('/b'), aMatch({ path: pathMatch('RegularExpression', '/a.*') }), '/abc')).toBe('/abc');
  });
  it('rewriteAuthority uses the rewrite hostname when set', () => {
    expect(rewriteAuthority({ hostname: 'other.example', path: undefined }, 'echo:80')).toBe('other.example');
    expect(rewriteAuthority({ hostname: undefined, path: full('/x') }, 'echo:80')).toBe('echo:80');
    expect(rewriteAuthority(undefined, 'echo')).toBe('echo');
  });
});

describe('splitAuthority', () => {
  const cases: Array<[string, string, number | undefined]> = [
    ['echo', 'echo', undefined],
    ['echo:8080', 'echo', 8080],
    ['10.0.0.1:80', '10.0.0.1', 80],
    ['[fd00::1]:443', 'fd00::1', 443],
    ['[fd00::1]', 'fd00::1', undefined],
    ['fd00::1', 'fd00::1', undefined],
    ['echo:', 'echo:', undefined],
    ['echo:99999', 'echo:99999', undefined],
    ['echo:8x', 'echo:8x', undefined],
  ];
  it.each(cases)('%s', (authority, host, port) => {
    expect(splitAuthority(authority)).toEqual({ host, port });
  });
});
