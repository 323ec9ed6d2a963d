import { describe, expect, it } from 'vitest';
import { canonicalize, normalizePath, uuidV4 } from './canonicalize.js';
import { L7Error } from './errors.js';
import type { DownstreamRequest } from './exchange.js';

const bytes = (n: number) => new Uint8Array(n).map((_, i) => i * 17);

function req(headers: ReadonlyArray<readonly [string, string]>, target = '/a?b=1', method = 'GET'): DownstreamRequest {
  return { httpVersion: 'HTTP/1.1', method, target, authority: 'echo.apps:80', headers, headerBytes: 0, body: undefined };
}

describe('normalizePath (normalize_path: RFC 3986, as Envoy)', () => {
  it.each([
    ['/a/b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/a/b/..', '/a/'],
    ['/../../x', '/x'],
    ['/a/%2e%2E/b', '/b'],
    ['/%41%62c', '/Abc'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%2Fb', '/a%2Fb'],
    ['/a\\b', '/a/b'],
    ['/a//b', '/a//b'],
    ['/a/.hidden', '/a/.hidden'],
    ['/', '/'],
  ])('%s → %s', (input, out) => {
    expect(normalizePath(input)).toBe(out);
  });

  it.each([['a/b'], ['/a%zz'], ['/a%2'], ['/a\u0001b']])('refuses %j', (input) => {
    expect(normalizePath(input)).toBeUndefined();
  });
});

describe('canonicalize', () => {
  const options = { randomBytes: bytes, xfcc: undefined, upgrade: false };

  it('removes forgeable identity and control headers and hop-by-hop headers', () => {
    const c = canonicalize(
      req([
        ['X-Forwarded-Client-Cert', 'By=spiffe://evil;URI=spiffe://cluster.local/ns/admin/sa/admin'],
        ['x-envoy-peer-metadata', 'forged'],
        ['X-Envoy-Retry-On', '5xx'],
        ['x-envoy-upstream-rq-timeout-ms', '1'],
        ['x-envoy-internal', 'true'],
        ['x-istio-attributes', 'forged'],
        ['Connection', 'keep-alive, X-Secret'],
        ['X-Secret', 'hop'],
        ['Keep-Alive', 'timeout=5'],
        ['Transfer-Encoding', 'chunked'],
        ['Upgrade', 'h2c'],
        ['HTTP2-Settings', 'AAA'],
        ['Expect', '100-continue'],
        ['TE', 'gzip'],
        ['x-keep', '1'],
        ['x-keep', '2'],
      ]),
      options,
    );
    if (c instanceof L7Error) throw c;
    const names = c.headers.entries().map(([n]) => n.toLowerCase());
    expect(names).toEqual(['x-keep', 'x-keep', 'x-request-id', 'x-forwarded-proto']);
    expect(c.headers.getAll('x-keep')).toEqual(['1', '2']);
  });

  it('keeps x-request-id and x-forwarded-proto when present, and TE: trailers', () => {
    const c = canonicalize(req([['X-Request-Id', 'abc'], ['x-forwarded-proto', 'https'], ['te', 'trailers']]), options);
    if (c instanceof L7Error) throw c;
    expect(c.requestId).toBe('abc');
    expect(c.headers.getAll('x-forwarded-proto')).toEqual(['https']);
    expect(c.headers.getAll('te')).toEqual(['trailers']);
  });

  it('generates a v4 UUID request id when absent', () => {
    const c = canonicalize(req([]), options);
    if (c instanceof L7Error) throw c;
    expect(c.requestId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(c.headers.get('x-request-id')).toBe(c.requestId);
    expect(uuidV4(bytes)).toBe(c.requestId);
  });

  it('writes XFCC from the verified identities when synthesis is on', () => {
    const c = canonicalize(req([['x-forwarded-client-cert', 'forged']]), { ...options, xfcc: 'By=spiffe://a;URI=spiffe://b' });
    if (c instanceof L7Error) throw c;
    expect(c.headers.getAll('x-forwarded-client-cert')).toEqual(['By=spiffe://a;URI=spiffe://b']);
  });

  it('keeps Upgrade and Connection for a WebSocket upgrade', () => {
    const c = canonicalize(req([['Connection', 'Upgrade'], ['Upgrade', 'websocket']]), { ...options, upgrade: true });
    if (c instanceof L7Error) throw c;
    expect(c.headers.getAll('upgrade')).toEqual(['websocket']);
    expect(c.headers.getAll('connection')).toEqual(['Upgrade']);
  });

  it('normalizes the path for routing and keeps the query; refuses a bad path', () => {
    const c = canonicalize(req([], '/x/../y?q=%20'), options);
    if (c instanceof L7Error) throw c;
    expect(c.path).toBe('/y');
    expect(c.query).toBe('q=%20');
    expect(c.view.query).toEqual([['q', ' ']]);
    const bad = canonicalize(req([], '/a%zz'), options);
    expect(bad).toBeInstanceOf(L7Error);
    expect((bad as L7Error).code).toBe('PATH_NORMALIZATION_FAILED');
  });

  it('detects gRPC from the content type', () => {
    const c = canonicalize(req([['content-type', 'application/grpc+proto']]), options);
    if (c instanceof L7Error) throw c;
    expect(c.grpc).toBe(true);
  });
});
