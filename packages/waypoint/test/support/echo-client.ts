/**
 * A stand-in for Istio's echo `client` binary (istio 1.30.3 `pkg/test/echo/cmd/client`,
 * `server/forwarder/{http,grpc}.go`) as the mesh conformance suite execs it
 * inside a client pod, with its wire behaviour and its output:
 *
 * - HTTP: HTTP/1.1, keep-alive off (one TCP connection per request,
 *   `Connection: close`), the URL's path+query sent raw as the request-target
 *   (`/` when empty), `-H Host:x` becomes the Host header (the TCP target stays
 *   the URL host), other `-H` names canonicalised as Go's Header.Add does,
 *   Go's transport headers (`User-Agent: Go-http-client/1.1`,
 *   `Accept-Encoding: gzip`), redirects never followed.
 * - gRPC: `proto.EchoTestService/Echo` with message `HelloWorld` through
 *   @grpc/grpc-js; `:authority` = the URL's host:port unless `-H Host`; `-H`
 *   headers as metadata; every request of one call shares ONE h2c connection.
 * - Per-request timeout 5 s that also bounds a whole `--count` batch; dial
 *   timeout 2 s; at most 20 requests at once. Any failed request fails the
 *   call (the real client exits non-zero).
 *
 * The pod's traffic leaves the way an ambient pod's does: through the pod's
 * own ztunnel. Each connection is a SOCKS5 CONNECT to that ztunnel (dedicated
 * mode, `UNSTABLE_ENABLE_SOCKS5=true`) for the resolved destination
 * (VIP:port or podIP:port), made from the pod's IP. grpc-js cannot take a
 * pre-made socket, so a gRPC call listens on an ephemeral port of the pod IP
 * and turns each connection grpc-js makes into one such SOCKS5 tunnel
 * (`connections` reports how many there were).
 *
 * The output is the client's text (`[i] StatusCode=…`, `[i body] …`, blocks
 * separated by a blank line) and `parseEchoOutput` reads it the way the
 * conformance parser (`conformance/utils/echo/parse.go`) does.
 */
import { once } from 'node:events';
import http from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { echoMethod, type EchoMessage } from './echo-proto.js';
import { canonicalHeaderName } from './echo-server.js';

export const CLIENT_TIMEOUT_MS = 5_000;
export const DIAL_TIMEOUT_MS = 2_000;
export const CLIENT_CONCURRENCY = 20;
const GO_USER_AGENT = 'Go-http-client/1.1';
const MAX_BODY = 1 << 20;

export interface EchoClientPod {
  /** The client pod's IP: the source address of every connection. */
  readonly ip: string;
  /** The pod's ztunnel SOCKS5 listener. */
  readonly socks5: { readonly ip: string; readonly port: number };
  /** The pod's DNS: a host name as the pod would resolve it (short names in its namespace) → IP, or undefined (NXDOMAIN). */
  readonly resolve: (host: string) => string | undefined;
}

export interface EchoCall {
  /** `http://echo/path?x`, `http://10.0.0.1:8080`, `grpc://echo:7070`. */
  readonly url: string;
  /** `-H name:value` in order (cobra StringSlice: a value with a comma would have been split; none here). */
  readonly headers?: ReadonlyArray<readonly [string, string]>;
  /** `--method` (HTTP only; default GET). */
  readonly method?: string;
  /** `--count` (default 1). */
  readonly count?: number;
  /** `--timeout` (default 5 s): per request and for the whole batch. */
  readonly timeoutMs?: number;
}

export interface EchoCallResult {
  /** What the client prints. */
  readonly output: string;
  /** `output` parsed as the conformance suite does (one per block with a Hostname or StatusCode). */
  readonly responses: readonly ParsedEchoResponse[];
  /** TCP connections (SOCKS5 tunnels) the call opened. */
  readonly connections: number;
}

/** The call failed as the client would exit non-zero: a transport error, a timeout, a gRPC error status. */
export class EchoClientError extends Error {
  constructor(
    message: string,
    readonly output: string,
  ) {
    super(message);
    this.name = 'EchoClientError';
  }
}

interface Target {
  readonly scheme: 'http' | 'grpc';
  /** `host[:port]` as written in the URL: the default Host / authority. */
  readonly hostPort: string;
  readonly ip: string;
  readonly port: number;
  /** Raw path+query, `/` when empty. */
  readonly path: string;
}

export function parseTarget(url: string, resolve: (host: string) => string | undefined): Target {
  const m = /^([a-z][a-z0-9+.-]*):\/\/([^/?#]*)(.*)$/i.exec(url);
  if (!m) throw new EchoClientError(`invalid URL "${url}"`, '');
  const scheme = (m[1] as string).toLowerCase();
  if (scheme !== 'http' && scheme !== 'grpc') throw new EchoClientError(`unsupported scheme "${scheme}" in "${url}" (http or grpc)`, '');
  const hostPort = m[2] as string;
  const hp = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d+))?$/.exec(hostPort);
  if (!hp || (hp[1] ?? hp[2] ?? '') === '') throw new EchoClientError(`invalid host "${hostPort}" in "${url}"`, '');
  const host = (hp[1] ?? hp[2]) as string;
  if (hp[3] === undefined && scheme === 'grpc') throw new EchoClientError(`gRPC URL "${url}" needs a port`, '');
  const port = hp[3] !== undefined ? Number(hp[3]) : 80;
  const ip = resolve(host);
  if (ip === undefined) throw new EchoClientError(`dial tcp: lookup ${host}: no such host`, '');
  let path = m[3] as string;
  if (path === '' || path.startsWith('?')) path = `/${path}`;
  return { scheme, hostPort, ip, port, path };
}

/** Runs one `client <url> ...` invocation from `pod`. */
export async function echoCall(pod: EchoClientPod, call: EchoCall): Promise<EchoCallResult> {
  const target = parseTarget(call.url, pod.resolve);
  const count = call.count ?? 1;
  const timeoutMs = call.timeoutMs ?? CLIENT_TIMEOUT_MS;
  const headers = call.headers ?? [];
  const hostOverride = headers.find(([k]) => k.toLowerCase() === 'host')?.[1];
  const others = headers.filter(([k]) => k.toLowerCase() !== 'host');
  const deadline = performance.now() + timeoutMs;
  if (target.scheme === 'http') {
    let connections = 0;
    const blocks = await runBatch(count, (i) => {
      connections++;
      return httpOnce(pod, target, { id: i, url: call.url, method: call.method ?? 'GET', host: hostOverride ?? target.hostPort, headers: others, deadline });
    });
    return result(blocks, connections);
  }
  const tunnel = await startTunnel(pod, target);
  const client = new grpc.Client(`${pod.ip}:${tunnel.port}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': hostOverride ?? target.hostPort,
    'grpc.use_local_subchannel_pool': 1,
    'grpc.enable_retries': 0,
    'grpc.initial_reconnect_backoff_ms': DIAL_TIMEOUT_MS,
  });
  try {
    const blocks = await runBatch(count, (i) => grpcOnce(client, { id: i, headers: others, deadline }));
    return result(blocks, tunnel.connections());
  } finally {
    client.close();
    await tunnel.close();
  }
}

function result(blocks: readonly string[], connections: number): EchoCallResult {
  const output = blocks.join('\n');
  return { output, responses: parseEchoOutput(output), connections };
}

/** Runs `count` requests, at most CLIENT_CONCURRENCY at once; the first failure fails the batch (with what was printed). */
async function runBatch(count: number, one: (i: number) => Promise<string>): Promise<string[]> {
  const blocks: string[] = new Array<string>(count).fill('');
  let next = 0;
  let failure: EchoClientError | undefined;
  const worker = async () => {
    while (failure === undefined && next < count) {
      const i = next++;
      try {
        blocks[i] = await one(i);
      } catch (err) {
        const e = err instanceof EchoClientError ? err : new EchoClientError(String(err), '');
        blocks[i] = e.output;
        failure ??= new EchoClientError(`request ${i}: ${e.message}`, '');
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(count, CLIENT_CONCURRENCY) }, worker));
  if (failure !== undefined) throw new EchoClientError(failure.message, blocks.filter((b) => b !== '').join('\n'));
  return blocks;
}

// ---- SOCKS5 through the pod's ztunnel -------------------------------------------------------------

/**
 * SOCKS5 CONNECT (RFC 1928, no auth, IPv4 destination) through `proxy` from
 * `localAddress`; resolves with the tunnel socket once the proxy answered
 * success, rejects with the reply code otherwise or after `timeoutMs`.
 */
export function socks5Connect(proxy: { ip: string; port: number }, dst: { ip: string; port: number }, localAddress: string, timeoutMs = DIAL_TIMEOUT_MS): Promise<Socket> {
  const octets = dst.ip.split('.').map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    return Promise.reject(new EchoClientError(`SOCKS5 destination ${dst.ip} is not an IPv4 address`, ''));
  }
  return new Promise((resolve, reject) => {
    const socket = connect({ host: proxy.ip, port: proxy.port, localAddress });
    let buf = Buffer.alloc(0);
    let stage: 'method' | 'reply' = 'method';
    const fail = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new EchoClientError(`dial ${dst.ip}:${dst.port} via ztunnel SOCKS5 ${proxy.ip}:${proxy.port}: ${why}`, ''));
    };
    const timer = setTimeout(() => fail(`i/o timeout after ${timeoutMs} ms`), timeoutMs);
    socket.on('error', (err) => fail(err.message));
    socket.on('close', () => fail('connection closed during the SOCKS5 handshake'));
    socket.once('connect', () => socket.write(Buffer.from([5, 1, 0])));
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (stage === 'method') {
        if (buf.length < 2) return;
        if (buf[0] !== 5 || buf[1] !== 0) return fail(`SOCKS5 method refused (${buf[0]}, ${buf[1]})`);
        buf = buf.subarray(2);
        stage = 'reply';
        socket.write(Buffer.from([5, 1, 0, 1, ...octets, dst.port >> 8, dst.port & 255]));
      }
      if (buf.length < 10) return;
      if (buf[1] !== 0) return fail(`SOCKS5 reply ${buf[1]}`);
      clearTimeout(timer);
      socket.off('data', onData);
      socket.removeAllListeners('close');
      socket.removeAllListeners('error');
      socket.on('error', () => {});
      socket.pause();
      if (buf.length > 10) socket.unshift(buf.subarray(10));
      resolve(socket);
    };
    socket.on('data', onData);
  });
}

// ---- HTTP ---------------------------------------------------------------------------------------

interface HttpOnce {
  readonly id: number;
  readonly url: string;
  readonly method: string;
  readonly host: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly deadline: number;
}

function httpOnce(pod: EchoClientPod, target: Target, o: HttpOnce): Promise<string> {
  const out: string[] = [`[${o.id}] Url=${o.url}`];
  const sorted = [...o.headers].map(([k, v]): [string, string] => [canonicalHeaderName(k), v]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  for (const [k, v] of sorted) out.push(`[${o.id}] Header=${k}:${v}`);
  const raw: string[] = ['Host', o.host, 'User-Agent', GO_USER_AGENT];
  for (const [k, v] of sorted) raw.push(k, v);
  raw.push('Accept-Encoding', 'gzip', 'Connection', 'close');
  const text = () => out.map((l) => `${l}\n`).join('');
  return new Promise((resolve, reject) => {
    let settled = false;
    let tunnel: Socket | undefined;
    const finish = (err: string | undefined) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      tunnel?.destroy();
      if (err === undefined) resolve(text());
      else reject(new EchoClientError(err, text()));
    };
    const timer = setTimeout(() => {
      req.destroy();
      finish(`context deadline exceeded (Client.Timeout exceeded while awaiting headers)`);
    }, Math.max(0, o.deadline - performance.now()));
    const req = http.request(
      {
        method: o.method,
        path: target.path,
        headers: raw,
        setHost: false,
        createConnection: ((_opts: unknown, oncreate: (err: Error | null, socket?: Socket) => void) => {
          socks5Connect(pod.socks5, target, pod.ip).then(
            (s) => {
              tunnel = s;
              if (settled) {
                s.destroy();
                return;
              }
              oncreate(null, s);
              // socks5Connect hands the socket over paused; node:http attaches its reader on the next tick,
              // before it writes the request, so nothing can be read unheard.
              s.resume();
            },
            (err: Error) => oncreate(err),
          );
          return undefined;
        }) as unknown as http.RequestOptions['createConnection'],
      },
      (res) => {
        out.push(`[${o.id}] StatusCode=${res.statusCode}`);
        for (const [k, v] of canonicalHeaderPairs(res.rawHeaders)) out.push(`[${o.id}] ResponseHeader=${k}:${v}`);
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > MAX_BODY) {
            req.destroy();
            finish(`response body over ${MAX_BODY} bytes`);
            return;
          }
          chunks.push(d);
        });
        res.on('end', () => {
          for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) if (line !== '') out.push(`[${o.id} body] ${line}`);
          finish(undefined);
        });
        res.on('error', (err) => finish(err.message));
      },
    );
    req.on('error', (err) => finish(err.message));
    req.end();
  });
}

/** Response headers as Go's client has them: canonical names, one entry per line, names sorted. */
function canonicalHeaderPairs(rawHeaders: readonly string[]): Array<[string, string]> {
  const byName = new Map<string, string[]>();
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = canonicalHeaderName(rawHeaders[i] as string);
    const list = byName.get(name) ?? [];
    list.push(rawHeaders[i + 1] as string);
    byName.set(name, list);
  }
  return [...byName.keys()].sort().flatMap((n) => (byName.get(n) ?? []).map((v): [string, string] => [n, v]));
}

// ---- gRPC ---------------------------------------------------------------------------------------

interface Tunnel {
  readonly port: number;
  readonly connections: () => number;
  close(): Promise<void>;
}

/** A listener on the pod IP whose every connection becomes one SOCKS5 tunnel to `target` through the pod's ztunnel. */
async function startTunnel(pod: EchoClientPod, target: Target): Promise<Tunnel> {
  let connections = 0;
  const sockets = new Set<Socket>();
  const server = createServer({ pauseOnConnect: true }, (local) => {
    connections++;
    sockets.add(local);
    local.on('close', () => sockets.delete(local));
    local.on('error', () => {});
    socks5Connect(pod.socks5, target, pod.ip).then(
      (remote) => {
        sockets.add(remote);
        remote.on('close', () => {
          sockets.delete(remote);
          local.destroy();
        });
        local.on('close', () => remote.destroy());
        if (local.destroyed) {
          remote.destroy();
          return;
        }
        local.pipe(remote);
        remote.pipe(local);
        local.resume();
        remote.resume();
      },
      () => local.destroy(),
    );
  });
  server.listen(0, pod.ip);
  await once(server, 'listening');
  return {
    port: (server.address() as { port: number }).port,
    connections: () => connections,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

interface GrpcOnce {
  readonly id: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly deadline: number;
}

function grpcOnce(client: grpc.Client, o: GrpcOnce): Promise<string> {
  const md = new grpc.Metadata();
  for (const [k, v] of o.headers) md.add(k.toLowerCase(), v);
  const out: string[] = [];
  const responseHeaders: string[] = [];
  const text = () => out.map((l) => `${l}\n`).join('');
  return new Promise((resolve, reject) => {
    const call = client.makeUnaryRequest<EchoMessage, EchoMessage>(
      echoMethod.path,
      echoMethod.requestSerialize,
      echoMethod.responseDeserialize,
      { message: 'HelloWorld' },
      md,
      { deadline: new Date(Date.now() + Math.max(0, o.deadline - performance.now())) },
      (err, value) => {
        if (err) {
          reject(new EchoClientError(`rpc error: code = ${grpc.status[err.code]} desc = ${err.details}`, text()));
          return;
        }
        for (const line of (value?.message ?? '').split('\n')) if (line !== '') out.push(`[${o.id} body] ${line}`);
        out.push(...responseHeaders);
        resolve(text());
      },
    );
    call.on('metadata', (m: grpc.Metadata) => {
      for (const [k, values] of Object.entries(m.toJSON())) {
        for (const v of values) responseHeaders.push(`[${o.id}] ResponseHeader=${k}:${typeof v === 'string' ? v : v.toString()}`);
      }
    });
  });
}

// ---- output parsing (conformance/utils/echo/parse.go) -----------------------------------------------

export interface ParsedEchoResponse {
  /** The block as printed. */
  readonly raw: string;
  /** First `StatusCode=` ('' when absent). */
  readonly statusCode: string;
  /** First `Hostname=`: the backend pod name. */
  readonly hostname: string;
  readonly url: string;
  readonly host: string;
  readonly method: string;
  readonly protocol: string;
  readonly ip: string;
  /** Every `RequestHeader=` value, by canonical name (Header.Add). */
  readonly requestHeaders: ReadonlyMap<string, readonly string[]>;
  /** `ResponseHeader=` by canonical name; the last line for a name wins (Header.Set). */
  readonly responseHeaders: ReadonlyMap<string, string>;
}

const FIELD = (name: string) => new RegExp(`${name}=(.*)`);
const STATUS = FIELD('StatusCode');
const HOSTNAME = FIELD('Hostname');
const URL_FIELD = FIELD('URL');
const HOST = FIELD('Host');
const METHOD = FIELD('Method');
const PROTO = FIELD('Proto');
const IP = FIELD('IP');
const REQUEST_HEADER = /RequestHeader=(.*)/g;
const RESPONSE_HEADER = /ResponseHeader=(.*)/g;

/** Splits the client output on blank lines; a block counts if it has a Hostname or StatusCode (weight.go). */
export function parseEchoOutput(output: string): ParsedEchoResponse[] {
  return output
    .split('\n\n')
    .filter((b) => b.trim() !== '')
    .map(parseEchoResponse)
    .filter((r) => r.hostname !== '' || r.statusCode !== '');
}

export function parseEchoResponse(block: string): ParsedEchoResponse {
  const first = (re: RegExp) => re.exec(block)?.[1] ?? '';
  const requestHeaders = new Map<string, string[]>();
  for (const m of block.matchAll(REQUEST_HEADER)) {
    const kv = m[1] as string;
    const colon = kv.indexOf(':');
    if (colon < 0) continue;
    const name = canonicalHeaderName(kv.slice(0, colon));
    const list = requestHeaders.get(name) ?? [];
    list.push(kv.slice(colon + 1));
    requestHeaders.set(name, list);
  }
  const responseHeaders = new Map<string, string>();
  for (const m of block.matchAll(RESPONSE_HEADER)) {
    const kv = m[1] as string;
    const colon = kv.indexOf(':');
    if (colon < 0) continue;
    responseHeaders.set(canonicalHeaderName(kv.slice(0, colon)), kv.slice(colon + 1));
  }
  return {
    raw: block,
    statusCode: first(STATUS),
    hostname: first(HOSTNAME),
    url: first(URL_FIELD),
    host: first(HOST),
    method: first(METHOD),
    protocol: first(PROTO),
    ip: first(IP),
    requestHeaders,
    responseHeaders,
  };
}
