/**
 * netnsSocketFactory on a real kernel (as root): the SocketFactory the proxy
 * uses in capture mode, with native sockets handed to Node's net.Server,
 * net.Socket and dgram inside a throwaway network namespace.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import type { Server, Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NativeError, type Native } from '../src/platform/native.js';
import { netnsSocketFactory } from '../src/platform/netns-sockets.js';
import { SOCKET_HIGH_WATER_MARK, type ListenOptions, type SocketFactory } from '@ambient/dataplane';
import {
  Cleanup,
  closeServer,
  connected,
  createNetns,
  failure,
  nextConnection,
  readUntil,
  requireRootAndNative,
  type TestNetns,
} from './support/native-netns.js';

let native: Native;
const cleanup = new Cleanup();

beforeAll(() => {
  native = requireRootAndNative();
});

afterEach(async () => {
  await cleanup.run();
});

function netns(tag: string): TestNetns {
  const ns = createNetns(native, tag);
  cleanup.add(() => ns.delete());
  return ns;
}

async function listen(
  factory: SocketFactory,
  host: string,
  port: number,
  onConnection: (s: Socket) => void,
  more: Omit<ListenOptions, 'host' | 'port'> = {},
): Promise<Server> {
  const accepted: Socket[] = [];
  const server = await factory.listen({ ...more, host, port }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    onConnection(s);
  });
  cleanup.add(async () => {
    for (const s of accepted) s.destroy();
    await closeServer(server);
  });
  return server;
}

function connect(factory: SocketFactory, ip: string, port: number, localAddress?: string): Socket {
  const socket = factory.connect(localAddress === undefined ? { ip, port } : { ip, port, localAddress });
  cleanup.add(() => socket.destroy());
  return socket;
}

function refuse(): never {
  throw new NativeError('EPERM', 'setsockopt', 'setting IP_TRANSPARENT: Operation not permitted', 1);
}

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  return address.port;
}

describe('netnsSocketFactory', () => {
  it('serves a listener from the namespace and connects into it, carrying data both ways', async () => {
    const ns = netns('factory');
    const factory = netnsSocketFactory({ native, netns: ns.fd, mark: 1337, reusePort: true });
    const acceptedBuffers: number[] = [];
    const server = await listen(factory, '127.0.0.1', 15006, (s) => {
      acceptedBuffers.push(s.writableHighWaterMark, s.readableHighWaterMark);
      let got = '';
      s.on('data', (d: Buffer) => {
        got += d.toString();
        if (got === 'hello from the client') s.end(`hello from the server to ${s.remoteAddress ?? '?'}`);
      });
    });
    expect(server.address()).toEqual({ address: '127.0.0.1', family: 'IPv4', port: 15006 });

    const client = connect(factory, '127.0.0.1', 15006);
    expect(client.connecting).toBe(true);
    // Written before the connection is established: Node queues it until 'connect'.
    client.write('hello from the client');
    await connected(client);
    expect(client.remotePort).toBe(15006);
    expect(await readUntil(client, 'hello from the server to 127.0.0.1')).toBe('hello from the server to 127.0.0.1');
    await new Promise<void>((resolve) => client.once('close', () => resolve()));
    // The same stream buffers as the plain factory's sockets (write coalescing relies on them).
    expect([client.writableHighWaterMark, client.readableHighWaterMark, ...acceptedBuffers]).toEqual(Array(4).fill(SOCKET_HIGH_WATER_MARK));
  });

  it('binds the local address when asked, also without transparency on a local address', async () => {
    const ns = netns('local');
    const factory = netnsSocketFactory({ native, netns: ns.fd, transparent: 'off' });
    const server = await listen(factory, '127.0.0.1', 0, (s) => s.end(s.remoteAddress ?? '?'));
    const client = await connected(connect(factory, '127.0.0.1', portOf(server), '127.0.0.9'));
    expect(await readUntil(client, '127.0.0.9')).toBe('127.0.0.9');
  });

  it('rejects listen() with EADDRINUSE when the port is taken, unless both listeners use SO_REUSEPORT', async () => {
    const ns = netns('inuse');
    const factory = netnsSocketFactory({ native, netns: ns.fd });
    await listen(factory, '0.0.0.0', 15001, () => {});
    const attempt = factory.listen({ host: '0.0.0.0', port: 15001 }, () => {});
    await expect(attempt).rejects.toBeInstanceOf(NativeError);
    await expect(attempt).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    // With SO_REUSEPORT on both, a second listener shares the port (one per worker / per proxy generation).
    const shared = netnsSocketFactory({ native, netns: ns.fd, reusePort: true });
    await listen(shared, '0.0.0.0', 15008, () => {});
    await listen(shared, '0.0.0.0', 15008, () => {});
  });

  it('reports a failure to create the socket as an asynchronous error on the returned socket, never a throw', async () => {
    const ns = netns('badfd');
    const stale = native.openNetns(`/var/run/netns/${ns.name}`);
    native.closeFd(stale);
    const factory = netnsSocketFactory({ native, netns: stale });
    let socket: Socket | undefined;
    expect(() => (socket = connect(factory, '127.0.0.1', 15001))).not.toThrow();
    if (socket === undefined) throw new Error('no socket');
    // The listener is attached after connect() returned: the error must not have been emitted yet.
    const err = await failure(socket);
    expect(err).toBeInstanceOf(NativeError);
    expect(err).toMatchObject({ code: 'EBADF', syscall: 'setns' });
    await expect(factory.listen({ host: '127.0.0.1', port: 0 }, () => {})).rejects.toMatchObject({ code: 'EBADF' });
    await expect(factory.udp({ host: '127.0.0.1', port: 0 })).rejects.toMatchObject({ code: 'EBADF' });
  });

  it('a refused connection is an ordinary ECONNREFUSED error', async () => {
    const ns = netns('refused');
    const err = await failure(connect(netnsSocketFactory({ native, netns: ns.fd }), '127.0.0.1', 15001));
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('transparent "required" surfaces the error; "best-effort" falls back to a plain socket on EPERM and says so once', async () => {
    const ns = netns('tmode');
    // The kernel refuses IP_TRANSPARENT without CAP_NET_ADMIN; as root, a Native that refuses it the same way.
    const noCapability: Native = {
      ...native,
      tcpListener: (o) => (o.transparent === true ? refuse() : native.tcpListener(o)),
      tcpSocket: (o) => (o.transparent === true ? refuse() : native.tcpSocket(o)),
    };
    const warnings: string[] = [];
    const log = { warn: (_obj: object, msg: string) => void warnings.push(msg) };

    const required = netnsSocketFactory({ native: noCapability, netns: ns.fd, transparent: 'required', log });
    await expect(required.listen({ host: '127.0.0.1', port: 0 }, () => {})).rejects.toMatchObject({ code: 'EPERM' });
    expect(await failure(connect(required, '127.0.0.1', 15001, '127.0.0.3'))).toMatchObject({ code: 'EPERM' });

    const best = netnsSocketFactory({ native: noCapability, netns: ns.fd, transparent: 'best-effort', log });
    const server = await listen(best, '127.0.0.1', 0, (s) => s.end('ok'));
    const client = await connected(connect(best, '127.0.0.1', portOf(server), '127.0.0.3'));
    expect(client.localAddress).toBe('127.0.0.3');
    await connected(connect(best, '127.0.0.1', portOf(server), '127.0.0.4'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('IP_TRANSPARENT is not permitted');

    // Other errors are not downgraded: an IPv4 source for an IPv6 destination cannot be bound.
    expect(await failure(connect(best, '::1', 15001, '10.1.1.1'))).toMatchObject({ code: 'EAFNOSUPPORT' });
  });

  it('binds UDP sockets in the namespace (the DNS proxy and its forwarders)', async () => {
    const ns = netns('udp');
    const factory = netnsSocketFactory({ native, netns: ns.fd, mark: 1337, reusePort: true });
    const sockets: UdpSocket[] = [];
    cleanup.add(() => sockets.forEach((s) => s.close()));
    const dns = await factory.udp({ host: '127.0.0.1', port: 15053 });
    sockets.push(dns);
    sockets.push(await factory.udp({ host: '127.0.0.1', port: 15053 })); // SO_REUSEPORT
    const forwarder = await factory.udp({ host: '127.0.0.1', port: 0 });
    sockets.push(forwarder);
    expect(dns.address().port).toBe(15053);

    const received = new Promise<[string, number]>((resolve) => {
      for (const s of sockets.slice(0, 2)) s.once('message', (m, rinfo) => resolve([m.toString(), rinfo.port]));
    });
    forwarder.send('query', 15053, '127.0.0.1');
    expect(await received).toEqual(['query', forwarder.address().port]);

    // Not visible from another namespace: a fresh one has nothing on 15053, so this binds fine there.
    const other = netns('udp-other');
    const elsewhere = await netnsSocketFactory({ native, netns: other.fd }).udp({ host: '127.0.0.1', port: 15053 });
    sockets.push(elsewhere);
    await expect(netnsSocketFactory({ native, netns: ns.fd }).udp({ host: '127.0.0.1', port: 15053 })).rejects.toMatchObject({
      code: 'EADDRINUSE',
    });
  });

  it('accepts connections on a dual-stack listener from IPv4 and IPv6 clients', async () => {
    const ns = netns('dual');
    const factory = netnsSocketFactory({ native, netns: ns.fd });
    const server = await listen(factory, '::', 0, (s) => s.end(s.remoteAddress ?? '?'));
    const accepted = nextConnection(server);
    const v4 = await connected(connect(factory, '127.0.0.1', portOf(server)));
    expect(await readUntil(v4, '::ffff:127.0.0.1')).toBe('::ffff:127.0.0.1');
    await accepted;
    const v6 = await connected(connect(factory, '::1', portOf(server)));
    expect(await readUntil(v6, '::1')).toBe('::1');
  });

  it('keeps accepted sockets writable after the client half-closes only with allowHalfOpen (the SOCKS5 listener)', async () => {
    const ns = netns('halfopen');
    const factory = netnsSocketFactory({ native, netns: ns.fd });
    const answerAfterFin = (s: Socket) => {
      s.resume();
      s.once('end', () => setImmediate(() => (s.writableEnded ? undefined : s.end('after your FIN'))));
    };
    for (const [more, want] of [
      [{ allowHalfOpen: true }, 'after your FIN'],
      [{}, ''],
    ] as const) {
      const server = await listen(factory, '127.0.0.1', 0, answerAfterFin, more);
      const client = await connected(connect(factory, '127.0.0.1', portOf(server)));
      const reply = readUntil(client, 'after your FIN');
      client.end();
      expect(await reply).toBe(want);
    }
  });
});
