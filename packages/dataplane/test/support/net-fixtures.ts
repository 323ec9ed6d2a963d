/**
 * Small real-socket fixtures for the copy, client and pool tests: TCP servers
 * on 127.0.0.1 (echo, scripted), a TCP relay that can be frozen (a peer that
 * silently stops answering, like an iptables DROP), and polling for
 * conditions that have no event (open sockets in this process).
 */
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net';

export interface TcpServer {
  readonly port: number;
  readonly connections: Socket[];
  /** Resolves with the `n`th accepted connection (1-based). */
  nextConnection(n?: number): Promise<Socket>;
  close(): Promise<void>;
}

/** A TCP server with allowHalfOpen; `onConnection` decides what each connection does (default: echo). */
export async function startTcpServer(onConnection: (socket: Socket) => void = (s) => s.pipe(s)): Promise<TcpServer> {
  const connections: Socket[] = [];
  const waiters: Array<() => void> = [];
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    connections.push(socket);
    socket.on('error', () => {});
    onConnection(socket);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    nextConnection(n = connections.length + 1) {
      return new Promise<Socket>((resolve) => {
        const check = () => {
          const c = connections[n - 1];
          if (c) resolve(c);
          else waiters.push(check);
        };
        check();
      });
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const c of connections) c.destroy();
      await closed;
    },
  };
}

/** A connected client socket (allowHalfOpen) to 127.0.0.1:port. */
export function connectTcp(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port, allowHalfOpen: true });
    socket.once('connect', () => {
      socket.removeListener('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export interface FreezableRelay {
  readonly port: number;
  /** Stops forwarding in both directions for every current connection (nothing is closed; later connections flow). */
  freeze(): void;
  close(): Promise<void>;
}

/** A TCP relay to 127.0.0.1:targetPort that can be frozen. */
export async function startFreezableRelay(targetPort: number): Promise<FreezableRelay> {
  const pairs: Array<[Socket, Socket]> = [];
  const server = await startTcpServer((downstream) => {
    const upstream = netConnect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true });
    upstream.on('error', () => downstream.destroy());
    downstream.on('error', () => upstream.destroy());
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
    pairs.push([downstream, upstream]);
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
  return {
    port: server.port,
    freeze() {
      for (const [d, u] of pairs) {
        d.unpipe(u);
        u.unpipe(d);
        d.pause();
        u.pause();
      }
    },
    async close() {
      for (const [d, u] of pairs) {
        d.destroy();
        u.destroy();
      }
      await server.close();
    },
  };
}

/** Polls `check` (every 5 ms) until it returns true; fails with `what` after `timeoutMs`. */
export async function eventually(check: () => boolean, what: string, timeoutMs = 5_000): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** TCP sockets (client and server side) currently open in this process. */
export function openTcpSockets(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
}
