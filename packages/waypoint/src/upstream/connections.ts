/**
 * The waypoint's connections to endpoints (Envoy's per-host connection pools
 * of an `inbound-vip|…` cluster behind `connect_originate`):
 *
 * - a **tunnel** to an endpoint is an HBONE CONNECT stream to
 *   `<podIP>:15008` with `:authority <podIP>:<targetPort>`, opened through
 *   the dataplane HbonePool under the key {our identity, the endpoint's
 *   expected identities, podIP:15008, our IP}, so the pool's dialer presents
 *   the waypoint's certificate and its verifier refuses any other peer
 *   identity before a byte of the request is sent (fail closed). A workload
 *   outside the mesh (tunnel protocol TCP) gets a plain TCP connection to
 *   `podIP:targetPort`, as Envoy's non-tunnel endpoints do. A tunnel must be
 *   up within the connect timeout (meshConfig.connectTimeout, 10 s).
 * - HTTP/1.1 runs on keep-alive connections, each its own tunnel, through an
 *   http.Agent per endpoint whose createConnection opens a tunnel. Node's
 *   Agent does not count connections still being created, so admission is
 *   ours: at most `maxConnectionsPerEndpoint` connections, then up to
 *   `maxPendingRequestsPerEndpoint` requests wait for one, beyond that
 *   overflow.
 * - HTTP/2 (gRPC and http2 ports) is h2c with prior knowledge inside a
 *   tunnel, multiplexed: streams go to an open session below its stream limit
 *   (ours, and the peer's SETTINGS_MAX_CONCURRENT_STREAMS), another session is
 *   dialed when all are full (one dial at a time per endpoint), a session
 *   that sent GOAWAY takes no new streams and closes when its last stream
 *   ends.
 * - idle connections close after `idleTimeoutMs` (Envoy's HTTP idle timeout,
 *   1 h); `reconcile(snapshot)` retires the connections of endpoints that left
 *   discovery, changed address or became unhealthy: idle ones close now,
 *   busy ones when their request ends.
 *
 * Failures are UpstreamResetError with Envoy's reset reason, never a raw
 * socket error: the forwarder decides retries and flags from the reason.
 *
 * Invariants:
 * - `activeRequests(key)` counts attempts from `startAttempt` until the
 *   response body ended or the attempt failed, each decremented once;
 * - total in-flight attempts never exceed `maxRequests`, nor
 *   `maxRequestsPerEndpoint` per endpoint (overflow is immediate and never
 *   touches the network);
 * - an HTTP/1.1 connection is never shared by two requests at once and never
 *   reused after its endpoint was retired;
 * - every timer is the Clock's and is cancelled when its connection closes;
 *   `close()` destroys every tunnel and leaves no timer.
 */
import http, { type ClientRequest, type ClientRequestArgs, type IncomingMessage } from 'node:http';
import http2, { type ClientHttp2Session, type ClientHttp2Stream, type IncomingHttpHeaders, type IncomingHttpStatusHeader, type OutgoingHttpHeaders } from 'node:http2';
import { PassThrough, type Duplex, type Readable, type Writable } from 'node:stream';
import { identityEquals, identityToString, settleWithin, type Clock, type Identity, type Logger, type Snapshot, type Timer } from '@ambient/control';
import { describeError, ProxyError, type HbonePool, type PoolKey, type SocketFactory } from '@ambient/dataplane';
import type { Candidate } from './endpoints.js';
import type { RawHeaders } from './types.js';

/** The HBONE port of every endpoint's ztunnel. */
const HBONE_PORT = 15008;
/** meshConfig.connectTimeout default. */
const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Envoy's common_http_protocol_options.idle_timeout default (1 h). */
const DEFAULT_IDLE_TIMEOUT_MS = 60 * 60 * 1000;

/** Envoy's reset reasons (Http::Utility::resetReasonToString), the vocabulary of every failure here. */
export type ResetReason =
  | 'local connection failure'
  | 'remote connection failure'
  | 'connection timeout'
  | 'connection termination'
  | 'local reset'
  | 'overflow'
  | 'remote reset'
  | 'remote refused stream reset'
  | 'protocol error';

export class UpstreamResetError extends Error {
  constructor(
    readonly reason: ResetReason,
    message: string,
    /** What failed underneath (TCP, TLS, identity, CONNECT status); Envoy's transport failure reason. */
    readonly transportFailure?: string,
  ) {
    super(message);
    this.name = 'UpstreamResetError';
  }
}

/**
 * Bounds on the pools. Istio sets every circuit breaker to MaxUint32; these
 * keep a flood from exhausting the process and answer UO beyond them.
 */
export interface ConnectionLimits {
  /** HTTP/1.1 connections (or HTTP/2 sessions) per endpoint. */
  readonly maxConnectionsPerEndpoint: number;
  /** HTTP/1.1 requests waiting for a connection per endpoint. */
  readonly maxPendingRequestsPerEndpoint: number;
  /** In-flight requests per endpoint. */
  readonly maxRequestsPerEndpoint: number;
  /** In-flight requests across all endpoints. */
  readonly maxRequests: number;
  /** Streams per HTTP/2 session (also capped by the peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxStreamsPerHttp2Connection: number;
  /** Idle HTTP/1.1 connections kept per endpoint. */
  readonly maxIdleConnectionsPerEndpoint: number;
}

const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnectionsPerEndpoint: 1024,
  maxPendingRequestsPerEndpoint: 1024,
  maxRequestsPerEndpoint: 10_000,
  maxRequests: 50_000,
  maxStreamsPerHttp2Connection: 1000,
  maxIdleConnectionsPerEndpoint: 256,
};

/** HTTP/2 settings inside the tunnel (the same windows as the HBONE client). */
const H2_STREAM_WINDOW = 4 * 1024 * 1024;
const H2_CONNECTION_WINDOW = 16 * 1024 * 1024;
const H2_MAX_SESSION_MEMORY_MIB = 64;
const H2_MAX_HEADER_LIST = 64 * 1024;

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;

export interface UpstreamConnectionsOptions {
  readonly clock: Clock;
  readonly log: Logger;
  /** The waypoint's HBONE pool: its dialer presents the waypoint's certificate and verifies the key's identities. */
  readonly hbone: Pick<HbonePool, 'openStream'>;
  /** The waypoint's own identity (the pool key's source). */
  readonly localIdentity: Identity;
  /** The waypoint's pod IP (the pool key's source IP). */
  readonly localIp: string;
  /** For endpoints outside the mesh (plain TCP). */
  readonly sockets: Pick<SocketFactory, 'connect'>;
  readonly hbonePort?: number;
  readonly connectTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly limits?: Partial<ConnectionLimits>;
}

/** One HTTP exchange as the forwarder hands it over (headers final: attempt count and expected timeout included). */
export interface AttemptRequest {
  readonly method: string;
  readonly path: string;
  readonly authority: string;
  readonly headers: RawHeaders;
  readonly protocol: 'http1' | 'http2';
  readonly hasBody: boolean;
  /** An HTTP/1.1 Upgrade request: a 101 hands over the connection as `upgraded`. */
  readonly upgrade?: boolean;
}

export interface AttemptResponse {
  readonly status: number;
  readonly headers: RawHeaders;
  readonly body: Readable;
  readonly trailers: Promise<RawHeaders>;
  /** After a 101 to an upgrade request: the connection, which left the pool (the attempt is done when it closes). */
  readonly upgraded?: Duplex;
}

export interface Attempt {
  /** Where the request body goes (honour write() === false); undefined when the attempt ended first or has no body. */
  readonly sink: Promise<Writable | undefined>;
  /** The response headers; rejects with UpstreamResetError. */
  readonly response: Promise<AttemptResponse>;
  /** True once the request may have reached the upstream (Envoy's "upstream request started"). */
  readonly started: boolean;
  /** Resolves when the attempt is over: response body ended or failed, or the attempt failed. */
  readonly done: Promise<void>;
  /** Local reset, before or after the response headers (the body then errors with `error`). */
  cancel(error?: Error): void;
}

export interface UpstreamConnectionStats {
  readonly endpoints: number;
  readonly activeRequests: number;
  readonly http1Connections: number;
  readonly http1IdleConnections: number;
  readonly http1Pending: number;
  readonly http2Sessions: number;
  /** Tunnels (HBONE streams or TCP connections) opened since start. */
  readonly tunnelsOpened: number;
}

// ---------------------------------------------------------------------------

interface H2Conn {
  readonly session: ClientHttp2Session;
  active: number;
  usable: boolean;
  idleTimer: Timer | undefined;
}

interface Waiter {
  readonly run: () => void;
  readonly fail: (err: UpstreamResetError) => void;
}

class EndpointState {
  candidate: Candidate;
  active = 0;
  retired = false;
  agent: TunnelAgent | undefined;
  h1Open = 0;
  h1Connecting = 0;
  readonly waiters: Waiter[] = [];
  readonly h2: H2Conn[] = [];
  h2Dialing: Promise<H2Conn> | undefined;

  constructor(candidate: Candidate) {
    this.candidate = candidate;
  }
}

/** The Agent's name for every request of an endpoint (one agent per endpoint, one name). */
const AGENT_REQUEST = { host: 'endpoint', port: 1 } as const;

/** An http.Agent whose connections are tunnels to one endpoint. */
class TunnelAgent extends http.Agent {
  readonly #state: EndpointState;
  readonly #owner: UpstreamConnections;
  readonly #idle = new Map<Duplex, Timer>();

  constructor(state: EndpointState, owner: UpstreamConnections, maxFree: number) {
    super({ keepAlive: true, maxSockets: Number.POSITIVE_INFINITY, maxFreeSockets: maxFree, scheduling: 'lifo' });
    this.#state = state;
    this.#owner = owner;
  }

  override createConnection(_options: ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): Duplex | null | undefined {
    const state = this.#state;
    state.h1Connecting++;
    this.#owner.openTunnel(state.candidate).then(
      (stream) => {
        state.h1Connecting--;
        state.h1Open++;
        stream.once('close', () => {
          state.h1Open--;
          this.#idle.get(stream)?.cancel();
          this.#idle.delete(stream);
          this.#owner.dispatch(state);
        });
        callback?.(null, stream);
      },
      (err: unknown) => {
        state.h1Connecting--;
        this.#owner.dispatch(state);
        callback?.(err instanceof Error ? err : new Error(String(err)), undefined as unknown as Duplex);
      },
    );
    return undefined;
  }

  /** A connection finished its request: keep it (no setKeepAlive: a tunnel is not a TCP socket) unless retired. */
  override keepSocketAlive(socket: Duplex): boolean {
    if (this.#state.retired) return false;
    this.#idle.get(socket)?.cancel();
    this.#idle.set(socket, this.#owner.idleTimer(() => socket.destroy()));
    // The Agent puts it on the free list right after this returns.
    queueMicrotask(() => this.#owner.dispatch(this.#state));
    return true;
  }

  override reuseSocket(socket: Duplex, request: ClientRequest): void {
    this.#idle.get(socket)?.cancel();
    this.#idle.delete(socket);
    request.reusedSocket = true;
  }

  idleCount(): number {
    return this.freeSockets[this.getName(AGENT_REQUEST)]?.length ?? 0;
  }

  /** Cancels every idle timer (the agent is being destroyed). */
  cancelIdleTimers(): void {
    for (const t of this.#idle.values()) t.cancel();
    this.#idle.clear();
  }

  destroyIdle(): void {
    for (const socket of [...(this.freeSockets[this.getName(AGENT_REQUEST)] ?? [])]) socket.destroy();
  }
}

export class UpstreamConnections {
  readonly #o: UpstreamConnectionsOptions;
  readonly #limits: ConnectionLimits;
  readonly #hbonePort: number;
  readonly #connectTimeoutMs: number;
  readonly #idleTimeoutMs: number;
  readonly #states = new Map<string, EndpointState>();
  readonly #tunnels = new Set<Duplex>();
  #active = 0;
  #tunnelsOpened = 0;
  #closed = false;

  constructor(options: UpstreamConnectionsOptions) {
    this.#o = options;
    this.#limits = { ...DEFAULT_CONNECTION_LIMITS, ...options.limits };
    this.#hbonePort = options.hbonePort ?? HBONE_PORT;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS;
  }

  /** In-flight requests to the endpoint with this candidate key (LEAST_REQUEST's input). */
  activeRequests(key: string): number {
    return this.#states.get(key)?.active ?? 0;
  }

  /**
   * A tunnel to the endpoint: the HBONE CONNECT stream (or plain TCP
   * connection), up within the connect timeout. Rejects with
   * UpstreamResetError: 'connection timeout', or 'remote connection failure'
   * (TCP, TLS, identity, CONNECT status), or 'local reset' when aborted.
   */
  openTunnel(candidate: Candidate, signal?: AbortSignal): Promise<Duplex> {
    if (this.#closed) return Promise.reject(new UpstreamResetError('local connection failure', 'the upstream connections are closed'));
    const opening = candidate.transport === 'hbone' ? this.#openHbone(candidate, signal) : this.#openPlain(candidate, signal);
    return opening.then((stream) => {
      if (this.#closed) {
        stream.destroy();
        throw new UpstreamResetError('local connection failure', 'the upstream connections are closed');
      }
      this.#tunnelsOpened++;
      if (candidate.transport === 'hbone') writeBuffersOnly(stream);
      this.#tunnels.add(stream);
      stream.once('close', () => this.#tunnels.delete(stream));
      return stream;
    });
  }

  #openHbone(candidate: Candidate, signal: AbortSignal | undefined): Promise<Duplex> {
    const { endpoint, ip, expectedIdentities } = candidate;
    const key: PoolKey = {
      srcIdentity: this.#o.localIdentity,
      dstIdentities: expectedIdentities,
      nextHop: { ip, port: this.#hbonePort },
      srcIp: this.#o.localIp,
    };
    const controller = new AbortController();
    const where = `HBONE to ${endpoint.address} via ${ip}:${this.#hbonePort}`;
    return settleWithin<Duplex>(
      {
        clock: this.#o.clock,
        timeoutMs: this.#connectTimeoutMs,
        onTimeout: () => ({ error: new UpstreamResetError('connection timeout', `${where}: not connected within ${this.#connectTimeoutMs} ms`) }),
        signal,
        onAbort: () => ({ error: new UpstreamResetError('local reset', `${where}: cancelled`) }),
      },
      (settle) => {
        this.#o.hbone.openStream(key, { connect: { authority: { kind: 'address', ip, port: endpoint.targetPort } }, signal: controller.signal }).then(
          (opened) => {
            const peer = opened.connection.peerIdentity;
            if (!expectedIdentities.some((id) => identityEquals(id, peer))) {
              // The verifier already refuses this; checked again so no byte ever goes to the wrong workload.
              opened.stream.destroy();
              settle.reject(new UpstreamResetError('remote connection failure', `${where}: peer is ${identityToString(peer)}, expected ${expectedIdentities.map(identityToString).join(' or ')}`, 'PEER_IDENTITY_INVALID'));
              return;
            }
            if (settle.settled) opened.stream.destroy();
            else settle.resolve(opened.stream);
          },
          (err: unknown) => {
            const timeout = err instanceof ProxyError && (err.code === 'UPSTREAM_TIMEOUT' || err.code === 'TLS_HANDSHAKE_TIMEOUT');
            const transport = err instanceof ProxyError ? `${err.code}: ${err.message}` : describeError(err);
            settle.reject(new UpstreamResetError(timeout ? 'connection timeout' : 'remote connection failure', `${where} failed: ${describeError(err)}`, transport));
          },
        );
        return (outcome) => {
          if (outcome === 'rejected') controller.abort();
        };
      },
    );
  }

  #openPlain(candidate: Candidate, signal: AbortSignal | undefined): Promise<Duplex> {
    const { ip, endpoint } = candidate;
    const where = `TCP to ${endpoint.address}`;
    return settleWithin<Duplex>(
      {
        clock: this.#o.clock,
        timeoutMs: this.#connectTimeoutMs,
        onTimeout: () => ({ error: new UpstreamResetError('connection timeout', `${where}: not connected within ${this.#connectTimeoutMs} ms`) }),
        signal,
        onAbort: () => ({ error: new UpstreamResetError('local reset', `${where}: cancelled`) }),
      },
      (settle) => {
        const socket = this.#o.sockets.connect({ ip, port: endpoint.targetPort });
        const onConnect = () => settle.resolve(socket);
        const onError = (err: Error) => settle.reject(new UpstreamResetError('remote connection failure', `${where} failed: ${describeError(err)}`, describeError(err)));
        socket.once('connect', onConnect);
        socket.once('error', onError);
        return (outcome) => {
          socket.off('connect', onConnect);
          socket.off('error', onError);
          if (outcome === 'rejected') socket.destroy();
        };
      },
    );
  }

  /**
   * Starts one HTTP exchange with the endpoint. Never throws: overflow and
   * every failure reject `response` with UpstreamResetError.
   */
  startAttempt(candidate: Candidate, request: AttemptRequest): Attempt {
    const state = this.#state(candidate);
    if (this.#closed) return failedAttempt(new UpstreamResetError('local connection failure', 'the upstream connections are closed'));
    if (this.#active >= this.#limits.maxRequests) {
      return failedAttempt(new UpstreamResetError('overflow', `${this.#active} requests in flight (limit ${this.#limits.maxRequests})`));
    }
    if (state.active >= this.#limits.maxRequestsPerEndpoint) {
      return failedAttempt(new UpstreamResetError('overflow', `${state.active} requests in flight to ${candidate.endpoint.address} (limit ${this.#limits.maxRequestsPerEndpoint})`));
    }
    const tracked = new Tracked(() => {
      state.active--;
      this.#active--;
      this.#forgetIfUnused(state);
    });
    state.active++;
    this.#active++;
    const attempt = request.protocol === 'http2' && request.upgrade !== true ? this.#startH2(state, request, tracked) : this.#startH1(state, request, tracked);
    if (attempt === undefined) return tracked.fail(new UpstreamResetError('overflow', `${this.#limits.maxPendingRequestsPerEndpoint} requests already wait for a connection to ${candidate.endpoint.address}`));
    return attempt;
  }

  // --- HTTP/1.1 ---------------------------------------------------------------

  #startH1(state: EndpointState, request: AttemptRequest, tracked: Tracked): Attempt | undefined {
    const agent = (state.agent ??= new TunnelAgent(state, this, this.#limits.maxIdleConnectionsPerEndpoint));
    let req: ClientRequest | undefined;
    let cancelled: Error | undefined;
    const sink = deferred<Writable | undefined>();
    const issue = () => {
      if (cancelled !== undefined || tracked.finished) return;
      req = this.#issueH1(agent, request, tracked, () => cancelled);
      sink.resolve(request.hasBody ? req : undefined);
    };
    const waiter: Waiter = {
      run: issue,
      fail: (err) => {
        tracked.reject(err);
        sink.resolve(undefined);
      },
    };
    if (this.#h1CanIssue(state, agent)) issue();
    else if (state.waiters.length < this.#limits.maxPendingRequestsPerEndpoint) state.waiters.push(waiter);
    else return undefined;
    return {
      sink: sink.promise,
      response: tracked.response,
      get started() {
        return req?.socket != null;
      },
      done: tracked.done,
      cancel: (error) => {
        if (tracked.finished) return;
        cancelled = error ?? new UpstreamResetError('local reset', 'request cancelled');
        const i = state.waiters.indexOf(waiter);
        if (i >= 0) {
          state.waiters.splice(i, 1);
          waiter.fail(asReset(cancelled));
          return;
        }
        if (tracked.body !== undefined) tracked.body.destroy(cancelled);
        else req?.destroy(cancelled);
      },
    };
  }

  #h1CanIssue(state: EndpointState, agent: TunnelAgent): boolean {
    return agent.idleCount() > 0 || state.h1Open + state.h1Connecting < this.#limits.maxConnectionsPerEndpoint;
  }

  /** Hands waiting HTTP/1.1 requests to connections that became free (or slots that opened). */
  dispatch(state: EndpointState): void {
    const agent = state.agent;
    if (agent !== undefined) {
      while (state.waiters.length > 0 && this.#h1CanIssue(state, agent)) state.waiters.shift()?.run();
    }
    this.#forgetIfUnused(state);
  }

  #issueH1(agent: TunnelAgent, request: AttemptRequest, tracked: Tracked, cancelled: () => Error | undefined): ClientRequest {
    const headers: [string, string][] = [['Host', request.authority]];
    for (const [name, value] of request.headers) {
      if (name.toLowerCase() !== 'host') headers.push([name, value]);
    }
    const req = http.request({ ...AGENT_REQUEST, agent, method: request.method, path: request.path, headers: headers as unknown as http.OutgoingHttpHeaders, setHost: false });
    req.on('error', (err: Error) => {
      const local = cancelled();
      tracked.reject(local !== undefined ? asReset(local) : classifyH1Error(err));
    });
    req.once('close', () => {
      if (tracked.body === undefined) tracked.reject(new UpstreamResetError('connection termination', 'the connection closed before the response'));
    });
    req.once('response', (res: IncomingMessage) => {
      const trailers = deferred<RawHeaders>();
      res.once('end', () => trailers.resolve(pairs(res.rawTrailers)));
      res.once('close', () => {
        trailers.resolve([]);
        tracked.finish();
      });
      res.on('error', () => trailers.resolve([]));
      tracked.respond({ status: res.statusCode ?? 0, headers: pairs(res.rawHeaders), body: res, trailers: trailers.promise }, res);
    });
    if (request.upgrade === true) {
      // node:http hands a 101 over as 'upgrade' and takes the connection out of the Agent.
      req.once('upgrade', (res: IncomingMessage, socket: Duplex, head: Buffer) => {
        if (head.length > 0) socket.unshift(head);
        socket.once('close', () => tracked.finish());
        const body = new PassThrough();
        body.end();
        tracked.respond({ status: res.statusCode ?? 101, headers: pairs(res.rawHeaders), body, trailers: Promise.resolve([]), upgraded: socket }, socket);
      });
    }
    if (!request.hasBody) req.end();
    return req;
  }

  // --- HTTP/2 -----------------------------------------------------------------

  #startH2(state: EndpointState, request: AttemptRequest, tracked: Tracked): Attempt | undefined {
    let stream: ClientHttp2Stream | undefined;
    let cancelled: Error | undefined;
    const sink = this.#h2Session(state).then(
      (conn) => {
        if (cancelled !== undefined) {
          tracked.reject(asReset(cancelled));
          return undefined;
        }
        stream = this.#issueH2(state, conn, request, tracked, () => cancelled);
        return request.hasBody ? stream : undefined;
      },
      (err: unknown) => {
        tracked.reject(cancelled !== undefined ? asReset(cancelled) : asReset(err));
        return undefined;
      },
    );
    return {
      sink,
      response: tracked.response,
      get started() {
        return stream !== undefined;
      },
      done: tracked.done,
      cancel: (error) => {
        if (tracked.finished) return;
        cancelled = error ?? new UpstreamResetError('local reset', 'request cancelled');
        if (tracked.body !== undefined) tracked.body.destroy(cancelled);
        else if (stream !== undefined) {
          stream.close(NGHTTP2_CANCEL);
          tracked.reject(asReset(cancelled));
        }
      },
    };
  }

  #h2HasRoom(conn: H2Conn): boolean {
    if (!conn.usable || conn.session.destroyed || conn.session.closed) return false;
    const peer = conn.session.remoteSettings?.maxConcurrentStreams;
    const limit = Math.min(this.#limits.maxStreamsPerHttp2Connection, typeof peer === 'number' ? peer : 100);
    return conn.active < limit;
  }

  async #h2Session(state: EndpointState): Promise<H2Conn> {
    for (;;) {
      const open = state.h2.find((c) => this.#h2HasRoom(c));
      if (open !== undefined) return open;
      if (state.h2Dialing !== undefined) {
        await state.h2Dialing.catch(() => undefined);
        continue;
      }
      if (state.h2.length >= this.#limits.maxConnectionsPerEndpoint) {
        throw new UpstreamResetError('overflow', `all ${state.h2.length} HTTP/2 connections to ${state.candidate.endpoint.address} are at their stream limit`);
      }
      const dialing = this.#dialH2(state);
      state.h2Dialing = dialing;
      try {
        return await dialing;
      } finally {
        state.h2Dialing = undefined;
      }
    }
  }

  async #dialH2(state: EndpointState): Promise<H2Conn> {
    const tunnel = await this.openTunnel(state.candidate);
    const session = http2.connect(`http://${state.candidate.endpoint.address}`, {
      createConnection: () => tunnel,
      settings: { enablePush: false, initialWindowSize: H2_STREAM_WINDOW, maxHeaderListSize: H2_MAX_HEADER_LIST },
      maxSessionMemory: H2_MAX_SESSION_MEMORY_MIB,
    });
    const conn: H2Conn = { session, active: 0, usable: true, idleTimer: undefined };
    state.h2.push(conn);
    session.on('error', (err: Error) => this.#o.log.debug({ endpoint: state.candidate.endpoint.address, err: describeError(err) }, 'upstream HTTP/2 session error'));
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(H2_CONNECTION_WINDOW);
      } catch {
        // The session is already going away; its streams report that.
      }
    });
    session.on('goaway', () => {
      conn.usable = false;
      if (conn.active === 0) session.close();
    });
    session.once('close', () => {
      conn.usable = false;
      conn.idleTimer?.cancel();
      conn.idleTimer = undefined;
      const i = state.h2.indexOf(conn);
      if (i >= 0) state.h2.splice(i, 1);
      tunnel.destroy();
      this.#forgetIfUnused(state);
    });
    if (state.retired) conn.usable = false;
    this.#armH2Idle(state, conn);
    return conn;
  }

  #armH2Idle(state: EndpointState, conn: H2Conn): void {
    conn.idleTimer?.cancel();
    conn.idleTimer = undefined;
    if (conn.active > 0) return;
    if (!conn.usable || state.retired) {
      conn.session.close();
      return;
    }
    conn.idleTimer = this.idleTimer(() => conn.session.close());
  }

  #issueH2(state: EndpointState, conn: H2Conn, request: AttemptRequest, tracked: Tracked, cancelled: () => Error | undefined): ClientHttp2Stream {
    conn.active++;
    conn.idleTimer?.cancel();
    conn.idleTimer = undefined;
    const stream = conn.session.request(h2Headers(request), { endStream: !request.hasBody });
    let responded = false;
    const trailers = deferred<RawHeaders>();
    stream.on('error', (err: Error) => this.#o.log.debug({ err: describeError(err) }, 'upstream HTTP/2 stream error'));
    // Node passes the raw header list as a third argument its typings leave out.
    const onResponse = (headers: IncomingHttpHeaders & IncomingHttpStatusHeader, _flags: number, raw: string[]) => {
      responded = true;
      tracked.respond({ status: Number(headers[':status']), headers: pairs(raw, true), body: stream, trailers: trailers.promise }, stream);
    };
    const onTrailers = (_headers: IncomingHttpHeaders, _flags: number, raw: string[]) => trailers.resolve(pairs(raw, true));
    stream.once('response', onResponse as (headers: IncomingHttpHeaders & IncomingHttpStatusHeader, flags: number) => void);
    stream.once('trailers', onTrailers as (headers: IncomingHttpHeaders, flags: number) => void);
    stream.once('close', () => {
      conn.active--;
      trailers.resolve([]);
      if (!responded) {
        const local = cancelled();
        tracked.reject(local !== undefined ? asReset(local) : classifyH2Close(stream, conn.session));
      }
      tracked.finish();
      this.#armH2Idle(state, conn);
    });
    return stream;
  }

  // --- lifecycle ----------------------------------------------------------------

  /** A Clock timer for an idle connection. */
  idleTimer(fn: () => void): Timer {
    return this.#o.clock.setTimer(this.#idleTimeoutMs, fn);
  }

  #state(candidate: Candidate): EndpointState {
    let state = this.#states.get(candidate.key);
    if (state === undefined) {
      state = new EndpointState(candidate);
      this.#states.set(candidate.key, state);
    } else {
      state.candidate = candidate;
    }
    return state;
  }

  #forgetIfUnused(state: EndpointState): void {
    if (state.active > 0 || state.waiters.length > 0 || state.h1Open + state.h1Connecting > 0 || state.h2.length > 0 || state.h2Dialing !== undefined) return;
    if (this.#states.get(state.candidate.key) === state) this.#states.delete(state.candidate.key);
  }

  /**
   * Retires the connections of endpoints whose workload is gone from the
   * snapshot, changed its address or is no longer healthy: idle connections
   * close now, busy ones after their request.
   */
  reconcile(snapshot: Snapshot): number {
    let retired = 0;
    for (const state of [...this.#states.values()]) {
      if (state.retired) continue;
      const was = state.candidate.endpoint.workload;
      const now = snapshot.workload(was.uid);
      if (now !== undefined && now.addresses[0] === state.candidate.ip && (now.status === 'Healthy' || state.candidate.endpoint.service.loadBalancing?.healthPolicy === 'AllowAll')) continue;
      retired++;
      this.#retire(state);
    }
    return retired;
  }

  #retire(state: EndpointState): void {
    state.retired = true;
    this.#states.delete(state.candidate.key);
    this.#o.log.debug({ endpoint: state.candidate.endpoint.address, workload: state.candidate.endpoint.workload.uid }, 'endpoint left discovery; closing its connections');
    state.agent?.destroyIdle();
    for (const conn of [...state.h2]) {
      conn.usable = false;
      if (conn.active === 0) conn.session.close();
    }
  }

  stats(): UpstreamConnectionStats {
    let h1 = 0;
    let idle = 0;
    let pending = 0;
    let h2 = 0;
    for (const s of this.#states.values()) {
      h1 += s.h1Open;
      idle += s.agent?.idleCount() ?? 0;
      pending += s.waiters.length;
      h2 += s.h2.length;
    }
    return { endpoints: this.#states.size, activeRequests: this.#active, http1Connections: h1, http1IdleConnections: idle, http1Pending: pending, http2Sessions: h2, tunnelsOpened: this.#tunnelsOpened };
  }

  /** Destroys every connection now; waiting requests fail. */
  close(): void {
    this.#closed = true;
    for (const state of [...this.#states.values()]) {
      state.retired = true;
      for (const w of state.waiters.splice(0)) w.fail(new UpstreamResetError('local connection failure', 'the upstream connections are closed'));
      state.agent?.cancelIdleTimers();
      state.agent?.destroy();
      for (const conn of [...state.h2]) {
        conn.idleTimer?.cancel();
        conn.session.destroy();
      }
    }
    for (const t of [...this.#tunnels]) t.destroy();
    this.#states.clear();
  }
}

// ---------------------------------------------------------------------------
// One attempt's bookkeeping

/** The response promise, the done promise and the active-count release of one attempt, each settled once. */
class Tracked {
  readonly response: Promise<AttemptResponse>;
  readonly done: Promise<void>;
  body: Readable | undefined;
  #settled = false;
  #finished = false;
  #resolve!: (r: AttemptResponse) => void;
  #reject!: (e: UpstreamResetError) => void;
  #markDone!: () => void;
  readonly #release: () => void;

  constructor(release: () => void) {
    this.#release = release;
    this.response = new Promise<AttemptResponse>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // A rejection nobody awaited (the attempt was abandoned) must not surface as unhandled.
    this.response.catch(() => undefined);
    this.done = new Promise<void>((resolve) => (this.#markDone = resolve));
  }

  get finished(): boolean {
    return this.#finished;
  }

  respond(response: AttemptResponse, body: Readable): void {
    if (this.#settled) {
      body.destroy();
      return;
    }
    this.#settled = true;
    this.body = body;
    this.#resolve(response);
  }

  reject(error: UpstreamResetError): void {
    if (!this.#settled) {
      this.#settled = true;
      this.#reject(error);
    }
    if (this.body === undefined) this.finish();
  }

  fail(error: UpstreamResetError): Attempt {
    this.reject(error);
    return { sink: Promise.resolve(undefined), response: this.response, started: false, done: this.done, cancel: () => undefined };
  }

  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#release();
    this.#markDone();
  }
}

function failedAttempt(error: UpstreamResetError): Attempt {
  return new Tracked(() => undefined).fail(error);
}

// ---------------------------------------------------------------------------
// Pure helpers

/**
 * Makes an HTTP/2 stream (an HBONE tunnel) receive only Buffers. Node 20's
 * Http2Stream corrupts the first bytes of string chunks written with writev
 * when nghttp2 sends them later than the write call returns (seen with
 * node:http's corked header + '' writes: the status line or request line
 * arrives as garbage), so strings are encoded here first. Buffers pass
 * through untouched.
 */
export function writeBuffersOnly(stream: Duplex): void {
  type Chunk = { chunk: unknown; encoding: BufferEncoding | 'buffer' };
  const s = stream as Duplex & {
    _write(chunk: unknown, encoding: BufferEncoding | 'buffer', cb: (err?: Error | null) => void): void;
    _writev?: ((chunks: Chunk[], cb: (err?: Error | null) => void) => void) | null;
  };
  const write = s._write.bind(s);
  s._write = (chunk, encoding, cb) => write(typeof chunk === 'string' ? Buffer.from(chunk, encoding as BufferEncoding) : chunk, 'buffer', cb);
  const writev = s._writev?.bind(s);
  if (writev !== undefined) {
    s._writev = (chunks, cb) => {
      const out = chunks.map((c) => (typeof c.chunk === 'string' ? { chunk: Buffer.from(c.chunk, c.encoding as BufferEncoding), encoding: 'buffer' as const } : c)) as Chunk[] & { allBuffers?: boolean };
      out.allBuffers = true;
      writev(out, cb);
    };
  }
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  let done = false;
  const promise = new Promise<T>((r) => (resolve = r));
  return {
    promise,
    resolve: (v) => {
      if (done) return;
      done = true;
      resolve(v);
    },
  };
}

/** A flat raw header list as pairs; HTTP/2 pseudo-headers dropped when `h2`. */
function pairs(raw: readonly string[], h2 = false): RawHeaders {
  const out: (readonly [string, string])[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i] as string;
    if (h2 && name.startsWith(':')) continue;
    out.push([name, raw[i + 1] as string]);
  }
  return out;
}

/** Connection-specific headers HTTP/2 forbids (RFC 9113 §8.2.2); Node throws on them. */
const H2_FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host']);

function h2Headers(request: AttemptRequest): OutgoingHttpHeaders {
  const out: Record<string, string | string[]> = Object.create(null) as Record<string, string | string[]>;
  out[':method'] = request.method;
  out[':path'] = request.path;
  out[':authority'] = request.authority;
  out[':scheme'] = 'http';
  for (const [rawName, value] of request.headers) {
    const name = rawName.toLowerCase();
    if (name.startsWith(':') || H2_FORBIDDEN.has(name)) continue;
    if (name === 'te' && value.trim().toLowerCase() !== 'trailers') continue;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [prev, value];
  }
  return out;
}

function asReset(err: unknown): UpstreamResetError {
  if (err instanceof UpstreamResetError) return err;
  return new UpstreamResetError('local reset', describeError(err));
}

function classifyH1Error(err: Error): UpstreamResetError {
  if (err instanceof UpstreamResetError) return err;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && code.startsWith('HPE_')) return new UpstreamResetError('protocol error', `the upstream broke HTTP/1.1: ${describeError(err)}`);
  return new UpstreamResetError('connection termination', `the upstream connection closed before the response: ${describeError(err)}`);
}

function classifyH2Close(stream: ClientHttp2Stream, session: ClientHttp2Session): UpstreamResetError {
  const rst = stream.rstCode;
  if (rst === NGHTTP2_REFUSED_STREAM) return new UpstreamResetError('remote refused stream reset', 'the upstream refused the stream (REFUSED_STREAM)');
  if (session.destroyed || session.closed) return new UpstreamResetError('connection termination', `the upstream HTTP/2 connection closed before the response${rst ? ` (RST_STREAM ${rst})` : ''}`);
  return new UpstreamResetError('remote reset', `the upstream reset the stream before the response${rst !== undefined ? ` (RST_STREAM ${rst})` : ''}`);
}
