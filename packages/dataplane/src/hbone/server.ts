/**
 * The HBONE server transport (port 15008, ztunnel `inbound.rs` accept loop and
 * `h2/server.rs`), as stages: accept (connection cap, drain) → mTLS
 * (acceptor.ts: certificate per local address, TLS 1.3, the one PeerVerifier)
 * → HTTP/2 with ztunnel's settings and our flood limits (server-limits.ts) →
 * one validated CONNECT per stream (connect-codec.ts), handed to the injected
 * `onConnect` as a ConnectRequest. Everything after that (destination checks,
 * RBAC, upstream connect) belongs to the handler, which decides the status:
 * the stream's bytes only become reachable through `accept()`, which sends
 * the 200 first, so nothing the client sends can reach an upstream before
 * the handler said yes.
 *
 * With CRL_PATH (`revocation`), a client whose chain holds a revoked
 * certificate is refused after the handshake (CERT_REVOKED), and after every
 * CRL reload each live connection whose peer is now revoked is closed
 * abruptly (GOAWAY, streams reset), as ztunnel's revocation index does.
 *
 * Each protection fires `onLimit(kind)` and logs what happened.
 *
 * Invariants:
 * - Every accepted socket is in #connections from accept until its 'close';
 *   its timers are cancelled and `onConnectionClose` fires exactly once then.
 * - A connection moves tls → h2 → closed, never backwards. onConnect is only
 *   called on an h2 connection whose peer the acceptor verified, for a stream
 *   whose headers passed decodeConnectRequest.
 * - A ConnectRequest is answered at most once; `accept` is the only way to the
 *   stream's data.
 * - After drain() no new connection is served; after close() none remains.
 */
import type { X509Certificate } from 'node:crypto';
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import type tls from 'node:tls';
import { formatRejections, type Clock, type Identity, type Logger, type Timer, type WorkloadCertificate } from '@ambient/control';
import { asProxyError, ERROR_DISPOSITIONS, firstLine, ProxyError, type ProxyErrorCode } from '../errors.js';
import { describeRevocation, type RevocationSource } from '../tls/crl/manager.js';
import type { TlsMaterialCache } from '../tls/contexts.js';
import type { PeerCheck, VerifiedPeer } from '../tls/spiffe-verify.js';
import { formatSocketAddress, localAddressOf, peerAddress, type SocketAddress } from '../net/address.js';
import { MtlsAcceptor, type AcceptedPeer, type AcceptRefusal, type Acceptance } from './acceptor.js';
import { applyTcpSocketOptions, DEFAULT_TCP_SOCKET_OPTIONS, type TcpSocketOptions } from '../io/socket-options.js';
import { decodeConnectRequest, type DecodedConnectRequest } from './connect-codec.js';
import { startKeepalive, type Keepalive } from './keepalive.js';
import {
  http2SessionOptions,
  resolveHboneServerLimits,
  TokenBucket,
  type HboneLimitKind,
  type HboneServerLimits,
  type HboneSessionOptions,
} from './server-limits.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
const LIMIT_LOG_INTERVAL_MS = 1000;

/** The verified mTLS peer of a connection. */
export type PeerInfo = VerifiedPeer;

export type ConnectState = 'pending' | 'accepted' | 'rejected';

/** One CONNECT stream awaiting the handler's decision. */
export interface ConnectRequest {
  readonly connectionId: number;
  readonly streamId: number;
  /** The validated request: authority, forwarded, baggage, traceparent, x-forwarded-network. */
  readonly request: DecodedConnectRequest;
  /** The raw request headers (informational only; never use them for authorization). */
  readonly headers: IncomingHttpHeaders;
  /** The verified mTLS peer: the only source of the client's identity. */
  readonly peer: PeerInfo;
  /** The TCP connection's local address (the pod IP and 15008). */
  readonly local: SocketAddress;
  /** The TCP connection's remote address. */
  readonly remote: SocketAddress;
  /** Aborted when the stream closes (client reset, connection lost, server closing), whatever the state. */
  readonly signal: AbortSignal;
  readonly state: ConnectState;
  /**
   * Sends `200` (with `headers`, e.g. response baggage) and returns the tunnel:
   * reading yields the client's bytes (END_STREAM and RST_STREAM NO_ERROR/CANCEL
   * are EOF; any other RST code ends the readable side and then emits 'error'),
   * writing sends DATA under HTTP/2 flow control (honour `write()` returning
   * false, or use stream.pipeline), `end()` sends END_STREAM. Data the client
   * sent before the 200 is delivered first. If the client already went away,
   * the returned stream is already destroyed. Throws if already answered.
   */
  accept(headers?: OutgoingHttpHeaders): Duplex;
  /**
   * Refuses with the HBONE status the error table gives `error.code`
   * (ERROR_DISPOSITIONS: 400/401/503; a code without a status resets the
   * stream) and ends the stream; no-op if already answered or closed.
   */
  refuse(error: ProxyError, headers?: OutgoingHttpHeaders): void;
}

export type ConnectHandler = (request: ConnectRequest) => void | Promise<void>;

export interface InboundConnectionInfo {
  readonly connectionId: number;
  readonly local: SocketAddress;
  readonly remote: SocketAddress;
}

/** A connection or stream refused before reaching onConnect (ztunnel's "connection failed" early deny). */
export interface HboneRefusal extends InboundConnectionInfo {
  readonly code: ProxyErrorCode;
  readonly reason: string;
  readonly streamId?: number;
  readonly peerIdentity?: Identity;
  /** For PEER_IDENTITY_INVALID / CERT_REVOKED: which checks failed. */
  readonly checks?: readonly (PeerCheck | 'revoked')[];
}

export interface HboneServerHooks {
  /** A protection fired (count it per kind). */
  onLimit?(kind: HboneLimitKind): void;
  onRefused?(refusal: HboneRefusal): void;
  onConnectionOpen?(info: InboundConnectionInfo): void;
  onConnectionClose?(info: InboundConnectionInfo): void;
}

export interface HboneServerOptions {
  readonly clock: Clock;
  readonly log: Logger;
  /** The workload certificate to present on a connection accepted at `local`. Rejects → connection closed (CERT_UNAVAILABLE). */
  readonly certificateFor: (local: SocketAddress) => Promise<WorkloadCertificate>;
  readonly onConnect: ConnectHandler;
  readonly limits?: Partial<HboneServerLimits>;
  readonly hooks?: HboneServerHooks;
  /** Share with the outbound side to build one TLS context per certificate. */
  readonly tlsMaterials?: TlsMaterialCache;
  /** CRL checking (CRL_PATH): revoked clients are refused, and revoked live peers closed on reload. */
  readonly revocation?: RevocationSource | undefined;
  /** TCP_NODELAY and keepalive on accepted sockets (KEEPALIVE_ENABLED / KEEPALIVE_TIME; default on, 180 s). */
  readonly tcp?: TcpSocketOptions | undefined;
}

type Phase = 'tls' | 'h2' | 'closed';

interface Connection extends InboundConnectionInfo {
  readonly raw: net.Socket;
  readonly log: Logger;
  phase: Phase;
  /** The TLS phase, until the acceptor reported its outcome. */
  acceptance: Acceptance | undefined;
  /** The first-request timer in phase h2 until the first stream. */
  timer: Timer | undefined;
  keepalive: Keepalive | undefined;
  tls: tls.TLSSocket | undefined;
  session: ServerHttp2Session | undefined;
  /** Set once we decided to end the session (limit, drain, close): later errors are consequences. */
  ending: boolean;
  refused: boolean;
  streams: number;
  readonly resets: TokenBucket;
  readonly controlFrames: TokenBucket;
  /** The verified peer chain and our roots, kept for re-checks on CRL reloads (only with `revocation`). */
  peerChain: readonly X509Certificate[] | undefined;
  roots: readonly X509Certificate[];
}

/** A CONNECT stream and the handler's single answer. */
class PendingConnect implements ConnectRequest {
  readonly streamId: number;
  readonly #stream: ServerHttp2Stream;
  readonly #abort = new AbortController();
  #state: ConnectState = 'pending';

  constructor(
    stream: ServerHttp2Stream,
    readonly connectionId: number,
    readonly request: DecodedConnectRequest,
    readonly headers: IncomingHttpHeaders,
    readonly peer: PeerInfo,
    readonly local: SocketAddress,
    readonly remote: SocketAddress,
    private readonly onAnswer: (request: PendingConnect, status: number, reason: string) => void,
  ) {
    this.#stream = stream;
    this.streamId = stream.id ?? 0;
    stream.once('close', () => this.#abort.abort(new Error('the HBONE stream closed')));
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  get state(): ConnectState {
    return this.#state;
  }

  accept(headers: OutgoingHttpHeaders = {}): Duplex {
    if (this.#state !== 'pending') throw new Error(`ConnectRequest.accept: stream ${this.streamId} was already ${this.#state}`);
    this.#state = 'accepted';
    const stream = this.#stream;
    if (!stream.destroyed && !stream.closed) {
      try {
        stream.respond({ ...headers, ':status': 200 });
      } catch (err) {
        stream.destroy(err instanceof Error ? err : new Error(String(err)));
      }
    }
    this.onAnswer(this, 200, 'accepted');
    return stream;
  }

  refuse(error: ProxyError, headers: OutgoingHttpHeaders = {}): void {
    if (this.#state !== 'pending') return;
    this.#state = 'rejected';
    const status = ERROR_DISPOSITIONS[error.code].httpStatus;
    if (status === undefined) resetStream(this.#stream);
    else respondAndClose(this.#stream, status, headers);
    this.onAnswer(this, status ?? 0, `${error.code}: ${error.message}`);
  }
}

/** Ends a stream without an answer (RST_STREAM CANCEL), for codes without an HBONE status. */
function resetStream(stream: ServerHttp2Stream): void {
  if (stream.destroyed || stream.closed) return;
  try {
    stream.close(NGHTTP2_CANCEL);
  } catch {
    stream.destroy();
  }
}

/** Sends a final status and ends the stream; asks the client to stop sending with RST_STREAM NO_ERROR (RFC 9113 8.1). */
function respondAndClose(stream: ServerHttp2Stream, status: number, headers: OutgoingHttpHeaders = {}): void {
  if (stream.destroyed || stream.closed) return;
  try {
    if (!stream.headersSent) stream.respond({ ...headers, ':status': status }, { endStream: true });
    stream.close(NGHTTP2_NO_ERROR);
  } catch {
    stream.destroy();
  }
}

export class HboneServer {
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #onConnect: ConnectHandler;
  readonly #hooks: HboneServerHooks;
  readonly #limits: HboneServerLimits;
  readonly #sessionOptions: HboneSessionOptions;
  readonly #revocation: RevocationSource | undefined;
  readonly #tcp: TcpSocketOptions;
  readonly #unsubscribeCrl: () => void;
  readonly #acceptor: MtlsAcceptor;
  readonly #connections = new Set<Connection>();
  readonly #attached = new Map<net.Server, (socket: net.Socket) => void>();
  readonly #idleWaiters: Array<() => void> = [];
  readonly #limitLog = new Map<HboneLimitKind, { at: number; suppressed: number }>();
  #state: 'running' | 'draining' | 'closed' = 'running';
  #nextId = 1;

  constructor(options: HboneServerOptions) {
    const limits = resolveHboneServerLimits(options.limits);
    if (!limits.ok) throw new TypeError(`HboneServer limits: ${formatRejections(limits.errors)}`);
    this.#limits = limits.value;
    this.#sessionOptions = http2SessionOptions(limits.value);
    this.#clock = options.clock;
    this.#log = options.log.child({ component: 'hbone-server' });
    this.#onConnect = options.onConnect;
    this.#hooks = options.hooks ?? {};
    this.#revocation = options.revocation;
    this.#tcp = options.tcp ?? DEFAULT_TCP_SOCKET_OPTIONS;
    this.#acceptor = new MtlsAcceptor({
      clock: options.clock,
      certificateFor: options.certificateFor,
      materials: options.tlsMaterials,
      revocation: options.revocation,
      handshakeTimeoutMs: limits.value.tlsHandshakeTimeoutMs,
    });
    this.#unsubscribeCrl = options.revocation?.onReload(() => this.#closeRevoked()) ?? (() => {});
  }

  get limits(): HboneServerLimits {
    return this.#limits;
  }

  /** Open connections, in any phase. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /**
   * Serves connections from a server the caller owns (e.g. a per-pod listener
   * in in-pod mode). It must be created with `pauseOnConnect: true`, so no
   * byte is read before TLS takes the socket over.
   */
  attach(server: net.Server): void {
    if ((server as net.Server & { pauseOnConnect?: boolean }).pauseOnConnect !== true) {
      throw new TypeError('HboneServer.attach: create the server with net.createServer({ pauseOnConnect: true })');
    }
    if (this.#attached.has(server)) return;
    const listener = (socket: net.Socket) => this.handleConnection(socket);
    server.on('connection', listener);
    this.#attached.set(server, listener);
  }

  /** Serves one accepted TCP socket (which must not have been read from). */
  handleConnection(raw: net.Socket): void {
    raw.on('error', (err) => this.#log.debug({ err: firstLine(err) }, 'HBONE socket error'));
    const local = localAddressOf(raw);
    const remote = peerAddress(raw);
    if (local === undefined || remote === undefined) {
      raw.destroy();
      return;
    }
    const connectionId = this.#nextId++;
    if (this.#state !== 'running') {
      this.#refuse({ connectionId, local, remote }, 'DRAINING', 'the server is shutting down', this.#log);
      raw.destroy();
      return;
    }
    if (this.#connections.size >= this.#limits.maxConnections) {
      const reason = `${this.#connections.size} connections are open, the cap is ${this.#limits.maxConnections}`;
      this.#limit('connection-cap', reason, this.#log.child({ src: formatSocketAddress(remote), dst: formatSocketAddress(local) }));
      this.#hooks.onRefused?.({ connectionId, local, remote, code: 'CONNECTION_LIMIT', reason });
      raw.destroy();
      return;
    }
    const conn: Connection = {
      connectionId, local, remote, raw,
      log: this.#log.child({ conn: connectionId, src: formatSocketAddress(remote), dst: formatSocketAddress(local) }),
      phase: 'tls',
      acceptance: undefined, timer: undefined, keepalive: undefined,
      tls: undefined, session: undefined,
      ending: false, refused: false, streams: 0, peerChain: undefined, roots: [],
      resets: new TokenBucket(this.#limits.rapidReset, () => this.#clock.monotonic()),
      controlFrames: new TokenBucket(this.#limits.controlFrames, () => this.#clock.monotonic()),
    };
    applyTcpSocketOptions(raw, this.#tcp);
    this.#connections.add(conn);
    raw.once('close', () => this.#onClosed(conn));
    this.#hooks.onConnectionOpen?.({ connectionId, local, remote });
    conn.acceptance = this.#acceptor.accept({ raw, local, log: conn.log }, {
      onTlsSocket: (socket) => {
        conn.tls = socket;
        socket.once('close', () => this.#onClosed(conn));
      },
      onRefused: (refusal) => this.#onTlsRefused(conn, refusal),
      onSecure: (accepted) => this.#onSecure(conn, accepted),
    });
  }

  #onTlsRefused(conn: Connection, refusal: AcceptRefusal): void {
    conn.acceptance = undefined;
    // Also after 'close': a TLS failure may be reported just after the socket closed.
    if (conn.refused) return;
    if (refusal.handshakeTimeout === true) this.#limit('tls-handshake-timeout', '', conn.log, true);
    const { code, reason, handshakeTimeout: _timeout, ...extra } = refusal;
    this.#refuse(conn, code, reason, conn.log, extra);
  }

  #onSecure(conn: Connection, { socket, peer, chain, roots }: AcceptedPeer): void {
    conn.acceptance = undefined;
    if (conn.phase !== 'tls' || this.#state === 'closed') {
      socket.destroy();
      return;
    }
    if (this.#revocation !== undefined) {
      if (chain.length === 0) this.#revocation.untracked();
      else conn.peerChain = chain;
      conn.roots = roots;
    }
    conn.phase = 'h2';
    conn.log.debug({ peer: peer.spiffeId }, 'HBONE TLS connection accepted');
    this.#startSession(conn, socket, peer);
  }

  #startSession(conn: Connection, socket: tls.TLSSocket, peer: PeerInfo): void {
    let session: ServerHttp2Session;
    try {
      session = http2.performServerHandshake(socket, this.#sessionOptions);
    } catch (err) {
      this.#refuse(conn, 'H2_HANDSHAKE_FAILED', `HTTP/2 session setup failed: ${firstLine(err)}`, conn.log);
      socket.destroy();
      return;
    }
    conn.session = session;
    session.on('error', (err) => this.#onSessionError(conn, err));
    session.on('frameError', (type: number, code: number, id: number) => conn.log.debug({ type, code, stream: id }, 'HTTP/2 frame error'));
    session.on('goaway', (code: number) => conn.log.debug({ code }, 'client sent GOAWAY'));
    const onControlFrame = () => {
      if (!conn.controlFrames.take()) {
        const { burst, perSecond } = this.#limits.controlFrames;
        this.#terminate(conn, 'control-frame-flood', `client sent PING/SETTINGS frames faster than ${burst} at once or ${perSecond}/s`);
      }
    };
    session.on('ping', onControlFrame);
    session.on('remoteSettings', onControlFrame);
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => this.#onStream(conn, peer, stream, headers));
    session.once('close', () => {
      conn.keepalive?.stop();
      if (!socket.destroyed) socket.destroy();
    });
    try {
      session.setLocalWindowSize(this.#limits.connectionWindowBytes);
    } catch (err) {
      conn.log.warn({ err: firstLine(err) }, 'could not raise the HTTP/2 connection window');
    }
    conn.timer = this.#clock.setTimer(this.#limits.firstRequestTimeoutMs, () => {
      if (conn.phase !== 'h2' || conn.streams > 0 || session.destroyed) return;
      this.#limit('first-request-timeout', '', conn.log, true);
      this.#refuse(conn, 'H2_PROTOCOL_VIOLATION', `no HTTP/2 preface and CONNECT request within ${this.#limits.firstRequestTimeoutMs} ms`, conn.log);
      conn.ending = true;
      session.destroy();
    });
    // ztunnel h2.rs do_ping_pong: no answer within the timeout drops the connection.
    conn.keepalive = startKeepalive(session, {
      clock: this.#clock,
      intervalMs: this.#limits.pingIntervalMs,
      timeoutMs: this.#limits.pingTimeoutMs,
      onDead: (kind, reason) => {
        if (conn.ending || session.destroyed) return;
        conn.ending = true;
        if (kind === 'timeout') this.#limit('keepalive-timeout', `${reason}; the peer may have shut down`, conn.log);
        else conn.log.debug({ reason }, 'HTTP/2 keepalive failed; closing the connection');
        session.destroy();
      },
    });
    if (this.#state !== 'running') this.#closeGracefully(conn);
  }

  #onStream(conn: Connection, peer: PeerInfo, stream: ServerHttp2Stream, headers: IncomingHttpHeaders): void {
    conn.streams++;
    if (conn.streams === 1) {
      conn.timer?.cancel();
      conn.timer = undefined;
    }
    const streamId = stream.id ?? 0;
    stream.on('error', (err) => conn.log.debug({ stream: streamId, err: firstLine(err) }, 'HBONE stream error'));
    const decoded = decodeConnectRequest(headers);
    if (!decoded.ok) {
      const rejection = decoded.errors[0];
      const code = rejection?.code ?? 'NOT_CONNECT';
      this.#refuse(conn, code, rejection?.reason ?? 'bad CONNECT request', conn.log, { streamId, peerIdentity: peer.identity });
      respondAndClose(stream, ERROR_DISPOSITIONS[code].httpStatus ?? 400);
      return;
    }
    const createdAt = this.#clock.monotonic();
    const request = new PendingConnect(stream, conn.connectionId, decoded.value, headers, peer, conn.local, conn.remote, (r, status, reason) => {
      conn.log.debug({ stream: r.streamId, status, reason }, 'CONNECT answered');
    });
    stream.once('aborted', () => {
      const session = conn.session;
      if (conn.ending || session === undefined || session.destroyed) return;
      const premature = request.state === 'pending' || this.#clock.monotonic() - createdAt < this.#limits.prematureResetMs;
      if (premature && !conn.resets.take()) {
        const { burst, perSecond } = this.#limits.rapidReset;
        this.#terminate(conn, 'rapid-reset', `client reset new streams faster than ${burst} at once or ${perSecond}/s (rapid reset)`);
      }
    });
    const failed = (err: unknown) => {
      const e = asProxyError(err);
      conn.log.error({ stream: streamId, err: e.message }, 'HBONE CONNECT handler failed');
      if (request.state === 'pending') request.refuse(ERROR_DISPOSITIONS[e.code].httpStatus === undefined ? new ProxyError('INTERNAL', e.message) : e);
      else if (!stream.destroyed) stream.destroy();
    };
    try {
      const result = this.#onConnect(request);
      if (result !== undefined && typeof (result as Promise<void>).then === 'function') (result as Promise<void>).then(undefined, failed);
    } catch (err) {
      failed(err);
    }
  }

  #onSessionError(conn: Connection, err: Error): void {
    if (conn.ending) return;
    const code = (err as { code?: string }).code;
    const message = firstLine(err);
    // The peer went away (reset, broken pipe, timeout): an ordinary end, not a protection being triggered.
    if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || code === 'ECONNABORTED') {
      conn.ending = true;
      conn.log.debug({ err: `${code} ${message}` }, 'HBONE connection ended by the network');
      return;
    }
    let kind: HboneLimitKind = 'protocol-error';
    if (code === 'ERR_HTTP2_TOO_MANY_INVALID_FRAMES') kind = 'invalid-frames';
    else if (/CONTINUATION/.test(message)) kind = 'continuation-flood';
    else if (/flood/i.test(message)) kind = 'outbound-flood';
    conn.ending = true;
    this.#limit(kind, `HTTP/2 session error: ${code ?? ''} ${message}`, conn.log);
  }

  /** Ends a session for a limit breach: GOAWAY ENHANCE_YOUR_CALM, then close. */
  #terminate(conn: Connection, kind: HboneLimitKind, reason: string): void {
    if (conn.ending) return;
    conn.ending = true;
    this.#limit(kind, reason, conn.log);
    conn.keepalive?.stop();
    conn.session?.destroy(new Error(reason), NGHTTP2_ENHANCE_YOUR_CALM);
  }

  /** After a CRL reload: closes, abruptly, every established connection whose peer chain is now revoked. */
  #closeRevoked(): void {
    const source = this.#revocation;
    if (source === undefined) return;
    for (const conn of this.#connections) {
      if (conn.phase !== 'h2' || conn.ending || conn.peerChain === undefined) continue;
      const verdict = source.check(conn.peerChain, conn.roots);
      if (!verdict.revoked) continue;
      const reason = `${describeRevocation(verdict)}; closing the connection (CRL update)`;
      conn.log.warn({ code: 'CERT_REVOKED', reason, streamsSeen: conn.streams }, 'HBONE connection closed: peer certificate revoked');
      conn.ending = true;
      conn.keepalive?.stop();
      // A security event: no graceful drain. GOAWAY, then every stream is reset with this error.
      conn.session?.destroy(new ProxyError('CERT_REVOKED', reason), NGHTTP2_NO_ERROR);
      conn.tls?.destroy();
    }
  }

  #closeGracefully(conn: Connection): void {
    conn.keepalive?.stop();
    const session = conn.session;
    if (session === undefined || session.destroyed || session.closed) return;
    try {
      session.close();
    } catch {
      session.destroy();
    }
  }

  #onClosed(conn: Connection): void {
    if (conn.phase === 'closed') return;
    conn.phase = 'closed';
    conn.timer?.cancel();
    conn.timer = undefined;
    conn.keepalive?.stop();
    if (conn.tls !== undefined && !conn.tls.destroyed) conn.tls.destroy();
    if (!conn.raw.destroyed) conn.raw.destroy();
    this.#connections.delete(conn);
    this.#hooks.onConnectionClose?.({ connectionId: conn.connectionId, local: conn.local, remote: conn.remote });
    if (this.#connections.size === 0) this.#idleWaiters.splice(0).forEach((resolve) => resolve());
  }

  /** Reports a refusal: a connection-level one (no streamId) marks the connection refused. */
  #refuse(info: Connection | InboundConnectionInfo, code: ProxyErrorCode, reason: string, log: Logger, extra: Partial<HboneRefusal> = {}): void {
    if (extra.streamId === undefined && 'refused' in info) info.refused = true;
    const level = ERROR_DISPOSITIONS[code].logLevel;
    const fields = { code, reason, ...(extra.streamId !== undefined ? { stream: extra.streamId } : {}) };
    log[level](fields, extra.streamId === undefined ? 'HBONE connection refused' : 'HBONE request refused');
    this.#hooks.onRefused?.({ connectionId: info.connectionId, local: info.local, remote: info.remote, code, reason, ...extra });
  }

  /**
   * Counts a limit and logs it, at most one warning per kind per second (a
   * connection storm must not become a log storm); `quiet` when a refusal line
   * already says it.
   */
  #limit(kind: HboneLimitKind, reason: string, log: Logger, quiet = false): void {
    this.#hooks.onLimit?.(kind);
    if (quiet) return;
    const now = this.#clock.monotonic();
    const state = this.#limitLog.get(kind);
    if (state !== undefined && now - state.at < LIMIT_LOG_INTERVAL_MS) {
      state.suppressed++;
      log.debug({ limit: kind, reason }, `HBONE limit reached: ${kind}`);
      return;
    }
    log.warn({ limit: kind, reason, ...(state?.suppressed ? { suppressed: state.suppressed } : {}) }, `HBONE limit reached: ${kind}`);
    this.#limitLog.set(kind, { at: now, suppressed: 0 });
  }

  #whenIdle(): Promise<void> {
    if (this.#connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Detaches from every listener (their owners close them). */
  #detach(): void {
    for (const [server, listener] of this.#attached) server.off('connection', listener);
    this.#attached.clear();
  }

  /**
   * Graceful drain: refuses new connections (DRAINING: closed before TLS;
   * the listeners stay attached so that none is left unanswered until their
   * owners close them), sends GOAWAY on every session (streams in flight keep
   * working), closes connections still in the TLS handshake, and resolves
   * when every connection has closed. Call close() at the deadline.
   */
  async drain(): Promise<void> {
    if (this.#state === 'running') {
      this.#state = 'draining';
      this.#log.info({ connections: this.#connections.size }, 'HBONE server draining');
    }
    for (const conn of this.#connections) {
      if (conn.phase === 'tls') {
        conn.acceptance?.cancel();
        this.#refuse(conn, 'DRAINING', 'the server is shutting down', conn.log);
        conn.raw.destroy();
      } else if (conn.phase === 'h2') {
        this.#closeGracefully(conn);
      }
    }
    await this.#whenIdle();
  }

  /** Force-closes everything (the drain deadline passed, or shutdown without drain). */
  async close(): Promise<void> {
    this.#state = 'closed';
    this.#unsubscribeCrl();
    this.#detach();
    for (const conn of this.#connections) {
      conn.acceptance?.cancel();
      if (conn.phase === 'tls' && !conn.refused) this.#refuse(conn, 'DRAINING', 'the server is shutting down', conn.log);
      conn.ending = true;
      conn.session?.destroy();
      conn.tls?.destroy();
      conn.raw.destroy();
    }
    await this.#whenIdle();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

