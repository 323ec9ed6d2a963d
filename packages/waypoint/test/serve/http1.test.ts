/**
 * HTTP/1.1 inside an HBONE tunnel: keep-alive, chunked bodies both ways,
 * Expect: 100-continue, WebSocket upgrade and relay, duplicate header lines,
 * the malformed-HTTP table (answered 4xx and never forwarded), the header
 * limits (431), HTTP/1.0 (426), and the headers/idle timeouts on a manual
 * clock.
 */
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { ECHO_HOST, ECHO_VIP, h1Request, PORT_HTTP, rawExchange, startWaypoint } from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const HOST = `Host: ${ECHO_HOST}\r\n`;

describe('HTTP/1.1 in a tunnel', () => {
  it('keeps the connection alive across requests, one record each', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    for (let i = 0; i < 3; i++) {
      const res = await h1Request(tunnel, { path: `/r${i}` });
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body)).toMatchObject({ url: `/r${i}` });
    }
    expect(await w.telemetry.httpRecords(3)).toHaveLength(3);
  });

  it('streams a chunked request body and a chunked response', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h1.set('/chunks', (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part1-');
      res.end('part2');
    });
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    const res = await h1Request(tunnel, { method: 'POST', path: '/chunks', body: Readable.from(['a', 'b', 'c']) });
    expect(res.status).toBe(200);
    expect(res.body).toBe('part1-part2');
    expect(w.backends.seen[0]?.body).toBe('abc');
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.requestBodyBytes).toBe(3);
    expect(record?.responseBodyBytes).toBe(11);
  });

  it('answers Expect: 100-continue itself, before the body, and does not forward the Expect header', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    let got = '';
    tunnel.on('data', (d: Buffer) => (got += d.toString()));
    tunnel.write(`POST /c HTTP/1.1\r\n${HOST}Content-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n`);
    await until(() => got.includes('\r\n\r\n'));
    expect(got).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    expect(w.backends.seen).toEqual([]);
    tunnel.write('body');
    await until(() => got.includes('HTTP/1.1 200 OK'));
    const seen = w.backends.seen.at(-1);
    expect(seen?.body).toBe('body');
    expect(seen?.rawHeaders.map((h) => h.toLowerCase())).not.toContain('expect');
  });

  it('keeps duplicate header lines separate, in order', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    await h1Request(tunnel, { headers: [['X-Dup', 'a'], ['x-dup', 'b'], ['Cookie', 'c=1'], ['Cookie', 'd=2']] });
    const raw = w.backends.seen[0]?.rawHeaders ?? [];
    const dup: string[] = [];
    const cookies: string[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      if (raw[i]?.toLowerCase() === 'x-dup') dup.push(raw[i + 1] as string);
      if (raw[i]?.toLowerCase() === 'cookie') cookies.push(raw[i + 1] as string);
    }
    expect(dup).toEqual(['a', 'b']);
    expect(cookies).toEqual(['c=1', 'd=2']);
  });

  it('relays a WebSocket upgrade after the 101', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    let got = '';
    tunnel.on('data', (d: Buffer) => (got += d.toString()));
    tunnel.write(`GET /ws HTTP/1.1\r\n${HOST}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    await until(() => got.includes('\r\n\r\n'));
    expect(got).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/i);
    expect(got.toLowerCase()).toContain('upgrade: websocket');
    tunnel.write('hello');
    await until(() => got.includes('echo:hello'));
    tunnel.end();
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 101, method: 'GET', path: '/ws', responseCodeDetails: 'via_upstream' });
    expect(record?.requestBodyBytes).toBe(5);
    expect(w.forwarder.calls[0]?.request).toMatchObject({ upgrade: 'websocket' });
    const sent = w.forwarder.calls[0]?.request.headers.map(([n]) => n.toLowerCase());
    expect(sent).toContain('upgrade');
  });

  it('ignores an h2c upgrade as Envoy does: answered over HTTP/1.1 without the upgrade headers, then closed', async () => {
    const w = await startWaypoint({}, cleanup);
    const out = await rawExchange(
      await w.tunnel(ECHO_VIP, PORT_HTTP),
      `GET /h2c HTTP/1.1\r\n${HOST}Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n`,
    );
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(out.toLowerCase()).toContain('connection: close');
    expect(out).toContain('"url":"/h2c"');
    const sent = w.forwarder.calls[0]?.request.headers.map(([n]) => n.toLowerCase());
    expect(sent).not.toContain('upgrade');
    expect(sent).not.toContain('http2-settings');
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.responseCode).toBe(200);
  });

  it('refuses upgrades other than websocket with 403 upgrade_failed', async () => {
    const w = await startWaypoint({}, cleanup);
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `GET / HTTP/1.1\r\n${HOST}Connection: Upgrade\r\nUpgrade: foo\r\n\r\n`);
    expect(out).toMatch(/^HTTP\/1\.1 403 /);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 403, responseCodeDetails: 'upgrade_failed' });
    expect(w.forwarder.calls).toEqual([]);
  });
});

/** Polls `done` every 10 ms for at most 3 s. */
async function until(done: () => boolean): Promise<void> {
  for (let i = 0; i < 300 && !done(); i++) await systemClock.sleep(10);
  if (!done()) throw new Error('condition not met within 3 s');
}

describe('malformed HTTP/1.1 is answered and never forwarded', () => {
  const cases: Array<[string, string, number, string]> = [
    ['conflicting Content-Length and Transfer-Encoding', `POST / HTTP/1.1\r\n${HOST}Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`, 400, 'http1.content_length_and_chunked_not_allowed'],
    ['two Content-Length values', `POST / HTTP/1.1\r\n${HOST}Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd`, 400, 'http1.codec_error'],
    ['a bare LF line ending', `GET / HTTP/1.1\n${HOST}\n`, 400, 'http1.codec_error'],
    ['a bare LF inside the headers', `GET / HTTP/1.1\r\n${HOST}X: a\nY: b\r\n\r\n`, 400, 'http1.codec_error'],
    ['obs-fold', `GET / HTTP/1.1\r\n${HOST}X: a\r\n b\r\n\r\n`, 400, 'http1.codec_error'],
    ['a space in a header name', `GET / HTTP/1.1\r\n${HOST}X Y: a\r\n\r\n`, 400, 'http1.codec_error'],
    ['whitespace before the colon', `GET / HTTP/1.1\r\n${HOST}X : a\r\n\r\n`, 400, 'http1.codec_error'],
    ['a control character in a value', `GET / HTTP/1.1\r\n${HOST}X: a\u0001b\r\n\r\n`, 400, 'http1.codec_error'],
    ['a transfer coding list ending in chunked', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`, 501, 'http1.invalid_transfer_encoding'],
    ['chunked not last', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked, gzip\r\n\r\n`, 501, 'http1.invalid_transfer_encoding'],
    ['Transfer-Encoding: identity', `POST / HTTP/1.1\r\n${HOST}Transfer-Encoding: identity\r\n\r\n`, 501, 'http1.invalid_transfer_encoding'],
    ['a NUL in the path', `GET /a\u0000b HTTP/1.1\r\n${HOST}\r\n`, 400, 'http1.invalid_url'],
    ['no Host header', 'GET / HTTP/1.1\r\n\r\n', 400, 'missing_host_header'],
    ['two Host headers', `GET / HTTP/1.1\r\n${HOST}Host: other\r\n\r\n`, 400, 'missing_host_header'],
    ['an asterisk target with GET', `GET * HTTP/1.1\r\n${HOST}\r\n`, 400, 'http1.invalid_url'],
    ['an absolute-form target with a non-HTTP scheme', `GET ftp://x/y HTTP/1.1\r\n${HOST}\r\n`, 400, 'http1.invalid_scheme'],
    ['a path that cannot be normalized', `GET /a%zz HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`, 400, 'path_normalization_failed'],
    ['HTTP/1.0', 'GET / HTTP/1.0\r\n\r\n', 426, 'low_version'],
    ['CONNECT inside the tunnel', `CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n`, 404, 'route_not_found'],
  ];

  it.each(cases)('%s → %i %s', async (_name, bytes, status, details) => {
    const w = await startWaypoint({}, cleanup);
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), bytes);
    const phrase: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 426: 'Upgrade Required', 501: 'Not Implemented' };
    expect(out.split('\r\n')[0]).toBe(`HTTP/1.1 ${status} ${phrase[status]}`);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: status, responseCodeDetails: details });
    expect(w.forwarder.calls).toEqual([]);
    expect(w.backends.seen).toEqual([]);
  });

  it('a bad chunk size after the headers aborts the request upstream and answers 400', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h1.set('/slow', () => {
      // never answers: the request must be aborted by the waypoint
    });
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `POST /slow HTTP/1.1\r\n${HOST}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n`);
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 400, flags: ['DPE'] });
    // The backend never saw a complete request.
    expect(w.backends.seen).toEqual([]);
  });

  it('an absolute-form http target is routed with its own authority', async () => {
    const w = await startWaypoint({}, cleanup);
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `GET http://abs.example:8000/p?q=1 HTTP/1.1\r\nHost: ignored\r\nConnection: close\r\n\r\n`);
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(w.forwarder.calls[0]?.request).toMatchObject({ path: '/p?q=1', authority: 'abs.example:8000' });
  });

  it('OPTIONS * is accepted', async () => {
    const w = await startWaypoint({}, cleanup);
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `OPTIONS * HTTP/1.1\r\n${HOST}Connection: close\r\n\r\n`);
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    expect(w.forwarder.calls[0]?.request.path).toBe('*');
  });
});

describe('header limits', () => {
  it('431 above 60 KiB of headers (Envoy max_request_headers_kb)', async () => {
    const w = await startWaypoint({}, cleanup);
    const big = `GET / HTTP/1.1\r\n${HOST}X-Big: ${'a'.repeat(61 * 1024)}\r\n\r\n`;
    const out = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), big);
    expect(out.split('\r\n')[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    expect(out.endsWith('Request Header Fields Too Large')).toBe(true);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 431, flags: ['DPE'], responseCodeDetails: 'http1.headers_too_large' });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('accepts headers just under the limit', async () => {
    const w = await startWaypoint({}, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), { headers: [['X-Big', 'a'.repeat(50 * 1024)]] });
    expect(res.status).toBe(200);
  });

  it('431 above 100 header lines (Envoy max_headers_count), 200 at 100', async () => {
    const w = await startWaypoint({}, cleanup);
    const lines = (n: number) => Array.from({ length: n }, (_, i) => `X-H${i}: v\r\n`).join('');
    const over = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `GET / HTTP/1.1\r\n${HOST}${lines(100)}\r\n`);
    expect(over.split('\r\n')[0]).toBe('HTTP/1.1 431 Request Header Fields Too Large');
    const ok = await rawExchange(await w.tunnel(ECHO_VIP, PORT_HTTP), `GET / HTTP/1.1\r\n${HOST}Connection: close\r\n${lines(98)}\r\n`);
    expect(ok.split('\r\n')[0]).toBe('HTTP/1.1 200 OK');
    const records = await w.telemetry.httpRecords(2);
    expect(records.map((r) => r.responseCodeDetails)).toEqual(['http1.too_many_headers', 'via_upstream']);
  });
});

describe('timeouts on the clock', () => {
  it('408 when the headers do not complete in time, then the connection closes', async () => {
    const clock = new ManualClock({ now: Date.now() });
    const w = await startWaypoint({ clock, http1Limits: { requestHeadersTimeoutMs: 5000 } }, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    const done = rawExchange(tunnel, `GET / HTTP/1.1\r\n${HOST}X-Slow: `);
    await systemClock.sleep(50);
    await clock.advance(4999);
    expect(w.telemetry.http).toEqual([]);
    await clock.advance(1);
    const out = await done;
    expect(out).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(out.endsWith('request header timeout')).toBe(true);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 408, responseCodeDetails: 'request_header_timeout' });
  });

  it('408 request_overall_timeout when the body does not arrive within the request timeout', async () => {
    const clock = new ManualClock({ now: Date.now() });
    const w = await startWaypoint({ clock, http1Limits: { requestTimeoutMs: 10_000 } }, cleanup);
    w.backends.h1.set('/upload', () => {});
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    const done = rawExchange(tunnel, `POST /upload HTTP/1.1\r\n${HOST}Content-Length: 100\r\n\r\npartial`);
    await until(() => w.forwarder.calls.length === 1);
    await clock.advance(10_000);
    const out = await done;
    expect(out).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/);
    expect(out.endsWith('request timeout')).toBe(true);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ responseCode: 408, responseCodeDetails: 'request_overall_timeout' });
    expect(w.backends.seen).toEqual([]);
  });

  it('closes a connection idle for the idle timeout', async () => {
    const clock = new ManualClock({ now: Date.now() });
    const w = await startWaypoint({ clock, http1Limits: { idleTimeoutMs: 60_000 } }, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    await h1Request(tunnel);
    let ended = false;
    tunnel.once('end', () => (ended = true));
    tunnel.resume();
    await clock.advance(59_999);
    await systemClock.sleep(20);
    expect(ended).toBe(false);
    await clock.advance(1);
    await until(() => ended);
  });
});
