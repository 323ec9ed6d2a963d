/**
 * Runs the real HboneServer on 127.0.0.1 for tests and records what it did
 * (requests handed to the handler, refusals, limits, connections), with
 * promises to wait for each instead of sleeping. Also an HTTP/2 client that
 * uses the production outbound TLS options.
 */
import http2, { type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Readable } from 'node:stream';
import net from 'node:net';
import pino from 'pino';
import type { Clock, Identity, Logger, WorkloadCertificate } from '@ambient/control';
import { HboneServer, type ConnectHandler, type ConnectRequest, type HboneRefusal } from '../../src/hbone/server.js';
import type { HboneLimitKind, HboneServerLimits } from '../../src/hbone/server-limits.js';
import type { SocketAddress } from '../../src/net/address.js';
import { TlsMaterial } from '../../src/tls/contexts.js';
import { clientHandshake } from '../../src/tls/handshake.js';
import { peerVerifier } from '../../src/tls/peer-verifier.js';

/** A list that can be awaited: `next(pred)` resolves with a matching item, past or future. */
export class Recorder<T> {
  readonly items: T[] = [];
  readonly #waiters: Array<{ pred: (t: T) => boolean; resolve: (t: T) => void }> = [];

  push(item: T): void {
    this.items.push(item);
    for (const w of [...this.#waiters]) {
      if (w.pred(item)) {
        this.#waiters.splice(this.#waiters.indexOf(w), 1);
        w.resolve(item);
      }
    }
  }

  next(pred: (t: T) => boolean = () => true): Promise<T> {
    const found = this.items.find(pred);
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }
}

export interface Harness {
  readonly server: HboneServer;
  readonly port: number;
  readonly address: SocketAddress;
  readonly requests: Recorder<ConnectRequest>;
  readonly refusals: Recorder<HboneRefusal>;
  readonly limits: Recorder<HboneLimitKind>;
  readonly opened: Recorder<number>;
  readonly closed: Recorder<number>;
  readonly logs: Recorder<{ level: string; msg: string; fields: Record<string, unknown> }>;
}

export interface HarnessOptions {
  readonly clock: Clock;
  readonly certificate: WorkloadCertificate | ((local: SocketAddress) => Promise<WorkloadCertificate>);
  /** Default: record the request and leave it pending. */
  readonly onConnect?: ConnectHandler;
  readonly limits?: Partial<HboneServerLimits>;
  readonly host?: string;
}

/** A pino-shaped logger that records every line (and prints nothing). */
export function recordingLogger(sink: Recorder<{ level: string; msg: string; fields: Record<string, unknown> }>, bindings: Record<string, unknown> = {}): Logger {
  const line = (level: string) => (obj: object, msg?: string) => sink.push({ level, msg: msg ?? '', fields: { ...bindings, ...obj } });
  return {
    child: (b) => recordingLogger(sink, { ...bindings, ...b }),
    debug: line('debug'),
    info: line('info'),
    warn: line('warn'),
    error: line('error'),
  };
}

export async function startHarness(options: HarnessOptions, cleanup: Array<() => Promise<void> | void>): Promise<Harness> {
  const requests = new Recorder<ConnectRequest>();
  const refusals = new Recorder<HboneRefusal>();
  const limits = new Recorder<HboneLimitKind>();
  const opened = new Recorder<number>();
  const closed = new Recorder<number>();
  const logs = new Recorder<{ level: string; msg: string; fields: Record<string, unknown> }>();
  const { certificate } = options;
  const server = new HboneServer({
    clock: options.clock,
    log: process.env['HBONE_TEST_LOG'] ? (pino({ level: 'debug' }) as unknown as Logger) : recordingLogger(logs),
    certificateFor: typeof certificate === 'function' ? certificate : () => Promise.resolve(certificate),
    onConnect: async (r) => {
      requests.push(r);
      await options.onConnect?.(r);
    },
    limits: options.limits ?? {},
    hooks: {
      onLimit: (k) => limits.push(k),
      onRefused: (r) => refusals.push(r),
      onConnectionOpen: (i) => opened.push(i.connectionId),
      onConnectionClose: (i) => closed.push(i.connectionId),
    },
  });
  cleanup.push(() => server.close());
  const address = await listenHbone(server, options.host ?? '127.0.0.1', cleanup);
  return { server, port: address.port, address, requests, refusals, limits, opened, closed, logs };
}

/** A listener of the test's own (pauseOnConnect, as production's) served by `server`. */
export async function listenHbone(server: HboneServer, host: string, cleanup: Array<() => Promise<void> | void>): Promise<SocketAddress> {
  const listener = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(0, host, () => resolve());
  });
  cleanup.push(() => new Promise<void>((resolve) => listener.close(() => resolve())));
  server.attach(listener);
  const bound = listener.address() as net.AddressInfo;
  return { ip: bound.address, port: bound.port };
}

/** An HTTP/2 client over the production client TLS path (clientHandshake: no SNI, the one PeerVerifier on the server). */
export async function h2Client(
  port: number,
  cert: WorkloadCertificate,
  expected: readonly Identity[],
  clock: Clock,
  cleanup: Array<() => Promise<void> | void>,
  extra: { host?: string; settings?: http2.Settings } = {},
): Promise<ClientHttp2Session> {
  const material = TlsMaterial.from(cert);
  const host = extra.host ?? '127.0.0.1';
  const tcp = net.connect({ host, port });
  cleanup.push(() => {
    tcp.destroy();
  });
  const { socket } = await clientHandshake(tcp, {
    material,
    verifier: peerVerifier({ roots: material.roots, expect: { peer: 'server', identities: expected }, clock }),
    clock,
    timeoutMs: 5000,
    peer: `${host}:${port}`,
  });
  const session = http2.connect(`https://${host}:${port}`, {
    createConnection: () => socket,
    ...(extra.settings ? { settings: extra.settings } : {}),
  });
  cleanup.push(() => {
    session.destroy();
  });
  return new Promise((resolve, reject) => {
    session.once('connect', () => resolve(session));
    session.once('error', reject);
    session.once('close', () => reject(new Error('session closed before connecting')));
  });
}

export function connect(session: ClientHttp2Session, authority = '127.0.0.1:8080', headers: http2.OutgoingHttpHeaders = {}): ClientHttp2Stream {
  const stream = session.request({ ':method': 'CONNECT', ':authority': authority, ...headers }, { endStream: false });
  stream.on('error', () => {});
  return stream;
}

export function response(stream: ClientHttp2Stream): Promise<http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader> {
  return new Promise((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('close', () => reject(new Error(`stream closed without a response (rst ${stream.rstCode})`)));
  });
}

/** Everything a readable yields until 'end'. */
export function readAll(stream: Readable): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.once('end', () => resolve(Buffer.concat(chunks).toString()));
    stream.once('error', reject);
  });
}

/** Waits for `cond` by yielding to the event loop (for state that has no event). */
export async function until(cond: () => boolean, what: string, turns = 20_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
  throw new Error(`timed out waiting for ${what}`);
}
