/**
 * One established HBONE client connection: mTLS HTTP/2 to a peer's HBONE
 * port, on which CONNECT streams are opened (ztunnel src/proxy/h2/client.rs
 * and h2.rs). dial.ts makes it; the pool shares it.
 *
 * Keepalive (keepalive.ts, ztunnel's values): a PING 10 s after the start and
 * 10 s after each answer; no answer within 20 s (or a PING error) destroys
 * the connection.
 *
 * Invariants:
 * - `activeStreams` counts streams from `openStream` until their 'close' (or
 *   their synchronous failure), each decremented exactly once;
 * - `isReady` turns false for good on GOAWAY, close or destroy, and no stream
 *   is opened once it is false;
 * - the keepalive holds at most one timer at a time and none after close;
 * - 'close' listeners run exactly once, after the session closed.
 */
import type { X509Certificate } from 'node:crypto';
import { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import type { Clock, Identity, Logger } from '@ambient/control';
import { describeError, ProxyError, type ProxyErrorCode } from '../errors.js';
import { abortiveClose } from '../io/copy.js';
import { formatSocketAddress, type SocketAddress } from '../net/address.js';
import { encodeConnectRequest, formatAuthority, type ConnectRequestFields } from './connect-codec.js';
import { startKeepalive, type Keepalive } from './keepalive.js';

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

// ---------------------------------------------------------------------------
// Types

export interface HboneStreamRequest {
  /** What the CONNECT carries: the structured authority and the HBONE headers, encoded by the codec here. */
  readonly connect: ConnectRequestFields;
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
  /**
   * The server's certificate chain as verified in the handshake (leaf first,
   * up to the root when Node knows it). Used to re-check live connections
   * when the CRLs change.
   */
  readonly peerChain: readonly X509Certificate[];
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
  #keepalive: Keepalive | undefined;
  #closedPromise: Promise<void>;
  #markClosed: () => void = () => {};

  /** @internal Use dialHbone / openInnerHbone. */
  constructor(args: {
    session: ClientHttp2Session;
    socket: TLSSocket;
    nextHop: SocketAddress;
    peerIdentity: Identity;
    peerChain: readonly X509Certificate[];
    clock: Clock;
    settings: HboneClientSettings;
    log: Logger | undefined;
  }) {
    this.#session = args.session;
    this.#socket = args.socket;
    this.nextHop = args.nextHop;
    this.peerIdentity = args.peerIdentity;
    this.peerChain = args.peerChain;
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
    else {
      this.#keepalive = startKeepalive(session, {
        clock: this.#clock,
        intervalMs: this.#settings.pingIntervalMs,
        timeoutMs: this.#settings.pingTimeoutMs,
        onDead: (_kind, reason) => {
          const peer = formatSocketAddress(this.nextHop);
          this.#log?.warn({ connection: this.id, peer }, `HBONE keepalive: ${reason}; dropping the connection`);
          this.destroy(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connection to ${peer} dropped: ${reason}`));
        },
      });
    }
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
    const authority = formatAuthority(request.connect.authority);
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
      const headers = encodeConnectRequest(request.connect);
      stream = this.#session.request(headers, request.signal === undefined ? { endStream: false } : { endStream: false, signal: request.signal });
    } catch (err) {
      done();
      return Promise.reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE CONNECT to ${authority} via ${formatSocketAddress(this.nextHop)} could not be sent: ${describeError(err)}`, { cause: err }));
    }
    stream.once('close', done);
    // A permanent handler: errors after the answer belong to the copy, but an
    // 'error' with no listener would crash the process.
    stream.on('error', (err: Error) => this.#log?.debug({ connection: this.id, err: describeError(err) }, 'HBONE stream error'));

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
        reject(new HboneStatusError(Number.isFinite(status) ? status : 0, `HBONE CONNECT to ${authority} via ${formatSocketAddress(this.nextHop)} was answered with status ${String(raw)}`));
      };
      const onError = (err: Error) => {
        cleanup();
        reject(this.#streamFailure(authority, err));
      };
      const onClose = () => {
        cleanup();
        reject(this.#streamFailure(authority, undefined, stream.rstCode));
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
    const why = err !== undefined ? describeError(err) : `stream closed before an answer${rstCode !== undefined && rstCode !== 0 ? ` (RST_STREAM ${rstCode})` : ''}`;
    return new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE CONNECT to ${authority} via ${formatSocketAddress(this.nextHop)} failed: ${why}`, { cause: err });
  }

  #onSessionClose(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#keepalive?.stop();
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
// Helpers


/** A session error as a ProxyError: TLS alerts are TLS_HANDSHAKE_FAILED, anything else `fallback`. */
export function classifySessionError(err: Error, hop: SocketAddress, fallback: ProxyErrorCode = 'UPSTREAM_CONNECT_FAILED'): ProxyError {
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('ERR_SSL_')) {
    return new ProxyError('TLS_HANDSHAKE_FAILED', `TLS with ${formatSocketAddress(hop)} failed: ${describeError(err)}`, { cause: err });
  }
  return new ProxyError(fallback, `HTTP/2 connection to ${formatSocketAddress(hop)} failed: ${describeError(err)}`, { cause: err });
}
