/**
 * The HBONE client: dials one mTLS + HTTP/2 connection to a peer's HBONE port
 * and opens CONNECT streams on it (ztunnel src/proxy/h2/client.rs, h2.rs and
 * the pool's connection spawner), plus the inner tunnel of double HBONE.
 *
 * Dial, in order (each step fails with one ProxyError code):
 * 1. TCP connect through the injected socket factory (in-pod mode makes the
 *    socket inside the pod's netns), TCP_NODELAY and keepalive 180 s; bounded
 *    by `connectTimeoutMs` (ztunnel: 10 s) → UPSTREAM_TIMEOUT with ztunnel's
 *    NetworkPolicy hint; any other failure → UPSTREAM_CONNECT_FAILED.
 * 2. TLS 1.3 only, TLS_AES_256_GCM_SHA384 / TLS_AES_128_GCM_SHA256, ALPN h2
 *    required, no SNI, no session resumption, our full chain as the client
 *    certificate, the chain verified against *our workload* trust roots, then
 *    the injected `verifyPeer` (SPIFFE: the peer must be one of the expected
 *    identities, and with CRL_PATH not revoked) → TLS_HANDSHAKE_FAILED /
 *    PEER_IDENTITY_INVALID / CERT_REVOKED /
 *    TLS_HANDSHAKE_TIMEOUT.
 * 3. HTTP/2 with ztunnel's client settings (4 MiB stream window, 16 MiB
 *    connection window, 1 MiB frames, 16 KiB header list, no push), and the
 *    peer's SETTINGS awaited so its stream limit is known before the first
 *    stream (and a peer that refuses our certificate after the TLS 1.3
 *    handshake fails the dial, not the first stream) → H2_HANDSHAKE_FAILED.
 *
 * Keepalive: a PING after 10 s idle-or-not, then 10 s after each PONG; no PONG
 * within 20 s (or a PING error) destroys the connection, as ztunnel does.
 *
 * Invariants (HboneConnection):
 * - `activeStreams` counts streams from `openStream` until their 'close' (or
 *   their synchronous failure), each decremented exactly once;
 * - `isReady` turns false for good on GOAWAY, close or destroy, and no stream
 *   is opened once it is false;
 * - the keepalive holds at most one timer at a time and none after close;
 * - 'close' listeners run exactly once, after the session closed.
 */
import { createSecureContext, connect as tlsConnect, type PeerCertificate, type SecureContext, type TLSSocket } from 'node:tls';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as h2Connect, constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader, type OutgoingHttpHeaders } from 'node:http2';
import { X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import {
  fail,
  formatRejections,
  ok,
  parseIdentity,
  rejection,
  type Clock,
  type Identity,
  type Logger,
  type Result,
  type Timer,
  type WorkloadCertificate,
} from '@ambient/control';
import { ProxyError, type ProxyErrorCode } from '../errors.js';
import { formatSocketAddress, type SocketAddress } from '../net/address.js';
import { isRevocationRejection } from '../tls/crl/manager.js';
import { abortiveClose } from '../io/copy.js';
import { applyTcpSocketOptions, DEFAULT_TCP_SOCKET_OPTIONS, type TcpSocketOptions } from '../io/socket-options.js';

// ---------------------------------------------------------------------------
// Settings

/** ztunnel's client-side HTTP/2 and keepalive settings (h2/client.rs, h2.rs, config.rs). */
export interface HboneClientSettings {
  /** HTTP2_STREAM_WINDOW_SIZE. */
  readonly streamWindowSize: number;
  /** HTTP2_CONNECTION_WINDOW_SIZE (4× the stream window: equal values can deadlock). */
  readonly connectionWindowSize: number;
  /** HTTP2_FRAME_SIZE. */
  readonly frameSize: number;
  readonly maxHeaderListSize: number;
  /** Assumed peer stream limit until its SETTINGS arrive (POOL_MAX_STREAMS_PER_CONNECTION). */
  readonly initialPeerMaxStreams: number;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  /** TLS + HTTP/2 handshake deadline (ztunnel has none; a Node proxy needs one). */
  readonly handshakeTimeoutMs: number;
  /**
   * nghttp2 session memory cap in MiB. Node's default (10) is below one
   * connection window; this covers the 16 MiB window plus send buffers.
   */
  readonly maxSessionMemoryMiB: number;
}

export const DEFAULT_HBONE_CLIENT_SETTINGS: HboneClientSettings = {
  streamWindowSize: 4 * 1024 * 1024,
  connectionWindowSize: 16 * 1024 * 1024,
  frameSize: 1024 * 1024,
  maxHeaderListSize: 16 * 1024,
  initialPeerMaxStreams: 100,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  handshakeTimeoutMs: 10_000,
  maxSessionMemoryMiB: 64,
};

/** ztunnel's CONNECTION_TIMEOUT default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** TLS 1.3 suites ztunnel allows, in its preference order. */
export const HBONE_TLS_CIPHERS = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

// ---------------------------------------------------------------------------
// Types

/**
 * Decides whether the server's verified chain (leaf first; the chain already
 * verified against our workload roots) is an acceptable peer; returns the
 * peer's identity. Wired to the SPIFFE verifier with the expected identities.
 */
export type VerifyPeer = (chain: readonly X509Certificate[]) => Result<Identity>;

export interface ConnectSocketOptions {
  readonly host: string;
  readonly port: number;
  /** The original application source IP, when the socket factory can bind to it (transparent mode). */
  readonly localAddress?: string;
}

/** Creates a TCP socket and starts connecting it (in-pod mode: inside the pod's netns). */
export type ConnectSocket = (options: ConnectSocketOptions) => Socket;

export const defaultConnectSocket: ConnectSocket = (o) =>
  netConnect(o.localAddress === undefined ? { host: o.host, port: o.port } : { host: o.host, port: o.port, localAddress: o.localAddress });

export interface DialHboneOptions {
  readonly nextHop: SocketAddress;
  /** Our certificate: key, chain (presented in full) and the workload roots the peer is verified against. */
  readonly certificate: WorkloadCertificate;
  readonly verifyPeer: VerifyPeer;
  readonly connectTimeoutMs: number;
  readonly clock: Clock;
  readonly connect?: ConnectSocket;
  readonly sourceIp?: string;
  readonly settings?: Partial<HboneClientSettings>;
  readonly tcp?: TcpSocketOptions;
  readonly log?: Logger;
  /** Aborting cancels the dial (it rejects with the code UPSTREAM_CONNECT_FAILED). */
  readonly signal?: AbortSignal;
}

export interface HboneStreamRequest {
  /** `:authority`: "ip:port", "[v6]:port", or "hostname:port" for double HBONE. */
  readonly authority: string;
  /** Regular headers (baggage, forwarded, traceparent, x-forwarded-network); no pseudo-headers. */
  readonly headers?: OutgoingHttpHeaders;
  /** Aborting before the response resets the stream (RST_STREAM CANCEL). */
  readonly signal?: AbortSignal;
}

export interface HboneStream {
  /** The tunnel: write = DATA to the peer, end() = END_STREAM (half-close). */
  readonly stream: ClientHttp2Stream;
  readonly responseHeaders: IncomingHttpHeaders & IncomingHttpStatusHeader;
}

/** The peer answered the CONNECT with a status other than 200. */
export class HboneStatusError extends ProxyError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super('HBONE_STATUS', message);
    this.name = 'HboneStatusError';
  }
}

export interface HboneConnectionInfo {
  readonly id: number;
  readonly nextHop: SocketAddress;
  readonly peerIdentity: Identity;
  readonly localAddress: string | undefined;
  readonly localPort: number | undefined;
  readonly activeStreams: number;
  readonly totalStreams: number;
  readonly peerMaxConcurrentStreams: number;
  readonly ready: boolean;
  /** Monotonic ms when the connection was established. */
  readonly establishedAt: number;
}

type CloseListener = (error: ProxyError | undefined) => void;

export interface HboneConnectionEvents {
  /** The peer sent GOAWAY: no new streams; existing ones may finish. */
  goaway: (code: number) => void;
  /** The session is gone (error: why, when it was not a clean close). */
  close: CloseListener;
  /** A stream closed and none are left. */
  idle: () => void;
}

// ---------------------------------------------------------------------------
// The connection

let nextConnectionId = 1;

export class HboneConnection {
  readonly id = nextConnectionId++;
  readonly nextHop: SocketAddress;
  readonly peerIdentity: Identity;
  readonly establishedAt: number;
  readonly #session: ClientHttp2Session;
  readonly #socket: TLSSocket;
  readonly #clock: Clock;
  readonly #settings: HboneClientSettings;
  readonly #log: Logger | undefined;
  readonly #listeners: { [K in keyof HboneConnectionEvents]: Set<HboneConnectionEvents[K]> } = {
    goaway: new Set(),
    close: new Set(),
    idle: new Set(),
  };
  #active = 0;
  #total = 0;
  #goaway = false;
  #closed = false;
  #closeError: ProxyError | undefined;
  #pingTimer: Timer | undefined;
  #closedPromise: Promise<void>;
  #markClosed: () => void = () => {};

  /** @internal Use dialHbone / openInnerHbone. */
  constructor(args: {
    session: ClientHttp2Session;
    socket: TLSSocket;
    nextHop: SocketAddress;
    peerIdentity: Identity;
    clock: Clock;
    settings: HboneClientSettings;
    log: Logger | undefined;
  }) {
    this.#session = args.session;
    this.#socket = args.socket;
    this.nextHop = args.nextHop;
    this.peerIdentity = args.peerIdentity;
    this.#clock = args.clock;
    this.#settings = args.settings;
    this.#log = args.log;
    this.establishedAt = args.clock.monotonic();
    this.#closedPromise = new Promise((resolve) => (this.#markClosed = resolve));

    const session = this.#session;
    session.on('goaway', (code: number) => {
      if (this.#goaway) return;
      this.#goaway = true;
      this.#log?.debug({ connection: this.id, code }, 'HBONE peer sent GOAWAY');
      for (const fn of [...this.#listeners.goaway]) fn(code);
    });
    session.on('error', (err: Error) => {
      this.#closeError ??= classifySessionError(err, this.nextHop);
    });
    session.on('close', () => this.#onSessionClose());
    if (session.destroyed) queueMicrotask(() => this.#onSessionClose());
    else this.#schedulePing(this.#settings.pingIntervalMs);
  }

  /**
   * The server's certificate chain as verified in the handshake (leaf first,
   * up to the root when Node knows it); empty once the socket is gone. Used
   * to re-check live connections when the CRLs change.
   */
  get peerChain(): readonly X509Certificate[] {
    if (this.#socket.destroyed) return [];
    return peerChain(this.#socket.getPeerCertificate(true)) ?? [];
  }

  /** True while new streams may be opened (not after GOAWAY, close or destroy). */
  get isReady(): boolean {
    return !this.#closed && !this.#goaway && !this.#session.closed && !this.#session.destroyed;
  }

  get isClosed(): boolean {
    return this.#closed;
  }

  get activeStreams(): number {
    return this.#active;
  }

  get totalStreams(): number {
    return this.#total;
  }

  /** The peer's SETTINGS_MAX_CONCURRENT_STREAMS (until it sends one: the initial assumption). */
  get peerMaxConcurrentStreams(): number {
    const remote = this.#session.remoteSettings?.maxConcurrentStreams;
    return typeof remote === 'number' ? remote : this.#settings.initialPeerMaxStreams;
  }

  /** Resolves once the connection is closed. */
  whenClosed(): Promise<void> {
    return this.#closedPromise;
  }

  on<K extends keyof HboneConnectionEvents>(event: K, fn: HboneConnectionEvents[K]): () => void {
    (this.#listeners[event] as Set<HboneConnectionEvents[K]>).add(fn);
    return () => void (this.#listeners[event] as Set<HboneConnectionEvents[K]>).delete(fn);
  }

  info(): HboneConnectionInfo {
    return {
      id: this.id,
      nextHop: this.nextHop,
      peerIdentity: this.peerIdentity,
      localAddress: this.#socket.localAddress,
      localPort: this.#socket.localPort,
      activeStreams: this.#active,
      totalStreams: this.#total,
      peerMaxConcurrentStreams: this.peerMaxConcurrentStreams,
      ready: this.isReady,
      establishedAt: this.establishedAt,
    };
  }

  /**
   * Sends CONNECT and resolves once the peer answered 200. Rejects with
   * HboneStatusError (HBONE_STATUS) for any other status, and with
   * UPSTREAM_CONNECT_FAILED (or the TLS code, when the connection failed at
   * the TLS layer) when the stream or connection ends before an answer.
   */
  openStream(request: HboneStreamRequest): Promise<HboneStream> {
    const problem = requestProblem(request);
    if (problem !== undefined) return Promise.reject(new ProxyError('INTERNAL', `HBONE CONNECT request is invalid: ${problem}`));
    if (!this.isReady) {
      return Promise.reject(new ProxyError('UPSTREAM_CONNECT_FAILED',
        `HBONE connection to ${formatSocketAddress(this.nextHop)} is ${this.#goaway ? 'going away (GOAWAY)' : 'closed'}; cannot open a stream`));
    }
    this.#active++;
    this.#total++;
    let decremented = false;
    const done = () => {
      if (decremented) return;
      decremented = true;
      this.#active--;
      if (this.#active === 0) for (const fn of [...this.#listeners.idle]) fn();
    };

    let stream: ClientHttp2Stream;
    try {
      const headers: OutgoingHttpHeaders = { ...request.headers, [h2c.HTTP2_HEADER_METHOD]: 'CONNECT', [h2c.HTTP2_HEADER_AUTHORITY]: request.authority };
      stream = this.#session.request(headers, request.signal === undefined ? { endStream: false } : { endStream: false, signal: request.signal });
    } catch (err) {
      done();
      return Promise.reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE CONNECT to ${request.authority} via ${formatSocketAddress(this.nextHop)} could not be sent: ${describe(err)}`, { cause: err }));
    }
    stream.once('close', done);
    // A permanent handler: errors after the answer belong to the copy, but an
    // 'error' with no listener would crash the process.
    stream.on('error', (err: Error) => this.#log?.debug({ connection: this.id, err: describe(err) }, 'HBONE stream error'));

    return new Promise<HboneStream>((resolve, reject) => {
      const cleanup = () => {
        stream.removeListener('response', onResponse);
        stream.removeListener('error', onError);
        stream.removeListener('close', onClose);
      };
      const onResponse = (headers: IncomingHttpHeaders & IncomingHttpStatusHeader) => {
        cleanup();
        const raw: unknown = headers[h2c.HTTP2_HEADER_STATUS];
        const status = typeof raw === 'number' ? raw : Number(raw);
        if (status === 200) {
          resolve({ stream, responseHeaders: headers });
          return;
        }
        abortiveClose(stream, 'non-200 CONNECT answer');
        reject(new HboneStatusError(Number.isFinite(status) ? status : 0, `HBONE CONNECT to ${request.authority} via ${formatSocketAddress(this.nextHop)} was answered with status ${String(raw)}`));
      };
      const onError = (err: Error) => {
        cleanup();
        reject(this.#streamFailure(request.authority, err));
      };
      const onClose = () => {
        cleanup();
        reject(this.#streamFailure(request.authority, undefined, stream.rstCode));
      };
      stream.on('response', onResponse);
      stream.on('error', onError);
      stream.on('close', onClose);
    });
  }

  /** Graceful: GOAWAY, existing streams finish, then the connection closes. */
  close(): void {
    if (this.#session.closed || this.#session.destroyed) return;
    this.#session.close();
  }

  /** Abrupt: every stream is reset and the connection is closed now. */
  destroy(reason?: ProxyError): void {
    if (reason !== undefined) this.#closeError ??= reason;
    if (!this.#session.destroyed) this.#session.destroy();
    if (!this.#socket.destroyed) this.#socket.destroy();
  }

  #streamFailure(authority: string, err: Error | undefined, rstCode?: number): ProxyError {
    if (this.#closeError !== undefined && this.#closeError.code !== 'UPSTREAM_CONNECT_FAILED') return this.#closeError;
    const why = err !== undefined ? describe(err) : `stream closed before an answer${rstCode !== undefined && rstCode !== 0 ? ` (RST_STREAM ${rstCode})` : ''}`;
    return new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE CONNECT to ${authority} via ${formatSocketAddress(this.nextHop)} failed: ${why}`, { cause: err });
  }

  #schedulePing(delayMs: number): void {
    this.#pingTimer?.cancel();
    this.#pingTimer = this.#clock.setTimer(delayMs, () => this.#ping());
  }

  #ping(): void {
    this.#pingTimer = undefined;
    if (this.#closed || this.#session.destroyed) return;
    let answered = false;
    const timeout = this.#clock.setTimer(this.#settings.pingTimeoutMs, () => {
      if (answered || this.#closed) return;
      this.#log?.warn({ connection: this.id, peer: formatSocketAddress(this.nextHop) }, `HBONE ping timeout after ${this.#settings.pingTimeoutMs} ms; dropping the connection`);
      this.destroy(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connection to ${formatSocketAddress(this.nextHop)} dropped: no PING answer within ${this.#settings.pingTimeoutMs} ms`));
    });
    this.#pingTimer = timeout;
    const onPong = (err: Error | null) => {
      answered = true;
      timeout.cancel();
      if (this.#closed || this.#session.destroyed) return;
      if (err) {
        this.#log?.warn({ connection: this.id, err: describe(err) }, 'HBONE ping error; dropping the connection');
        this.destroy(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE ping to ${formatSocketAddress(this.nextHop)} failed: ${describe(err)}`, { cause: err }));
        return;
      }
      this.#schedulePing(this.#settings.pingIntervalMs);
    };
    let sent: boolean;
    try {
      sent = this.#session.ping(onPong);
    } catch (err) {
      sent = false;
      this.#log?.debug({ connection: this.id, err: describe(err) }, 'HBONE ping could not be sent');
    }
    if (!sent) onPong(new Error('PING could not be sent (session closing or too many outstanding PINGs)'));
  }

  #onSessionClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#pingTimer?.cancel();
    this.#pingTimer = undefined;
    if (!this.#socket.destroyed) this.#socket.destroy();
    const error = this.#closeError;
    this.#log?.debug({ connection: this.id, peer: formatSocketAddress(this.nextHop), error: error?.message }, 'HBONE connection closed');
    for (const fn of [...this.#listeners.close]) fn(error);
    this.#listeners.goaway.clear();
    this.#listeners.close.clear();
    this.#listeners.idle.clear();
    this.#markClosed();
  }
}

// ---------------------------------------------------------------------------
// Dialing

/** TCP → TLS → HTTP/2 to `nextHop`; resolves with a connection ready for CONNECT streams. */
export async function dialHbone(options: DialHboneOptions): Promise<HboneConnection> {
  const settings = { ...DEFAULT_HBONE_CLIENT_SETTINGS, ...options.settings };
  const { nextHop, clock, signal } = options;
  if (signal?.aborted) throw aborted(nextHop, signal.reason);
  const socket = await connectTcp(options);
  try {
    const tlsSocket = await startTls(socket, {
      certificate: options.certificate,
      verifyPeer: options.verifyPeer,
      clock,
      timeoutMs: settings.handshakeTimeoutMs,
      peer: formatSocketAddress(nextHop),
      signal,
    });
    return await startHttp2(tlsSocket.socket, {
      nextHop,
      peerIdentity: tlsSocket.peerIdentity,
      clock,
      settings,
      log: options.log,
      signal,
      authority: `https://${formatSocketAddress(nextHop)}`,
    });
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

export interface InnerHboneOptions {
  readonly certificate: WorkloadCertificate;
  /** Expected: only the destination service's SANs (ztunnel's final_sans). */
  readonly verifyPeer: VerifyPeer;
  readonly authority: string;
  /** The local NETWORK, sent as x-forwarded-network on the inner CONNECT. */
  readonly network: string;
  readonly headers?: OutgoingHttpHeaders;
  readonly clock: Clock;
  /** Names the gateway hop in errors and logs. */
  readonly via: SocketAddress;
  readonly settings?: Partial<HboneClientSettings>;
  readonly log?: Logger;
  readonly signal?: AbortSignal;
}

export interface InnerHboneStream extends HboneStream {
  /** The inner, never-pooled connection; it closes when its one stream closes. */
  readonly connection: HboneConnection;
}

/**
 * Double HBONE: a second TLS handshake inside an established outer CONNECT
 * stream to a network gateway, then HTTP/2 and one CONNECT carrying
 * `x-forwarded-network`. Not pooled: the inner connection carries exactly this
 * stream and closes with it (which ends the outer stream). On failure the
 * outer stream is reset too.
 */
export async function openInnerHbone(outer: Duplex, options: InnerHboneOptions): Promise<InnerHboneStream> {
  const settings = { ...DEFAULT_HBONE_CLIENT_SETTINGS, ...options.settings };
  const peer = `${options.authority} via ${formatSocketAddress(options.via)}`;
  let connection: HboneConnection | undefined;
  try {
    const tls = await startTls(outer, {
      certificate: options.certificate,
      verifyPeer: options.verifyPeer,
      clock: options.clock,
      timeoutMs: settings.handshakeTimeoutMs,
      peer,
      signal: options.signal,
    });
    connection = await startHttp2(tls.socket, {
      nextHop: options.via,
      peerIdentity: tls.peerIdentity,
      clock: options.clock,
      settings,
      log: options.log,
      signal: options.signal,
      authority: 'https://inner.hbone.invalid',
    });
    const opened = await connection.openStream({
      authority: options.authority,
      headers: { ...options.headers, 'x-forwarded-network': options.network },
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    const inner = connection;
    opened.stream.once('close', () => inner.close());
    return { ...opened, connection };
  } catch (err) {
    // The outer stream is useless without its inner tunnel.
    connection?.destroy();
    abortiveClose(outer, 'inner HBONE tunnel failed');
    throw err;
  }
}

function connectTcp(options: DialHboneOptions): Promise<Socket> {
  const { nextHop, clock, signal } = options;
  const peer = formatSocketAddress(nextHop);
  return new Promise<Socket>((resolve, reject) => {
    let socket: Socket;
    try {
      const connect = options.connect ?? defaultConnectSocket;
      socket = connect(options.sourceIp === undefined ? { host: nextHop.ip, port: nextHop.port } : { host: nextHop.ip, port: nextHop.port, localAddress: options.sourceIp });
    } catch (err) {
      reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connect to ${peer} failed: ${describe(err)}`, { cause: err }));
      return;
    }
    if (socket.destroyed) {
      reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connect to ${peer} failed: the socket factory returned a closed socket`));
      return;
    }
    applyTcpSocketOptions(socket, options.tcp ?? DEFAULT_TCP_SOCKET_OPTIONS);
    const finish = (err?: ProxyError) => {
      timer.cancel();
      socket.removeListener('connect', onConnect);
      socket.removeListener('error', onError);
      signal?.removeEventListener('abort', onAbort);
      if (err === undefined) {
        // From here TLS (then HTTP/2) reports this socket's failures; an
        // 'error' emitted in between must not go unhandled.
        socket.on('error', noop);
        resolve(socket);
        return;
      }
      socket.on('error', noop);
      socket.destroy();
      reject(err);
    };
    const onConnect = () => finish();
    const onError = (err: Error) =>
      finish(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connect to ${peer} failed: ${describe(err)}`, { cause: err }));
    const onAbort = () => finish(aborted(nextHop, signal?.reason));
    const timer = clock.setTimer(options.connectTimeoutMs, () =>
      finish(new ProxyError('UPSTREAM_TIMEOUT', `connection to ${peer} timed out, maybe a NetworkPolicy is blocking HBONE port ${nextHop.port}`)));
    socket.once('connect', onConnect);
    socket.once('error', onError);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (!socket.connecting && !socket.destroyed && socket.remoteAddress !== undefined) queueMicrotask(onConnect);
  });
}

interface TlsArgs {
  readonly certificate: WorkloadCertificate;
  readonly verifyPeer: VerifyPeer;
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly peer: string;
  readonly signal: AbortSignal | undefined;
}

const contexts = new WeakMap<WorkloadCertificate, SecureContext>();

/** One SecureContext per certificate generation (creating one per connection is expensive). */
export function clientSecureContext(certificate: WorkloadCertificate): SecureContext {
  let context = contexts.get(certificate);
  if (context === undefined) {
    context = createSecureContext({
      key: certificate.privateKeyPem,
      cert: certificate.chainPem.join(''),
      ca: [...certificate.rootsPem],
      minVersion: 'TLSv1.3',
      maxVersion: 'TLSv1.3',
      ciphers: HBONE_TLS_CIPHERS,
    });
    contexts.set(certificate, context);
  }
  return context;
}

function startTls(transport: Duplex, args: TlsArgs): Promise<{ socket: TLSSocket; peerIdentity: Identity }> {
  return new Promise((resolve, reject) => {
    let identity: Identity | undefined;
    let identityProblem: string | undefined;
    let revoked = false;
    let secureContext: SecureContext;
    try {
      secureContext = clientSecureContext(args.certificate);
    } catch (err) {
      reject(new ProxyError('CERT_UNAVAILABLE', `cannot use our certificate for ${args.peer}: ${describe(err)}`, { cause: err }));
      return;
    }
    const socket = tlsConnect({
      socket: transport,
      secureContext,
      ALPNProtocols: ['h2'],
      rejectUnauthorized: true,
      // No `servername`: no SNI on the wire (ztunnel never sends one).
      checkServerIdentity: (_host: string, cert: PeerCertificate) => {
        const chain = peerChain(cert);
        if (chain === undefined) {
          identityProblem = 'the peer certificate chain could not be read';
          return new Error(identityProblem);
        }
        const verdict = args.verifyPeer(chain);
        if (!verdict.ok) {
          identityProblem = formatRejections(verdict.errors);
          revoked = verdict.errors.some(isRevocationRejection);
          return new Error(identityProblem);
        }
        identity = verdict.value;
        return undefined;
      },
    });
    const finish = (err?: ProxyError) => {
      timer.cancel();
      socket.removeListener('secureConnect', onSecure);
      socket.removeListener('error', onError);
      args.signal?.removeEventListener('abort', onAbort);
      if (err === undefined) {
        // The HTTP/2 session reports this socket's failures from now on.
        socket.on('error', noop);
        resolve({ socket, peerIdentity: identity as Identity });
        return;
      }
      socket.on('error', noop);
      socket.destroy();
      reject(err);
    };
    const onSecure = () => {
      if (socket.alpnProtocol !== 'h2') {
        finish(new ProxyError('TLS_HANDSHAKE_FAILED', `TLS to ${args.peer}: the peer did not negotiate ALPN h2 (got ${socket.alpnProtocol || 'none'})`));
        return;
      }
      if (identity === undefined) {
        finish(new ProxyError('PEER_IDENTITY_INVALID', `TLS to ${args.peer}: the peer identity was not verified`));
        return;
      }
      finish();
    };
    const onError = (err: Error) => {
      if (identityProblem !== undefined && revoked) {
        finish(new ProxyError('CERT_REVOKED', `TLS to ${args.peer}: server certificate revoked: ${identityProblem}`, { cause: err }));
      } else if (identityProblem !== undefined) {
        finish(new ProxyError('PEER_IDENTITY_INVALID', `TLS to ${args.peer}: peer identity rejected: ${identityProblem}`, { cause: err }));
      } else {
        finish(new ProxyError('TLS_HANDSHAKE_FAILED', `TLS handshake with ${args.peer} failed: ${describe(err)}`, { cause: err }));
      }
    };
    const onAbort = () => finish(new ProxyError('UPSTREAM_CONNECT_FAILED', `TLS handshake with ${args.peer} aborted: ${describe(args.signal?.reason)}`));
    const timer = args.clock.setTimer(args.timeoutMs, () =>
      finish(new ProxyError('TLS_HANDSHAKE_TIMEOUT', `TLS handshake with ${args.peer} did not complete within ${args.timeoutMs} ms`)));
    socket.once('secureConnect', onSecure);
    socket.on('error', onError);
    args.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

interface Http2Args {
  readonly nextHop: SocketAddress;
  readonly peerIdentity: Identity;
  readonly clock: Clock;
  readonly settings: HboneClientSettings;
  readonly log: Logger | undefined;
  readonly signal: AbortSignal | undefined;
  readonly authority: string;
}

function startHttp2(socket: TLSSocket, args: Http2Args): Promise<HboneConnection> {
  const { settings } = args;
  const peer = formatSocketAddress(args.nextHop);
  return new Promise((resolve, reject) => {
    let session: ClientHttp2Session;
    try {
      session = h2Connect(args.authority, {
        createConnection: () => socket,
        settings: {
          enablePush: false,
          initialWindowSize: settings.streamWindowSize,
          maxFrameSize: settings.frameSize,
          maxHeaderListSize: settings.maxHeaderListSize,
        },
        peerMaxConcurrentStreams: settings.initialPeerMaxStreams,
        maxSessionMemory: settings.maxSessionMemoryMiB,
      });
    } catch (err) {
      socket.destroy();
      reject(new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer} could not start: ${describe(err)}`, { cause: err }));
      return;
    }
    let sessionError: Error | undefined;
    let socketError: Error | undefined;
    const onSocketError = (err: Error) => {
      socketError ??= err;
    };
    socket.on('error', onSocketError);
    const finish = (err?: ProxyError) => {
      timer.cancel();
      socket.removeListener('error', onSocketError);
      session.removeListener('connect', onConnect);
      session.removeListener('remoteSettings', onSettings);
      session.removeListener('error', onError);
      session.removeListener('close', onClose);
      args.signal?.removeEventListener('abort', onAbort);
      if (err === undefined) {
        resolve(new HboneConnection({ session, socket, nextHop: args.nextHop, peerIdentity: args.peerIdentity, clock: args.clock, settings, log: args.log }));
        return;
      }
      session.on('error', noop);
      session.destroy();
      socket.destroy();
      reject(err);
    };
    const onConnect = () => {
      try {
        session.setLocalWindowSize(settings.connectionWindowSize);
      } catch (err) {
        finish(new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer}: cannot set the connection window: ${describe(err)}`, { cause: err }));
      }
    };
    const onSettings = () => finish();
    const onError = (err: Error) => {
      sessionError = err;
      finish(classifySessionError(err, args.nextHop, 'H2_HANDSHAKE_FAILED'));
    };
    const onClose = () => {
      if (sessionError !== undefined) return;
      if (socketError !== undefined) {
        // A TLS 1.3 server rejects our certificate after our side of the handshake finished.
        finish(classifySessionError(socketError, args.nextHop, 'H2_HANDSHAKE_FAILED'));
        return;
      }
      // Node reports a TLS 1.3 alert sent after our side of the handshake (the
      // server refusing our client certificate) as a plain close.
      finish(new ProxyError('TLS_HANDSHAKE_FAILED', `${peer} closed the connection after the TLS handshake without sending HTTP/2 SETTINGS (most likely it refused our client certificate)`));
    };
    const onAbort = () => finish(aborted(args.nextHop, args.signal?.reason));
    const timer = args.clock.setTimer(settings.handshakeTimeoutMs, () =>
      finish(new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer}: no SETTINGS from the peer within ${settings.handshakeTimeoutMs} ms`)));
    session.once('connect', onConnect);
    session.once('remoteSettings', onSettings);
    session.on('error', onError);
    session.once('close', onClose);
    args.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// ---------------------------------------------------------------------------
// The interim SPIFFE check (replaced by the shared verifier when wired)

/**
 * Accepts a peer whose leaf has exactly one URI SAN, that SAN a well-formed
 * Istio SPIFFE ID in `expected`, and is not a CA. Fails closed on anything
 * unusual in the SAN text (Node quotes SAN values containing separators; any
 * quoted value is refused rather than parsed).
 */
export function expectedIdentityVerifier(expected: readonly string[]): VerifyPeer {
  const allowed = new Set(expected);
  return (chain) => {
    const leaf = chain[0];
    if (leaf === undefined) return fail(rejection('peer', 'no certificate presented'));
    if (leaf.ca) return fail(rejection('peer', 'the leaf certificate is a CA certificate'));
    const san = leaf.subjectAltName ?? '';
    if (san.includes('"')) return fail(rejection('peer.san', 'subjectAltName contains a quoted (escaped) value'));
    const uris = san === '' ? [] : san.split(', ').filter((entry) => entry.startsWith('URI:')).map((entry) => entry.slice(4));
    if (uris.length !== 1) return fail(rejection('peer.san', `expected exactly one URI SAN, found ${uris.length}`));
    const uri = uris[0] as string;
    const parsed = parseIdentity(uri);
    if (!parsed.ok) return fail(rejection('peer.san', formatRejections(parsed.errors)));
    if (!allowed.has(uri)) {
      return fail(rejection('peer.identity', `"${uri}" is not one of the expected identities [${[...allowed].join(', ')}]`));
    }
    return ok(parsed.value);
  };
}

// ---------------------------------------------------------------------------
// Helpers

function peerChain(cert: PeerCertificate): X509Certificate[] | undefined {
  try {
    const chain: X509Certificate[] = [];
    const seen = new Set<string>();
    let current: PeerCertificate | undefined = cert;
    while (current !== undefined && current.raw !== undefined) {
      const fp = current.fingerprint256;
      if (seen.has(fp)) break;
      seen.add(fp);
      chain.push(new X509Certificate(current.raw));
      const issuer: PeerCertificate | undefined = (current as PeerCertificate & { issuerCertificate?: PeerCertificate }).issuerCertificate;
      current = issuer === current ? undefined : issuer;
    }
    return chain.length > 0 ? chain : undefined;
  } catch {
    return undefined;
  }
}

function requestProblem(request: HboneStreamRequest): string | undefined {
  if (typeof request.authority !== 'string' || request.authority === '') return ':authority is empty';
  for (const name of Object.keys(request.headers ?? {})) {
    if (name.startsWith(':')) return `pseudo-header "${name}" is set by the client itself`;
  }
  return undefined;
}

function classifySessionError(err: Error, hop: SocketAddress, fallback: ProxyErrorCode = 'UPSTREAM_CONNECT_FAILED'): ProxyError {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('ERR_SSL_')) {
    return new ProxyError('TLS_HANDSHAKE_FAILED', `TLS with ${formatSocketAddress(hop)} failed: ${describe(err)}`, { cause: err });
  }
  return new ProxyError(fallback, `HTTP/2 connection to ${formatSocketAddress(hop)} failed: ${describe(err)}`, { cause: err });
}

function aborted(hop: SocketAddress, reason: unknown): ProxyError {
  return new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE dial to ${formatSocketAddress(hop)} aborted: ${describe(reason)}`, { cause: reason });
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

function noop(): void {}
