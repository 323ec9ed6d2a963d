/**
 * proxyBidirectional with real TCP sockets and real HTTP/2 streams on
 * 127.0.0.1: byte counts and their Istio direction names, half-close in both
 * directions, RST / RST_STREAM mapping, backpressure with bounded buffers,
 * and no leaked sockets or listeners after an abort.
 */
import { createHash, randomBytes } from 'node:crypto';
import { connect as h2Connect, createServer as createH2Server, type ClientHttp2Session, type ClientHttp2Stream, type Http2Server, type ServerHttp2Stream } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { addAbortSignal, PassThrough, type Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { connectTcp, eventually, openTcpSockets, startTcpServer, type TcpServer } from '../../test/support/net-fixtures.js';
import { proxyBidirectional, type CopyResult } from './copy.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/**
 * app ⇄ [a | proxy | b] ⇄ backend, all real TCP: `app` is the application's
 * socket, `a` the proxy's accepted socket, `b` the proxy's socket to the
 * backend, `backend` the backend's accepted socket.
 */
async function tcpLegs(): Promise<{ app: Socket; a: Socket; b: Socket; backend: Socket }> {
  const front = await startTcpServer(() => {});
  const back = await startTcpServer(() => {});
  cleanups.push(() => front.close(), () => back.close());
  const app = await connectTcp(front.port);
  const a = await front.nextConnection(1);
  const b = await connectTcp(back.port);
  const backend = await back.nextConnection(1);
  for (const s of [app, b]) s.on('error', () => {});
  cleanups.push(() => {
    for (const s of [app, a, b, backend]) s.destroy();
  });
  return { app, a, b, backend };
}

/** A local h2c server and a client session; `stream()` opens a CONNECT stream and returns both ends. */
async function h2Pair(): Promise<{ session: ClientHttp2Session; stream(): Promise<{ client: ClientHttp2Stream; server: ServerHttp2Stream }> }> {
  const server: Http2Server = createH2Server();
  const pending: Array<(s: ServerHttp2Stream) => void> = [];
  server.on('stream', (s: ServerHttp2Stream) => {
    s.on('error', () => {});
    s.respond({ ':status': 200 });
    pending.shift()?.(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const session = h2Connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  session.on('error', () => {});
  cleanups.push(async () => {
    session.destroy();
    await new Promise((resolve) => server.close(resolve));
  });
  return {
    session,
    async stream() {
      const serverSide = new Promise<ServerHttp2Stream>((resolve) => pending.push(resolve));
      const client = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
      client.on('error', () => {});
      await new Promise((resolve) => client.once('response', resolve));
      return { client, server: await serverSide };
    },
  };
}

function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
    s.once('error', reject);
  });
}

function resetOf(s: Socket): Promise<string | undefined> {
  return new Promise((resolve) => {
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code));
    s.once('close', () => resolve(undefined));
    s.resume();
  });
}

function listenerTotal(s: Duplex): number {
  return ['data', 'end', 'finish', 'error', 'close', 'drain'].reduce((n, e) => n + s.listenerCount(e), 0);
}

describe('proxyBidirectional over TCP', () => {
  it('copies both ways and counts received = a→b, sent = b→a, in the result and in onBytes', async () => {
    const { app, a, b, backend } = await tcpLegs();
    const counted = { received: 0, sent: 0 };
    const clock = new ManualClock();
    const listenersBefore = listenerTotal(a) + listenerTotal(b);
    const copying = proxyBidirectional(a, b, { clock, onBytes: (dir, n) => (counted[dir] += n) });
    backend.on('data', (chunk: Buffer) => backend.write(Buffer.concat([chunk, chunk])));
    backend.on('end', () => backend.end());
    const response = readAll(app);
    app.end(Buffer.alloc(1000, 1));
    expect((await response).length).toBe(2000);
    const result = await copying;
    expect(result).toEqual({ received: 1000, sent: 2000, durationMs: 0 });
    expect(counted).toEqual({ received: 1000, sent: 2000 });
    expect(listenerTotal(a) + listenerTotal(b)).toBe(listenersBefore);
  });

  it('half-close: a client that shuts down its write side still receives the whole response', async () => {
    const { app, a, b, backend } = await tcpLegs();
    const copying = proxyBidirectional(a, b);
    const request = readAll(backend);
    app.end('GET / HTTP/1.0\r\n\r\n');
    // The backend answers only after it saw the client's FIN.
    expect((await request).toString()).toBe('GET / HTTP/1.0\r\n\r\n');
    const response = readAll(app);
    backend.write('part one, ');
    backend.end('part two');
    expect((await response).toString()).toBe('part one, part two');
    const result = await copying;
    expect(result.error).toBeUndefined();
    expect(result).toMatchObject({ received: 18, sent: 18 });
  });

  it('half-close the other way: the backend finishes first, the client keeps sending', async () => {
    const { app, a, b, backend } = await tcpLegs();
    const copying = proxyBidirectional(a, b);
    const appReceived = readAll(app);
    backend.end('banner');
    expect((await appReceived).toString()).toBe('banner');
    const backendReceived = readAll(backend);
    app.write('late ');
    app.end('upload');
    expect((await backendReceived).toString()).toBe('late upload');
    expect((await copying).error).toBeUndefined();
  });

  it('an RST from the client resets the backend connection (and vice versa)', async () => {
    for (const resetter of ['app', 'backend'] as const) {
      const legs = await tcpLegs();
      const copying = proxyBidirectional(legs.a, legs.b);
      legs.app.write('some bytes');
      await new Promise((resolve) => legs.backend.once('data', resolve));
      const other = resetter === 'app' ? legs.backend : legs.app;
      const seen = resetOf(other);
      (resetter === 'app' ? legs.app : legs.backend).resetAndDestroy();
      expect(await seen).toBe('ECONNRESET');
      const result = await copying;
      expect(result.error).toMatchObject({ side: resetter === 'app' ? 'a' : 'b', kind: 'reset' });
    }
  });

  it('the abort signal resets both sides', async () => {
    const { app, a, b, backend } = await tcpLegs();
    const controller = new AbortController();
    const copying = proxyBidirectional(a, b, { signal: controller.signal });
    const appSaw = resetOf(app);
    const backendSaw = resetOf(backend);
    controller.abort(new Error('connection closed due to policy change'));
    expect(await appSaw).toBe('ECONNRESET');
    expect(await backendSaw).toBe('ECONNRESET');
    const result = await copying;
    expect(result.error).toMatchObject({ side: 'signal', kind: 'aborted' });
    expect(result.error?.message).toContain('policy change');
  });

  it('settles at once when a side is already destroyed', async () => {
    const { a, b, backend } = await tcpLegs();
    a.destroy();
    const backendSaw = resetOf(backend);
    const result = await proxyBidirectional(a, b);
    expect(result.error).toMatchObject({ side: 'a', kind: 'closed' });
    expect(await backendSaw).toBe('ECONNRESET');
  });

  it('backpressure: a backend that does not read pauses the client side, and buffers stay bounded', async () => {
    const { app, a, b, backend } = await tcpLegs();
    backend.pause();
    const copying = proxyBidirectional(a, b);
    const bound = 256 * 1024;
    let maxReadable = 0;
    let maxWritable = 0;
    a.on('data', () => {
      maxReadable = Math.max(maxReadable, a.readableLength);
      maxWritable = Math.max(maxWritable, b.writableLength);
    });
    const total = 32 * 1024 * 1024;
    const block = randomBytes(64 * 1024);
    const sentHash = createHash('sha256');
    let written = 0;
    let writerBlocked = false;
    const writer = (async () => {
      while (written < total) {
        sentHash.update(block);
        written += block.length;
        if (!app.write(block)) {
          writerBlocked = true;
          await new Promise((resolve) => app.once('drain', resolve));
        }
      }
      app.end();
    })();
    await eventually(() => a.isPaused() && writerBlocked, 'the proxy paused its read side and the writer is blocked');
    expect(written).toBeLessThan(total);
    expect(maxWritable).toBeLessThanOrEqual(bound);
    expect(maxReadable).toBeLessThanOrEqual(bound);

    const receivedHash = createHash('sha256');
    let received = 0;
    backend.on('data', (c: Buffer) => {
      receivedHash.update(c);
      received += c.length;
    });
    const backendEnded = new Promise((resolve) => backend.once('end', resolve));
    backend.resume();
    await writer;
    await backendEnded;
    backend.end();
    const result = await copying;
    expect(received).toBe(total);
    expect(receivedHash.digest('hex')).toBe(sentHash.digest('hex'));
    expect(result).toMatchObject({ received: total, sent: 0 });
    expect(maxWritable).toBeLessThanOrEqual(bound);
    expect(maxReadable).toBeLessThanOrEqual(bound);
  }, 60_000);

  it('coalesces what one event-loop turn hands a TCP socket into one writev, in order, and flushes it before a half-close', async () => {
    const { app, a } = await tcpLegs();
    // Stands in for an HTTP/2 stream delivering one TLS read as several DATA pieces.
    const source = new PassThrough();
    const copying = proxyBidirectional(a, source);
    const systemWrites: number[] = [];
    const socket = a as Socket & { _writev(chunks: unknown[], cb: unknown): void; _write(chunk: unknown, enc: unknown, cb: unknown): void };
    const writev = socket._writev.bind(socket);
    const write = socket._write.bind(socket);
    socket._writev = (chunks, cb) => {
      systemWrites.push(chunks.length);
      writev(chunks, cb);
    };
    socket._write = (chunk, enc, cb) => {
      systemWrites.push(1);
      write(chunk, enc, cb);
    };
    const received = readAll(app);
    // Under the socket's 16 KiB high-water mark, so back-pressure does not split the batch.
    const pieces = [randomBytes(8000), randomBytes(9), randomBytes(7000), randomBytes(18)];
    for (const p of pieces) source.write(p);
    await eventually(() => systemWrites.length > 0, 'the turn ended and its writes went out');
    expect(systemWrites).toEqual([4]);
    const later = randomBytes(100);
    source.end(later);
    expect(await received).toEqual(Buffer.concat([...pieces, later]));
    expect(systemWrites).toEqual([4, 1]);
    app.end();
    expect(await copying).toMatchObject({ sent: 8000 + 9 + 7000 + 18 + 100, received: 0 });
  });

  it('a peer aborted mid-stream leaks no socket and no listener', async () => {
    const baseline = openTcpSockets();
    let servers: TcpServer[] = [];
    {
      const front = await startTcpServer(() => {});
      const back = await startTcpServer((s) => s.resume());
      servers = [front, back];
      const app = await connectTcp(front.port);
      app.on('error', () => {});
      const a = await front.nextConnection(1);
      const b = await connectTcp(back.port);
      const listenersBefore = listenerTotal(a) + listenerTotal(b);
      const copying = proxyBidirectional(a, b);
      const flowing = new Promise((resolve) => a.once('data', resolve));
      app.write(randomBytes(1024 * 1024));
      await flowing;
      app.resetAndDestroy();
      const result: CopyResult = await copying;
      expect(result.error).toMatchObject({ side: 'a', kind: 'reset' });
      expect(a.destroyed && b.destroyed).toBe(true);
      expect(listenerTotal(a) + listenerTotal(b)).toBe(listenersBefore);
    }
    for (const s of servers) await s.close();
    // Sockets of earlier tests may still be closing, so the count can end below the baseline.
    await eventually(() => openTcpSockets() <= baseline, `open TCP sockets back to ${baseline}`);
  });
});

describe('proxyBidirectional between TCP and an HTTP/2 stream', () => {
  async function legs() {
    const front = await startTcpServer(() => {});
    cleanups.push(() => front.close());
    const app = await connectTcp(front.port);
    app.on('error', () => {});
    const a = await front.nextConnection(1);
    cleanups.push(() => app.destroy());
    const h2 = await h2Pair();
    const { client, server } = await h2.stream();
    return { app, a, client, server, h2 };
  }

  it('half-close maps FIN ⇄ END_STREAM in both directions', async () => {
    const { app, a, client, server } = await legs();
    const copying = proxyBidirectional(a, client);
    const atServer = readAll(server);
    app.end('request');
    expect((await atServer).toString()).toBe('request');
    const atApp = readAll(app);
    server.end('response');
    expect((await atApp).toString()).toBe('response');
    const result = await copying;
    expect(result).toMatchObject({ received: 7, sent: 8 });
    expect(result.error).toBeUndefined();
  });

  it('a client RST becomes RST_STREAM(CANCEL), never a clean END_STREAM', async () => {
    const { app, a, client, server } = await legs();
    const before = listenerTotal(a);
    const copying = proxyBidirectional(a, client);
    // Node also emits 'end' after a reset, but only a real END_STREAM arrives while the stream is still open.
    let cleanEndStream = false;
    server.on('end', () => (cleanEndStream = !server.closed));
    server.resume();
    const closed = new Promise((resolve) => server.once('close', resolve));
    const arrived = new Promise((resolve) => server.once('data', resolve));
    app.write('x');
    await arrived;
    app.resetAndDestroy();
    await closed;
    expect(server.rstCode).toBe(8);
    expect(server.aborted).toBe(true);
    expect(cleanEndStream).toBe(false);
    expect((await copying).error).toMatchObject({ side: 'a', kind: 'reset' });
    expect(listenerTotal(a)).toBe(before);
  });

  it('RST_STREAM from the peer (CANCEL or an error code) becomes a TCP RST', async () => {
    for (const code of [8, 2]) {
      const { app, a, client, server } = await legs();
      const copying = proxyBidirectional(a, client);
      // The app reads what came before the reset (a Linux reader with unread
      // bytes queued sees them and then EOF, not the RST).
      const firstBytes = new Promise((resolve) => app.once('data', resolve));
      server.write('partial');
      await firstBytes;
      const appSaw = resetOf(app);
      // RST_STREAM without END_STREAM (Node's close(code) would end the stream first).
      if (code === 8) {
        const controller = new AbortController();
        addAbortSignal(controller.signal, server);
        controller.abort();
      } else {
        server.destroy(new Error('backend failed'));
      }
      expect(await appSaw).toBe('ECONNRESET');
      expect((await copying).error).toMatchObject({ side: 'b', kind: 'reset' });
    }
  });

  it('RST_STREAM(NO_ERROR) is end-of-stream, as ztunnel treats it', async () => {
    const { app, a, client, server } = await legs();
    const copying = proxyBidirectional(a, client);
    const atApp = readAll(app);
    const firstBytes = new Promise((resolve) => app.once('data', resolve));
    server.write('all of it');
    await firstBytes;
    server.destroy(); // RST_STREAM(NO_ERROR)
    expect((await atApp).toString()).toBe('all of it');
    const result = await copying;
    expect(result.error).toBeUndefined();
    expect(result.sent).toBe(9);
  });

  it('backpressure: a client that does not read bounds what is buffered from the HTTP/2 stream', async () => {
    const { app, a, client, server } = await legs();
    app.pause();
    const copying = proxyBidirectional(a, client);
    let maxWritable = 0;
    let maxReadable = 0;
    client.on('data', () => {
      maxWritable = Math.max(maxWritable, a.writableLength);
      maxReadable = Math.max(maxReadable, client.readableLength);
    });
    const block = randomBytes(64 * 1024);
    let written = 0;
    let blocked = false;
    const total = 16 * 1024 * 1024;
    const writer = (async () => {
      while (written < total) {
        written += block.length;
        if (!server.write(block)) {
          blocked = true;
          await new Promise((resolve) => server.once('drain', resolve));
        }
      }
      server.end();
    })();
    await eventually(() => client.isPaused() && blocked, 'the proxy paused the HTTP/2 stream and the server is blocked by flow control');
    expect(written).toBeLessThan(total);
    expect(maxWritable).toBeLessThanOrEqual(256 * 1024);
    expect(maxReadable).toBeLessThanOrEqual(256 * 1024);
    let received = 0;
    app.on('data', (c: Buffer) => (received += c.length));
    const ended = new Promise((resolve) => app.once('end', resolve));
    app.resume();
    await writer;
    await ended;
    app.end();
    const result = await copying;
    expect(received).toBe(total);
    expect(result.sent).toBe(total);
  }, 60_000);

  it('an app aborted mid-stream leaves the HTTP/2 session usable and no listeners behind', async () => {
    const { app, a, client, server, h2 } = await legs();
    const aBefore = listenerTotal(a);
    const clientBefore = { dataDrain: client.listenerCount('data') + client.listenerCount('drain') };
    const copying = proxyBidirectional(a, client);
    server.resume();
    app.write(randomBytes(256 * 1024));
    app.resetAndDestroy();
    const result = await copying;
    expect(result.error?.kind).toBe('reset');
    expect(client.destroyed).toBe(true);
    expect(listenerTotal(a)).toBe(aBefore);
    // The RST_STREAM(CANCEL) goes through stream.addAbortSignal, whose
    // end-of-stream watcher stays on the dead stream; the copy's own are gone.
    expect(client.listenerCount('data') + client.listenerCount('drain')).toBe(clientBefore.dataDrain);
    // Only this stream was reset; the session carries the next one.
    const next = await h2.stream();
    next.server.end('still here');
    expect((await readAll(next.client)).toString()).toBe('still here');
    expect(server.destroyed).toBe(true);
  });
});
