/**
 * The native seam on a real kernel (as root): sockets created inside a network
 * namespace live there, the calling thread comes back to its own namespace,
 * SO_MARK / SO_REUSEPORT / IP_TRANSPARENT take effect, SO_ORIGINAL_DST reads
 * what an iptables REDIRECT changed, and netnsId tells namespaces apart. All
 * traffic stays on loopback inside throwaway namespaces.
 */
import { mkdtempSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Server, Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NativeError, type Native } from '../src/platform/native.js';
import { nativeOriginalDestination, netnsSocketFactory } from '../src/platform/netns-sockets.js';
import {
  Cleanup,
  closeServer,
  connected,
  createNetns,
  failure,
  nextConnection,
  openFdCount,
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

/** A regular file, removed at cleanup. */
function regularFile(): string {
  const dir = mkdtempSync(join(tmpdir(), 'amb-native-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'not-a-namespace');
  writeFileSync(file, 'x');
  return file;
}

function fdOf(socket: Socket): number {
  const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
  expect(fd).toBeGreaterThanOrEqual(0);
  return fd;
}

function ownFd(fd: number): number {
  cleanup.add(() => native.closeFd(fd));
  return fd;
}

/** A net.Server over a native listener in ns; every accepted socket is destroyed at cleanup. */
async function serve(ns: TestNetns | undefined, host: string, port: number, reply = 'pong'): Promise<Server> {
  const factory = netnsSocketFactory({ native, ...(ns === undefined ? {} : { netns: ns.fd }) });
  const accepted: Socket[] = [];
  const server = await factory.listen({ host, port }, (s) => {
    accepted.push(s);
    s.on('error', () => {});
    s.on('data', () => s.write(reply));
  });
  cleanup.add(async () => {
    for (const s of accepted) s.destroy();
    await closeServer(server);
  });
  return server;
}

function portOf(server: Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('server has no TCP address');
  return address.port;
}

function dial(ns: TestNetns, ip: string, port: number, localAddress?: string): Socket {
  const socket = netnsSocketFactory({ native, netns: ns.fd, transparent: 'required' }).connect(
    localAddress === undefined ? { ip, port } : { ip, port, localAddress },
  );
  cleanup.add(() => socket.destroy());
  return socket;
}

function homeNetns(): { inode: bigint; dev: bigint } {
  const fd = native.openNetns('/proc/thread-self/ns/net');
  try {
    return native.netnsId(fd);
  } finally {
    native.closeFd(fd);
  }
}

function expectNativeError(fn: () => unknown, code: string, syscall?: string): NativeError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(NativeError);
  const err = caught as NativeError;
  expect(err.code).toBe(code);
  if (syscall !== undefined) expect(err.syscall).toBe(syscall);
  return err;
}

describe('sockets in a network namespace', () => {
  it('a listener created in a namespace is reachable from inside it and not from another namespace', async () => {
    const a = netns('a');
    const b = netns('b');
    const server = await serve(a, '127.0.0.1', 0);
    const port = portOf(server);

    const inside = await connected(dial(a, '127.0.0.1', port));
    inside.write('ping');
    expect(await readUntil(inside, 'pong')).toBe('pong');

    // b is a fresh namespace: nothing listens on its loopback.
    const err = await failure(dial(b, '127.0.0.1', port));
    expect(err.code).toBe('ECONNREFUSED');
  });

  it('returns the thread to its own namespace after creating sockets elsewhere, also when creation fails', () => {
    const a = netns('home');
    const home = homeNetns();
    expect(native.netnsId(a.fd)).not.toEqual(home);

    ownFd(native.tcpListener({ netns: a.fd, host: '127.0.0.1', port: 15001, backlog: 8 }));
    expect(homeNetns()).toEqual(home);
    // Same port again, no SO_REUSEPORT: bind fails inside the namespace.
    expectNativeError(() => native.tcpListener({ netns: a.fd, host: '127.0.0.1', port: 15001, backlog: 8 }), 'EADDRINUSE', 'bind');
    expect(homeNetns()).toEqual(home);
    ownFd(native.udpSocket({ netns: a.fd, host: '127.0.0.1', port: 0 }));
    ownFd(native.tcpSocket({ netns: a.fd, family: 6 }));
    expect(homeNetns()).toEqual(home);
  });

  it('fails with the setns error for a descriptor that is not a namespace, creating nothing', () => {
    const file = regularFile();
    const fd = ownFd(openSync(file, 'r'));
    const before = openFdCount();
    expectNativeError(() => native.tcpListener({ netns: fd, host: '127.0.0.1', port: 0, backlog: 8 }), 'EINVAL', 'setns');
    expect(openFdCount()).toBe(before);
  });

  it('rejects a host that is not a numeric address', () => {
    expectNativeError(() => native.tcpListener({ host: 'localhost', port: 0, backlog: 8 }), 'EINVAL', 'inet_pton');
  });
});

describe('socket options', () => {
  it('sets SO_MARK on listeners, outgoing sockets and UDP sockets, and accepted sockets inherit it', async () => {
    const a = netns('mark');
    const listener = ownFd(native.tcpListener({ netns: a.fd, host: '127.0.0.1', port: 0, backlog: 8, mark: 1337 }));
    expect(native.socketMark(listener)).toBe(1337);
    expect(native.socketMark(ownFd(native.tcpSocket({ netns: a.fd, family: 4, mark: 0x111 })))).toBe(0x111);
    expect(native.socketMark(ownFd(native.udpSocket({ netns: a.fd, host: '::', port: 0, mark: 0xffffffff })))).toBe(0xffffffff);
    expect(native.socketMark(ownFd(native.tcpSocket({ netns: a.fd, family: 4 })))).toBe(0);

    const factory = netnsSocketFactory({ native, netns: a.fd, mark: 1337 });
    const server = await factory.listen({ host: '127.0.0.1', port: 0 }, (s) => s.on('error', () => {}));
    cleanup.add(() => closeServer(server));
    const accepted = nextConnection(server);
    const client = factory.connect({ ip: '127.0.0.1', port: portOf(server) });
    cleanup.add(() => client.destroy());
    await connected(client);
    const serverSide = await accepted;
    cleanup.add(() => serverSide.destroy());
    expect(native.socketMark(fdOf(client))).toBe(1337);
    expect(native.socketMark(fdOf(serverSide))).toBe(1337);
  });

  it('SO_REUSEPORT lets two listeners share a port; without it the second bind is EADDRINUSE', () => {
    const a = netns('reuse');
    const first = ownFd(native.tcpListener({ netns: a.fd, host: '0.0.0.0', port: 15008, backlog: 8, reusePort: true }));
    const second = ownFd(native.tcpListener({ netns: a.fd, host: '0.0.0.0', port: 15008, backlog: 8, reusePort: true }));
    expect(first).not.toBe(second);
    const err = expectNativeError(
      () => native.tcpListener({ netns: a.fd, host: '0.0.0.0', port: 15008, backlog: 8 }),
      'EADDRINUSE',
      'bind',
    );
    expect(err.message).toContain('0.0.0.0:15008');
    expect(err.errno).toBe(98);
    // UDP too (the DNS proxy's 15053).
    ownFd(native.udpSocket({ netns: a.fd, host: '0.0.0.0', port: 15053, reusePort: true }));
    ownFd(native.udpSocket({ netns: a.fd, host: '0.0.0.0', port: 15053, reusePort: true }));
    expectNativeError(() => native.udpSocket({ netns: a.fd, host: '0.0.0.0', port: 15053 }), 'EADDRINUSE', 'bind');
  });

  it('IP_TRANSPARENT binds a non-local source address, and the server sees that address (istio-cni routing)', async () => {
    const a = netns('tproxy');
    // istio-cni's return path for spoofed sources: marked packets are delivered locally (table 100).
    a.exec('ip', ['addr', 'add', '10.99.0.1/32', 'dev', 'lo']);
    a.exec('ip', ['rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100']);
    a.exec('ip', ['route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100']);

    expectNativeError(
      () => native.tcpSocket({ netns: a.fd, family: 4, bind: { ip: '10.99.0.77', port: 0 } }),
      'EADDRNOTAVAIL',
      'bind',
    );
    ownFd(native.tcpSocket({ netns: a.fd, family: 4, transparent: true, bind: { ip: '10.99.0.77', port: 0 } }));
    ownFd(native.tcpSocket({ netns: a.fd, family: 4, freebind: true, bind: { ip: '10.99.0.78', port: 0 } }));

    const factory = netnsSocketFactory({ native, netns: a.fd, mark: 0x111 });
    const server = await factory.listen({ host: '10.99.0.1', port: 8080 }, (s) => {
      s.on('error', () => {});
      s.end(`you are ${s.remoteAddress ?? '?'}`);
    });
    cleanup.add(() => closeServer(server));
    const client = await connected(dial(a, '10.99.0.1', 8080, '10.99.0.77'));
    expect(client.localAddress).toBe('10.99.0.77');
    expect(await readUntil(client, 'you are 10.99.0.77')).toBe('you are 10.99.0.77');
  });

  it('a listener on :: is dual-stack', async () => {
    const a = netns('dual');
    const server = await serve(a, '::', 0);
    for (const ip of ['127.0.0.1', '::1']) {
      const client = await connected(dial(a, ip, portOf(server)));
      client.write('ping');
      expect(await readUntil(client, 'pong')).toBe('pong');
    }
  });
});

describe('SO_ORIGINAL_DST', () => {
  async function acceptedVia(a: TestNetns, server: Server, ip: string, port: number): Promise<Socket> {
    const accepted = nextConnection(server);
    await connected(dial(a, ip, port));
    const socket = await accepted;
    cleanup.add(() => socket.destroy());
    return socket;
  }

  it('reads the destination an iptables REDIRECT replaced (IPv4, dual-stack IPv4-mapped, IPv6)', async () => {
    const a = netns('origdst');
    a.exec('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '9999', '-j', 'REDIRECT', '--to-ports', '15001']);
    a.exec('iptables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '9998', '-j', 'REDIRECT', '--to-ports', '15002']);
    a.exec('ip6tables', ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '--dport', '9997', '-j', 'REDIRECT', '--to-ports', '15003']);
    const v4 = await serve(a, '127.0.0.1', 15001);
    const dual = await serve(a, '::', 15002);
    const v6 = await serve(a, '::1', 15003);
    const originalDestination = nativeOriginalDestination(native);

    const s4 = await acceptedVia(a, v4, '127.0.0.1', 9999);
    expect(s4.localPort).toBe(15001);
    expect(native.originalDestination(fdOf(s4))).toEqual({ ip: '127.0.0.1', port: 9999 });
    expect(originalDestination(s4)).toEqual({ ip: '127.0.0.1', port: 9999 });

    const mapped = await acceptedVia(a, dual, '127.0.0.1', 9998);
    expect(mapped.localAddress).toBe('::ffff:127.0.0.1');
    expect(native.originalDestination(fdOf(mapped))).toEqual({ ip: '127.0.0.1', port: 9998 });

    const s6 = await acceptedVia(a, v6, '::1', 9997);
    expect(native.originalDestination(fdOf(s6))).toEqual({ ip: '::1', port: 9997 });

    // Not redirected, but tracked: the original destination is where the client connected.
    const direct = await acceptedVia(a, v4, '127.0.0.1', 15001);
    expect(native.originalDestination(fdOf(direct))).toEqual({ ip: '127.0.0.1', port: 15001 });
  });

  it('is undefined without redirection, and the OriginalDestination falls back to the local address', async () => {
    const a = netns('nonat');
    const server = await serve(a, '127.0.0.1', 0);
    const accepted = nextConnection(server);
    await connected(dial(a, '127.0.0.1', portOf(server)));
    const socket = await accepted;
    cleanup.add(() => socket.destroy());
    expect(native.originalDestination(fdOf(socket))).toBeUndefined();
    expect(nativeOriginalDestination(native)(socket)).toEqual({ ip: '127.0.0.1', port: portOf(server) });
  });
});

describe('netnsId', () => {
  it('identifies a namespace by (inode, dev), equal for two fds of the same namespace', () => {
    const a = netns('id-a');
    const b = netns('id-b');
    const st = statSync(`/var/run/netns/${a.name}`, { bigint: true });
    expect(native.netnsId(a.fd)).toEqual({ inode: st.ino, dev: st.dev });
    const again = ownFd(native.openNetns(`/var/run/netns/${a.name}`));
    expect(native.netnsId(again)).toEqual(native.netnsId(a.fd));
    expect(native.netnsId(b.fd)).not.toEqual(native.netnsId(a.fd));
  });

  it('rejects a regular file and another kind of namespace with ENOTNETNS, and a closed fd with EBADF', () => {
    const file = regularFile();
    const regular = ownFd(openSync(file, 'r'));
    expectNativeError(() => native.netnsId(regular), 'ENOTNETNS');
    const uts = ownFd(openSync('/proc/self/ns/uts', 'r'));
    expectNativeError(() => native.netnsId(uts), 'ENOTNETNS');

    const before = openFdCount();
    expectNativeError(() => native.openNetns('/proc/self/ns/uts'), 'ENOTNETNS');
    expectNativeError(() => native.openNetns(file), 'ENOTNETNS');
    expectNativeError(() => native.openNetns('/var/run/netns/amb-native-does-not-exist'), 'ENOENT', 'open');
    expect(openFdCount()).toBe(before);

    const closed = native.openNetns('/proc/thread-self/ns/net');
    native.closeFd(closed);
    expectNativeError(() => native.netnsId(closed), 'EBADF');
    expectNativeError(() => native.closeFd(closed), 'EBADF', 'close');
  });
});
