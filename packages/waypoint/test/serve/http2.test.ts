/**
 * HTTP/2 (h2c with prior knowledge) inside a tunnel: gRPC unary with
 * trailers, streaming both ways, trailers-only responses, h2c on an HTTP
 * port, many concurrent streams on one tunnel, the inner header limits.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { ECHO_VIP, grpcFrame, h2cSession, PORT_GRPC, PORT_HTTP, startWaypoint } from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

interface H2Result {
  readonly headers: IncomingHttpHeaders;
  readonly trailers: IncomingHttpHeaders | undefined;
  readonly body: Buffer;
  readonly endedWithHeaders: boolean;
}

function collect(stream: ClientHttp2Stream): Promise<H2Result> {
  return new Promise((resolve, reject) => {
    let headers: IncomingHttpHeaders = {};
    let trailers: IncomingHttpHeaders | undefined;
    let endedWithHeaders = false;
    const chunks: Buffer[] = [];
    stream.on('response', (h, flags: number) => {
      headers = h;
      endedWithHeaders = (flags & 0x1) !== 0;
    });
    stream.on('trailers', (t) => (trailers = t));
    stream.on('data', (d: Buffer) => chunks.push(d));
    stream.on('end', () => resolve({ headers, trailers, body: Buffer.concat(chunks), endedWithHeaders }));
    stream.on('error', reject);
  });
}

function grpcCall(session: ClientHttp2Session, path: string, body?: Buffer): ClientHttp2Stream {
  const s = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' }, { endStream: body === undefined });
  if (body !== undefined) s.end(body);
  return s;
}

describe('h2c and gRPC in a tunnel', () => {
  it('a unary gRPC call: trailers reach the client, the record has the gRPC status and message counts', async () => {
    const w = await startWaypoint({}, cleanup);
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_GRPC), cleanup);
    const res = await collect(grpcCall(session, '/pkg.Echo/Call', grpcFrame('hi')));
    expect(res.headers[':status']).toBe(200);
    expect(res.trailers).toMatchObject({ 'grpc-status': '0', 'grpc-message': 'ok' });
    expect(res.body.subarray(5).toString()).toBe(`echo:${grpcFrame('hi').length}`);
    expect(w.forwarder.calls[0]?.request).toMatchObject({ protocol: 'http2', grpc: true, path: '/pkg.Echo/Call' });
    expect(w.forwarder.calls[0]?.request.headers).toContainEqual(['te', 'trailers']);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ httpVersion: 'HTTP/2', requestProtocol: 'grpc', grpcStatus: 0, requestMessages: 1, responseMessages: 1, responseCode: 200 });
  });

  it('streams both ways: each message is answered before the next is sent', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h2Stream.set('/pkg.Echo/Chat', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.on('data', (d: Buffer) => stream.write(grpcFrame(`re:${d.subarray(5).toString()}`)));
      stream.on('end', () => stream.end());
    });
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_GRPC), cleanup);
    const chat = session.request({ ':method': 'POST', ':path': '/pkg.Echo/Chat', 'content-type': 'application/grpc', te: 'trailers' });
    const received: string[] = [];
    const next = () => new Promise<string>((resolve) => chat.once('data', (d: Buffer) => resolve(d.subarray(5).toString())));
    const trailers = new Promise<IncomingHttpHeaders>((resolve) => chat.once('trailers', resolve));
    chat.resume();
    for (const m of ['one', 'two', 'three']) {
      const answer = next();
      chat.write(grpcFrame(m));
      received.push(await answer);
    }
    chat.end();
    expect(received).toEqual(['re:one', 're:two', 're:three']);
    expect((await trailers)['grpc-status']).toBe('0');
    const records = await w.telemetry.httpRecords(1);
    const rec = records.find((r) => r.path === '/pkg.Echo/Chat');
    expect(rec).toMatchObject({ requestMessages: 3, responseMessages: 3, grpcStatus: 0 });
  });

  it('passes a trailers-only response on as HEADERS with END_STREAM', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h2.set('/pkg.Echo/Down', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14', 'grpc-message': 'unavailable' }, { endStream: true });
    });
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_GRPC), cleanup);
    const res = await collect(grpcCall(session, '/pkg.Echo/Down', grpcFrame('x')));
    expect(res.endedWithHeaders).toBe(true);
    expect(res.headers['grpc-status']).toBe('14');
    expect(res.trailers).toBeUndefined();
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ grpcStatus: 14, responseMessages: 0 });
  });

  it('serves h2c prior knowledge on an HTTP port, with many concurrent streams on one tunnel', async () => {
    const w = await startWaypoint({}, cleanup);
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_HTTP), cleanup);
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => collect(session.request({ ':method': 'GET', ':path': `/s${i}`, 'x-dup': ['a', 'b'] }))),
    );
    expect(results.map((r) => r.headers[':status'])).toEqual(new Array(20).fill(200));
    expect(results[0]?.headers['server']).toBe('istio-envoy');
    expect(w.forwarder.calls).toHaveLength(20);
    expect(w.forwarder.calls.every((c) => c.request.protocol === 'http2')).toBe(true);
    expect(w.forwarder.calls[0]?.request.headers.filter(([n]) => n === 'x-dup').map(([, v]) => v)).toEqual(['a', 'b']);
    const records = await w.telemetry.httpRecords(20);
    expect(records.every((r) => r.httpVersion === 'HTTP/2' && r.requestProtocol === 'http')).toBe(true);
  });

  it('431 above 100 request headers on HTTP/2 as on HTTP/1.1', async () => {
    const w = await startWaypoint({}, cleanup);
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_HTTP), cleanup);
    const headers: Record<string, string> = { ':method': 'GET', ':path': '/' };
    for (let i = 0; i < 101; i++) headers[`x-h${i}`] = 'v';
    const res = await collect(session.request(headers));
    expect(res.headers[':status']).toBe(431);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 431, responseCodeDetails: 'http1.too_many_headers' });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('404 NR on HTTP/2 too (a local reply on a stream)', async () => {
    const w = await startWaypoint({}, cleanup);
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_HTTP), cleanup);
    const res = await collect(session.request({ ':method': 'CONNECT', ':authority': 'x:1' }));
    expect(res.headers[':status']).toBe(404);
  });

  it('ends an inner session whose client resets streams faster than the rapid-reset budget', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h2.set('/never', () => {});
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_GRPC), cleanup);
    let goawayCode: number | undefined;
    session.once('goaway', (code: number) => (goawayCode = code));
    const closed = new Promise<void>((resolve) => session.once('close', resolve));
    // Batches of 50 streams: each is opened (HEADERS sent), then reset at once.
    for (let batch = 0; batch < 8 && !session.destroyed && !session.closed; batch++) {
      const streams = Array.from({ length: 50 }, () => {
        const s = session.request({ ':method': 'POST', ':path': '/never' });
        s.on('error', () => {});
        return s;
      });
      await Promise.all(streams.map((s) => new Promise((resolve) => (s.id !== undefined ? resolve(undefined) : s.once('ready', resolve)))));
      for (const s of streams) s.close(http2.constants.NGHTTP2_CANCEL);
      await new Promise((r) => setImmediate(r));
    }
    await closed;
    // The tunnel goes with the session; a GOAWAY, when it makes it out first, says why.
    expect([undefined, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM]).toContain(goawayCode);
  });
});
