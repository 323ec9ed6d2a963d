/**
 * The request pipeline's stages end to end (real HBONE, real HTTP/1.1 to a
 * real backend through the LoopbackForwarder test double): spoofed identity
 * headers, request ids, local replies (404 NR, redirects, direct 500),
 * request and response filters, URLRewrite with x-envoy-original-path,
 * weighted backends, mirrors, upstream failures answered from the error
 * table, and the record handed to telemetry.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { HttpFilter, HttpRouteRule } from '../../src/resources/types.js';
import {
  backend,
  CLIENT_SPIFFE,
  ECHO_HOST,
  ECHO_VIP,
  h1Request,
  httpRoute,
  identityOf,
  OTHER_HOST,
  PORT_HTTP,
  rule,
  startWaypoint,
  WAYPOINT_SPIFFE,
  type WaypointOptions,
} from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function send(o: WaypointOptions, req: Parameters<typeof h1Request>[1] = {}) {
  const w = await startWaypoint(o, cleanup);
  const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), req);
  const [record] = await w.telemetry.httpRecords(1);
  if (record === undefined) throw new Error('no record');
  return { w, res, record, sent: w.forwarder.calls[0] };
}

function names(headers: ReadonlyArray<readonly [string, string]> | undefined): string[] {
  return (headers ?? []).map(([n]) => n.toLowerCase());
}

function valuesOf(headers: ReadonlyArray<readonly [string, string]> | undefined, name: string): string[] {
  return (headers ?? []).filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
}

const exact = (value: string) => ({ path: { type: 'Exact' as const, value }, headers: [], queryParams: [], method: undefined });
const prefix = (value: string) => ({ path: { type: 'PathPrefix' as const, value }, headers: [], queryParams: [], method: undefined });
const routeTo = (over: Partial<HttpRouteRule>) => [httpRoute('r', [rule({ backendRefs: [backend('echo', PORT_HTTP)], ...over })])];

describe('canonicalize', () => {
  it('strips forged identity and Envoy control headers, keeps the rest and the trace headers', async () => {
    const { sent, record } = await send({}, {
      headers: [
        ['X-Forwarded-Client-Cert', 'By=spiffe://x;URI=spiffe://cluster.local/ns/admin/sa/admin'],
        ['x-envoy-retry-on', '5xx'],
        ['x-envoy-max-retries', '10'],
        ['x-envoy-upstream-rq-timeout-ms', '1'],
        ['x-envoy-internal', 'true'],
        ['x-envoy-original-path', '/forged'],
        ['x-istio-attributes', 'forged'],
        ['traceparent', '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'],
        ['x-b3-traceid', 'abc'],
        ['user-agent', 'curl/8'],
        ['x-forwarded-for', '10.0.0.9'],
      ],
    });
    const sentNames = names(sent?.request.headers);
    for (const forged of ['x-forwarded-client-cert', 'x-envoy-retry-on', 'x-envoy-max-retries', 'x-envoy-upstream-rq-timeout-ms', 'x-envoy-internal', 'x-envoy-original-path', 'x-istio-attributes']) {
      expect(sentNames).not.toContain(forged);
    }
    expect(valuesOf(sent?.request.headers, 'traceparent')).toEqual(['00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01']);
    expect(valuesOf(sent?.request.headers, 'x-forwarded-for')).toEqual(['10.0.0.9']);
    expect(valuesOf(sent?.request.headers, 'x-forwarded-proto')).toEqual(['http']);
    // The route's own policy, not the client's headers: Istio's default retry policy and no timeout.
    expect(sent?.options.retry.numRetries).toBe(2);
    expect(sent?.options.timeoutMs).toBe(0);
    expect(record).toMatchObject({ userAgent: 'curl/8', forwardedFor: '10.0.0.9', trace: { traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'x-b3-traceid': 'abc' } });
  });

  it('generates x-request-id when absent and keeps the client\'s', async () => {
    const a = await send({});
    const generated = valuesOf(a.sent?.request.headers, 'x-request-id');
    expect(generated).toHaveLength(1);
    expect(generated[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(a.record.requestId).toBe(generated[0]);
    const b = await send({}, { headers: [['x-request-id', 'client-id']] });
    expect(valuesOf(b.sent?.request.headers, 'x-request-id')).toEqual(['client-id']);
    expect(b.record.requestId).toBe('client-id');
  });

  it('synthesizes XFCC from the verified identities when the Gateway opts in', async () => {
    const { sent } = await send({ xfccClientIdentity: true }, { headers: [['x-forwarded-client-cert', 'forged']] });
    expect(valuesOf(sent?.request.headers, 'x-forwarded-client-cert')).toEqual([`By=${WAYPOINT_SPIFFE};URI=${CLIENT_SPIFFE}`]);
  });

  it('forwards the normalized path', async () => {
    const { sent, record } = await send({}, { path: '/a/./b/../c%7e?x=1' });
    expect(sent?.request.path).toBe('/a/c~?x=1');
    expect(record.path).toBe('/a/c~?x=1');
  });
});

describe('local replies', () => {
  it('404 NR with an empty body when routes are attached and none matches', async () => {
    const { w, res, record } = await send({ routes: routeTo({ matches: [exact('/only')] }) }, { path: '/other' });
    expect(res.status).toBe(404);
    expect(res.body).toBe('');
    expect(res.header('content-length')).toBe('0');
    expect(res.header('server')).toBe('istio-envoy');
    expect(record).toMatchObject({ responseCode: 404, flags: ['NR'], responseCodeDetails: 'route_not_found', destinationService: undefined, upstreamCluster: undefined });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('redirects with Location (RequestRedirect), applying the route\'s response headers', async () => {
    const filters: HttpFilter[] = [
      { type: 'RequestRedirect', redirect: { scheme: 'https', hostname: 'example.com', path: { type: 'ReplacePrefixMatch', value: '/new' }, port: undefined, statusCode: 301 } },
    ];
    const { w, res, record } = await send({ routes: [httpRoute('redir', [rule({ matches: [prefix('/old')], filters })])] }, { path: '/old/page?q=1' });
    expect(res.status).toBe(301);
    expect(res.header('location')).toBe('https://example.com/new/page?q=1');
    expect(record).toMatchObject({ responseCode: 301, flags: [], responseCodeDetails: 'direct_response' });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('direct 500 when every backend weight is 0', async () => {
    const { w, res, record } = await send({ routes: [httpRoute('zero', [rule({ backendRefs: [backend('echo', PORT_HTTP, 0)] })])] });
    expect(res.status).toBe(500);
    expect(record).toMatchObject({ responseCode: 500, responseCodeDetails: 'direct_response' });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('500 NC for an unknown backend Service', async () => {
    const { w, res, record } = await send({ routes: [httpRoute('missing', [rule({ backendRefs: [backend('nope', PORT_HTTP)] })])], routeProblems: true });
    expect(res.status).toBe(500);
    expect(record).toMatchObject({ flags: ['NC'], responseCodeDetails: 'cluster_not_found' });
    expect(w.forwarder.calls).toEqual([]);
  });
});

describe('request and response filters', () => {
  it('applies the rule\'s RequestHeaderModifier and ResponseHeaderModifier and the backend\'s filters', async () => {
    const rh: HttpFilter = { type: 'RequestHeaderModifier', modifier: { set: [['x-set', 'rule']], add: [['x-add', 'rule']], remove: ['x-remove'] } };
    const resp: HttpFilter = { type: 'ResponseHeaderModifier', modifier: { set: [['x-resp', 'rule']], add: [], remove: ['x-backend'] } };
    const beFilters: HttpFilter[] = [
      { type: 'RequestHeaderModifier', modifier: { set: [], add: [['x-backend-level', 'yes']], remove: [] } },
      { type: 'ResponseHeaderModifier', modifier: { set: [['x-resp-backend', 'yes']], add: [], remove: [] } },
    ];
    const { res, sent } = await send(
      { routes: [httpRoute('f', [rule({ filters: [rh, resp], backendRefs: [backend('echo', PORT_HTTP, 1, { filters: beFilters })] })])] },
      { headers: [['x-remove', 'gone'], ['x-add', 'client'], ['x-set', 'client']] },
    );
    expect(valuesOf(sent?.request.headers, 'x-set')).toEqual(['rule']);
    expect(valuesOf(sent?.request.headers, 'x-add')).toEqual(['client', 'rule']);
    expect(valuesOf(sent?.request.headers, 'x-remove')).toEqual([]);
    expect(valuesOf(sent?.request.headers, 'x-backend-level')).toEqual(['yes']);
    expect(res.header('x-resp')).toBe('rule');
    expect(res.header('x-resp-backend')).toBe('yes');
    expect(res.header('x-backend')).toBeUndefined();
  });

  it('URLRewrite rewrites the path (keeping the query) and the host, and sets x-envoy-original-path', async () => {
    const rewrite: HttpFilter = { type: 'URLRewrite', rewrite: { hostname: 'rewritten.example', path: { type: 'ReplacePrefixMatch', value: '/v2' } } };
    const { sent, record } = await send({ routes: [httpRoute('rw', [rule({ matches: [prefix('/v1')], filters: [rewrite], backendRefs: [backend('echo', PORT_HTTP)] })])] }, { path: '/v1/items?id=3' });
    expect(sent?.request.path).toBe('/v2/items?id=3');
    expect(sent?.request.authority).toBe('rewritten.example');
    expect(valuesOf(sent?.request.headers, 'x-envoy-original-path')).toEqual(['/v1/items?id=3']);
    expect(record.path).toBe('/v1/items?id=3');
  });

  it('sets server: istio-envoy over the backend\'s and x-envoy-upstream-service-time', async () => {
    const { res, record } = await send({});
    expect(res.header('server')).toBe('istio-envoy');
    expect(Number(res.header('x-envoy-upstream-service-time'))).toBeGreaterThanOrEqual(0);
    expect(record.upstreamServiceTimeMs).toBeGreaterThanOrEqual(0);
  });

  it('picks weighted backends per request', async () => {
    const w = await startWaypoint({ routes: [httpRoute('split', [rule({ backendRefs: [backend('echo', PORT_HTTP, 1), backend('other', PORT_HTTP, 3)] })])] }, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    for (let i = 0; i < 20; i++) await h1Request(tunnel, { path: `/${i}` });
    const hosts = w.forwarder.calls.map((c) => c.target.service.hostname);
    const others = hosts.filter((h) => h === OTHER_HOST).length;
    expect(others).toBeGreaterThan(10);
    expect(hosts.filter((h) => h === ECHO_HOST).length).toBeGreaterThan(0);
    const records = await w.telemetry.httpRecords(20);
    expect(records.find((r) => r.destinationService?.hostname === OTHER_HOST)?.upstreamCluster).toBe(`inbound-vip|80|http|${OTHER_HOST}`);
  });

  it('mirrors the request, body included, to the mirror backend with a -shadow authority, without waiting for it', async () => {
    const mirror: HttpFilter = { type: 'RequestMirror', mirror: { backendRef: { group: '', kind: 'Service', namespace: 'apps', name: 'other', port: PORT_HTTP }, percent: 100 } };
    const w = await startWaypoint({ routes: routeTo({ filters: [mirror] }) }, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), { method: 'POST', path: '/m', body: 'payload' });
    expect(res.status).toBe(200);
    await w.telemetry.httpRecords(1);
    for (let i = 0; i < 100 && w.backends.seen.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
    const shadow = w.forwarder.calls.find((c) => c.target.service.hostname === OTHER_HOST);
    expect(shadow?.request.authority).toBe(`${ECHO_HOST}-shadow:${PORT_HTTP}`);
    expect(shadow?.options.retry.numRetries).toBe(0);
    expect(w.backends.seen.map((s) => s.body)).toEqual(['payload', 'payload']);
    // One record: the mirror is not the client's request.
    expect(w.telemetry.http).toHaveLength(1);
  });
});

describe('upstream failures through the error table', () => {
  it('503 UF with Envoy\'s body and the transport failure reason', async () => {
    const w = await startWaypoint({}, cleanup);
    w.forwarder.failNext('UPSTREAM_REMOTE_CONNECTION_FAILURE', { transportFailureReason: 'delayed connect error: Connection refused', retried: true, retryLimitExceeded: true });
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP));
    expect(res.status).toBe(503);
    expect(res.body).toBe('upstream connect error or disconnect/reset before headers. retried and the latest reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused');
    expect(res.header('content-type')).toBe('text/plain');
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({
      responseCode: 503,
      flags: ['UF', 'URX'],
      upstreamTransportFailureReason: 'delayed connect error: Connection refused',
      destinationService: { hostname: ECHO_HOST },
      upstreamHost: '10.1.0.5:8080',
    });
  });

  it.each([
    ['NO_HEALTHY_UPSTREAM', 503, 'no healthy upstream', 'UH'],
    ['UPSTREAM_REQUEST_TIMEOUT', 504, 'upstream request timeout', 'UT'],
    ['UPSTREAM_OVERFLOW', 503, 'upstream connect error or disconnect/reset before headers. reset reason: overflow', 'UO'],
  ] as const)('%s → %i "%s" %s', async (code, status, body, flag) => {
    const w = await startWaypoint({}, cleanup);
    w.forwarder.failNext(code);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP));
    expect(res.status).toBe(status);
    expect(res.body).toBe(body);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.flags).toEqual([flag]);
  });
});

describe('the record', () => {
  it('fills every field from the tunnel, the request, the endpoint and the clock', async () => {
    const { record } = await send({}, { method: 'POST', path: '/rec?a=b', body: 'hello', headers: [['user-agent', 'ua']] });
    expect(record).toMatchObject({
      kind: 'http',
      requestProtocol: 'http',
      httpVersion: 'HTTP/1.1',
      method: 'POST',
      path: '/rec?a=b',
      authority: `${ECHO_HOST}:${PORT_HTTP}`,
      userAgent: 'ua',
      responseCode: 200,
      grpcStatus: undefined,
      flags: [],
      responseCodeDetails: 'via_upstream',
      requestBodyBytes: 5,
      source: { identity: identityOf(CLIENT_SPIFFE) },
      destination: { identity: identityOf('spiffe://cluster.local/ns/apps/sa/echo') },
      destinationService: { hostname: ECHO_HOST },
      upstreamHost: '10.1.0.5:8080',
      upstreamCluster: `inbound-vip|80|http|${ECHO_HOST}`,
      downstreamLocal: `${ECHO_VIP}:${PORT_HTTP}`,
      routeName: 'default',
    });
    expect(record.downstreamRemote).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(record.requestBytes).toBeGreaterThan(5);
    expect(record.responseBytes).toBeGreaterThan(record.responseBodyBytes);
    expect(record.responseBodyBytes).toBeGreaterThan(0);
    expect(record.durationMs).toBeGreaterThanOrEqual(0);
    expect(Math.abs(record.startMs - Date.now())).toBeLessThan(10_000);
  });

  it('names the route that matched', async () => {
    const { record } = await send({ routes: routeTo({ name: 'named-rule' }) });
    expect(record.routeName).toBe('named-rule');
  });
});
