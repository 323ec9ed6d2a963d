/**
 * Whole ztunnels in process (ztunnel's `direct` test tier): the real app from
 * buildApp with a real config parsed from env, against the local control
 * plane over TLS, with SOCKS5 standing in for traffic capture. Each ztunnel
 * binds its listeners on its own loopback address so several run side by side.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { formatRejections, systemClock, systemRandom, type Env } from '@ambient/control';
import type { TestControlPlane } from '@ambient/control/testing';
import { createLogger } from '../../src/access-log.js';
import { buildApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';
import { nodeSocketFactory } from '../../src/platform/sockets.js';

export interface ZtunnelUnderTest {
  readonly app: App;
  readonly ip: string;
  readonly logs: string[];
  close(): Promise<void>;
}

export async function startZtunnel(
  cp: TestControlPlane,
  o: { ip: string; workload: { namespace: string; name: string; serviceAccount: string }; env?: Env },
): Promise<ZtunnelUnderTest> {
  // Dedicated mode: the proxy runs as the workload and presents the workload's own token
  // (no impersonation, as ztunnel outside shared mode).
  const token = cp.token({ namespace: o.workload.namespace, serviceAccount: o.workload.serviceAccount, node: 'node-a' });
  const env: Env = {
    XDS_ADDRESS: cp.url,
    CA_ADDRESS: cp.url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: token,
    // As a per-workload proxy, it runs in the workload's pod: istiod checks NAMESPACE against the token.
    POD_NAME: o.workload.name,
    POD_NAMESPACE: o.workload.namespace,
    NODE_NAME: 'node-a',
    PROXY_MODE: 'dedicated',
    PROXY_WORKLOAD_INFO: `${o.workload.namespace}/${o.workload.name}/${o.workload.serviceAccount}`,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${o.ip}:0`,
    ZTUNNEL_STATS_ADDR: `${o.ip}:0`,
    ZTUNNEL_READINESS_ADDR: `${o.ip}:0`,
    ZTUNNEL_INBOUND_ADDR: `${o.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${o.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${o.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${o.ip}:15080`,
    TERMINATION_GRACE_PERIOD_SECONDS: '3',
    ...o.env,
  };
  const parsed = parseConfig(env, { fileExists: () => false, cpuCount: 2 }, []);
  if (!parsed.ok) throw new Error(formatRejections(parsed.errors));
  const logs: string[] = [];
  const logger = createLogger({ format: 'json', level: 'info', destination: { write: (l: string) => void logs.push(l) } });
  const app = await buildApp(parsed.value, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets: nodeSocketFactory,
  });
  const slow = setTimeout(() => process.stderr.write(`ztunnel ${o.ip} not started after 3s:\n${logs.join('')}`), 3000);
  await app.proxiesStarted;
  clearTimeout(slow);
  return {
    app,
    ip: o.ip,
    logs,
    close: async () => {
      if (process.env['ZT_TEST_LOGS']) process.stderr.write(`--- ztunnel ${o.ip}\n${logs.join('')}`);
      await app.close();
    },
  };
}

/** A TCP echo server that also reports the peer address it saw for each connection. */
export async function startEcho(ip: string, port: number): Promise<{ server: Server; peers: string[]; close(): Promise<void> }> {
  const peers: string[] = [];
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    peers.push(`${s.remoteAddress}`);
    s.on('error', () => {});
    s.pipe(s);
  });
  server.listen(port, ip);
  await once(server, 'listening');
  return {
    server,
    peers,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Opens a SOCKS5 CONNECT through a ztunnel; resolves with the socket after the reply, or the reply code on failure. */
export async function socks5Connect(proxy: { ip: string; port: number }, dst: { ip: string; port: number }, localAddress?: string): Promise<{ socket: Socket; reply: number }> {
  const socket = connect(localAddress === undefined ? { host: proxy.ip, port: proxy.port } : { host: proxy.ip, port: proxy.port, localAddress });
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(Buffer.from([5, 1, 0]));
  await readExactly(socket, 2);
  const ip = dst.ip.split('.').map(Number);
  socket.write(Buffer.from([5, 1, 0, 1, ...ip, dst.port >> 8, dst.port & 255]));
  const reply = await readExactly(socket, 10);
  return { socket, reply: reply[1] ?? 255 };
}

export function readExactly(socket: Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        socket.off('data', onData);
        socket.off('close', onClose);
        const rest = buf.subarray(n);
        if (rest.length > 0) socket.unshift(rest);
        socket.pause();
        resolve(buf.subarray(0, n));
      }
    };
    const onClose = () => reject(new Error(`socket closed after ${buf.length} of ${n} bytes`));
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.resume();
  });
}

/** Sends `payload`, half-closes, and collects everything until the peer ends. */
export async function roundTrip(socket: Socket, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.resume();
  socket.end(payload);
  await once(socket, 'end');
  return Buffer.concat(chunks);
}
