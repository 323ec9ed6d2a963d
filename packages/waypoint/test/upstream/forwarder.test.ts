/**
 * The waypoint's upstream side against real destination "ztunnels" (the
 * dataplane HboneServer with their own certificates) serving real HTTP/1.1
 * and h2c backends inside the tunnels: keep-alive reuse, HTTP/2
 * multiplexing, LEAST_REQUEST, the endpoint identity check, retries (connect
 * failure, 503, gRPC UNAVAILABLE), timeouts on a manual clock, downstream
 * abort, overflow, endpoint removal and idle timeout, request body replay,
 * opaque TCP. Pod IPs: 127.0.90.x.
 */
import { constants as http2constants } from 'node:http2';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { localReplyOf } from '../../src/serve/errors.js';
import { bodyErrorOf } from '../../src/upstream/forwarder.js';
import type { RetryPolicy } from '../../src/routing/types.js';
import type { ForwardOutcome, UpstreamRequest, UpstreamResponse } from '../../src/upstream/types.js';
import { DEFAULT_RETRY, endpointWorkload, NO_RETRY, startMesh, WAYPOINT_URI, type EndpointSpec, type Mesh, type MeshOptions } from '../support/upstream-destination.js';

const cleanups: Array<() => unknown> = [];
let clock: ManualClock;

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  expect(clock.pendingTimers()).toEqual([]);
});

function newClock(): ManualClock {
  clock = new ManualClock({ now: Date.now() });
  return clock;
}

async function mesh(endpoints: readonly EndpointSpec[], o: Partial<MeshOptions> = {}): Promise<Mesh> {
  return startMesh({ clock: clock ?? newClock(), endpoints, ...o }, cleanups);
}

function request(over: Partial<UpstreamRequest> = {}): UpstreamRequest {
  return { method: 'GET', path: '/hello', authority: 'backend.apps:80', headers: [['user-agent', 'test']], body: undefined, protocol: 'http1', grpc: false, ...over };
}

async function send(m: Mesh, req: UpstreamRequest = request(), o: { retry?: RetryPolicy; timeoutMs?: number; abort?: AbortController } = {}): Promise<ForwardOutcome> {
  const abort = o.abort ?? new AbortController();
  return m.forwarder.forward(req, { service: m.service, servicePort: 80 }, { retry: o.retry ?? DEFAULT_RETRY, timeoutMs: o.timeoutMs ?? 0, signal: abort.signal });
}

function response(outcome: ForwardOutcome): UpstreamResponse {
  if (outcome.kind !== 'response') throw new Error(`expected a response, got ${outcome.error.code}: ${outcome.error.message}`);
  return outcome.response;
}

async function text(r: UpstreamResponse): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of r.body) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

async function json(r: UpstreamResponse): Promise<{ endpoint: string; path: string; headers: Record<string, string>; body: string }> {
  return JSON.parse(await text(r)) as { endpoint: string; path: string; headers: Record<string, string>; body: string };
}

/** Waits for `cond` by yielding to the event loop (bounded). */
async function until(cond: () => boolean, what: string, turns = 20_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** Random values from a script, then a fixed fallback. */
function scripted(values: readonly number[], fallback = 0.5): () => number {
  let i = 0;
  return () => (i < values.length ? (values[i++] as number) : fallback);
}

const A: EndpointSpec = { ip: '127.0.90.11', name: 'a' };
const B: EndpointSpec = { ip: '127.0.90.12', name: 'b' };
const C: EndpointSpec = { ip: '127.0.90.13', name: 'c' };

describe('HTTP/1.1 inside HBONE', () => {
  it('reuses one keep-alive connection (one tunnel) for sequential requests, as the waypoint, to podIP:targetPort', async () => {
    newClock();
    const m = await mesh([A]);
    for (let i = 0; i < 5; i++) {
      const r = response(await send(m, request({ path: `/r${i}` })));
      expect(r.status).toBe(200);
      expect(r.endpoint.address).toBe('127.0.90.11:8080');
      expect(r.attempts).toBe(1);
      const echoed = await json(r);
      expect(echoed.path).toBe(`/r${i}`);
      expect(echoed.headers['host']).toBe('backend.apps:80');
      expect(echoed.headers['x-envoy-attempt-count']).toBe('1');
      expect(echoed.headers['x-envoy-expected-rq-timeout-ms']).toBeUndefined();
    }
    const [ep] = m.endpoints;
    expect(ep?.tunnels).toBe(1);
    expect(ep?.connections).toBe(1);
    expect(ep?.requests).toBe(5);
    expect(ep?.authorities).toEqual(['127.0.90.11:8080']);
    expect(ep?.peers).toEqual([WAYPOINT_URI]);
    expect(m.connections.stats()).toMatchObject({ http1Connections: 1, http1IdleConnections: 1, activeRequests: 0 });
  });

  it('opens one tunnel per concurrent request, all on one HBONE connection, and reuses them afterwards', async () => {
    newClock();
    const m = await mesh([A]);
    const first = await Promise.all(Array.from({ length: 4 }, () => send(m)));
    await Promise.all(first.map((o) => text(response(o))));
    const again = await Promise.all(Array.from({ length: 4 }, () => send(m)));
    await Promise.all(again.map((o) => text(response(o))));
    const [ep] = m.endpoints;
    expect(ep?.requests).toBe(8);
    expect(ep?.tunnels).toBe(4);
    expect(ep?.connections).toBe(1);
  });

  it('streams a chunked response with its trailers and sends the request body', async () => {
    newClock();
    const m = await mesh([A]);
    const [ep] = m.endpoints;
    if (ep === undefined) throw new Error('no endpoint');
    ep.h1 = (_req, res, body) => {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write(`got ${body.length} bytes;`);
      res.addTrailers({ 'x-checksum': 'abc' });
      res.end('done');
    };
    const r = response(await send(m, request({ method: 'POST', body: Readable.from([Buffer.from('hello '), Buffer.from('world')]) })));
    expect(await text(r)).toBe('got 11 bytes;done');
    expect(await r.trailers).toEqual([['x-checksum', 'abc']]);
    expect(r.headers).toContainEqual(['content-type', 'text/plain']);
  });
});

describe('HTTP/2 (h2c prior knowledge) inside HBONE', () => {
  it('multiplexes concurrent requests on one tunnel and passes gRPC trailers', async () => {
    newClock();
    const m = await mesh([{ ...A, backend: 'h2c' }]);
    const [ep] = m.endpoints;
    if (ep === undefined) throw new Error('no endpoint');
    ep.h2 = (stream, headers) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': String(headers[':path']) }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    };
    const outcomes = await Promise.all(Array.from({ length: 10 }, (_, i) => send(m, request({ method: 'POST', path: `/pkg.Svc/M${i}`, protocol: 'http2', grpc: true, headers: [['content-type', 'application/grpc'], ['te', 'trailers']], body: Readable.from([Buffer.from([0, 0, 0, 0, 0])]) }))));
    for (const [i, o] of outcomes.entries()) {
      const r = response(o);
      expect(r.status).toBe(200);
      expect((await text(r)).length).toBe(5);
      expect(await r.trailers).toEqual([['grpc-status', '0'], ['grpc-message', `/pkg.Svc/M${i}`]]);
    }
    expect(ep.tunnels).toBe(1);
    expect(ep.requests).toBe(10);
    expect(ep.seen.every((h) => h['x-envoy-attempt-count'] === '1' && h[':authority'] === 'backend.apps:80')).toBe(true);
    expect(m.connections.stats().http2Sessions).toBe(1);
  });

  it('a session that sent GOAWAY takes no new streams: the next request opens a new tunnel', async () => {
    newClock();
    const m = await mesh([{ ...A, backend: 'h2c' }]);
    const [ep] = m.endpoints;
    if (ep === undefined) throw new Error('no endpoint');
    ep.h2 = (stream, headers, body, e) => {
      stream.respond({ ':status': 200 });
      stream.end('ok');
      if (headers[':path'] === '/bye') stream.session?.close();
      void body;
      void e;
    };
    expect(await text(response(await send(m, request({ path: '/bye', protocol: 'http2' }))))).toBe('ok');
    await until(() => m.connections.stats().http2Sessions === 0, 'the GOAWAY session to close');
    expect(await text(response(await send(m, request({ path: '/next', protocol: 'http2' }))))).toBe('ok');
    expect(ep.tunnels).toBe(2);
  });
});

describe('LEAST_REQUEST', () => {
  it('of two random picks, takes the endpoint with fewer active requests', async () => {
    newClock();
    // Picks: (a, a) → a for the held request; then (a, b) → b since a is busy; then (b, a) → a (tie keeps the first).
    const m = await mesh([A, B], { random: scripted([0, 0, 0, 0.9, 0.9, 0]) });
    const [a, b] = m.endpoints;
    if (a === undefined || b === undefined) throw new Error('no endpoints');
    let release: () => void = () => undefined;
    a.h1 = (req, res, body, ep) => {
      if (req.url === '/hold') release = () => res.end('released');
      else res.end(ep.spec.name);
      void body;
    };
    b.h1 = (_req, res, _body, ep) => res.end(ep.spec.name);
    const held = send(m, request({ path: '/hold' }));
    await until(() => a.requests === 1, 'the held request to reach a');
    expect(m.connections.activeRequests(JSON.stringify(['Kubernetes//Pod/apps/a', '127.0.90.11:8080', 'hbone', ['spiffe://cluster.local/ns/apps/sa/a']]))).toBe(1);
    expect(await text(response(await send(m)))).toBe('b');
    release();
    expect(await text(response(await held))).toBe('released');
  });

  it('spreads concurrent requests across endpoints', async () => {
    newClock();
    const m = await mesh([A, B, C]);
    const pending: Array<() => void> = [];
    for (const ep of m.endpoints) ep.h1 = (_req, res, _body, e) => pending.push(() => res.end(e.spec.name));
    const outcomes = Array.from({ length: 30 }, () => send(m));
    await until(() => pending.length === 30, 'all requests to arrive');
    for (const ep of m.endpoints) expect(ep.requests).toBeGreaterThanOrEqual(6);
    for (const p of pending) p();
    await Promise.all((await Promise.all(outcomes)).map((o) => text(response(o))));
  });
});

describe('endpoint identity', () => {
  it('refuses an endpoint whose ztunnel proves another identity: UF, nothing reaches the tunnel', async () => {
    newClock();
    const m = await mesh([{ ...A, servedIdentity: 'spiffe://cluster.local/ns/apps/sa/impostor' }]);
    const outcome = await send(m, request({ method: 'POST', body: Readable.from([Buffer.from('secret')]) }), { retry: NO_RETRY });
    expect(outcome.kind).toBe('failure');
    if (outcome.kind !== 'failure') return;
    expect(outcome.error.code).toBe('UPSTREAM_REMOTE_CONNECTION_FAILURE');
    expect(outcome.error.transportFailureReason).toContain('PEER_IDENTITY_INVALID');
    const reply = localReplyOf(outcome.error);
    expect(reply).toMatchObject({ status: 503, flags: ['UF'] });
    const [ep] = m.endpoints;
    expect(ep?.connections).toBe(1);
    expect(ep?.tunnels).toBe(0);
    expect(ep?.requests).toBe(0);
  });
});

describe('retries', () => {
  it('retries a connect failure on another endpoint (previous_hosts) and says which attempt it is', async () => {
    newClock();
    // First pick lands on the down endpoint; the retry's first pick does too and is rejected, the second takes b.
    const m = await mesh([{ ...A, down: true }, B], { random: scripted([0, 0, 0, 0, 0, 0.9, 0.9]) });
    const outcome = await send(m);
    const r = response(outcome);
    expect(r.attempts).toBe(2);
    expect(r.endpoint.workload.name).toBe('b');
    expect(outcome.kind === 'response' && outcome.flags).toEqual([]);
    expect((await json(r)).headers['x-envoy-attempt-count']).toBe('2');
  });

  it('exhausted retries report the last reset with URX (the default 2 retries: 3 attempts)', async () => {
    newClock();
    const m = await mesh([{ ...A, down: true }, { ...B, down: true }], { random: () => 0 });
    const outcome = await send(m);
    expect(outcome.kind).toBe('failure');
    if (outcome.kind !== 'failure') return;
    expect(outcome.attempts).toBe(3);
    expect(outcome.error.code).toBe('UPSTREAM_REMOTE_CONNECTION_FAILURE');
    const reply = localReplyOf(outcome.error);
    expect(reply.status).toBe(503);
    expect(reply.flags).toEqual(['UF', 'URX']);
    expect(reply.body).toMatch(/^upstream connect error or disconnect\/reset before headers\. retried and the latest reset reason: remote connection failure, transport failure reason: /);
  });

  it('retries a 503 listed in retriable_status_codes, replaying the request body; without the code the 503 is passed on', async () => {
    newClock();
    // a, backoff 0, b; then a again for the request under the default policy.
    const m = await mesh([A, B], { random: scripted([0, 0, 0, 0.9, 0.9, 0, 0]) });
    const [a, b] = m.endpoints;
    if (a === undefined || b === undefined) throw new Error('no endpoints');
    a.h1 = (_req, res) => {
      res.statusCode = 503;
      res.end('busy');
    };
    const policy: RetryPolicy = { ...DEFAULT_RETRY, retriableStatusCodes: [503] };
    const r = response(await send(m, request({ method: 'POST', body: Readable.from([Buffer.from('payload')]) }), { retry: policy }));
    expect(r.status).toBe(200);
    expect(r.attempts).toBe(2);
    const echoed = await json(r);
    expect(echoed.endpoint).toBe('b');
    expect(echoed.body).toBe('payload');
    expect(a.requests).toBe(1);

    // With the default policy (no retriable codes since Istio 1.24) a 503 is the answer, not retried.
    const passed = await send(m, request(), { retry: DEFAULT_RETRY });
    expect(passed.kind === 'response' && [passed.response.status, passed.response.attempts, passed.flags]).toEqual([503, 1, []]);
    expect(passed.kind === 'response' && (await text(passed.response))).toBe('busy');
    expect(a.requests).toBe(2);
    expect(b.requests).toBe(1);
  });

  it('a retriable 503 with no retries left is passed on with URX', async () => {
    newClock();
    const m = await mesh([A], { random: () => 0 });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h1 = (_req, res) => {
      res.statusCode = 503;
      res.end('busy');
    };
    const outcome = await send(m, request(), { retry: { ...DEFAULT_RETRY, numRetries: 1, retriableStatusCodes: [503] } });
    expect(outcome.kind).toBe('response');
    if (outcome.kind !== 'response') return;
    expect(outcome.response.status).toBe(503);
    expect(outcome.response.attempts).toBe(2);
    expect(outcome.flags).toEqual(['URX']);
    expect(await text(outcome.response)).toBe('busy');
  });

  it('does not retry once the body outgrew the retry buffer', async () => {
    newClock();
    const m = await mesh([A, B], { random: scripted([0, 0]), retryBufferLimitBytes: 4 });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h1 = (_req, res) => {
      res.statusCode = 503;
      res.end('busy');
    };
    const outcome = await send(m, request({ method: 'POST', body: Readable.from([Buffer.from('more than four bytes')]) }), { retry: { ...DEFAULT_RETRY, retriableStatusCodes: [503] } });
    expect(outcome.kind === 'response' && outcome.response.status).toBe(503);
    expect(outcome.kind === 'response' && outcome.flags).toEqual([]);
    expect(a.requests).toBe(1);
  });

  it('retries gRPC UNAVAILABLE (status 14 in the response headers) by default', async () => {
    newClock();
    const m = await mesh([{ ...A, backend: 'h2c' }], { random: () => 0 });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h2 = (stream, headers) => {
      if (headers['x-envoy-attempt-count'] === '1') {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'try again' }, { endStream: true });
        return;
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end();
    };
    const r = response(await send(m, request({ method: 'POST', path: '/pkg.Svc/M', protocol: 'http2', grpc: true, headers: [['content-type', 'application/grpc']] })));
    expect(r.attempts).toBe(2);
    await text(r);
    expect(await r.trailers).toEqual([['grpc-status', '0']]);
    expect(a.requests).toBe(2);
  });

  it('waits Envoy\'s jittered backoff on the clock between attempts', async () => {
    newClock();
    // Pick a (down), backoff draws 0.5 → 12 ms of [0, 25), then b.
    const m = await mesh([{ ...A, down: true }, B], { random: scripted([0, 0, 0.5, 0.9, 0.9]) });
    const sent = send(m);
    await until(() => clock.pendingTimers().includes(12), 'the 12 ms backoff timer');
    expect(m.endpoints[1]?.requests).toBe(0);
    await clock.advance(12);
    const r = response(await sent);
    expect(r.attempts).toBe(2);
    await text(r);
  });
});

describe('timeouts on the clock', () => {
  it('per-try timeout: UT 504 after one attempt under the default policy; retried with 5xx', async () => {
    newClock();
    const m = await mesh([A, B], { random: () => 0 });
    for (const ep of m.endpoints) ep.h1 = () => undefined;
    const policy: RetryPolicy = { ...DEFAULT_RETRY, perTryTimeoutMs: 500 };
    const sent = send(m, request(), { retry: policy });
    await until(() => m.endpoints[0]?.requests === 1, 'the first attempt');
    expect(m.endpoints[0]?.seen[0]?.['x-envoy-expected-rq-timeout-ms']).toBe('500');
    await clock.advance(500);
    const outcome = await sent;
    expect(outcome.kind === 'failure' && outcome.error.code).toBe('UPSTREAM_PER_TRY_TIMEOUT');
    expect(outcome.kind === 'failure' && localReplyOf(outcome.error)).toMatchObject({ status: 504, body: 'upstream request timeout', flags: ['UT'] });

    const retried = send(m, request(), { retry: { ...policy, retryOn: ['5xx'], numRetries: 1 } });
    await until(() => (m.endpoints[0]?.requests ?? 0) + (m.endpoints[1]?.requests ?? 0) === 2, 'the first attempt');
    await clock.advance(500);
    await until(() => (m.endpoints[0]?.requests ?? 0) + (m.endpoints[1]?.requests ?? 0) === 3, 'the retry');
    await clock.advance(500);
    const last = await retried;
    expect(last.kind === 'failure' && last.attempts).toBe(2);
    expect(last.kind === 'failure' && localReplyOf(last.error).flags).toEqual(['UT', 'URX']);
  });

  it('connect timeout (meshConfig.connectTimeout): an endpoint that never completes the handshake is UF "connection timeout", retried elsewhere', async () => {
    newClock();
    const m = await mesh([{ ...A, blackhole: true }, B], { connectTimeoutMs: 1000, random: scripted([0, 0, 0, 0.9, 0.9], 0) });
    const sent = send(m);
    await until(() => m.endpoints[0]?.connections === 1, 'the TCP connection to the black hole');
    await clock.advance(999);
    expect(m.endpoints[1]?.requests).toBe(0);
    await clock.advance(1);
    const r = response(await sent);
    expect(r.endpoint.workload.name).toBe('b');
    expect(r.attempts).toBe(2);
    await text(r);
    const alone = send(m, request(), { retry: NO_RETRY });
    // The pool's dial to the black hole is still going (its own handshake timeout); this request waits on it.
    await until(() => clock.pendingTimers().includes(1000), 'the second connect');
    await clock.advance(1000);
    const outcome = await alone;
    expect(outcome.kind === 'failure' && localReplyOf(outcome.error)).toMatchObject({ status: 503, flags: ['UF'] });
    expect(outcome.kind === 'failure' && localReplyOf(outcome.error).body).toContain('reset reason: connection timeout');
  });

  it('the route timeout covers every attempt and caps x-envoy-expected-rq-timeout-ms by what is left', async () => {
    newClock();
    const m = await mesh([A], { random: () => 0 });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h1 = () => undefined;
    const sent = send(m, request(), { timeoutMs: 1000, retry: { ...DEFAULT_RETRY, retryOn: ['5xx'], numRetries: 5, perTryTimeoutMs: 400 } });
    await until(() => a.requests === 1, 'attempt 1');
    await clock.advance(400);
    await until(() => a.requests === 2, 'attempt 2');
    await clock.advance(400);
    await until(() => a.requests === 3, 'attempt 3');
    await clock.advance(200);
    const outcome = await sent;
    expect(outcome.kind === 'failure' && outcome.error.code).toBe('UPSTREAM_REQUEST_TIMEOUT');
    expect(outcome.kind === 'failure' && outcome.attempts).toBe(3);
    expect(a.seen.map((h) => [h['x-envoy-attempt-count'], h['x-envoy-expected-rq-timeout-ms']])).toEqual([['1', '400'], ['2', '400'], ['3', '200']]);
  });

  it('the route timeout also covers the response body: the body errors with UT', async () => {
    newClock();
    const m = await mesh([A]);
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h1 = (_req, res) => {
      res.writeHead(200);
      res.write('part');
    };
    const r = response(await send(m, request(), { timeoutMs: 300 }));
    const reading = text(r).then(() => undefined, (err: unknown) => err);
    await clock.advance(300);
    const err = await reading;
    expect(bodyErrorOf(err).code).toBe('UPSTREAM_REQUEST_TIMEOUT');
  });
});

describe('downstream abort, overflow, no endpoint', () => {
  it('aborting the downstream cancels the upstream request (DC)', async () => {
    newClock();
    const m = await mesh([A]);
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    let upstreamClosed = false;
    a.h1 = (_req, res) => res.once('close', () => (upstreamClosed = true));
    const abort = new AbortController();
    const sent = send(m, request(), { abort });
    await until(() => a.requests === 1, 'the request');
    abort.abort();
    const outcome = await sent;
    expect(outcome.kind === 'failure' && outcome.error.code).toBe('DOWNSTREAM_REMOTE_DISCONNECT');
    await until(() => upstreamClosed, 'the backend to see the request go away');
    expect(m.connections.stats().activeRequests).toBe(0);
  });

  it('a full pool answers overflow (UO) without retrying or dialing', async () => {
    newClock();
    const m = await mesh([A], { limits: { maxConnectionsPerEndpoint: 1, maxPendingRequestsPerEndpoint: 0 } });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    let release: () => void = () => undefined;
    a.h1 = (_req, res) => (release = () => res.end('ok'));
    const held = send(m);
    await until(() => a.requests === 1, 'the first request');
    const outcome = await send(m);
    expect(outcome.kind === 'failure' && outcome.error.code).toBe('UPSTREAM_OVERFLOW');
    expect(outcome.kind === 'failure' && outcome.attempts).toBe(1);
    expect(outcome.kind === 'failure' && localReplyOf(outcome.error)).toMatchObject({ status: 503, flags: ['UO'] });
    expect(a.tunnels).toBe(1);
    release();
    expect(await text(response(await held))).toBe('ok');
  });

  it('a request waits for a busy connection when the pending queue has room', async () => {
    newClock();
    const m = await mesh([A], { limits: { maxConnectionsPerEndpoint: 1, maxPendingRequestsPerEndpoint: 1 } });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    const releases: Array<() => void> = [];
    a.h1 = (_req, res) => releases.push(() => res.end('ok'));
    const first = send(m);
    await until(() => a.requests === 1, 'the first request');
    const second = send(m);
    await until(() => m.connections.stats().http1Pending === 1, 'the second to queue');
    releases.shift()?.();
    expect(await text(response(await first))).toBe('ok');
    await until(() => a.requests === 2, 'the queued request on the same connection');
    releases.shift()?.();
    expect(await text(response(await second))).toBe('ok');
    expect(a.tunnels).toBe(1);
  });

  it('no healthy endpoint: UH', async () => {
    newClock();
    const m = await mesh([{ ...A, status: 'Unhealthy' }]);
    const outcome = await send(m);
    expect(outcome.kind === 'failure' && localReplyOf(outcome.error)).toMatchObject({ status: 503, body: 'no healthy upstream', flags: ['UH'] });
    expect(m.endpoints[0]?.connections).toBe(0);
  });
});

describe('connection lifecycle', () => {
  it('closes the idle connections of an endpoint that left discovery', async () => {
    newClock();
    const m = await mesh([A, B], { random: scripted([0, 0], 0) });
    const [a, b] = m.endpoints;
    if (a === undefined || b === undefined) throw new Error('no endpoints');
    await text(response(await send(m)));
    expect(a.open.size).toBe(1);
    await m.setWorkloads([b.workload]);
    await until(() => a.open.size === 0, 'the idle tunnel to a to close');
    expect(m.connections.stats().http1Connections).toBe(0);
    const again = response(await send(m));
    expect(again.endpoint.workload.name).toBe('b');
    await text(again);
    await m.setWorkloads([endpointWorkload(A, 80, 8080), b.workload]);
  });

  it('closes a connection idle for the idle timeout', async () => {
    newClock();
    const m = await mesh([A], { idleTimeoutMs: 60_000 });
    const [a] = m.endpoints;
    await text(response(await send(m)));
    expect(a?.open.size).toBe(1);
    await clock.advance(60_000);
    await until(() => a?.open.size === 0, 'the idle tunnel to close');
  });
});

describe('opaque TCP', () => {
  it('openTcp gives a tunnel to podIP:targetPort', async () => {
    newClock();
    const m = await mesh([A]);
    const outcome = await m.forwarder.openTcp({ service: m.service, servicePort: 80 });
    if (outcome.kind !== 'tunnel') throw new Error(`expected a tunnel, got ${outcome.error.message}`);
    outcome.stream.write('GET /raw HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    const chunks: Buffer[] = [];
    for await (const c of outcome.stream) chunks.push(c as Buffer);
    const reply = Buffer.concat(chunks).toString();
    expect(reply).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(reply).toContain('"path":"/raw"');
    expect(m.endpoints[0]?.authorities).toEqual(['127.0.90.11:8080']);
  });

  it('openTcp to a service without endpoints is UH, to a down endpoint UF', async () => {
    newClock();
    const m = await mesh([{ ...A, down: true }]);
    const down = await m.forwarder.openTcp({ service: m.service, servicePort: 80 });
    expect(down.kind === 'failure' && localReplyOf(down.error).flags).toEqual(['UF']);
    const none = await m.forwarder.openTcp({ service: m.service, servicePort: 81 });
    expect(none.kind === 'failure' && none.error.code).toBe('NO_HEALTHY_UPSTREAM');
  });
});

describe('HTTP/2 resets', () => {
  it('a REFUSED_STREAM reset is retried by default (refused-stream); another reset is UR, not retried', async () => {
    newClock();
    const m = await mesh([{ ...A, backend: 'h2c' }], { random: () => 0 });
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.h2 = (stream, headers) => {
      if (headers[':path'] === '/refuse' && headers['x-envoy-attempt-count'] === '1') {
        stream.close(http2constants.NGHTTP2_REFUSED_STREAM);
        return;
      }
      if (headers[':path'] === '/reset') {
        stream.close(http2constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      stream.respond({ ':status': 200 });
      stream.end('ok');
    };
    const r = response(await send(m, request({ path: '/refuse', protocol: 'http2' })));
    expect(r.attempts).toBe(2);
    expect(await text(r)).toBe('ok');
    const reset = await send(m, request({ path: '/reset', protocol: 'http2' }));
    expect(reset.kind === 'failure' && reset.attempts).toBe(1);
    expect(reset.kind === 'failure' && localReplyOf(reset.error)).toMatchObject({ status: 503, flags: ['UR'], details: 'upstream_reset_before_response_started{remote_reset}' });
  });
});

describe('WebSocket upgrade', () => {
  it('a 101 hands over the tunnel, bytes after the 101 first; the connection leaves the pool', async () => {
    newClock();
    const m = await mesh([A]);
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.upgrade = (_req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nwelcome;');
      socket.on('data', (c: Buffer) => socket.write(`echo:${c.toString()};`));
    };
    const outcome = await send(m, request({ headers: [['connection', 'Upgrade'], ['upgrade', 'websocket'], ['sec-websocket-key', 'dGhlIHNhbXBsZSBub25jZQ==']], upgrade: 'websocket' }));
    const r = response(outcome);
    expect(r.status).toBe(101);
    expect(r.headers).toContainEqual(['Upgrade', 'websocket']);
    const upgraded = r.upgraded;
    if (upgraded === undefined) throw new Error('no upgraded stream');
    let got = '';
    upgraded.on('data', (c: Buffer) => (got += c.toString()));
    upgraded.write('ping');
    await until(() => got === 'welcome;echo:ping;', 'the relayed bytes');
    expect(a.seen[0]?.['upgrade']).toBe('websocket');
    expect(m.connections.stats()).toMatchObject({ activeRequests: 1, http1IdleConnections: 0 });
    upgraded.destroy();
    await until(() => m.connections.stats().activeRequests === 0, 'the upgraded attempt to end');
  });

  it('an upgrade answered without 101 is a normal response, not retried', async () => {
    newClock();
    const m = await mesh([A]);
    const [a] = m.endpoints;
    if (a === undefined) throw new Error('no endpoint');
    a.upgrade = (_req, socket) => socket.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope');
    const outcome = await send(m, request({ headers: [['connection', 'Upgrade'], ['upgrade', 'websocket']], upgrade: 'websocket' }), { retry: { ...DEFAULT_RETRY, retriableStatusCodes: [503] } });
    const r = response(outcome);
    expect(r.status).toBe(503);
    expect(r.attempts).toBe(1);
    expect(r.upgraded).toBeUndefined();
    expect(await text(r)).toBe('nope');
  });
});

describe('endpoint kinds', () => {
  it('workload-addressed traffic goes only to that workload, even an unhealthy one', async () => {
    newClock();
    const m = await mesh([A, { ...B, status: 'Unhealthy' }], { random: () => 0 });
    const [, b] = m.endpoints;
    if (b === undefined) throw new Error('no endpoint');
    for (let i = 0; i < 3; i++) {
      const r = response(await m.forwarder.forward(request(), { service: m.service, servicePort: 80, workload: b.workload }, { retry: DEFAULT_RETRY, timeoutMs: 0, signal: new AbortController().signal }));
      expect(r.endpoint.workload.name).toBe('b');
      await text(r);
    }
    expect(b.requests).toBe(3);
    expect(m.endpoints[0]?.requests).toBe(0);
  });

  it('a workload outside the mesh (tunnel protocol TCP) gets plain HTTP to podIP:targetPort', async () => {
    newClock();
    const m = await mesh([{ ...A, plaintext: true }]);
    for (let i = 0; i < 2; i++) {
      const r = response(await send(m));
      expect((await json(r)).endpoint).toBe('a');
    }
    expect(m.endpoints[0]?.connections).toBe(1);
  });
});
