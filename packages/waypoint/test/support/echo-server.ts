/**
 * A stand-in for Istio's echo app server (`server --port=8080 --grpc=7070`,
 * istio 1.30.3 `pkg/test/echo/server/endpoint/{http,grpc}.go`), the backend
 * of the Gateway API mesh conformance suite. It answers as that server does,
 * because the conformance checker reads its body:
 *
 * - HTTP on each `httpPorts` port, HTTP/1.1 and h2c (prior knowledge: the
 *   connection preface picks the protocol) on one listener. Status 200 (or
 *   `?codes=`), `Content-Type: application/text`, and the body
 *   `ServiceVersion= ServicePort= Host= URL= [Cluster=] [IstioVersion=]
 *   [Namespace=] Method= Proto= IP= RequestHeader=… Hostname=` one per line:
 *   one `RequestHeader=<Canonical-Name>:<value>` line per received value (from
 *   rawHeaders, never Node's merged values), names sorted, repeated names in
 *   arrival order, Host not listed (Go moves it to r.Host).
 * - `?delay=<Go duration>` waits, `?headers=n:v,…` sets response headers
 *   (names as given; as in Go, setting any makes Go sniff the Content-Type,
 *   `text/plain; charset=utf-8`), `?codes=code[:slices],…` picks a status by
 *   Istio's pie algorithm. A bad value adds the server's error line first.
 * - A WebSocket upgrade (HTTP/1.1 `Connection: upgrade` + `Upgrade:
 *   websocket`) is accepted; the first message is answered with the body
 *   fields, the message, and `StatusCode=200`, then the connection closes (as
 *   the gorilla-based echo does).
 * - gRPC (h2c) on each `grpcPorts` port through @grpc/grpc-js:
 *   `proto.EchoTestService/Echo` answers `Host=<:authority>`, the
 *   `RequestHeader=<key>:<value>` lines of the metadata (`-bin` keys skipped;
 *   `:authority` included, as grpc-go's metadata has it), `StatusCode=200`,
 *   `ServiceVersion=`, `ServicePort=`, `IP=`, `Proto=GRPC`, `Echo=<message>`,
 *   `Hostname=`.
 * - Requests that arrive before every listener is up get 503.
 *
 * Repeated gRPC metadata stays one value per header field (see
 * keepRepeatedMetadata), as grpc-go's metadata has it.
 *
 * Differences from the Go server, none read by the checker: the TLS (8443)
 * and TCP (9090) listeners, gRPC health/reflection/ForwardEcho and the h2c
 * `Upgrade:` dance are not served (an upgrade other than WebSocket gets 400);
 * Node adds `Connection: keep-alive` where Go sends no Connection header;
 * gRPC metadata lines come in arrival order (Go: random map order).
 *
 * Test support: binds the pod's own loopback IP, raw sockets allowed here.
 * `close()` ends every connection and timer it made.
 */
import { createHash, randomInt } from 'node:crypto';
import { once } from 'node:events';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { createServer, type Server, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { echoMethod, type EchoMessage } from './echo-proto.js';

export interface EchoServerOptions {
  /** The pod IP to bind (each pod has its own 127.x address). */
  readonly ip: string;
  /** `os.Hostname()` of the pod: the pod name (`echo-v1-7c9f8d6b54-qx2lm`). */
  readonly hostname: string;
  /** `--port` values (default [8080]); 0 picks a free port. */
  readonly httpPorts?: readonly number[];
  /** `--grpc` values (default [7070]); 0 picks a free port. */
  readonly grpcPorts?: readonly number[];
  /** `--version` (default empty). */
  readonly version?: string;
  /** `--cluster` (default empty: no line). */
  readonly cluster?: string;
  /** `--istio-version` (default empty: no line). */
  readonly istioVersion?: string;
  /** The NAMESPACE env (default unset: no line). */
  readonly namespace?: string;
}

export interface EchoServer {
  readonly ip: string;
  readonly hostname: string;
  /** The bound HTTP and gRPC ports, in option order. */
  readonly httpPorts: readonly number[];
  readonly grpcPorts: readonly number[];
  /** Requests answered so far (HTTP, WebSocket and gRPC), for tests that check a backend was (not) reached. */
  readonly requestCount: () => number;
  close(): Promise<void>;
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** WebSocket messages larger than this are refused (close 1009); the echo never needs big ones. */
const WS_MAX_MESSAGE = 1 << 20;
/** Go's `time.ParseDuration` units. */
const DURATION_UNITS: Readonly<Record<string, number>> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
const DURATION_PART = /^(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/;
const h2Peers = new WeakMap<http2.Http2Session, string>();
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

export async function startEchoServer(o: EchoServerOptions): Promise<EchoServer> {
  const fields = { version: o.version ?? '', cluster: o.cluster ?? '', istioVersion: o.istioVersion ?? '', namespace: o.namespace ?? '' };
  let ready = false;
  let count = 0;
  const sockets = new Set<Socket>();
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const netServers: Server[] = [];
  const grpcServers: grpc.Server[] = [];
  const cleanups: Array<() => Promise<void> | void> = [];
  const httpPorts: number[] = [];
  const grpcPorts: number[] = [];

  const delay = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  const close = async () => {
    ready = false;
    for (const t of timers) clearTimeout(t);
    timers.clear();
    for (const s of sockets) s.destroy();
    for (const g of grpcServers) g.forceShutdown();
    await Promise.all(netServers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
    for (const c of cleanups) await c();
  };

  try {
    for (const port of o.httpPorts ?? [8080]) {
      const bound = await listenHttp(o.ip, port, {
        handle: (req, res, servicePort) => {
          count++;
          if (!ready) {
            res.writeHead(503);
            res.end();
            return;
          }
          void answerHttp(req, res, { ...fields, servicePort, hostname: o.hostname }, delay);
        },
        upgrade: (req, socket, head, servicePort) => {
          count++;
          upgrade(req, socket, head, { ...fields, servicePort, hostname: o.hostname }, ready);
        },
        track: (s) => {
          sockets.add(s);
          s.once('close', () => sockets.delete(s));
        },
      });
      netServers.push(bound.server);
      cleanups.push(bound.close);
      httpPorts.push(bound.port);
    }
    for (const port of o.grpcPorts ?? [7070]) {
      const server = new grpc.Server();
      grpcServers.push(server);
      let servicePort = port;
      server.register<EchoMessage, EchoMessage>(
        echoMethod.path,
        (call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, callback: grpc.sendUnaryData<EchoMessage>) => {
          count++;
          if (!ready) {
            callback({ code: grpc.status.UNAVAILABLE, details: 'echo server not ready' });
            return;
          }
          callback(null, { message: grpcEchoBody(call, { ...fields, servicePort, hostname: o.hostname }) });
        },
        echoMethod.responseSerialize,
        echoMethod.requestDeserialize,
        'unary',
      );
      servicePort = await new Promise<number>((resolve, reject) =>
        server.bindAsync(`${o.ip}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
      );
      keepRepeatedMetadata(server);
      grpcPorts.push(servicePort);
    }
  } catch (err) {
    await close();
    throw new Error(`echo server ${o.hostname} on ${o.ip}: ${(err as Error).message}`);
  }
  ready = true;
  return { ip: o.ip, hostname: o.hostname, httpPorts, grpcPorts, requestCount: () => count, close };
}

// ---- listeners -------------------------------------------------------------------------------

type AnyRequest = IncomingMessage | Http2ServerRequest;
type AnyResponse = ServerResponse | Http2ServerResponse;

interface HttpHooks {
  handle(req: AnyRequest, res: AnyResponse, servicePort: number): void;
  upgrade(req: IncomingMessage, socket: Socket, head: Buffer, servicePort: number): void;
  track(socket: Socket): void;
}

/**
 * One TCP listener for HTTP/1.1 and h2c: the first bytes decide. A connection
 * that starts with the HTTP/2 preface goes to the h2c server, anything else to
 * the HTTP/1.1 server (Go's h2c handler does the same for prior knowledge).
 */
async function listenHttp(ip: string, port: number, hooks: HttpHooks): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  let servicePort = port;
  const h1 = http.createServer({ keepAliveTimeout: 0, requestTimeout: 0 }, (req, res) => hooks.handle(req, res, servicePort));
  h1.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => hooks.upgrade(req, socket, head, servicePort));
  h1.on('clientError', (_err, socket: Socket) => socket.destroy());
  const h2 = http2.createServer({}, (req, res) => hooks.handle(req, res, servicePort));
  h2.on('sessionError', () => {});
  // node:http2 hides the wrapper behind its own socket object; the peer IP is recorded per session.
  let nextPeer = '';
  h2.on('session', (session: http2.ServerHttp2Session) => h2Peers.set(session, nextPeer));
  const server = createServer((socket) => {
    hooks.track(socket);
    socket.on('error', () => {});
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      const isPrefacePrefix = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isPrefacePrefix && seen.length < H2_PREFACE.length) return; // need more bytes to decide
      socket.off('data', onData);
      socket.pause();
      if (isPrefacePrefix) {
        nextPeer = socket.remoteAddress ?? '';
        h2.emit('connection', replaying(socket, seen));
      } else {
        socket.unshift(seen);
        h1.emit('connection', socket);
      }
      socket.resume();
    };
    socket.on('data', onData);
  });
  server.listen(port, ip);
  await once(server, 'listening');
  servicePort = (server.address() as { port: number }).port;
  return {
    server,
    port: servicePort,
    close: async () => {
      h1.closeAllConnections();
      await Promise.all([new Promise<void>((r) => h1.close(() => r())), new Promise<void>((r) => h2.close(() => r()))]);
    },
  };
}

/**
 * The socket as a Duplex that first yields the bytes already read from it.
 * node:http2 reads a net.Socket's handle directly and would miss bytes read
 * before (node:http, given the same socket with the bytes unshifted, does
 * not), so h2c sessions get this wrapper; it carries the peer address for
 * the `IP=` field.
 */
function replaying(socket: Socket, first: Buffer): Duplex {
  const duplex = new Duplex({
    read: () => void socket.resume(),
    write: (chunk: Buffer, _enc, cb) => void socket.write(chunk, cb),
    final: (cb) => {
      socket.end();
      cb();
    },
    destroy: (err, cb) => {
      socket.destroy();
      cb(err);
    },
  });
  Object.defineProperties(duplex, {
    remoteAddress: { value: socket.remoteAddress },
    remotePort: { value: socket.remotePort },
    localAddress: { value: socket.localAddress },
    localPort: { value: socket.localPort },
  });
  duplex.push(first);
  socket.on('data', (d: Buffer) => {
    if (!duplex.push(d)) socket.pause();
  });
  socket.on('end', () => duplex.push(null));
  socket.on('close', () => duplex.destroy());
  return duplex;
}

// ---- HTTP echo -------------------------------------------------------------------------------

interface PayloadFields {
  readonly version: string;
  readonly cluster: string;
  readonly istioVersion: string;
  readonly namespace: string;
  readonly servicePort: number;
  readonly hostname: string;
}

async function answerHttp(req: AnyRequest, res: AnyResponse, f: PayloadFields, delay: (ms: number) => Promise<void>): Promise<void> {
  res.on('error', () => {});
  const errors: string[] = [];
  const uri = requestUri(req);
  const query = new URLSearchParams(uri.includes('?') ? uri.slice(uri.indexOf('?') + 1) : '');

  const d = query.get('delay');
  if (d !== null && d !== '') {
    const ms = parseGoDuration(d);
    if (ms === undefined) errors.push(`error delaying response error: time: invalid duration "${d}"`);
    else await delay(ms);
  }

  let setHeaders = false;
  const h = query.get('headers');
  if (h !== null && h !== '') {
    for (const pair of h.split(',')) {
      const parts = pair.split(':');
      if (parts.length !== 2) {
        errors.push(`response headers error: invalid "${pair}" (want name:value)`);
        break;
      }
      const [name, value] = parts as [string, string];
      if (!TOKEN.test(name)) {
        errors.push(`response headers error: invalid header name "${name}"`);
        break;
      }
      res.setHeader(name, value);
      setHeaders = true;
    }
  }

  const codes = pickCode(query.get('codes') ?? '');
  if ('error' in codes) errors.push(`codes error: ${codes.error}`);
  const status = 'code' in codes ? codes.code : 200;

  const body = [...errors.map((e) => `${e}\n`), httpPayload(req, f)].join('');
  if (res.writableEnded || res.destroyed) return;
  // Go snapshots the headers at WriteHeader when the handler touched them first (?headers=): the
  // Content-Type set afterwards is then lost and Go sniffs the body instead.
  res.setHeader('Content-Type', setHeaders ? 'text/plain; charset=utf-8' : 'application/text');
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.writeHead(status);
  res.end(body);
}

function requestUri(req: AnyRequest): string {
  return req.url ?? '/';
}

function requestHost(req: AnyRequest): string {
  if (req.httpVersionMajor === 2) {
    const authority = req.headers[':authority'];
    if (typeof authority === 'string' && authority !== '') return authority;
  }
  const host = req.headers['host'];
  return typeof host === 'string' ? host : '';
}

/** The body fields of `addResponsePayload`, in its order. */
function httpPayload(req: AnyRequest, f: PayloadFields): string {
  const lines: string[] = [];
  lines.push(`ServiceVersion=${f.version}`, `ServicePort=${f.servicePort}`, `Host=${requestHost(req)}`, `URL=${requestUri(req)}`);
  if (f.cluster !== '') lines.push(`Cluster=${f.cluster}`);
  if (f.istioVersion !== '') lines.push(`IstioVersion=${f.istioVersion}`);
  if (f.namespace !== '') lines.push(`Namespace=${f.namespace}`);
  lines.push(`Method=${req.method}`, `Proto=${req.httpVersionMajor === 2 ? 'HTTP/2.0' : `HTTP/${req.httpVersion}`}`, `IP=${peerIp(req)}`);
  for (const [name, value] of requestHeaderLines(req.rawHeaders)) lines.push(`RequestHeader=${name}:${value}`);
  lines.push(`Hostname=${f.hostname}`);
  return lines.map((l) => `${l}\n`).join('');
}

/**
 * `r.Header` as Go's server builds it from the raw header lines: canonical
 * names (textproto.CanonicalMIMEHeaderKey), values kept one per line in
 * arrival order, Host and HTTP/2 pseudo-headers removed; then sorted by name.
 */
export function requestHeaderLines(rawHeaders: readonly string[]): Array<[string, string]> {
  const byName = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i] as string;
    if (raw.startsWith(':')) continue;
    const name = canonicalHeaderName(raw);
    if (name === 'Host') continue;
    const list = byName.get(name);
    if (list) list.push(rawHeaders[i + 1] as string);
    else byName.set(name, [rawHeaders[i + 1] as string]);
  }
  const names = [...byName.keys()].sort(goStringCompare);
  return names.flatMap((n) => (byName.get(n) ?? []).map((v): [string, string] => [n, v]));
}

/** Go's textproto.CanonicalMIMEHeaderKey: `x-header-set` → `X-Header-Set`; a name with a non-token byte is left alone. */
export function canonicalHeaderName(name: string): string {
  if (!TOKEN.test(name)) return name;
  let out = '';
  let upper = true;
  for (const ch of name) {
    out += upper ? ch.toUpperCase() : ch.toLowerCase();
    upper = ch === '-';
  }
  return out;
}

/** Go's sort.Strings order (bytewise; the same as UTF-16 order for the ASCII header names here). */
function goStringCompare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function peerIp(req: AnyRequest): string {
  const session = 'stream' in req ? req.stream.session : undefined;
  const ip = (session !== undefined ? h2Peers.get(session) : req.socket.remoteAddress) ?? '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

/** Go's time.ParseDuration, in ms (undefined when it would fail). */
export function parseGoDuration(text: string): number | undefined {
  let s = text;
  let sign = 1;
  if (s.startsWith('-') || s.startsWith('+')) {
    sign = s.startsWith('-') ? -1 : 1;
    s = s.slice(1);
  }
  if (s === '0') return 0;
  if (s === '') return undefined;
  let total = 0;
  while (s !== '') {
    const m = DURATION_PART.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * (DURATION_UNITS[m[2] as string] ?? NaN);
    s = s.slice(m[0].length);
  }
  return Number.isFinite(total) ? Math.max(0, sign * total) : undefined;
}

/**
 * `setResponseFromCodes`: `code[:slices],…`, each code 200..599, slices ≥ 0;
 * empty means `200:1`. An invalid list is an error and the status stays 200
 * (Go returns before WriteHeader).
 */
export function pickCode(spec: string, random: (n: number) => number = (n) => randomInt(n)): { code: number } | { error: string } {
  const list = spec === '' ? '200:1' : spec;
  const codes: Array<{ code: number; slices: number }> = [];
  for (const item of list.split(',')) {
    const parts = item.split(':');
    if (parts.length > 2) return { error: `invalid "${item}" (want code or code:count)` };
    const code = goAtoi(parts[0] as string);
    if (code === undefined) return { error: `strconv.Atoi: parsing "${parts[0]}": invalid syntax` };
    if (code < 200 || code >= 600) return { error: `invalid HTTP response code ${code}` };
    let slices = 1;
    if (parts.length === 2) {
      const n = goAtoi(parts[1] as string);
      if (n === undefined) return { error: `strconv.Atoi: parsing "${parts[1]}": invalid syntax` };
      if (n < 0) return { error: `invalid count ${n}` };
      slices = n;
    }
    codes.push({ code, slices });
  }
  const total = codes.reduce((a, c) => a + c.slices, 0);
  if (total <= 0) return { error: 'invalid argument to Intn' };
  const slice = random(total);
  // Istio's pie walk, kept as written (it picks the flavour whose start is the last one <= slice).
  let chosen = (codes[codes.length - 1] as { code: number }).code;
  let position = 0;
  for (let n = 0; n < codes.length; n++) {
    if (position > slice) {
      chosen = (codes[n - 1] as { code: number }).code;
      break;
    }
    position += (codes[n] as { slices: number }).slices;
  }
  return { code: chosen };
}

function goAtoi(s: string): number | undefined {
  return /^[+-]?\d+$/.test(s) ? Number(s) : undefined;
}

// ---- WebSocket echo --------------------------------------------------------------------------

function headerHasToken(value: string | string[] | undefined, token: string): boolean {
  const all = Array.isArray(value) ? value.join(',') : (value ?? '');
  return all.split(',').some((t) => t.trim().toLowerCase() === token);
}

function upgrade(req: IncomingMessage, socket: Socket, head: Buffer, f: PayloadFields, ready: boolean): void {
  socket.on('error', () => {});
  const refuse = (status: number, reason: string) => {
    const body = `${reason}\n`;
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  };
  if (!ready) return refuse(503, 'Service Unavailable');
  const isWebSocket = headerHasToken(req.headers.connection, 'upgrade') && headerHasToken(req.headers.upgrade, 'websocket');
  if (!isWebSocket) return refuse(400, `upgrade to ${String(req.headers.upgrade)} is not supported by this echo stand-in`);
  const key = req.headers['sec-websocket-key'];
  if (req.headers['sec-websocket-version'] !== '13') return refuse(400, "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header");
  if (typeof key !== 'string' || Buffer.from(key, 'base64').length !== 16) return refuse(400, "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length");
  const accept = createHash('sha1').update(key + WS_GUID).digest('base64');
  socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`);
  const payload = httpPayload(req, f);
  const reader = new WsReader();
  const onData = (chunk: Buffer) => {
    const got = reader.push(chunk);
    if (got === undefined) return;
    socket.off('data', onData);
    if ('error' in got) {
      socket.end(wsFrame(0x8, Buffer.concat([Buffer.from([got.code >> 8, got.code & 0xff]), Buffer.from(got.error)])));
      return;
    }
    const reply = Buffer.concat([Buffer.from(payload), got.data, Buffer.from('StatusCode=200\n')]);
    socket.end(wsFrame(got.opcode, reply));
  };
  socket.on('data', onData);
  if (head.length > 0) onData(head);
}

/** One server-to-client frame (unmasked, RFC 6455 §5.2). */
function wsFrame(opcode: number, data: Buffer): Buffer {
  const len = data.length;
  const header = len < 126 ? Buffer.from([0x80 | opcode, len]) : len < 65536 ? Buffer.from([0x80 | opcode, 126, len >> 8, len & 0xff]) : Buffer.alloc(10);
  if (len >= 65536) {
    header[0] = 0x80 | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  return Buffer.concat([header, data]);
}

/**
 * Reads client frames (masked, RFC 6455) until one whole data message: text
 * or binary plus continuations; control frames in between are skipped.
 */
class WsReader {
  private buf = Buffer.alloc(0);
  private parts: Buffer[] = [];
  private opcode = 0;

  push(chunk: Buffer): { opcode: number; data: Buffer } | { error: string; code: number } | undefined {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return undefined;
      const b0 = this.buf[0] as number;
      const b1 = this.buf[1] as number;
      const fin = (b0 & 0x80) !== 0;
      const opcode = b0 & 0x0f;
      if ((b1 & 0x80) === 0) return { error: 'client frames must be masked', code: 1002 };
      let len = b1 & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (this.buf.length < 4) return undefined;
        len = this.buf.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return undefined;
        const big = this.buf.readBigUInt64BE(2);
        if (big > BigInt(WS_MAX_MESSAGE)) return { error: 'message too big', code: 1009 };
        len = Number(big);
        offset = 10;
      }
      if (len + this.parts.reduce((a, p) => a + p.length, 0) > WS_MAX_MESSAGE) return { error: 'message too big', code: 1009 };
      if (this.buf.length < offset + 4 + len) return undefined;
      const mask = this.buf.subarray(offset, offset + 4);
      const data = Buffer.from(this.buf.subarray(offset + 4, offset + 4 + len));
      for (let i = 0; i < data.length; i++) data[i] = (data[i] as number) ^ (mask[i & 3] as number);
      this.buf = this.buf.subarray(offset + 4 + len);
      if (opcode >= 0x8) {
        if (opcode === 0x8) return { error: '', code: 1000 };
        continue; // ping/pong: gorilla answers pings itself; the echo only waits for data
      }
      if (opcode !== 0 && this.parts.length === 0) this.opcode = opcode;
      else if (opcode !== 0 || this.parts.length === 0) return { error: 'unexpected frame opcode', code: 1002 };
      this.parts.push(data);
      if (fin) return { opcode: this.opcode, data: Buffer.concat(this.parts) };
    }
  }
}

// ---- gRPC echo -------------------------------------------------------------------------------

function grpcEchoBody(call: grpc.ServerUnaryCall<EchoMessage, EchoMessage>, f: PayloadFields): string {
  const lines: string[] = [];
  const authority = call.getHost();
  if (authority !== '') {
    lines.push(`Host=${authority}`, `RequestHeader=:authority:${authority}`);
  }
  for (const [key, values] of Object.entries(call.metadata.toJSON())) {
    if (key.endsWith('-bin')) continue;
    for (const v of values) lines.push(`RequestHeader=${key}:${typeof v === 'string' ? v : v.toString()}`);
  }
  lines.push('StatusCode=200', `ServiceVersion=${f.version}`, `ServicePort=${f.servicePort}`);
  if (f.cluster !== '') lines.push(`Cluster=${f.cluster}`);
  if (f.namespace !== '') lines.push(`Namespace=${f.namespace}`);
  lines.push(`IP=${grpcPeerIp(call.getPeer())}`);
  if (f.istioVersion !== '') lines.push(`IstioVersion=${f.istioVersion}`);
  lines.push('Proto=GRPC', `Echo=${call.request.message}`, `Hostname=${f.hostname}`);
  return lines.map((l) => `${l}\n`).join('');
}

/**
 * node:http2 hands grpc-js a header object in which a repeated custom header
 * is one value joined with ", " (grpc-go keeps each field as its own metadata
 * value, and the header-modifier checks join them with "," and no space). So
 * before grpc-js reads a stream's headers, repeated names get their values
 * back as a list, one per field, from the stream's raw header list. grpc-js
 * keeps its http2 servers in a private map; if that ever changes this fails
 * loudly instead of silently merging values.
 */
function keepRepeatedMetadata(server: grpc.Server): void {
  const servers = (server as unknown as { http2Servers?: Map<http2.Http2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) throw new Error('@grpc/grpc-js no longer exposes its http2 servers; repeated metadata would be merged');
  for (const h2 of servers.keys()) {
    h2.prependListener('stream', (_stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
      const byName = new Map<string, string[]>();
      for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
        const name = (rawHeaders[i] as string).toLowerCase();
        if (name.startsWith(':')) continue;
        byName.set(name, [...(byName.get(name) ?? []), rawHeaders[i + 1] as string]);
      }
      for (const [name, values] of byName) if (values.length > 1) (headers as Record<string, string | string[]>)[name] = values;
    });
  }
}

/** grpc-js peers read `ipv4:1.2.3.4:5`, `1.2.3.4:5` or `[::1]:5`; Go prints the bare IP. */
function grpcPeerIp(peer: string): string {
  const p = peer.replace(/^ipv[46]:/, '');
  const bracket = /^\[(.*)\]:\d+$/.exec(p);
  const ip = bracket ? (bracket[1] as string) : p.replace(/:\d+$/, '');
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip === 'unknown' ? '0.0.0.0' : ip;
}
