/**
 * Sockets inside a network namespace, made by the test process itself: the
 * native module creates the socket in the namespace (setns -> socket ->
 * setns back), and Node drives it (net.Socket / net.Server / dgram). Sockets
 * made here carry no mark, so a captured pod's iptables rules apply to them
 * exactly as to an application's own sockets.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { once } from 'node:events';
import { request } from 'node:http';
import { createServer, Socket, type Server } from 'node:net';
import { loadNative, type Native } from '@ambient/ztunnel/native';
import type { Netns } from './topology.js';

let native: Native | undefined;

export function getNative(): Native {
  native ??= loadNative();
  return native;
}

/** Runs `make(fd)` with the namespace open, and closes the namespace fd afterwards. */
function withNetns<T>(netns: Netns, make: (fd: number) => T): T {
  const n = getNative();
  const fd = n.openNetns(netns.path);
  try {
    return make(fd);
  } finally {
    n.closeFd(fd);
  }
}

/** A TCP connection from inside `netns`; resolves once connected (which, captured, is the local redirect). */
export async function connectFrom(netns: Netns, host: string, port: number, timeoutMs = 5_000): Promise<Socket> {
  const fd = withNetns(netns, (ns) => getNative().tcpSocket({ netns: ns, family: host.includes(':') ? 6 : 4 }));
  // manualStart: do not read before connected. (`readable: false, writable: false` would create
  // the stream already ended on Node 20; see packages/ztunnel/src/platform/netns-sockets.ts.)
  const socket = new Socket({ fd, manualStart: true } as ConstructorParameters<typeof Socket>[0]);
  socket.setNoDelay(true);
  const timer = setTimeout(() => socket.destroy(new Error(`connect to ${host}:${port} from ${netns.name} timed out after ${timeoutMs} ms`)), timeoutMs);
  try {
    socket.connect({ host, port });
    await once(socket, 'connect');
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** A TCP server listening inside `netns`. */
export async function listenIn(netns: Netns, host: string, port: number, onConnection: (s: Socket) => void): Promise<Server> {
  const fd = withNetns(netns, (ns) => getNative().tcpListener({ netns: ns, host, port, backlog: 511 }));
  const server = createServer(onConnection);
  server.listen({ fd });
  await once(server, 'listening');
  return server;
}

/** A bound UDP socket inside `netns`. */
export async function udpIn(netns: Netns, host: string, port: number): Promise<UdpSocket> {
  const fd = withNetns(netns, (ns) => getNative().udpSocket({ netns: ns, host, port }));
  const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
  // With an fd, 'listening' can fire inside bind(): take the callback, not a later once().
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ fd }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return socket;
}

export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** An HTTP/1.1 GET from inside `netns` (ztunnel's admin, metrics and readiness servers). */
export async function httpGet(netns: Netns, host: string, port: number, path: string, timeoutMs = 5_000): Promise<HttpResponse> {
  const socket = await connectFrom(netns, host, port, timeoutMs);
  return new Promise<HttpResponse>((resolve, reject) => {
    const req = request({ host, port, path, method: 'GET', createConnection: () => socket, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`GET http://${host}:${port}${path} in ${netns.name} timed out`)));
    req.on('error', (err) => {
      socket.destroy();
      reject(err);
    });
    req.end();
  });
}
