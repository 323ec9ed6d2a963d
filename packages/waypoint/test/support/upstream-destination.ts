/**
 * The destination side of the waypoint's upstream tests: for each endpoint a
 * "ztunnel" — the real dataplane HboneServer on `<podIP>:15008` with its own
 * certificate from a local CA (the identity the test chooses, which may
 * differ from the one workload discovery announces) — that accepts CONNECT
 * streams and serves a real HTTP/1.1 or h2c backend inside each tunnel, and
 * a waypoint side built like production: the dataplane HbonePool with the
 * waypoint's own certificate, UpstreamConnections, the Forwarder, a real
 * store snapshot.
 *
 * Every endpoint counts its tunnels (CONNECT streams), HTTP requests and
 * TCP connections so tests can assert reuse and spread; nothing sleeps.
 * Each test file uses its own 127.0.N.x range so files can run in parallel.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import {
  createStore,
  serviceKey,
  type Clock,
  type LocalCertificateAuthority,
  type Logger,
  type Service,
  type Store,
  type Workload,
  type WorkloadCertificate,
} from '@ambient/control';
import { aService, aServiceRef, aWorkload } from '@ambient/control/testing';
import { HbonePool, HboneServer, hboneDialer, nodeSocketFactory, type ConnectRequest } from '@ambient/dataplane';
import { id, newCa, workloadCert } from '@ambient/dataplane/testing';
import { UpstreamConnections, writeBuffersOnly, type ConnectionLimits } from '../../src/upstream/connections.js';
import { Forwarder } from '../../src/upstream/forwarder.js';
import { DEFAULT_RETRY_POLICY, NO_RETRY_POLICY } from '../../src/routing/retry.js';
import type { RetryPolicy } from '../../src/routing/types.js';
import type { LocalInfo } from '../../src/upstream/endpoints.js';

export const WAYPOINT_URI = 'spiffe://cluster.local/ns/apps/sa/waypoint';
export const WAYPOINT_ID = id(WAYPOINT_URI);

/** A logger that prints nothing (WAYPOINT_TEST_LOG=1 prints debug lines). */
export const quietLog: Logger = {
  child: () => quietLog,
  debug: (o, m) => print('debug', o, m),
  info: (o, m) => print('info', o, m),
  warn: (o, m) => print('warn', o, m),
  error: (o, m) => print('error', o, m),
};

function print(level: string, o: object, m?: string): void {
  if (process.env['WAYPOINT_TEST_LOG']) process.stderr.write(`${level} ${m ?? ''} ${JSON.stringify(o)}\n`);
}

export type Backend = 'http1' | 'h2c';

/** What a backend does with one request; the default echoes. Return normally after answering. */
export type H1Handler = (req: IncomingMessage, res: ServerResponse, body: Buffer, ep: Endpoint) => void;
export type H2Handler = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: Buffer, ep: Endpoint) => void;

export interface EndpointSpec {
  /** Loopback pod IP (the ztunnel listens on ip:15008). */
  readonly ip: string;
  readonly name: string;
  /** What workload discovery announces (default spiffe://cluster.local/ns/apps/sa/<name>). */
  readonly identity?: string;
  /** The identity the ztunnel's certificate proves (default: the announced one). */
  readonly servedIdentity?: string;
  readonly backend?: Backend;
  /** Do not start a ztunnel at all (connect refused). */
  readonly down?: boolean;
  /** Accept TCP on ip:15008 and never answer (the TLS handshake never completes). */
  readonly blackhole?: boolean;
  readonly status?: Workload['status'];
  /** Outside the mesh (tunnel protocol TCP): a plain HTTP/1.1 server on ip:targetPort, no ztunnel. */
  readonly plaintext?: boolean;
  readonly capacity?: number;
}

export interface Endpoint {
  readonly spec: EndpointSpec;
  readonly workload: Workload;
  /** CONNECT streams accepted (tunnels). */
  tunnels: number;
  /** Authorities of the CONNECT requests. */
  readonly authorities: string[];
  /** Peer identities that opened tunnels. */
  readonly peers: string[];
  /** HTTP requests the backend saw. */
  requests: number;
  /** Headers of every request the backend saw. */
  readonly seen: Array<Record<string, string | string[] | undefined>>;
  /** HBONE TCP connections accepted. */
  connections: number;
  h1: H1Handler | undefined;
  h2: H2Handler | undefined;
  /** HTTP/1.1 Upgrade requests (default: the connection is closed). */
  upgrade: ((req: IncomingMessage, socket: Duplex, head: Buffer) => void) | undefined;
  /** Open tunnels (server side), to reset or end them. */
  readonly open: Set<Duplex>;
}

export interface Mesh {
  readonly clock: Clock;
  readonly store: Store;
  readonly service: Service;
  readonly endpoints: Endpoint[];
  readonly pool: HbonePool;
  readonly connections: UpstreamConnections;
  readonly forwarder: Forwarder;
  /** Applies a new workload list for the service (endpoint removal / return). */
  setWorkloads(workloads: readonly Workload[]): Promise<void>;
  close(): Promise<void>;
}

export interface MeshOptions {
  readonly clock: Clock;
  readonly endpoints: readonly EndpointSpec[];
  readonly servicePort?: number;
  readonly targetPort?: number;
  readonly random?: () => number;
  readonly limits?: Partial<ConnectionLimits>;
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly retryBufferLimitBytes?: number;
  readonly serviceOverrides?: Partial<Service>;
  readonly local?: LocalInfo;
}

let caPromise: Promise<LocalCertificateAuthority> | undefined;
const certCache = new Map<string, Promise<WorkloadCertificate>>();

async function cert(clock: Clock, uri: string): Promise<WorkloadCertificate> {
  caPromise ??= newCa(clock);
  const ca = await caPromise;
  let c = certCache.get(uri);
  if (c === undefined) {
    c = workloadCert(ca, uri, clock, 24 * 3600);
    certCache.set(uri, c);
  }
  return c;
}

export const SERVICE_HOST = 'backend.apps.svc.cluster.local';

export function endpointWorkload(spec: EndpointSpec, servicePort: number, targetPort: number): Workload {
  const identity = id(spec.identity ?? `spiffe://cluster.local/ns/apps/sa/${spec.name}`);
  return aWorkload({
    uid: `Kubernetes//Pod/apps/${spec.name}`,
    name: spec.name,
    namespace: 'apps',
    addresses: [spec.ip],
    identity,
    services: [aServiceRef(`apps/${SERVICE_HOST}`, [[servicePort, targetPort]])],
    status: spec.status ?? 'Healthy',
    capacity: spec.capacity ?? 1,
    protocol: spec.plaintext === true ? 'TCP' : 'HBONE',
  });
}

export async function startMesh(o: MeshOptions, cleanup: Array<() => unknown>): Promise<Mesh> {
  const { clock } = o;
  const servicePort = o.servicePort ?? 80;
  const targetPort = o.targetPort ?? 8080;
  const service = aService({ namespace: 'apps', hostname: SERVICE_HOST, ...o.serviceOverrides }, [[servicePort, targetPort]]);
  const endpoints: Endpoint[] = [];
  for (const spec of o.endpoints) {
    const ep: Endpoint = {
      spec,
      workload: endpointWorkload(spec, servicePort, targetPort),
      tunnels: 0,
      authorities: [],
      peers: [],
      requests: 0,
      seen: [],
      connections: 0,
      h1: undefined,
      h2: undefined,
      upgrade: undefined,
      open: new Set(),
    };
    endpoints.push(ep);
    if (spec.plaintext === true) await startPlainBackend(ep, targetPort, cleanup);
    else if (spec.blackhole === true) await startBlackhole(ep, cleanup);
    else if (spec.down !== true) await startZtunnel(ep, clock, cleanup);
  }
  const store = createStore();
  await store.applyAddresses({
    upserts: [
      { name: serviceKey(service), resource: { kind: 'service', service } },
      ...endpoints.map((e) => ({ name: e.workload.uid, resource: { kind: 'workload' as const, workload: e.workload } })),
    ],
    removals: [],
  });
  const waypointCert = await cert(clock, WAYPOINT_URI);
  const pool = new HbonePool({
    clock,
    dial: hboneDialer({ clock, certificateFor: () => Promise.resolve(waypointCert), sockets: nodeSocketFactory, ...(o.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: o.connectTimeoutMs }) }),
    unusedReleaseTimeoutMs: 60 * 60 * 1000,
    log: quietLog,
  });
  const connections = new UpstreamConnections({
    clock,
    log: quietLog,
    hbone: pool,
    localIdentity: WAYPOINT_ID,
    localIp: '127.0.0.1',
    sockets: nodeSocketFactory,
    ...(o.connectTimeoutMs === undefined ? {} : { connectTimeoutMs: o.connectTimeoutMs }),
    ...(o.idleTimeoutMs === undefined ? {} : { idleTimeoutMs: o.idleTimeoutMs }),
    ...(o.limits === undefined ? {} : { limits: o.limits }),
  });
  const local = o.local ?? { network: '', workload: undefined };
  const forwarder = new Forwarder({
    snapshot: () => store.snapshot(),
    connections,
    local: () => local,
    clock,
    random: o.random ?? Math.random,
    log: quietLog,
    ...(o.retryBufferLimitBytes === undefined ? {} : { retryBufferLimitBytes: o.retryBufferLimitBytes }),
  });
  const unsubscribe = store.subscribe((_change, snapshot) => connections.reconcile(snapshot));
  const close = async () => {
    unsubscribe();
    connections.close();
    pool.close();
    await pool.drain();
  };
  cleanup.push(close);
  return {
    clock,
    store,
    service,
    endpoints,
    pool,
    connections,
    forwarder,
    async setWorkloads(workloads) {
      const keep = new Set(workloads.map((w) => w.uid));
      await store.applyAddresses({
        upserts: workloads.map((w) => ({ name: w.uid, resource: { kind: 'workload' as const, workload: w } })),
        removals: endpoints.map((e) => e.workload.uid).filter((uid) => !keep.has(uid)),
      });
    },
    close,
  };
}

async function startZtunnel(ep: Endpoint, clock: Clock, cleanup: Array<() => unknown>): Promise<void> {
  const served = await cert(clock, ep.spec.servedIdentity ?? ep.spec.identity ?? `spiffe://cluster.local/ns/apps/sa/${ep.spec.name}`);
  const h1 = http.createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      ep.requests++;
      ep.seen.push({ ...req.headers, ':path': req.url });
      const body = Buffer.concat(chunks);
      if (ep.h1 !== undefined) ep.h1(req, res, body, ep);
      else echoH1(req, res, body, ep);
    });
  });
  h1.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    ep.requests++;
    ep.seen.push({ ...req.headers, ':path': req.url });
    if (ep.upgrade !== undefined) ep.upgrade(req, socket, head);
    else socket.destroy();
  });
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.on('error', () => undefined);
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      ep.requests++;
      ep.seen.push({ ...headers });
      const body = Buffer.concat(chunks);
      if (ep.h2 !== undefined) ep.h2(stream, headers, body, ep);
      else echoH2(stream, headers, body, ep);
    });
  });
  h2.on('sessionError', () => undefined);
  const server = new HboneServer({
    clock,
    log: quietLog,
    certificateFor: () => Promise.resolve(served),
    onConnect: (r: ConnectRequest) => {
      ep.tunnels++;
      ep.authorities.push(r.request.authority.kind === 'address' ? `${r.request.authority.ip}:${r.request.authority.port}` : r.request.authority.hostname);
      ep.peers.push(`spiffe://${r.peer.identity.trustDomain}/ns/${r.peer.identity.namespace}/sa/${r.peer.identity.serviceAccount}`);
      const tunnel = r.accept();
      ep.open.add(tunnel);
      tunnel.once('close', () => ep.open.delete(tunnel));
      tunnel.on('error', () => undefined);
      // node:http writes strings; Node 20's Http2Stream can corrupt them (see writeBuffersOnly).
      writeBuffersOnly(tunnel);
      if ((ep.spec.backend ?? 'http1') === 'h2c') h2.emit('connection', tunnel);
      else h1.emit('connection', tunnel);
    },
  });
  const listener = net.createServer({ pauseOnConnect: true });
  listener.on('connection', () => ep.connections++);
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(15008, ep.spec.ip, () => resolve());
  });
  server.attach(listener);
  cleanup.push(async () => {
    await server.close();
    for (const t of ep.open) t.destroy();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    h1.closeAllConnections();
    h1.close();
    h2.close();
  });
}

async function startBlackhole(ep: Endpoint, cleanup: Array<() => unknown>): Promise<void> {
  const held = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    ep.connections++;
    held.add(socket);
    socket.on('error', () => undefined);
    socket.once('close', () => held.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(15008, ep.spec.ip, () => resolve());
  });
  cleanup.push(async () => {
    for (const s of held) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
}

async function startPlainBackend(ep: Endpoint, port: number, cleanup: Array<() => unknown>): Promise<void> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      ep.requests++;
      ep.seen.push({ ...req.headers, ':path': req.url });
      echoH1(req, res, Buffer.concat(chunks), ep);
    });
  });
  server.on('connection', () => ep.connections++);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ep.spec.ip, () => resolve());
  });
  cleanup.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
}

export function echoH1(req: IncomingMessage, res: ServerResponse, body: Buffer, ep: Endpoint): void {
  res.setHeader('content-type', 'application/json');
  res.setHeader('x-endpoint', ep.spec.name);
  res.end(JSON.stringify({ endpoint: ep.spec.name, method: req.method, path: req.url, headers: req.headers, body: body.toString() }));
}

export function echoH2(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, body: Buffer, ep: Endpoint): void {
  stream.respond({ ':status': 200, 'content-type': 'application/json', 'x-endpoint': ep.spec.name });
  stream.end(JSON.stringify({ endpoint: ep.spec.name, method: headers[':method'], path: headers[':path'], headers, body: body.toString() }));
}

/** Istio's default retry policy (§6.1, 1.24+), as routing/retry.ts has it. */
export const DEFAULT_RETRY: RetryPolicy = DEFAULT_RETRY_POLICY;

/** Istio's `attempts: 0` (routing/retry.ts NO_RETRY_POLICY): no retry policy at all. */
export const NO_RETRY: RetryPolicy = NO_RETRY_POLICY;
