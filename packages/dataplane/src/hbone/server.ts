/**
 * The HBONE server transport (port 15008, ztunnel `inbound.rs` accept loop and
 * `h2/server.rs`): TCP → TLS 1.3 with a client certificate and the SPIFFE peer
 * checks → HTTP/2 with ztunnel's settings → one validated CONNECT per stream,
 * handed to the injected `onConnect` as a ConnectRequest. Everything after that
 * (destination checks, RBAC, upstream connect) belongs to the handler, which
 * decides the status: the stream's bytes only become reachable through
 * `accept()`, which sends the 200 first, so nothing the client sends can reach
 * an upstream before the handler said yes.
 *
 * Which certificate to present comes from `certificateFor(localAddress)`, per
 * connection, so one server can serve several pod identities (in-pod mode).
 *
 * With CRL_PATH (`revocation`), a client whose chain holds a revoked
 * certificate is refused after the handshake (CERT_REVOKED), and after every
 * CRL reload each live connection whose peer is now revoked is closed
 * abruptly (GOAWAY, streams reset), as ztunnel's revocation index does.
 *
 * Beyond ztunnel: TLS handshake timeout, first-request timeout, a global
 * connection cap, rapid-reset and PING/SETTINGS flood budgets, and Node's http2
 * flood limits set deliberately (server-limits.ts). Each fires `onLimit(kind)`
 * and logs what happened.
 *
 * Invariants:
 * - Every accepted socket is in #connections from accept until its 'close';
 *   its timers are cancelled and `onConnectionClose` fires exactly once then.
 * - A connection moves tls → h2 → closed, never backwards. onConnect is only
 *   called on an h2 connection whose peer passed verifyClientPeer, for a stream
 *   whose headers passed decodeConnectRequest.
 * - A TLS socket is matched to its accepted connection by its TCP 4-tuple
 *   (unique among live connections) while it is alive — in the ALPN callback
 *   or at 'secureConnection' — and by a WeakMap afterwards; an unmatched TLS
 *   socket is closed (fail closed).
 * - A ConnectRequest is answered at most once; `accept` is the only way to the
 *   stream's data.
 * - After drain() no new connection is served; after close() none remains.
 */
import type { X509Certificate } from 'node:crypto';
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import {
  formatRejections,
  type Clock,
  type Identity,
  type Logger,
  type Timer,
  type WorkloadCertificate,
} from '@ambient/control';
import { asProxyError, ERROR_DISPOSITIONS, ProxyError, type ProxyErrorCode } from '../errors.js';
import { describeRevocation, revocationRejection, type RevocationSource } from '../tls/crl/manager.js';
import { peerChainOf, serverTlsOptions, TlsMaterialCache, verifyClientPeer, type TlsMaterial } from '../tls/contexts.js';
import type { PeerCheck } from '../tls/spiffe-verify.js';
import { canonicalPeerIp, formatSocketAddress, localAddressOf, peerAddress, type SocketAddress } from '../net/address.js';
import { decodeConnectRequest, type DecodedConnectRequest } from './connect-codec.js';
import {
  http2SessionOptions,
  resolveHboneServerLimits,
  TokenBucket,
  type HboneLimitKind,
  type HboneServerLimits,
  type HboneSessionOptions,
} from './server-limits.js';

const { NGHTTP2_NO_ERROR, NGHTTP2_ENHANCE_YOUR_CALM } = http2.constants;
const LIMIT_LOG_INTERVAL_MS = 1000;

export interface PeerInfo {
  readonly identity: Identity;
  readonly spiffeId: string;
  readonly certificate: X509Certificate;
}

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
  /** Answers with `status` and ends the stream; no-op if already answered or closed. */
  reject(status: number, reason: string, headers?: OutgoingHttpHeaders): void;
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
  /** For PEER_IDENTITY_INVALID: which SPIFFE checks failed. */
  readonly checks?: readonly PeerCheck[];
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
}

type Phase = 'tls' | 'h2' | 'closed';

interface Connection extends InboundConnectionInfo {
  readonly key: string;
  readonly raw: net.Socket;
  readonly log: Logger;
  phase: Phase;
  /** The handshake timer in phase tls, the first-request timer in phase h2 until the first stream. */
  timer: Timer | undefined;
  pingTimer: Timer | undefined;
  pingTimeout: Timer | undefined;
  tls: tls.TLSSocket | undefined;
  tlsError: Error | undefined;
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

function socketKey(s: net.Socket): string | undefined {
  const { localAddress, localPort, remoteAddress, remotePort } = s;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return undefined;
  return `${localAddress}|${localPort}|${remoteAddress}|${remotePort}`;
}

function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return (message.split('\n')[0] ?? '').slice(0, 300);
}

/** What a TLS handshake failure means, in words a user can act on. */
function describeTlsFailure(err: Error | undefined, authorizationError: string | Error | null | undefined): { code: ProxyErrorCode; reason: string } {
  if (authorizationError) return { code: 'TLS_HANDSHAKE_FAILED', reason: `client certificate rejected by the workload trust roots: ${String(authorizationError)}` };
  const code = (err as { code?: string } | undefined)?.code;
  switch (code) {
    case undefined:
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client closed the connection during the TLS handshake' };
    case 'ECONNRESET':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client closed the connection during the TLS handshake' };
    case 'ERR_TLS_HANDSHAKE_TIMEOUT':
      return { code: 'TLS_HANDSHAKE_TIMEOUT', reason: 'TLS handshake timed out' };
    case 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client presented no certificate (HBONE requires mTLS)' };
    case 'ERR_SSL_NO_APPLICATION_PROTOCOL':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client did not offer ALPN "h2"' };
    case 'ERR_SSL_HTTP_REQUEST':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client sent a plaintext HTTP request instead of a TLS ClientHello' };
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_UNSUPPORTED_PROTOCOL':
    case 'ERR_SSL_PACKET_LENGTH_TOO_LONG':
    case 'ERR_SSL_RECORD_LENGTH_MISMATCH':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: `not a TLS 1.3 ClientHello (${firstLine(err).replace(/^.*:([^:]+)$/, '$1')})` };
    case 'ERR_SSL_NO_SHARED_CIPHER':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'no shared cipher suite (HBONE offers TLS_AES_256_GCM_SHA384 and TLS_AES_128_GCM_SHA256 only)' };
    default:
      return { code: 'TLS_HANDSHAKE_FAILED', reason: `TLS handshake failed: ${code} ${firstLine(err)}` };
  }
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

  reject(status: number, reason: string, headers: OutgoingHttpHeaders = {}): void {
    if (this.#state !== 'pending') return;
    this.#state = 'rejected';
    respondAndClose(this.#stream, status, headers);
    this.onAnswer(this, status, reason);
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
  readonly #certificateFor: (local: SocketAddress) => Promise<WorkloadCertificate>;
  readonly #onConnect: ConnectHandler;
  readonly #hooks: HboneServerHooks;
  readonly #limits: HboneServerLimits;
  readonly #sessionOptions: HboneSessionOptions;
  readonly #materials: TlsMaterialCache;
  readonly #revocation: RevocationSource | undefined;
  readonly #unsubscribeCrl: () => void;
  readonly #tlsServers = new WeakMap<TlsMaterial, tls.Server>();
  readonly #connections = new Set<Connection>();
  /** Accepted connections whose TLS socket is not matched yet, by TCP 4-tuple. */
  readonly #awaitingTls = new Map<string, Connection>();
  readonly #byTlsSocket = new WeakMap<tls.TLSSocket, Connection>();
  readonly #ownedServers: net.Server[] = [];
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
    this.#certificateFor = options.certificateFor;
    this.#onConnect = options.onConnect;
    this.#hooks = options.hooks ?? {};
    this.#materials = options.tlsMaterials ?? new TlsMaterialCache();
    this.#revocation = options.revocation;
    this.#unsubscribeCrl = options.revocation?.onReload(() => this.#closeRevoked()) ?? (() => {});
  }

  get limits(): HboneServerLimits {
    return this.#limits;
  }

  /** Open connections, in any phase. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Binds a listener of our own and serves it; resolves with the bound address. */
  async listen(address: { readonly host: string; readonly port: number }): Promise<SocketAddress> {
    if (this.#state !== 'running') throw new Error('HboneServer.listen: the server is draining or closed');
    const server = net.createServer({ pauseOnConnect: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 180_000 });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: address.host, port: address.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', (err) => this.#log.error({ err }, 'HBONE listener error'));
    server.on('connection', (socket) => this.handleConnection(socket));
    this.#ownedServers.push(server);
    const bound = server.address() as net.AddressInfo;
    const result = { ip: canonicalPeerIp(bound.address) ?? bound.address, port: bound.port };
    this.#log.info({ address: formatSocketAddress(result) }, 'HBONE listener established');
    return result;
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
    const key = socketKey(raw);
    if (local === undefined || remote === undefined || key === undefined) {
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
    if (this.#awaitingTls.has(key)) {
      // Cannot happen for live TCP sockets; refuse rather than mismatch identities.
      this.#log.error({ key }, 'HBONE socket 4-tuple already in use; closing the new socket');
      raw.destroy();
      return;
    }
    const conn: Connection = {
      connectionId, local, remote, key, raw,
      log: this.#log.child({ conn: connectionId, src: formatSocketAddress(remote), dst: formatSocketAddress(local) }),
      phase: 'tls',
      timer: undefined, pingTimer: undefined, pingTimeout: undefined,
      tls: undefined, tlsError: undefined, session: undefined,
      ending: false, refused: false, streams: 0, peerChain: undefined, roots: [],
      resets: new TokenBucket(this.#limits.rapidReset, () => this.#clock.monotonic()),
      controlFrames: new TokenBucket(this.#limits.controlFrames, () => this.#clock.monotonic()),
    };
    raw.setNoDelay(true);
    raw.setKeepAlive(true, 180_000); // ztunnel KEEPALIVE_TIME default
    this.#connections.add(conn);
    this.#awaitingTls.set(key, conn);
    raw.once('close', () => this.#onClosed(conn));
    this.#hooks.onConnectionOpen?.({ connectionId, local, remote });
    conn.timer = this.#clock.setTimer(this.#limits.tlsHandshakeTimeoutMs, () => {
      if (conn.phase !== 'tls') return;
      this.#limit('tls-handshake-timeout', '', conn.log, true);
      this.#refuse(conn, 'TLS_HANDSHAKE_TIMEOUT', `TLS handshake not completed within ${this.#limits.tlsHandshakeTimeoutMs} ms`, conn.log);
      raw.destroy();
    });
    void this.#startTls(conn);
  }

  async #startTls(conn: Connection): Promise<void> {
    let material: TlsMaterial;
    try {
      const cert = await this.#certificateFor(conn.local);
      material = this.#materials.get(cert);
    } catch (err) {
      if (conn.phase !== 'tls') return;
      const e = asProxyError(err);
      this.#refuse(conn, 'CERT_UNAVAILABLE', `no certificate to serve ${formatSocketAddress(conn.local)}: ${e.message}`, conn.log);
      conn.raw.destroy();
      return;
    }
    if (conn.phase !== 'tls' || conn.raw.destroyed || this.#state === 'closed') return;
    if (conn.raw.readableLength > 0) {
      this.#refuse(conn, 'INTERNAL', 'bytes were read from the socket before TLS (the listener must use pauseOnConnect)', conn.log);
      conn.raw.destroy();
      return;
    }
    this.#tlsServerFor(material).emit('connection', conn.raw);
  }

  /** One tls.Server (and so one SecureContext) per certificate; it never listens. */
  #tlsServerFor(material: TlsMaterial): tls.Server {
    let server = this.#tlsServers.get(material);
    if (server !== undefined) return server;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const { ALPNProtocols: _unused, ...options } = serverTlsOptions(material.certificate, {
      handshakeTimeoutMs: this.#limits.tlsHandshakeTimeoutMs + 1000,
    });
    server = tls.createServer({
      ...options,
      // Selects h2 (or refuses with no_application_protocol) and matches the TLS
      // socket to its connection while the socket is certainly alive.
      ALPNCallback(this: tls.TLSSocket, { protocols }: { servername: string; protocols: string[] }) {
        self.#match(this);
        return protocols.includes('h2') ? 'h2' : undefined;
      },
    });
    server.on('secureConnection', (socket: tls.TLSSocket) => this.#onSecure(material, socket));
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.#onTlsError(err, socket));
    this.#tlsServers.set(material, server);
    return server;
  }

  #match(socket: tls.TLSSocket): Connection | undefined {
    const known = this.#byTlsSocket.get(socket);
    if (known !== undefined) return known;
    const key = socketKey(socket); // also caches the addresses on the socket
    const conn = key === undefined ? undefined : this.#awaitingTls.get(key);
    if (conn === undefined) return undefined;
    this.#awaitingTls.delete(conn.key);
    this.#byTlsSocket.set(socket, conn);
    conn.tls = socket;
    socket.on('error', (err) => conn.log.debug({ err: firstLine(err) }, 'HBONE TLS socket error'));
    socket.once('close', () => this.#onClosed(conn));
    return conn;
  }

  #onTlsError(err: Error, socket: tls.TLSSocket): void {
    const conn = this.#match(socket);
    socket.destroy();
    if (conn === undefined) {
      this.#log.debug({ err: firstLine(err) }, 'TLS handshake failed on an already closed connection');
      return;
    }
    conn.tlsError = err;
    if (conn.phase !== 'tls' || conn.refused) return;
    const { code, reason } = describeTlsFailure(err, socket.authorizationError);
    this.#refuse(conn, code, reason, conn.log);
  }

  #onSecure(material: TlsMaterial, socket: tls.TLSSocket): void {
    const conn = this.#match(socket);
    if (conn === undefined) {
      this.#log.error({}, 'TLS connection does not match an accepted socket; closing it');
      socket.destroy();
      return;
    }
    if (conn.phase !== 'tls') {
      socket.destroy();
      return;
    }
    const fail = (code: ProxyErrorCode, reason: string, extra: Partial<HboneRefusal> = {}) => {
      this.#refuse(conn, code, reason, conn.log, extra);
      socket.destroy();
    };
    if (!socket.authorized) return fail('TLS_HANDSHAKE_FAILED', `client certificate rejected: ${String(socket.authorizationError)}`);
    if (socket.alpnProtocol !== 'h2') return fail('TLS_HANDSHAKE_FAILED', 'the client did not negotiate ALPN "h2"');
    if (socket.getProtocol() !== 'TLSv1.3') return fail('TLS_HANDSHAKE_FAILED', `negotiated ${String(socket.getProtocol())}, only TLSv1.3 is allowed`);
    if (socket.isSessionReused()) return fail('TLS_HANDSHAKE_FAILED', 'TLS session resumption is refused; every connection must verify the peer');
    const verified = verifyClientPeer(socket, material, this.#clock.now());
    if (!verified.ok) {
      return fail('PEER_IDENTITY_INVALID', `client certificate refused: ${formatRejections(verified.errors)}`, {
        checks: [...new Set(verified.errors.map((e) => e.check))],
      });
    }
    const peer: PeerInfo = verified.value;
    if (this.#revocation !== undefined) {
      const chain = peerChainOf(socket.getPeerCertificate(true));
      const revoked = revocationRejection(this.#revocation, chain, material.roots);
      if (revoked !== undefined) return fail('CERT_REVOKED', `client certificate of ${peer.spiffeId} refused: ${revoked.reason}`, { peerIdentity: peer.identity });
      if (chain.length === 0) this.#revocation.untracked();
      else conn.peerChain = chain;
      conn.roots = material.roots;
    }
    conn.timer?.cancel();
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
      this.#stopPing(conn);
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
    this.#schedulePing(conn);
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
      if (request.state === 'pending') request.reject(ERROR_DISPOSITIONS[e.code].httpStatus ?? 503, e.message);
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
    this.#stopPing(conn);
    conn.session?.destroy(new Error(reason), NGHTTP2_ENHANCE_YOUR_CALM);
  }

  #schedulePing(conn: Connection): void {
    conn.pingTimer = this.#clock.setTimer(this.#limits.pingIntervalMs, () => this.#ping(conn));
  }

  #stopPing(conn: Connection): void {
    conn.pingTimer?.cancel();
    conn.pingTimeout?.cancel();
    conn.pingTimer = undefined;
    conn.pingTimeout = undefined;
  }

  /** ztunnel h2.rs do_ping_pong: PING every interval; no answer within the timeout drops the connection. */
  #ping(conn: Connection): void {
    const session = conn.session;
    if (session === undefined || session.destroyed || session.closed || conn.ending) return;
    let settled = false;
    conn.pingTimeout = this.#clock.setTimer(this.#limits.pingTimeoutMs, () => {
      if (settled) return;
      settled = true;
      if (conn.ending || session.destroyed) return;
      conn.ending = true;
      this.#limit('keepalive-timeout', `PING not answered within ${this.#limits.pingTimeoutMs} ms; the peer may have shut down`, conn.log);
      session.destroy();
    });
    try {
      session.ping((err) => {
        if (settled) return;
        settled = true;
        conn.pingTimeout?.cancel();
        if (err) {
          if (!session.destroyed && !conn.ending) {
            conn.log.debug({ err: firstLine(err) }, 'HTTP/2 ping failed; closing the connection');
            conn.ending = true;
            session.destroy();
          }
          return;
        }
        this.#schedulePing(conn);
      });
    } catch (err) {
      settled = true;
      conn.pingTimeout?.cancel();
      conn.log.debug({ err: firstLine(err) }, 'could not send HTTP/2 ping');
    }
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
      this.#stopPing(conn);
      // A security event: no graceful drain. GOAWAY, then every stream is reset with this error.
      conn.session?.destroy(new ProxyError('CERT_REVOKED', reason), NGHTTP2_NO_ERROR);
      conn.tls?.destroy();
    }
  }

  #closeGracefully(conn: Connection): void {
    this.#stopPing(conn);
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
    const wasTls = conn.phase === 'tls';
    conn.phase = 'closed';
    conn.timer?.cancel();
    conn.timer = undefined;
    this.#stopPing(conn);
    if (this.#awaitingTls.get(conn.key) === conn) this.#awaitingTls.delete(conn.key);
    if (conn.tls !== undefined && !conn.tls.destroyed) conn.tls.destroy();
    if (!conn.raw.destroyed) conn.raw.destroy();
    this.#connections.delete(conn);
    if (wasTls && !conn.refused) {
      // The TLS error (if any) may be reported just after the socket closed.
      setImmediate(() => {
        if (conn.refused) return;
        const { code, reason } = describeTlsFailure(conn.tlsError, conn.tls?.authorizationError);
        this.#refuse(conn, code, reason, conn.log);
      });
    }
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

  #stopAccepting(): Promise<void> {
    const closing = this.#ownedServers.splice(0).map((s) => new Promise<void>((resolve) => s.close(() => resolve())));
    for (const [server, listener] of this.#attached) server.off('connection', listener);
    this.#attached.clear();
    return Promise.all(closing).then(() => undefined);
  }

  /**
   * Graceful drain: stops accepting, sends GOAWAY on every session (streams in
   * flight keep working), closes connections still in the TLS handshake, and
   * resolves when every connection has closed. Call close() at the deadline.
   */
  async drain(): Promise<void> {
    if (this.#state === 'running') {
      this.#state = 'draining';
      this.#log.info({ connections: this.#connections.size }, 'HBONE server draining');
    }
    const stopped = this.#stopAccepting();
    for (const conn of this.#connections) {
      if (conn.phase === 'tls') {
        this.#refuse(conn, 'DRAINING', 'the server is shutting down', conn.log);
        conn.raw.destroy();
      } else if (conn.phase === 'h2') {
        this.#closeGracefully(conn);
      }
    }
    await Promise.all([stopped, this.#whenIdle()]);
  }

  /** Force-closes everything (the drain deadline passed, or shutdown without drain). */
  async close(): Promise<void> {
    this.#state = 'closed';
    this.#unsubscribeCrl();
    const stopped = this.#stopAccepting();
    for (const conn of this.#connections) {
      if (conn.phase === 'tls' && !conn.refused) this.#refuse(conn, 'DRAINING', 'the server is shutting down', conn.log);
      conn.ending = true;
      conn.session?.destroy();
      conn.tls?.destroy();
      conn.raw.destroy();
    }
    await Promise.all([stopped, this.#whenIdle()]);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

