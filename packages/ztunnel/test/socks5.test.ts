/**
 * The SOCKS5 listener over real sockets on 127.0.0.1: negotiation, the
 * handler's reply before any relayed byte, refusals with the right reply
 * codes, the handshake timeout, and clean shutdown.
 */
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { nodeSocketFactory } from '@ambient/dataplane';
import { afterEach, describe, expect, it } from 'vitest';
import type { ListenerName, RefusalReason } from '../src/metrics/components.js';
import { encodeConnectRequest, encodeGreeting, parseReply, ReplyCode } from '../src/socks5/codec.js';
import { startSocks5Listener, type Socks5Connection, type Socks5Listener, type Socks5ListenerOptions } from '../src/socks5/listener.js';

const silent: Logger = { child: () => silent, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A client socket that buffers everything it reads. */
class Client {
  readonly socket: Socket;
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  readonly closed: Promise<void>;

  constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port });
    this.socket.on('data', (c: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, c]);
      for (const w of this.#waiters.splice(0)) w();
    });
    this.socket.on('error', () => undefined);
    this.closed = new Promise((resolve) => this.socket.once('close', () => resolve()));
    this.socket.once('close', () => {
      for (const w of this.#waiters.splice(0)) w();
    });
    cleanups.push(() => {
      this.socket.destroy();
    });
  }

  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.socket.destroyed) throw new Error(`connection closed after ${this.#buf.length} of ${n} bytes`);
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Everything until the server closes. */
  async rest(): Promise<Buffer> {
    await this.closed;
    const out = this.#buf;
    this.#buf = Buffer.alloc(0);
    return out;
  }

  async reply(): Promise<{ code: number }> {
    const head = await this.read(4);
    const size = head[3] === 4 ? 16 : 4;
    const tail = await this.read(size + 2);
    const r = parseReply(Buffer.concat([head, tail]));
    if (r.status !== 'ok') throw new Error('bad reply');
    return r.value;
  }
}

/** An upstream that echoes, prefixed, and records what it received. */
async function echoUpstream(): Promise<{ port: number; received: () => Buffer }> {
  let received = Buffer.alloc(0);
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.on('data', (c: Buffer) => {
      received = Buffer.concat([received, c]);
      s.write(Buffer.concat([Buffer.from('echo:'), c]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  const addr = server.address();
  return { port: typeof addr === 'object' && addr ? addr.port : 0, received: () => received };
}

/** Relays a SOCKS connection to 127.0.0.1:<port> after replying success. */
function relayTo(port: number): (c: Socks5Connection) => Promise<void> {
  return (c) =>
    new Promise<void>((resolve, reject) => {
      const up = connect({ host: '127.0.0.1', port }, () => {
        c.reply(ReplyCode.SUCCEEDED);
        c.socket.pipe(up);
        up.pipe(c.socket);
        resolve();
      });
      up.on('error', reject);
      c.socket.on('close', () => up.destroy());
      cleanups.push(() => {
        up.destroy();
        c.socket.destroy();
      });
    });
}

interface Harness {
  listener: Socks5Listener;
  clock: ManualClock;
  seen: Socks5Connection[];
  limits: Array<[RefusalReason, ListenerName]>;
  sockets: { open: number };
}

async function start(over: Partial<Socks5ListenerOptions> = {}): Promise<Harness> {
  const clock = new ManualClock();
  const seen: Socks5Connection[] = [];
  const limits: Array<[RefusalReason, ListenerName]> = [];
  const sockets = { open: 0 };
  const handler = over.handler ?? ((c: Socks5Connection) => c.reply(ReplyCode.CONNECTION_REFUSED));
  const listener = await startSocks5Listener(
    { host: '127.0.0.1', port: 0 },
    {
      sockets: nodeSocketFactory,
      clock,
      log: silent,
      resolve: async () => undefined,
      refusals: { refused: (l, n) => limits.push([l, n]) },
      trackSocket: () => {
        sockets.open++;
        return () => sockets.open--;
      },
      ...over,
      handler: (c) => {
        seen.push(c);
        return handler(c);
      },
    },
  );
  cleanups.push(() => listener.close());
  return { listener, clock, seen, limits, sockets };
}

describe('SOCKS5 listener', () => {
  it('negotiates an IPv4 CONNECT, replies only when the handler says so, then relays both ways', async () => {
    const upstream = await echoUpstream();
    const h = await start({ handler: relayTo(upstream.port) });
    const c = new Client(h.listener.address.port);
    c.socket.write(encodeGreeting());
    expect([...(await c.read(2))]).toEqual([5, 0]);
    c.socket.write(encodeConnectRequest({ kind: 'ip', ip: '127.0.0.1' }, upstream.port));
    expect((await c.reply()).code).toBe(ReplyCode.SUCCEEDED);
    expect(h.seen).toHaveLength(1);
    expect(h.seen[0]?.origDst).toEqual({ ip: '127.0.0.1', port: upstream.port });
    expect(h.seen[0]?.peer.ip).toBe('127.0.0.1');
    expect(h.seen[0]?.hostname).toBeUndefined();
    c.socket.write('hello');
    expect((await c.read(10)).toString()).toBe('echo:hello');
  });

  it('keeps bytes the client sent before the reply, and delivers them upstream exactly once after it', async () => {
    const upstream = await echoUpstream();
    let replied = false;
    let upstreamBeforeReply = -1;
    const relay = relayTo(upstream.port);
    const h = await start({
      handler: async (conn) => {
        upstreamBeforeReply = upstream.received().length;
        const reply = conn.reply.bind(conn);
        await relay({ ...conn, socket: conn.socket, reply: (code) => ((replied = true), reply(code)) });
      },
    });
    const c = new Client(h.listener.address.port);
    // Greeting, request and payload in one write (an optimistic client).
    c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'ip', ip: '127.0.0.1' }, upstream.port), Buffer.from('early')]));
    expect([...(await c.read(2))]).toEqual([5, 0]);
    expect((await c.reply()).code).toBe(ReplyCode.SUCCEEDED);
    expect((await c.read(10)).toString()).toBe('echo:early');
    expect(replied).toBe(true);
    expect(upstreamBeforeReply).toBe(0);
    expect(upstream.received().toString()).toBe('early');
  });

  it('resolves a domain through the injected resolver, passing the client address', async () => {
    const asked: Array<[string, string]> = [];
    const h = await start({
      resolve: async (name, peer) => {
        asked.push([name, peer.ip]);
        return '10.96.0.10';
      },
    });
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'domain', name: 'helloworld.default.svc.cluster.local' }, 5000)]));
    await c.read(2);
    expect((await c.reply()).code).toBe(ReplyCode.CONNECTION_REFUSED); // the default test handler refuses
    await c.closed;
    expect(asked).toEqual([['helloworld.default.svc.cluster.local', '127.0.0.1']]);
    expect(h.seen[0]).toMatchObject({ origDst: { ip: '10.96.0.10', port: 5000 }, hostname: 'helloworld.default.svc.cluster.local' });
  });

  it.each<[string, () => Promise<string | undefined>]>([
    ['no address', async () => undefined],
    ['a resolver failure', async () => Promise.reject(new Error('SERVFAIL'))],
    ['a non-IP answer', async () => 'not-an-ip'],
  ])('answers host unreachable for a domain with %s, without calling the handler', async (_name, resolve) => {
    const h = await start({ resolve });
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'domain', name: 'nowhere.example' }, 80)]));
    await c.read(2);
    expect((await c.reply()).code).toBe(ReplyCode.HOST_UNREACHABLE);
    await c.closed;
    expect(h.seen).toEqual([]);
  });

  it.each<[string, Buffer, number]>([
    ['BIND', Buffer.from([5, 2, 0, 1, 127, 0, 0, 1, 0, 80]), ReplyCode.COMMAND_NOT_SUPPORTED],
    ['UDP ASSOCIATE', Buffer.from([5, 3, 0, 1, 127, 0, 0, 1, 0, 80]), ReplyCode.COMMAND_NOT_SUPPORTED],
    ['an unknown address type', Buffer.from([5, 1, 0, 7, 127, 0, 0, 1, 0, 80]), ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED],
    ['port 0', Buffer.from([5, 1, 0, 1, 127, 0, 0, 1, 0, 0]), ReplyCode.NOT_ALLOWED],
  ])('refuses %s with the matching reply code and closes', async (_name, request, code) => {
    const h = await start();
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.concat([encodeGreeting(), request]));
    await c.read(2);
    expect((await c.reply()).code).toBe(code);
    await c.closed;
    expect(h.seen).toEqual([]);
    expect(h.limits).toEqual([['socks5_protocol_error', 'socks5']]);
  });

  it('answers "no acceptable methods" to a client that needs authentication', async () => {
    const h = await start();
    const c = new Client(h.listener.address.port);
    c.socket.write(encodeGreeting([2]));
    expect([...(await c.rest())]).toEqual([5, 0xff]);
    expect(h.seen).toEqual([]);
  });

  it('closes on a peer that does not speak SOCKS5, without a reply', async () => {
    const h = await start();
    const c = new Client(h.listener.address.port);
    c.socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    expect((await c.rest()).length).toBe(0);
    expect(h.seen).toEqual([]);
  });

  it('closes a client that does not finish the handshake in time, counting it', async () => {
    const h = await start({ handshakeTimeoutMs: 10_000 });
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.from([5, 1])); // greeting without its method list
    await expect.poll(() => h.sockets.open).toBe(1);
    await h.clock.advance(9_999);
    expect(c.socket.destroyed).toBe(false);
    await h.clock.advance(1);
    await c.closed;
    expect(h.limits).toEqual([['socks5_handshake_timeout', 'socks5']]);
    expect(h.clock.pendingTimers()).toEqual([]);
    await expect.poll(() => h.sockets.open).toBe(0);
  });

  it('answers host unreachable when resolution outlasts the handshake timeout', async () => {
    const h = await start({ handshakeTimeoutMs: 1_000, resolve: () => new Promise<string>(() => undefined) });
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'domain', name: 'slow.example' }, 80)]));
    await c.read(2);
    await h.clock.advance(1_000);
    expect((await c.reply()).code).toBe(ReplyCode.HOST_UNREACHABLE);
    await c.closed;
    expect(h.seen).toEqual([]);
  });

  it('answers general failure when the handler throws before replying, and keeps serving', async () => {
    let calls = 0;
    const h = await start({
      handler: () => {
        calls++;
        throw new Error('no route');
      },
    });
    for (let i = 0; i < 2; i++) {
      const c = new Client(h.listener.address.port);
      c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'ip', ip: '10.0.0.1' }, 80)]));
      await c.read(2);
      expect((await c.reply()).code).toBe(ReplyCode.GENERAL_FAILURE);
      await c.closed;
    }
    expect(calls).toBe(2);
  });

  it('writes only the first reply', async () => {
    const h = await start({
      handler: (c) => {
        c.reply(ReplyCode.NETWORK_UNREACHABLE);
        c.reply(ReplyCode.SUCCEEDED);
      },
    });
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'ip', ip: '10.0.0.1' }, 80)]));
    await c.read(2);
    const rest = await c.rest();
    expect([...rest]).toEqual([5, ReplyCode.NETWORK_UNREACHABLE, 0, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('survives a client that resets mid-handshake', async () => {
    const h = await start();
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.from([5, 1, 0, 5, 1]));
    await c.read(2);
    c.socket.resetAndDestroy();
    await c.closed;
    await expect.poll(() => h.sockets.open).toBe(0);
    expect(h.clock.pendingTimers()).toEqual([]);
    // Still serving.
    const d = new Client(h.listener.address.port);
    d.socket.write(encodeGreeting());
    expect([...(await d.read(2))]).toEqual([5, 0]);
  });

  it('close() drops negotiating clients and refuses new ones', async () => {
    const h = await start();
    const c = new Client(h.listener.address.port);
    c.socket.write(Buffer.from([5]));
    await expect.poll(() => h.sockets.open).toBe(1);
    await h.listener.close();
    await c.closed;
    expect(h.clock.pendingTimers()).toEqual([]);
    const refused = new Client(h.listener.address.port);
    await refused.closed;
    expect(refused.socket.bytesRead).toBe(0);
  });

  it('fails to start on a taken port, naming the variable', async () => {
    const h = await start();
    await expect(
      startSocks5Listener({ host: '127.0.0.1', port: h.listener.address.port }, { sockets: nodeSocketFactory, clock: h.clock, log: silent, handler: () => undefined, resolve: async () => undefined }),
    ).rejects.toThrow(/socks5 listener: cannot listen on 127\.0\.0\.1:\d+: .*ZTUNNEL_SOCKS5_ADDR/);
  });
});
