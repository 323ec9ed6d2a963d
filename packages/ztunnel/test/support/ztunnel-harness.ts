/**
 * Whole ztunnels in process (ztunnel's `direct` test tier): the real app from
 * buildApp with a real config parsed from env, against the local control
 * plane over TLS, with SOCKS5 standing in for traffic capture. Each ztunnel
 * binds its listeners on its own loopback address so several run side by side
 * (each test FILE uses its own 127.0.N.x range so files can run in parallel).
 *
 * Besides starting ztunnels this module gives the tests what a user would use
 * to look at one: its log lines (awaitable), its admin / metrics / readiness
 * HTTP endpoints, a raw HBONE client (mTLS + HTTP/2 CONNECT with a certificate
 * from the control plane's CA), TCP echo servers that count what reached
 * them, and a TCP "gate" that makes the control plane unreachable on demand.
 * Nothing here sleeps: waits are for events, with a timeout that fails the
 * test and says what was seen.
 */
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders } from 'node:http2';
import { connect, createServer, type Server, type Socket } from 'node:net';
import tls from 'node:tls';
import {
  IstioCaClient,
  formatRejections,
  parseControlEnv,
  systemClock,
  systemRandom,
  type Env,
  type Snapshot,
  type WorkloadCertificate,
} from '@ambient/control';
import type { TestControlPlane } from '@ambient/control/testing';
import { createLogger } from '@ambient/dataplane';
import { buildApp, type App } from '../../src/app.js';
import { parseConfig } from '../../src/config.js';
import type { InpodPlatform } from '../../src/inpod/platform.js';
import { nodeSocketFactory, type OriginalDestination } from '@ambient/dataplane';

/** How long an awaited event may take before the test fails with what was seen. */
export const WAIT_MS = 10_000;

/** One parsed JSON log line. */
export type LogRecord = Record<string, unknown> & { readonly message?: string; readonly level?: string };

export interface ZtunnelUnderTest {
  readonly app: App;
  readonly ip: string;
  /** Raw JSON log lines, in order. */
  readonly logs: string[];
  /** Every log line parsed. */
  records(): LogRecord[];
  /** The first log line (already written or still to come) matching `predicate`. */
  waitForLog(predicate: (r: LogRecord) => boolean, what: string, timeoutMs?: number): Promise<LogRecord>;
  /** GET on one of its HTTP servers (`admin`, `stats`, `readiness`). */
  get(server: 'admin' | 'stats' | 'readiness', path: string): Promise<HttpReply>;
  close(): Promise<void>;
}

export interface WorkloadRef {
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string;
}

export interface StartZtunnelOptions {
  readonly ip: string;
  readonly workload: WorkloadRef;
  readonly env?: Env;
  /** Wait until the data-plane listeners are up (after the first sync). Default true. */
  readonly waitForProxies?: boolean;
  /** Stands in for SO_ORIGINAL_DST on the 15001 / 15006 listeners (default: the socket's local address). */
  readonly originalDestination?: OriginalDestination;
  /** How long inbound waits for an unknown local workload (default 500 ms here; 5 s in production). */
  readonly localWorkloadWaitMs?: number;
  /** The log level (default ZT_TEST_LOG_LEVEL or info); debug for tests that wait for debug lines. */
  readonly logLevel?: string;
  /** XDS_ADDRESS / CA_ADDRESS (default the control plane's own URL). */
  readonly controlPlaneUrl?: string;
  /** Shared (in-pod) mode on this platform: the ztunnel runs as the node agent (istio-system/ztunnel on node-a). */
  readonly inpod?: InpodPlatform;
}

export async function startZtunnel(cp: TestControlPlane, o: StartZtunnelOptions): Promise<ZtunnelUnderTest> {
  // Dedicated mode: the proxy runs as the workload and presents the workload's own token
  // (no impersonation, as ztunnel outside shared mode).
  const shared = o.inpod !== undefined;
  const token = shared
    ? cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' })
    : cp.token({ namespace: o.workload.namespace, serviceAccount: o.workload.serviceAccount, node: 'node-a' });
  const url = o.controlPlaneUrl ?? cp.url;
  const modeEnv: Env = shared
    ? { POD_NAME: 'ztunnel-node-a', POD_NAMESPACE: 'istio-system', PROXY_MODE: 'shared' }
    : {
        // As a per-workload proxy, it runs in the workload's pod: istiod checks NAMESPACE against the token.
        POD_NAME: o.workload.name,
        POD_NAMESPACE: o.workload.namespace,
        PROXY_MODE: 'dedicated',
        PROXY_WORKLOAD_INFO: `${o.workload.namespace}/${o.workload.name}/${o.workload.serviceAccount}`,
      };
  const env: Env = {
    XDS_ADDRESS: url,
    CA_ADDRESS: url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: token,
    NODE_NAME: 'node-a',
    ...modeEnv,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${o.ip}:0`,
    ZTUNNEL_STATS_ADDR: `${o.ip}:0`,
    ZTUNNEL_READINESS_ADDR: `${o.ip}:0`,
    ZTUNNEL_INBOUND_ADDR: `${o.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${o.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${o.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${o.ip}:15080`,
    ISTIO_META_DNS_PROXY_ADDR: `${o.ip}:15053`,
    TERMINATION_GRACE_PERIOD_SECONDS: '3',
    ...o.env,
  };
  const parsed = parseConfig(env, { fileExists: () => false, cpuCount: 2 }, []);
  if (!parsed.ok) throw new Error(formatRejections(parsed.errors));
  const logs: string[] = [];
  const waiters: Array<{ predicate: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }> = [];
  const parse = (line: string): LogRecord | undefined => {
    try {
      return JSON.parse(line) as LogRecord;
    } catch {
      return undefined;
    }
  };
  const logger = createLogger({
    format: 'json',
    level: o.logLevel ?? process.env['ZT_TEST_LOG_LEVEL'] ?? 'info',
    destination: {
      write: (line: string) => {
        logs.push(line);
        const rec = parse(line);
        if (rec === undefined) return;
        for (const w of [...waiters]) {
          if (w.predicate(rec)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(rec);
          }
        }
      },
    },
  });
  const app = await buildApp(parsed.value, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets: nodeSocketFactory,
    ...(o.originalDestination ? { originalDestination: o.originalDestination } : {}),
    ...(o.inpod ? { inpod: o.inpod, originalDestination: o.inpod.originalDestination } : {}),
    // ztunnel waits 5 s for an unknown local workload; tests that expect the 503 should not.
    localWorkloadWaitMs: o.localWorkloadWaitMs ?? 500,
  });
  const dumpLogs = () => {
    if (process.env['ZT_TEST_LOGS']) process.stderr.write(`--- ztunnel ${o.ip}\n${logs.join('')}`);
  };
  if (o.waitForProxies ?? true) {
    try {
      await withTimeout(app.proxiesStarted, WAIT_MS, () => `ztunnel ${o.ip} did not start its proxies:\n${logs.join('')}`);
    } catch (err) {
      await app.close();
      throw err;
    }
  }
  const records = () => logs.map(parse).filter((r): r is LogRecord => r !== undefined);
  return {
    app,
    ip: o.ip,
    logs,
    records,
    waitForLog: (predicate, what, timeoutMs = WAIT_MS) => {
      const found = records().find(predicate);
      if (found) return Promise.resolve(found);
      let waiter: (typeof waiters)[number] | undefined;
      const p = new Promise<LogRecord>((resolve) => {
        waiter = { predicate, resolve };
        waiters.push(waiter);
      });
      return withTimeout(p, timeoutMs, () => {
        if (waiter) waiters.splice(waiters.indexOf(waiter), 1);
        return `ztunnel ${o.ip}: no log line ${what} within ${timeoutMs} ms; lines:\n${logs.join('')}`;
      });
    },
    get: (server, path) => {
      const addr = app.addresses[server];
      if (addr === undefined) return Promise.reject(new Error(`ztunnel ${o.ip} has no ${server} server`));
      return httpGet(`http://${addr}${path}`);
    },
    close: async () => {
      dumpLogs();
      await app.close();
    },
  };
}

/** Resolves once the ztunnel's own workload state satisfies `predicate` (checked now and after every store write). */
export function waitForState(zt: ZtunnelUnderTest, predicate: (s: Snapshot) => boolean, what: string): Promise<void> {
  const store = zt.app.discovery.store;
  if (predicate(store.snapshot())) return Promise.resolve();
  let unsubscribe: () => void = () => {};
  const p = new Promise<void>((resolve) => {
    unsubscribe = store.subscribe((_change, snapshot) => {
      if (predicate(snapshot)) resolve();
    });
  });
  return withTimeout(p, WAIT_MS, () => `ztunnel ${zt.ip}: its workload state never had ${what}`).finally(() => unsubscribe());
}

/** Rejects with `describe()` unless `p` settles within `ms`. */
export function withTimeout<T>(p: Promise<T>, ms: number, describe: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(describe())), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

export interface HttpReply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

export function httpGet(url: string): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

export interface Echo {
  readonly server: Server;
  /** The peer address of each accepted connection, in order. */
  readonly peers: string[];
  /** Total bytes received over all connections. */
  readonly received: () => number;
  close(): Promise<void>;
}

/** A TCP echo server that also reports the peer address it saw for each connection and the bytes it received. */
export async function startEcho(ip: string, port: number): Promise<Echo> {
  const peers: string[] = [];
  let received = 0;
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    peers.push(`${s.remoteAddress}`);
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      received += d.length;
    });
    s.pipe(s);
  });
  server.listen(port, ip);
  await once(server, 'listening');
  return {
    server,
    peers,
    received: () => received,
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

/** Writes `payload` (without ending) and resolves with the echo of exactly that many bytes. */
export async function echoOnce(socket: Socket, payload: Buffer): Promise<Buffer> {
  const p = readExactly(socket, payload.length);
  socket.write(payload);
  return p;
}

/** Resolves when the socket is closed (already closed included), however it ended (FIN, RST, error). */
export function closed(socket: Socket, timeoutMs = WAIT_MS): Promise<void> {
  if (socket.closed) return Promise.resolve();
  socket.on('error', () => {});
  socket.resume(); // a closed peer is only noticed by reading
  return withTimeout(new Promise<void>((resolve) => socket.once('close', () => resolve())), timeoutMs, () => 'the socket was not closed');
}

/**
 * A workload certificate for `subject`, issued by the control plane's CA the
 * way a dedicated-mode proxy asks for its own (token of that identity, no
 * impersonation).
 */
export async function issueCertificate(cp: TestControlPlane, subject: { namespace: string; serviceAccount: string }, ttlSeconds = 3600): Promise<WorkloadCertificate> {
  const env: Env = {
    CA_ADDRESS: cp.url,
    XDS_ADDRESS: cp.url,
    CA_ROOT_CA: cp.rootCaPem,
    XDS_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: cp.token({ ...subject, node: 'node-a' }),
    POD_NAMESPACE: subject.namespace,
  };
  const control = parseControlEnv(env, { fileExists: () => false });
  if (!control.ok) throw new Error(formatRejections(control.errors));
  const c = control.value;
  const client = await IstioCaClient.create({
    connection: { address: cp.url, roots: c.caRootCa, altHostname: undefined },
    auth: { token: c.auth, clusterId: c.clusterId, extraHeaders: [] },
    clock: systemClock,
    readFile: (p) => readFile(p),
    impersonate: false,
    ttlSeconds,
  });
  if (!client.ok) throw new Error(formatRejections(client.errors));
  try {
    return await client.value.fetch({ trustDomain: cp.trustDomain, namespace: subject.namespace, serviceAccount: subject.serviceAccount });
  } finally {
    client.value.close();
  }
}

export interface RawHboneAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  /** The request stream (reading yields the tunnel's bytes after a 200). */
  readonly stream: ClientHttp2Stream;
}

export interface RawHboneClient {
  readonly session: ClientHttp2Session;
  /** The server's leaf certificate as presented in the handshake. */
  readonly peerCertificate: tls.PeerCertificate;
  /**
   * Sends one request (CONNECT unless `method` says otherwise) and, before any
   * answer, `earlyData` on the stream; resolves with the response status.
   */
  request(authority: string, o?: { method?: string; earlyData?: Buffer; headers?: Record<string, string> }): Promise<RawHboneAnswer>;
  close(): Promise<void>;
}

/**
 * A raw HBONE client: TLS 1.3 with the given workload certificate, ALPN h2,
 * the control plane's roots, and node:http2 on top. It checks nothing about
 * the server's identity beyond the roots (tests look at `peerCertificate`).
 */
export async function rawHboneClient(to: { ip: string; port: number }, cert: WorkloadCertificate, localAddress?: string): Promise<RawHboneClient> {
  const socket = tls.connect({
    host: to.ip,
    port: to.port,
    ...(localAddress !== undefined ? { localAddress } : {}),
    key: cert.privateKeyPem,
    cert: cert.chainPem.join(''),
    ca: [...cert.rootsPem],
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
  });
  socket.on('error', () => {});
  let session: ClientHttp2Session | undefined;
  try {
    await withTimeout(once(socket, 'secureConnect'), WAIT_MS, () => `TLS handshake with ${to.ip}:${to.port} did not complete`);
    session = http2.connect(`https://${to.ip}:${to.port}`, { createConnection: () => socket });
    session.on('error', () => {});
    await withTimeout(once(session, 'connect'), WAIT_MS, () => `HTTP/2 session with ${to.ip}:${to.port} did not start`);
  } catch (err) {
    session?.destroy();
    socket.destroy();
    throw err;
  }
  const peerCertificate = socket.getPeerCertificate();
  return {
    session,
    peerCertificate,
    request: (authority, o = {}) => {
      const method = o.method ?? 'CONNECT';
      const headers: http2.OutgoingHttpHeaders =
        method === 'CONNECT'
          ? { ':method': 'CONNECT', ':authority': authority, ...o.headers }
          : { ':method': method, ':authority': authority, ':scheme': 'https', ':path': '/', ...o.headers };
      const stream = session.request(headers, { endStream: false });
      stream.on('error', () => {});
      if (o.earlyData) stream.write(o.earlyData);
      const answer = new Promise<RawHboneAnswer>((resolve, reject) => {
        stream.once('response', (h: IncomingHttpHeaders) => resolve({ status: Number(h[':status']), headers: h, stream }));
        stream.once('close', () => reject(new Error(`stream for ${authority} closed without a response (rst code ${stream.rstCode})`)));
      });
      return withTimeout(answer, WAIT_MS, () => `no response to ${method} ${authority}`);
    },
    close: async () => {
      if (session.destroyed) return;
      const done = once(session, 'close').then(() => undefined);
      session.destroy();
      socket.destroy();
      await done;
    },
  };
}

/** Reads a stream to its end. */
export async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

/**
 * A TCP forwarder in front of the control plane that can be shut: while shut,
 * every connection is reset at once (the control plane is unreachable); once
 * opened, connections are piped to the target.
 */
export interface Gate {
  readonly port: number;
  /** Connections refused while shut. */
  readonly refused: () => number;
  /** Resolves when at least `n` connections have been refused. */
  refusedAtLeast(n: number): Promise<void>;
  open(): void;
  close(): Promise<void>;
}

export async function startGate(target: { host: string; port: number }): Promise<Gate> {
  let isOpen = false;
  let refused = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    if (!isOpen) {
      refused++;
      client.resetAndDestroy();
      for (const w of [...waiters]) {
        if (refused >= w.n) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
      return;
    }
    const upstream = connect({ host: target.host, port: target.port });
    sockets.add(upstream);
    upstream.on('close', () => sockets.delete(upstream));
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  return {
    port,
    refused: () => refused,
    refusedAtLeast: (n) =>
      refused >= n
        ? Promise.resolve()
        : withTimeout(new Promise<void>((resolve) => waiters.push({ n, resolve })), WAIT_MS * 2, () => `only ${refused} of ${n} connections reached the gate`),
    open: () => {
      isOpen = true;
    },
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Connects and reports whether the port accepted (true) or refused (false). */
export function tcpAccepts(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: ip, port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Prometheus samples of `name` whose labels include every pair in `labels`. */
export function samples(body: string, name: string, labels: Record<string, string> = {}): Array<{ labels: Record<string, string>; value: number }> {
  const out: Array<{ labels: Record<string, string>; value: number }> = [];
  for (const line of body.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const parsed: Record<string, string> = {};
    for (const lm of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) parsed[lm[1] as string] = lm[2] as string;
    if (Object.entries(labels).every(([k, v]) => parsed[k] === v)) out.push({ labels: parsed, value: Number(m[3]) });
  }
  return out;
}

/** The sum of matching samples. */
export function sampleSum(body: string, name: string, labels: Record<string, string> = {}): number {
  return samples(body, name, labels).reduce((a, s) => a + s.value, 0);
}
