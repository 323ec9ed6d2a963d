/**
 * The serve/ tests' world: the real waypoint inbound (HboneServer on
 * 127.0.0.1 with the waypoint's certificate from a local CA, the HTTP/1.1
 * and h2c servers, the pipeline) fed by a real HBONE client (dataplane
 * dialHbone with the client's certificate), real backends on loopback
 * (HTTP/1.1, h2c with trailers, TCP echo, a WebSocket-style upgrade), a real
 * store snapshot and route tables compiled by routing/compile.ts from
 * hand-written HTTPRoute/TCPRoute resources.
 *
 * The upstream side is replaced by `LoopbackForwarder`, a TEST DOUBLE of the
 * upstream Forwarder: it records what the pipeline asks for and speaks real
 * HTTP/1.1 or h2c to the loopback backend of the asked service port (no
 * HBONE, no retries); `failNext` makes the next call fail with an L7 code.
 * The waypoint's upstream side is tested on its own (test/upstream) and
 * together with this one in inbound-mesh.test.ts.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type ClientHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex} from 'node:stream';
import { PassThrough, type Readable } from 'node:stream';
import {
  serviceKey,
  systemClock,
  type Clock,
  type Identity,
  type LocalCertificateAuthority,
  type Logger,
  type Service,
  type Snapshot,
  type Workload,
  type WorkloadCertificate,
} from '@ambient/control';
import { aService, aServiceRef, aWorkload, snapshotOf, vip } from '@ambient/control/testing';
import { dialHbone, nodeSocketFactory, TlsMaterial, type HboneConnection } from '@ambient/dataplane';
import { id, newCa, workloadCert } from '@ambient/dataplane/testing';
import { computeBindings, type Bindings } from '../../src/bindings.js';
import type { BackendRef, HttpRouteResource, HttpRouteRule, ParentRef, RouteResource, TcpRouteResource } from '../../src/resources/types.js';
import { compileRoutes, serviceLookup } from '../../src/routing/compile.js';
import type { RouteTable } from '../../src/routing/types.js';
import { L7Error, type L7ErrorCode } from '../../src/serve/errors.js';
import { bufferOnlyWrites, type Http1Limits } from '../../src/serve/http1.js';
import type { Http2Limits } from '../../src/serve/http2.js';
import { startWaypointInbound, type SniffLimits, type WaypointInbound } from '../../src/serve/inbound.js';
import type { ForwardResult, PipelineUpstreamRequest, PipelineUpstreamTarget, UpstreamForwarder } from '../../src/serve/pipeline.js';
import type { HttpRequestRecord, PeerInfo, RequestTelemetry, TcpConnectionRecord } from '../../src/telemetry/types.js';
import type { ChosenEndpoint, ForwardOptions, RawHeaders, UpstreamResponse } from '../../src/upstream/types.js';

export const WAYPOINT_NS = 'waypoint-ns';
export const WAYPOINT_HOST = `waypoint.${WAYPOINT_NS}.svc.cluster.local`;
export const WAYPOINT_SPIFFE = `spiffe://cluster.local/ns/${WAYPOINT_NS}/sa/waypoint`;
export const CLIENT_SPIFFE = 'spiffe://cluster.local/ns/client/sa/sleep';
export const APPS = 'apps';
export const ECHO_HOST = 'echo.apps.svc.cluster.local';
export const OTHER_HOST = 'other.apps.svc.cluster.local';
export const ECHO_VIP = '10.96.1.10';
export const OTHER_VIP = '10.96.1.11';
export const UNBOUND_VIP = '10.96.1.99';
export const ECHO_POD_IP = '10.1.0.5';
/** The client's workload: the HBONE client dials from 127.0.0.1. */
export const CLIENT_IP = '127.0.0.1';

/** Service ports of echo: 80 http, 81 unknown (sniffed), 90 tcp, 91 grpc. */
export const PORT_HTTP = 80;
export const PORT_UNKNOWN = 81;
export const PORT_TCP = 90;
export const PORT_GRPC = 91;

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

const WAYPOINT_GW = { destination: { kind: 'hostname' as const, namespace: WAYPOINT_NS, hostname: WAYPOINT_HOST }, hboneMtlsPort: 15008 };

export function echoService(): Service {
  return {
    ...aService({ namespace: APPS, hostname: ECHO_HOST, vips: [vip(ECHO_VIP)], waypoint: WAYPOINT_GW }, [
      [PORT_HTTP, 8080],
      [PORT_UNKNOWN, 8081],
      [PORT_TCP, 9090],
      [PORT_GRPC, 7070],
    ]),
    ports: [
      { servicePort: PORT_HTTP, targetPort: 8080, appProtocol: 'HTTP11' },
      { servicePort: PORT_UNKNOWN, targetPort: 8081, appProtocol: 'Unknown' },
      { servicePort: PORT_TCP, targetPort: 9090, appProtocol: 'TCP' },
      { servicePort: PORT_GRPC, targetPort: 7070, appProtocol: 'GRPC' },
    ],
  };
}

/** A second served service (a backendRef / mirror target). */
export function otherService(): Service {
  return { ...aService({ namespace: APPS, hostname: OTHER_HOST, vips: [vip(OTHER_VIP)], waypoint: WAYPOINT_GW }, [[PORT_HTTP, 8080]]), ports: [{ servicePort: PORT_HTTP, targetPort: 8080, appProtocol: 'HTTP11' }] };
}

export function echoPod(): Workload {
  return aWorkload({
    uid: 'Kubernetes//Pod/apps/echo-0',
    name: 'echo-0',
    namespace: APPS,
    addresses: [ECHO_POD_IP],
    identity: id('spiffe://cluster.local/ns/apps/sa/echo'),
    waypoint: WAYPOINT_GW,
    services: [aServiceRef(`${APPS}/${ECHO_HOST}`, [[PORT_HTTP, 8080], [PORT_TCP, 9090]])],
  });
}

export function clientPod(): Workload {
  return aWorkload({ uid: 'Kubernetes//Pod/client/sleep-0', name: 'sleep-0', namespace: 'client', addresses: [CLIENT_IP], identity: id(CLIENT_SPIFFE), workloadName: 'sleep' });
}

// ---------------------------------------------------------------------------
// Routes

export function parent(name = 'echo', port?: number): ParentRef {
  return { group: '', kind: 'Service', namespace: APPS, name, port, sectionName: undefined };
}

export function backend(name: string, port: number, weight = 1, over: Partial<BackendRef> = {}): BackendRef {
  return { group: '', kind: 'Service', namespace: APPS, name, port, weight, filters: [], ...over };
}

export function rule(over: Partial<HttpRouteRule> = {}): HttpRouteRule {
  return {
    name: undefined,
    matches: [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: undefined }],
    filters: [],
    backendRefs: [],
    timeouts: { requestMs: undefined, backendRequestMs: undefined },
    retry: undefined,
    ...over,
  };
}

export function httpRoute(name: string, rules: readonly HttpRouteRule[], parents: readonly ParentRef[] = [parent()]): HttpRouteResource {
  return {
    meta: { kind: 'HTTPRoute', namespace: APPS, name, creationTimestampMs: 1000, generation: 1, resourceVersion: '1', labels: {}, annotations: {} },
    parentRefs: parents,
    hostnames: [],
    rules,
  };
}

export function tcpRoute(name: string, backendRefs: readonly BackendRef[], parents: readonly ParentRef[]): TcpRouteResource {
  return {
    meta: { kind: 'TCPRoute', namespace: APPS, name, creationTimestampMs: 1000, generation: 1, resourceVersion: '1', labels: {}, annotations: {} },
    parentRefs: parents,
    rules: [{ name: undefined, backendRefs }],
  };
}

export function compile(routes: readonly RouteResource[], services: readonly Service[], allowProblems = false): RouteTable {
  const result = compileRoutes({
    resources: { routes, services: [], problems: [] },
    services,
    waypoint: { namespace: WAYPOINT_NS, name: 'waypoint' },
    lookup: serviceLookup(services),
    version: 1,
  });
  if (result.problems.length > 0 && !allowProblems) throw new Error(`test routes do not compile: ${JSON.stringify(result.problems)}`);
  return result.table;
}

// ---------------------------------------------------------------------------
// Backends

export interface SeenRequest {
  readonly protocol: 'http1' | 'h2c';
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly rawHeaders: readonly string[];
  readonly body: string;
  readonly trailers: readonly string[];
}

export interface Backends {
  readonly http1Port: number;
  readonly h2cPort: number;
  readonly tcpPort: number;
  readonly seen: SeenRequest[];
  /** Per-path behaviour of the HTTP/1.1 backend (default: echo as JSON). */
  h1: Map<string, (req: IncomingMessage, res: ServerResponse, body: string) => void>;
  /** Per-path behaviour of the h2c backend (default: gRPC-style echo with trailers). */
  h2: Map<string, (stream: ServerHttp2Stream, body: string) => void>;
  /** Per-path h2c handlers called as soon as the stream opens (streaming). */
  h2Stream: Map<string, (stream: ServerHttp2Stream) => void>;
  close(): Promise<void>;
}

export async function startBackends(): Promise<Backends> {
  const seen: SeenRequest[] = [];
  const sockets = new Set<net.Socket>();
  const h1 = new Map<string, (req: IncomingMessage, res: ServerResponse, body: string) => void>();
  const h2 = new Map<string, (stream: ServerHttp2Stream, body: string) => void>();
  const h2Stream = new Map<string, (stream: ServerHttp2Stream) => void>();
  const h1Server = http.createServer({ maxHeaderSize: 128 * 1024 }, (req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      seen.push({ protocol: 'http1', method: req.method ?? '', path: req.url ?? '', authority: req.headers.host ?? '', rawHeaders: req.rawHeaders, body, trailers: req.rawTrailers });
      const handler = h1.get(req.url ?? '');
      if (handler !== undefined) return handler(req, res, body);
      res.writeHead(200, { 'content-type': 'application/json', server: 'backend', 'x-backend': 'h1' });
      res.end(JSON.stringify({ method: req.method, url: req.url, body }));
    });
  });
  h1Server.on('upgrade', (req: IncomingMessage, socket: net.Socket, head: Buffer) => {
    seen.push({ protocol: 'http1', method: req.method ?? '', path: req.url ?? '', authority: req.headers.host ?? '', rawHeaders: req.rawHeaders, body: '', trailers: [] });
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: test\r\n\r\n');
    if (head.length > 0) socket.write(head);
    socket.on('data', (d: Buffer) => socket.write(`echo:${d.toString()}`));
    socket.on('end', () => socket.end());
  });
  const h2Server = http2.createServer();
  h2Server.on('stream', (stream, headers) => {
    const streaming = h2Stream.get(String(headers[':path']));
    if (streaming !== undefined) return streaming(stream);
    let body = '';
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => (body += d));
    stream.on('end', () => {
      const raw: string[] = [];
      for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':')) for (const x of Array.isArray(v) ? v : [String(v)]) raw.push(k, x);
      seen.push({ protocol: 'h2c', method: String(headers[':method']), path: String(headers[':path']), authority: String(headers[':authority']), rawHeaders: raw, body, trailers: [] });
      const handler = h2.get(String(headers[':path']));
      if (handler !== undefined) return handler(stream, body);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0', 'grpc-message': 'ok' }));
      stream.end(grpcFrame(`echo:${body.length}`));
    });
  });
  const tcpServer = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('data', (d) => s.write(`tcp:${d.toString()}`));
    s.on('end', () => s.end());
    s.on('error', () => {});
  });
  for (const server of [h1Server, h2Server, tcpServer] as net.Server[]) {
    server.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  }
  const portOf = (s: net.Server) => (s.address() as net.AddressInfo).port;
  return {
    http1Port: portOf(h1Server),
    h2cPort: portOf(h2Server),
    tcpPort: portOf(tcpServer),
    seen,
    h1,
    h2,
    h2Stream,
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([h1Server, h2Server, tcpServer].map((s) => new Promise<void>((resolve) => (s as net.Server).close(() => resolve()))));
    },
  };
}

/** One gRPC length-prefixed message (uncompressed). */
export function grpcFrame(payload: string): Buffer {
  const body = Buffer.from(payload);
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(body.length, 1);
  return Buffer.concat([prefix, body]);
}

// ---------------------------------------------------------------------------
// The upstream test double

export interface ForwardCall {
  readonly request: PipelineUpstreamRequest;
  readonly target: PipelineUpstreamTarget;
  readonly options: ForwardOptions;
  /** The request body as the backend received it (filled when the call completes). */
  body: string;
}

/**
 * TEST DOUBLE of upstream/forwarder.ts Forwarder: routes a service port to a
 * loopback backend (real HTTP/1.1, h2c or TCP), records every call.
 */
export class LoopbackForwarder implements UpstreamForwarder {
  readonly calls: ForwardCall[] = [];
  readonly tcpCalls: PipelineUpstreamTarget[] = [];
  readonly #failures: L7Error[] = [];
  readonly #sessions = new Set<ClientHttp2Session>();
  readonly #agent = new http.Agent({ keepAlive: false });

  constructor(
    private readonly backends: Backends,
    private readonly snapshot: () => Snapshot,
  ) {}

  /** The next forward() or openTcp() fails with `code`. */
  failNext(code: L7ErrorCode, options: ConstructorParameters<typeof L7Error>[2] = {}): void {
    this.#failures.push(new L7Error(code, `test double: ${code}`, options));
  }

  endpointOf(target: PipelineUpstreamTarget): ChosenEndpoint {
    const workload = target.workload ?? this.snapshot().endpoints(serviceKey(target.service))[0]?.workload ?? echoPod();
    const port = target.service.ports.find((p) => p.servicePort === target.servicePort);
    return {
      workload,
      identity: workload.identity,
      address: `${workload.addresses[0] ?? '0.0.0.0'}:${port?.targetPort ?? 0}`,
      service: target.service,
      servicePort: target.servicePort,
      targetPort: port?.targetPort ?? 0,
    };
  }

  async forward(request: PipelineUpstreamRequest, target: PipelineUpstreamTarget, options: ForwardOptions): Promise<ForwardResult> {
    const call: ForwardCall = { request, target, options, body: '' };
    this.calls.push(call);
    const failure = this.#failures.shift();
    const endpoint = this.endpointOf(target);
    if (failure !== undefined) {
      request.body?.resume();
      return { kind: 'failure', error: failure, attempts: 1, endpoint };
    }
    const started = systemClock.monotonic();
    const response = request.protocol === 'http2' ? await this.#h2(request, call) : await this.#h1(request, call);
    return { kind: 'response', response: { ...response, endpoint, serviceTimeMs: systemClock.monotonic() - started, attempts: 1 }, flags: [] };
  }

  #collect(body: Readable | undefined, call: ForwardCall): Readable | undefined {
    if (body === undefined) return undefined;
    const copy = new PassThrough();
    body.on('data', (d: Buffer) => {
      call.body += d.toString();
    });
    body.pipe(copy);
    return copy;
  }

  #h1(request: PipelineUpstreamRequest, call: ForwardCall): Promise<Omit<UpstreamResponse, 'endpoint' | 'serviceTimeMs' | 'attempts'> & { upgraded?: Duplex }> {
    return new Promise((resolve, reject) => {
      const headers: string[] = ['host', request.authority];
      for (const [k, v] of request.headers) headers.push(k, v);
      const req = http.request({ host: '127.0.0.1', port: this.backends.http1Port, method: request.method, path: request.path, headers, agent: this.#agent, setHost: false });
      req.on('error', reject);
      req.on('upgrade', (res: IncomingMessage, socket: net.Socket, head: Buffer) => {
        if (head.length > 0) socket.unshift(head);
        resolve({ status: res.statusCode ?? 0, headers: pairs(res.rawHeaders), body: emptyReadable(), trailers: Promise.resolve([]), upgraded: socket });
      });
      req.on('response', (res: IncomingMessage) => {
        const trailers = new Promise<RawHeaders>((r) => res.once('end', () => r(pairs(res.rawTrailers))));
        resolve({ status: res.statusCode ?? 0, headers: pairs(res.rawHeaders), body: res, trailers });
      });
      const body = this.#collect(request.body, call);
      if (body === undefined) req.end();
      else body.pipe(req);
    });
  }

  #h2(request: PipelineUpstreamRequest, call: ForwardCall): Promise<Omit<UpstreamResponse, 'endpoint' | 'serviceTimeMs' | 'attempts'>> {
    const session = http2.connect(`http://127.0.0.1:${this.backends.h2cPort}`);
    this.#sessions.add(session);
    session.on('close', () => this.#sessions.delete(session));
    session.on('error', () => {});
    return new Promise((resolve, reject) => {
      const headers: Record<string, string | string[]> = { ':method': request.method, ':path': request.path, ':authority': request.authority };
      for (const [k, v] of request.headers) {
        const prev = headers[k.toLowerCase()];
        headers[k.toLowerCase()] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
      }
      const stream = session.request(headers, { endStream: request.body === undefined });
      stream.on('error', reject);
      const trailers = new Promise<RawHeaders>((r) => {
        let got: RawHeaders = [];
        stream.once('trailers', (t: Record<string, string | string[] | undefined>) => {
          got = Object.entries(t).flatMap(([k, v]) => (v === undefined ? [] : (Array.isArray(v) ? v : [v]).map((x) => [k, x] as const)));
        });
        stream.once('close', () => {
          session.close();
          r(got);
        });
      });
      stream.once('response', (h: Record<string, string | string[] | number | undefined>) => {
        const status = Number(h[':status']);
        const hs = Object.entries(h).flatMap(([k, v]) => (k.startsWith(':') || v === undefined ? [] : (Array.isArray(v) ? v : [String(v)]).map((x) => [k, x] as const)));
        resolve({ status, headers: hs, body: stream, trailers });
      });
      const body = this.#collect(request.body, call);
      if (body !== undefined) body.pipe(stream);
    });
  }

  async openTcp(target: PipelineUpstreamTarget): Promise<
    { readonly kind: 'tunnel'; readonly stream: Duplex; readonly endpoint: ChosenEndpoint } | { readonly kind: 'failure'; readonly error: L7Error; readonly endpoint: ChosenEndpoint | undefined }
  > {
    this.tcpCalls.push(target);
    const endpoint = this.endpointOf(target);
    const failure = this.#failures.shift();
    if (failure !== undefined) return { kind: 'failure', error: failure, endpoint };
    const socket = net.connect({ host: '127.0.0.1', port: this.backends.tcpPort, allowHalfOpen: true });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return { kind: 'tunnel', stream: socket, endpoint };
  }

  close(): void {
    for (const s of this.#sessions) s.destroy();
    this.#agent.destroy();
  }
}

function pairs(raw: readonly string[]): Array<readonly [string, string]> {
  const out: Array<readonly [string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i] as string, raw[i + 1] as string]);
  return out;
}

function emptyReadable(): Readable {
  const p = new PassThrough();
  p.end();
  return p;
}

// ---------------------------------------------------------------------------
// Telemetry double

export class RecordingTelemetry implements RequestTelemetry {
  readonly http: HttpRequestRecord[] = [];
  readonly tcp: TcpConnectionRecord[] = [];
  readonly opened: Array<{ source: PeerInfo; destination: PeerInfo; service: Service | undefined }> = [];
  #waiters: Array<() => void> = [];

  tcpOpened(source: PeerInfo, destination: PeerInfo, service: Service | undefined): void {
    this.opened.push({ source, destination, service });
  }

  httpFinished(record: HttpRequestRecord): void {
    this.http.push(record);
    this.#wake();
  }

  tcpFinished(record: TcpConnectionRecord): void {
    this.tcp.push(record);
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Resolves when `n` HTTP records have arrived (bounded: rejects after `timeoutMs`). */
  async httpRecords(n: number, timeoutMs = 5000): Promise<HttpRequestRecord[]> {
    await this.#until(() => this.http.length >= n, timeoutMs, `${n} HTTP records (have ${this.http.length})`);
    return this.http;
  }

  async tcpRecords(n: number, timeoutMs = 5000): Promise<TcpConnectionRecord[]> {
    await this.#until(() => this.tcp.length >= n, timeoutMs, `${n} TCP records (have ${this.tcp.length})`);
    return this.tcp;
  }

  async #until(done: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = systemClock.monotonic() + timeoutMs;
    while (!done()) {
      if (systemClock.monotonic() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise<void>((resolve) => {
        this.#waiters.push(resolve);
        systemClock.setTimer(50, resolve);
      });
    }
  }
}

// ---------------------------------------------------------------------------
// The waypoint under test

let caPromise: Promise<LocalCertificateAuthority> | undefined;
const certs = new Map<string, Promise<WorkloadCertificate>>();

export function cert(spiffe: string): Promise<WorkloadCertificate> {
  caPromise ??= newCa(systemClock);
  let c = certs.get(spiffe);
  if (c === undefined) {
    c = caPromise.then((ca) => workloadCert(ca, spiffe, systemClock, 24 * 3600));
    certs.set(spiffe, c);
  }
  return c;
}

export interface WaypointOptions {
  readonly routes?: readonly RouteResource[];
  /** The routes are expected to have problems (e.g. an unknown backend). */
  readonly routeProblems?: boolean;
  readonly clock?: Clock;
  readonly http1Limits?: Partial<Http1Limits>;
  readonly http2Limits?: Partial<Http2Limits>;
  readonly sniffLimits?: Partial<SniffLimits>;
  readonly xfccClientIdentity?: boolean;
  readonly randomBytes?: (n: number) => Uint8Array;
}

export interface Waypoint {
  readonly inbound: WaypointInbound;
  readonly forwarder: LoopbackForwarder;
  readonly telemetry: RecordingTelemetry;
  readonly backends: Backends;
  readonly snapshot: Snapshot;
  readonly bindings: Bindings;
  /** An HBONE connection from the client (its certificate unless another is given). */
  connect(spiffe?: string): Promise<HboneConnection>;
  /** A CONNECT tunnel to `ip:port` through a fresh HBONE connection. */
  tunnel(ip: string, port: number, spiffe?: string): Promise<Duplex>;
}

export async function startWaypoint(o: WaypointOptions, cleanup: Array<() => unknown>): Promise<Waypoint> {
  const clock = o.clock ?? systemClock;
  const services = [echoService(), otherService()];
  const snapshot = await snapshotOf([...services, echoPod(), clientPod()]);
  const bindings = computeBindings(snapshot, { namespace: WAYPOINT_NS, hostname: WAYPOINT_HOST, podIps: [], network: '' });
  const routes = compile(o.routes ?? [], services, o.routeProblems === true);
  const backends = await startBackends();
  cleanup.push(() => backends.close());
  const forwarder = new LoopbackForwarder(backends, () => snapshot);
  cleanup.push(() => forwarder.close());
  const telemetry = new RecordingTelemetry();
  const waypointCert = await cert(WAYPOINT_SPIFFE);
  let random = 0;
  const inbound = await startWaypointInbound(
    {
      clock,
      random: () => {
        random = (random + 0.37) % 1;
        return random;
      },
      randomBytes: o.randomBytes ?? ((n) => new Uint8Array(n).map((_, i) => (i * 37 + 11) & 0xff)),
      log: quietLog,
      routes: () => routes,
      snapshot: () => snapshot,
      bindings: () => bindings,
      forwarder,
      telemetry,
      identity: id(WAYPOINT_SPIFFE),
      xfccClientIdentity: o.xfccClientIdentity ?? false,
      clusterDomain: 'cluster.local',
      sockets: nodeSocketFactory,
      certificate: () => Promise.resolve(waypointCert),
      network: '',
      ...(o.http1Limits === undefined ? {} : { http1Limits: o.http1Limits }),
      ...(o.http2Limits === undefined ? {} : { http2Limits: o.http2Limits }),
      ...(o.sniffLimits === undefined ? {} : { sniffLimits: o.sniffLimits }),
    },
    { host: '127.0.0.1', port: 0 },
  );
  cleanup.push(() => inbound.close());
  const connect = async (spiffe = CLIENT_SPIFFE): Promise<HboneConnection> => {
    const c = await cert(spiffe);
    const conn = await dialHbone({
      material: TlsMaterial.from(c),
      expected: [id(WAYPOINT_SPIFFE)],
      nextHop: { ip: '127.0.0.1', port: inbound.port },
      sockets: nodeSocketFactory,
      connectTimeoutMs: 5000,
      clock: systemClock,
    });
    cleanup.push(() => conn.destroy());
    return conn;
  };
  return {
    inbound,
    forwarder,
    telemetry,
    backends,
    snapshot,
    bindings,
    connect,
    async tunnel(ip, port, spiffe) {
      const conn = await connect(spiffe);
      const { stream } = await conn.openStream({ connect: { authority: { kind: 'address', ip, port } } });
      bufferOnlyWrites(stream);
      cleanup.push(() => stream.destroy());
      return stream;
    },
  };
}

// ---------------------------------------------------------------------------
// Clients inside a tunnel

export interface H1Response {
  readonly status: number;
  readonly rawHeaders: readonly string[];
  readonly body: string;
  header(name: string): string | undefined;
}

/** One HTTP/1.1 request over `tunnel` (keep-alive: the tunnel stays usable). */
const agents = new WeakMap<Duplex, http.Agent>();

/** One keep-alive agent per tunnel: its requests go one after the other on the tunnel. */
function agentFor(tunnel: Duplex): http.Agent {
  let agent = agents.get(tunnel);
  if (agent !== undefined) return agent;
  agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  agent.createConnection = () => tunnel as unknown as net.Socket;
  (agent as unknown as { keepSocketAlive: () => boolean }).keepSocketAlive = () => true;
  (agent as unknown as { reuseSocket: () => void }).reuseSocket = () => {};
  agents.set(tunnel, agent);
  return agent;
}

export function h1Request(tunnel: Duplex, o: { method?: string; path?: string; headers?: ReadonlyArray<readonly [string, string]>; body?: string | Readable } = {}): Promise<H1Response> {
  const agent = agentFor(tunnel);
  const headers: string[] = [];
  let hasHost = false;
  for (const [k, v] of o.headers ?? []) {
    if (k.toLowerCase() === 'host') hasHost = true;
    headers.push(k, v);
  }
  if (!hasHost) headers.unshift('Host', `${ECHO_HOST}:${PORT_HTTP}`);
  return new Promise((resolve, reject) => {
    const req = http.request({ agent, method: o.method ?? 'GET', path: o.path ?? '/', headers, setHost: false });
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          rawHeaders: res.rawHeaders,
          body,
          header: (name) => res.headers[name.toLowerCase()] as string | undefined,
        }),
      );
      res.on('error', reject);
    });
    if (o.body === undefined) req.end();
    else if (typeof o.body === 'string') req.end(o.body);
    else o.body.pipe(req);
  });
}

/** Writes raw bytes on a tunnel and collects what comes back until the tunnel ends (bounded). */
export async function rawExchange(tunnel: Duplex, bytes: string | Buffer, timeoutMs = 3000): Promise<string> {
  let out = '';
  tunnel.on('data', (d: Buffer) => (out += d.toString('latin1')));
  const ended = new Promise<void>((resolve) => {
    tunnel.once('end', resolve);
    tunnel.once('close', resolve);
    tunnel.once('error', () => resolve());
  });
  tunnel.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes);
  const timer = systemClock.sleep(timeoutMs).then(() => 'timeout' as const);
  const r = await Promise.race([ended.then(() => 'ended' as const), timer]);
  if (r === 'timeout') throw new Error(`the tunnel did not close within ${timeoutMs} ms; got ${JSON.stringify(out)}`);
  return out;
}

/** An h2c session over a tunnel. */
export function h2cSession(tunnel: Duplex, cleanup: Array<() => unknown>): ClientHttp2Session {
  const session = http2.connect('http://waypoint.invalid', { createConnection: () => tunnel });
  session.on('error', () => {});
  cleanup.push(() => session.destroy());
  return session;
}

export function identityOf(spiffe: string): Identity {
  return id(spiffe);
}
