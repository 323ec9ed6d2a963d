/**
 * Drain: requests in flight finish; HTTP/1.1 answers carry Connection: close
 * and idle connections close; inner and outer HTTP/2 sessions get GOAWAY;
 * the HBONE listener takes no new tunnels; close() ends what is left.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ServerHttp2Stream } from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '@ambient/control';
import { ECHO_VIP, h1Request, h2cSession, PORT_GRPC, PORT_HTTP, startWaypoint } from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function until(done: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 300 && !done(); i++) await systemClock.sleep(10);
  if (!done()) throw new Error(`not within 3 s: ${what}`);
}

describe('drain', () => {
  it('HTTP/1.1: the request in flight finishes with Connection: close, then the tunnel closes', async () => {
    const w = await startWaypoint({}, cleanup);
    let release: (() => void) | undefined;
    w.backends.h1.set('/slow', (_req: IncomingMessage, res: ServerResponse) => {
      release = () => res.end('late');
    });
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    const pending = h1Request(tunnel, { path: '/slow' });
    await until(() => release !== undefined, 'the backend got the request');
    let drained = false;
    const drain = w.inbound.drain().then(() => (drained = true));
    await systemClock.sleep(20);
    expect(drained).toBe(false);
    release?.();
    const res = await pending;
    expect(res.status).toBe(200);
    expect(res.body).toBe('late');
    expect(res.header('connection')).toBe('close');
    // The client closes its side once the waypoint ended the connection; then drain completes.
    await until(() => tunnel.readableEnded || tunnel.destroyed, 'the tunnel ended');
    tunnel.end();
    await drain;
    expect(drained).toBe(true);
    await expect(w.tunnel(ECHO_VIP, PORT_HTTP)).rejects.toThrow();
  });

  it('HTTP/2: GOAWAY on the inner session, the stream in flight completes, a new stream is refused', async () => {
    const w = await startWaypoint({}, cleanup);
    let release: (() => void) | undefined;
    w.backends.h2.set('/slow', (stream: ServerHttp2Stream) => {
      stream.respond({ ':status': 200 });
      release = () => stream.end('done');
    });
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_GRPC), cleanup);
    let goaway = false;
    session.on('goaway', () => (goaway = true));
    const req = session.request({ ':method': 'POST', ':path': '/slow' }, { endStream: true });
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    const ended = new Promise<void>((resolve) => req.on('end', resolve));
    await until(() => release !== undefined, 'the backend got the stream');
    const drain = w.inbound.drain();
    await until(() => goaway, 'GOAWAY');
    release?.();
    await ended;
    expect(body).toBe('done');
    await drain;
    expect(session.closed || session.destroyed).toBe(true);
  });

  it('an idle HTTP/1.1 connection is closed at once', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    await h1Request(tunnel);
    tunnel.resume();
    const ended = new Promise<void>((resolve) => tunnel.once('end', resolve));
    const drain = w.inbound.drain();
    await ended;
    tunnel.end();
    await drain;
  });

  it('close() ends connections that did not drain', async () => {
    const w = await startWaypoint({}, cleanup);
    w.backends.h1.set('/hang', () => {});
    const tunnel = await w.tunnel(ECHO_VIP, PORT_HTTP);
    const pending = h1Request(tunnel, { path: '/hang' }).catch((err: unknown) => err);
    await until(() => w.backends.seen.length === 1, 'the backend got the request');
    void w.inbound.drain();
    await w.inbound.close();
    expect(await pending).toBeInstanceOf(Error);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.flags).toContain('DC');
  });
});
