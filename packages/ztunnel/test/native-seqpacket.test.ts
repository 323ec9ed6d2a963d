/**
 * AF_UNIX SOCK_SEQPACKET with SCM_RIGHTS (the ZDS transport) on a real kernel:
 * packet boundaries, fd passing (a network namespace fd arrives usable),
 * truncation flags, close from either side, no blocked loop, no dropped
 * packets when the socket is full, no leaked descriptors, and a closed handle
 * no longer keeps the process alive.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { NativeError, nativeAddonPath, type Native, type SeqpacketPacket, type SeqpacketServer, type SeqpacketSocket } from '../src/platform/native.js';
import { Cleanup, createNetns, openFdCount, requireRootAndNative } from './support/native-netns.js';

let native: Native;
const cleanup = new Cleanup();

beforeAll(() => {
  native = requireRootAndNative();
});

afterEach(async () => {
  await cleanup.run();
});

function socketPath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'amb-native-seq-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'ztunnel.sock');
}

function listen(path: string): SeqpacketServer {
  const server = native.seqpacketListen(path);
  cleanup.add(() => server.close());
  return server;
}

/** A connected pair: [client, server side]. */
async function pair(server: SeqpacketServer, path: string): Promise<[SeqpacketSocket, SeqpacketSocket]> {
  const accepted = new Promise<SeqpacketSocket>((resolve) => server.onConnection(resolve));
  const client = native.seqpacketConnect(path);
  cleanup.add(() => client.close());
  const serverSide = await accepted;
  cleanup.add(() => serverSide.close());
  return [client, serverSide];
}

/** Collects packets; `next(n)` resolves once n packets (in total) have arrived. */
function collect(socket: SeqpacketSocket): { packets: SeqpacketPacket[]; next(n: number): Promise<SeqpacketPacket[]> } {
  const packets: SeqpacketPacket[] = [];
  const waiters: Array<() => void> = [];
  socket.onPacket((p) => {
    packets.push(p);
    for (const w of waiters.splice(0)) w();
  });
  return {
    packets,
    next(n) {
      return new Promise((resolve) => {
        const check = () => (packets.length >= n ? resolve(packets.slice(0, n)) : waiters.push(check));
        check();
      });
    },
  };
}

function closed(socket: SeqpacketSocket): Promise<NativeError | undefined> {
  return new Promise((resolve) => socket.onClose(resolve));
}

function closeAll(fds: readonly number[]): void {
  for (const fd of fds) native.closeFd(fd);
}

describe('SEQPACKET', () => {
  it('keeps packet boundaries in both directions', async () => {
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const atServer = collect(serverSide);
    const atClient = collect(client);

    client.send(Buffer.from('a'));
    client.send(Buffer.from('bb'));
    client.send(new Uint8Array(1024).fill(7));
    const got = await atServer.next(3);
    expect(got.map((p) => p.data.length)).toEqual([1, 2, 1024]);
    expect(got[0]?.data.toString()).toBe('a');
    expect(got[1]?.data.toString()).toBe('bb');
    expect(got.every((p) => !p.truncated && p.fds.length === 0)).toBe(true);

    serverSide.send(Buffer.from('ack'));
    const [reply] = await atClient.next(1);
    expect(reply?.data.toString()).toBe('ack');
  });

  it('passes descriptors with SCM_RIGHTS: a network namespace fd arrives as a usable fd of the same namespace', async () => {
    const ns = createNetns(native, 'seq');
    cleanup.add(() => ns.delete());
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const atServer = collect(serverSide);

    const extra = native.openNetns('/proc/thread-self/ns/net');
    client.send(Buffer.from('add'), [ns.fd, extra]);
    native.closeFd(extra); // the sender's copy; the receiver has its own
    const [p] = await atServer.next(1);
    expect(p?.data.toString()).toBe('add');
    expect(p?.truncated).toBe(false);
    expect(p?.fds).toHaveLength(2);
    const [received, receivedSelf] = p?.fds ?? [];
    if (received === undefined || receivedSelf === undefined) throw new Error('no fds received');
    cleanup.add(() => closeAll([received, receivedSelf]));
    expect(received).not.toBe(ns.fd);
    expect(native.netnsId(received)).toEqual(native.netnsId(ns.fd));
    expect(native.netnsId(receivedSelf)).not.toEqual(native.netnsId(ns.fd));
    // Usable for what ZDS needs it for: creating a socket in the pod's namespace.
    native.closeFd(native.tcpListener({ netns: received, host: '127.0.0.1', port: 15001, backlog: 8 }));
    // Received with MSG_CMSG_CLOEXEC.
    const flags = (await import('node:fs')).readFileSync(`/proc/self/fdinfo/${received}`, 'utf8');
    const octal = /flags:\s+(\d+)/.exec(flags)?.[1] ?? '0';
    expect(parseInt(octal, 8) & 0o2000000).not.toBe(0);
  });

  it('flags a packet longer than 1024 bytes, or with more fds than fit, as truncated (extra fds are not leaked)', async () => {
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const atServer = collect(serverSide);

    client.send(new Uint8Array(2000).fill(1));
    client.send(Buffer.from('next'));
    const [big, next] = await atServer.next(2);
    expect(big?.truncated).toBe(true);
    expect(big?.data.length).toBe(1024);
    expect(next?.truncated).toBe(false);
    expect(next?.data.toString()).toBe('next');

    const before = openFdCount();
    const self = native.openNetns('/proc/thread-self/ns/net');
    client.send(Buffer.from('many'), Array.from({ length: 40 }, () => self));
    native.closeFd(self);
    const [, , many] = await atServer.next(3);
    expect(many?.truncated).toBe(true);
    expect(many?.fds.length).toBeLessThan(40);
    closeAll(many?.fds ?? []);
    expect(openFdCount()).toBe(before);
  });

  it('reports a close by either side to the other side, and nothing to the side that closed', async () => {
    const path = socketPath();
    const server = listen(path);

    const [client1, server1] = await pair(server, path);
    let clientCloseCalls = 0;
    client1.onClose(() => clientCloseCalls++);
    const server1Closed = closed(server1);
    client1.close();
    expect(await server1Closed).toBeUndefined();

    const [client2, server2] = await pair(server, path);
    const client2Closed = closed(client2);
    server2.close();
    expect(await client2Closed).toBeUndefined();
    expect(clientCloseCalls).toBe(0);

    expect(() => client1.send(Buffer.from('late'))).toThrow(NativeError);
    client1.close(); // idempotent
  });

  it('never blocks the event loop while waiting for packets', async () => {
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const atServer = collect(serverSide);
    const order: string[] = [];
    const packet = atServer.next(1).then(() => order.push('packet'));
    await new Promise<void>((resolve) =>
      setTimeout(() => {
        order.push('timer');
        client.send(Buffer.from('after the timer'));
        resolve();
      }, 20),
    );
    await packet;
    expect(order).toEqual(['timer', 'packet']);
  });

  it('queues packets when the socket is full and sends all of them, in order, with their fds', async () => {
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const self = native.openNetns('/proc/thread-self/ns/net');
    const total = 2000; // far beyond the receive queue (backlog-sized): sendmsg says EAGAIN
    for (let i = 0; i < total; i++) {
      const data = Buffer.alloc(900, i % 251);
      data.writeUInt32BE(i, 0);
      client.send(data, i % 100 === 0 ? [self] : []);
    }
    native.closeFd(self); // queued packets hold their own duplicates
    const got = await collect(serverSide).next(total);
    expect(got.map((p) => p.data.readUInt32BE(0))).toEqual(Array.from({ length: total }, (_, i) => i));
    const withFds = got.filter((p) => p.fds.length > 0);
    expect(withFds).toHaveLength(total / 100);
    for (const p of withFds) {
      expect(p.fds).toHaveLength(1);
      closeAll(p.fds);
    }
  });

  it('rejects invalid packets synchronously without breaking the connection', async () => {
    const path = socketPath();
    const [client, serverSide] = await pair(listen(path), path);
    const atServer = collect(serverSide);
    const closedFd = native.openNetns('/proc/thread-self/ns/net');
    native.closeFd(closedFd);
    expect(() => client.send(Buffer.from('x'), [closedFd])).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'sendmsg' }));
    expect(() => client.send(Buffer.alloc(1024 * 1024))).toThrow(expect.objectContaining({ code: 'EMSGSIZE' }));
    client.send(Buffer.from('still fine'));
    const [p] = await atServer.next(1);
    expect(p?.data.toString()).toBe('still fine');
  });

  it('fails to connect with the errno: ENOENT for no socket, ECONNREFUSED for no listener', () => {
    const path = socketPath();
    expect(() => native.seqpacketConnect(path)).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'connect' }));
    writeFileSync(path, 'not a socket');
    expect(() => native.seqpacketConnect(path)).toThrow(expect.objectContaining({ code: 'ECONNREFUSED', syscall: 'connect' }));
  });

  it('replaces a stale socket file, never another file, and removes its socket file on close', async () => {
    const path = socketPath();
    const first = native.seqpacketListen(path);
    const firstIno = statSync(path).ino;
    // A crashed istio-cni leaves its socket file behind: the next listener takes over the path.
    const second = listen(path);
    expect(statSync(path).ino).not.toBe(firstIno);
    first.close(); // must not remove the file that now belongs to `second`
    expect(existsSync(path)).toBe(true);
    const [client] = await pair(second, path);
    client.close();
    second.close();
    expect(existsSync(path)).toBe(false);

    writeFileSync(path, 'precious');
    expect(() => native.seqpacketListen(path)).toThrow(expect.objectContaining({ code: 'EADDRINUSE', syscall: 'bind' }));
    expect(statSync(path).isFile()).toBe(true);
  });

  it('leaks no descriptors over many connections with fds', async () => {
    const path = socketPath();
    const before = openFdCount();
    const server = native.seqpacketListen(path);
    const serverSides: SeqpacketSocket[] = [];
    const ended: Array<Promise<NativeError | undefined>> = [];
    server.onConnection((s) => {
      serverSides.push(s);
      ended.push(closed(s));
      s.onPacket((p) => {
        closeAll(p.fds);
        s.send(Buffer.from('ack'));
      });
    });
    for (let i = 0; i < 20; i++) {
      const client = native.seqpacketConnect(path);
      const self = native.openNetns('/proc/thread-self/ns/net');
      const acked = new Promise<void>((resolve) => client.onPacket(() => resolve()));
      client.send(Buffer.from(`add ${i}`), [self]);
      native.closeFd(self);
      await acked;
      client.close();
    }
    await Promise.all(ended);
    expect(serverSides).toHaveLength(20);
    server.close();
    expect(openFdCount()).toBe(before);
  });

  it('does not keep the process alive once closed', async () => {
    // A child process that exits only if every handle is released after close().
    const path = socketPath();
    const script = `
      const b = require(${JSON.stringify(nativeAddonPath())});
      const server = b.seqpacketListen(${JSON.stringify(path)}, (h) => {
        b.seqpacketStart(h, (data) => { b.seqpacketSend(h, data, []); }, () => { b.seqpacketClose(h); b.seqpacketServerClose(server); });
      });
      const client = b.seqpacketConnect(${JSON.stringify(path)});
      b.seqpacketStart(client, (data) => { process.stdout.write(String(data)); b.seqpacketClose(client); }, () => {});
      b.seqpacketSend(client, Buffer.from('echo'), []);
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    cleanup.add(() => child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(out).toBe('echo');
    expect(code).toBe(0);
  });
});
