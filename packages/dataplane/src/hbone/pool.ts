/**
 * The outbound HBONE connection pool (ztunnel src/proxy/pool.rs): CONNECT
 * streams to the same peer, for the same source identity, share mTLS HTTP/2
 * connections instead of paying a TLS handshake each.
 *
 * Invariants:
 * - A connection is only ever used for the key it was dialed for. The key is
 *   {source identity, the sorted set of expected destination identities, next
 *   hop ip:port, source IP}; its canonical string is injective, so two
 *   different keys — in particular two source identities — never share a
 *   connection (no hashing, nothing to collide).
 * - Per key there is at most one pooled connection and at most one dial in
 *   flight. Concurrent callers for a key wait for that dial; when it fails,
 *   every waiter is rejected with its error and the next call dials again.
 * - Taking a stream is synchronous with checking capacity (no await between
 *   the check and `openStream`, which counts the stream at once), so a
 *   connection never carries more than min(maxStreamsPerConnection, the peer's
 *   SETTINGS_MAX_CONCURRENT_STREAMS) streams.
 * - A connection leaves the pool when its last allowed stream is taken, on
 *   GOAWAY, on close, when found not ready at checkout, after
 *   `unusedReleaseTimeoutMs` without any stream, and on drain/close. Leaving
 *   the pool only drops the pool's reference: the connection is closed
 *   gracefully once it has no streams left (at once if it has none).
 * - Every connection the pool dialed is in `#live` until it closes, so
 *   `close()` can destroy all of them and `drain()` can wait for all of them.
 * - An idle timer exists only for a pooled connection with no streams, and is
 *   cancelled when a stream is taken or the connection leaves the pool.
 *
 * - With `revocation` (CRL_PATH), after every CRL reload each live connection
 *   whose server chain (captured when it joined the pool) is now revoked is
 *   destroyed at once with CERT_REVOKED (its streams are reset), as ztunnel.
 *
 * Differences from ztunnel: the idle timer measures time without streams
 * rather than time since the last checkout (a connection carrying a
 * long-lived stream is not dropped from the pool while in use), and the peer's
 * stream limit is read live from its SETTINGS rather than once at handshake.
 */
import { canonicalIp, identityEquals, identityToString, type Clock, type Identity, type Logger, type Timer, type WorkloadCertificate } from '@ambient/control';
import type { X509Certificate } from 'node:crypto';
import { asProxyError, ProxyError } from '../errors.js';
import type { TcpSocketOptions } from '../io/socket-options.js';
import { formatSocketAddress, type SocketAddress } from '../net/address.js';
import type { SocketFactory } from '../platform/sockets.js';
import { TlsMaterialCache } from '../tls/contexts.js';
import { describeRevocation, type RevocationSource } from '../tls/crl/manager.js';
import type { HboneClientSettings, HboneConnection, HboneStream, HboneStreamRequest } from './connection.js';
import { DEFAULT_CONNECT_TIMEOUT_MS, dialHbone } from './dial.js';

/** POOL_MAX_STREAMS_PER_CONNECTION default. */
export const POOL_MAX_STREAMS_PER_CONNECTION = 100;
/** POOL_UNUSED_RELEASE_TIMEOUT default (5 min). */
export const POOL_UNUSED_RELEASE_TIMEOUT_MS = 5 * 60 * 1000;

export interface PoolKey {
  /** Source workload identity (the certificate we present). */
  readonly srcIdentity: Identity;
  /** Expected destination identities (any order; the key sorts them). */
  readonly dstIdentities: readonly Identity[];
  /** TCP next hop (pod or waypoint or gateway IP, HBONE port). */
  readonly nextHop: SocketAddress;
  /** The application's source IP. */
  readonly srcIp: string;
}

/** The canonical, injective string form of a key (its map key and config-dump name; never parsed back). */
export function poolKeyString(key: PoolKey): string {
  const dst = [...new Set(key.dstIdentities.map(identityToString))].sort();
  // SocketAddress IPs are canonical by construction; canonicalizing again keeps the key injective whatever a caller passed.
  return JSON.stringify([identityToString(key.srcIdentity), dst, canonicalIp(key.nextHop.ip) ?? key.nextHop.ip, key.nextHop.port, canonicalIp(key.srcIp) ?? key.srcIp]);
}

/** Dials a new connection for `key` (certificate for srcIdentity, verifier for dstIdentities). */
export type PoolDialer = (key: PoolKey, signal: AbortSignal) => Promise<HboneConnection>;

export interface HboneDialerOptions {
  /** Our certificate for a source identity (the certificate manager); rejects when none is available. */
  readonly certificateFor: (identity: Identity) => Promise<WorkloadCertificate>;
  /** One TLS material (SecureContext) per certificate, shared with the HBONE server. */
  readonly materials?: TlsMaterialCache;
  /** CRL_PATH's lists for the source side: revoked servers are refused at the handshake. */
  readonly revocation?: RevocationSource | undefined;
  readonly clock: Clock;
  /** CONNECTION_TIMEOUT (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** The proxy's socket factory (in-pod mode: sockets inside the pod's netns, with SO_MARK). */
  readonly sockets: Pick<SocketFactory, 'connect'>;
  /** Bind the TCP socket to the key's source IP (ztunnel's pool does not: it dials from the node). */
  readonly bindSourceIp?: boolean;
  readonly settings?: Partial<HboneClientSettings>;
  readonly tcp?: TcpSocketOptions;
  readonly log?: Logger;
}

/**
 * The production dialer: fetches the certificate of the key's source identity
 * (failing closed with CERT_UNAVAILABLE), checks it really is that identity,
 * and dials expecting the key's destination identities (the one peer
 * verifier, with revocation).
 */
export function hboneDialer(options: HboneDialerOptions): PoolDialer {
  const materials = options.materials ?? new TlsMaterialCache();
  return async (key, signal) => {
    const src = identityToString(key.srcIdentity);
    let certificate: WorkloadCertificate;
    try {
      certificate = await options.certificateFor(key.srcIdentity);
    } catch (err) {
      throw new ProxyError('CERT_UNAVAILABLE', `no certificate for ${src}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    if (!identityEquals(certificate.identity, key.srcIdentity)) {
      throw new ProxyError('CERT_UNAVAILABLE', `certificate for ${identityToString(certificate.identity)} offered for source identity ${src}`);
    }
    return dialHbone({
      nextHop: key.nextHop,
      material: materials.get(certificate),
      expected: key.dstIdentities,
      revocation: options.revocation,
      sockets: options.sockets,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS,
      clock: options.clock,
      signal,
      sourceIp: options.bindSourceIp === true ? key.srcIp : undefined,
      settings: options.settings,
      tcp: options.tcp,
      log: options.log,
    });
  };
}

export interface HbonePoolOptions {
  readonly dial: PoolDialer;
  readonly clock: Clock;
  readonly maxStreamsPerConnection?: number;
  readonly unusedReleaseTimeoutMs?: number;
  readonly log?: Logger;
  /** CRL checking (CRL_PATH): live connections to a now-revoked server are closed on reload. */
  readonly revocation?: RevocationSource | undefined;
}

export interface PooledStream extends HboneStream {
  readonly connection: HboneConnection;
}

export type ReleaseReason = 'max-streams' | 'goaway' | 'closed' | 'not-ready' | 'idle' | 'drain';

export interface HbonePoolStats {
  /** Keys with a pooled connection or a dial in flight. */
  readonly keys: number;
  /** Connections dialed by the pool and not yet closed (pooled or not). */
  readonly connections: number;
  /** Connections currently available in the pool. */
  readonly pooled: number;
  readonly activeStreams: number;
  readonly dialsInFlight: number;
  readonly dials: number;
  readonly dialFailures: number;
  readonly streamsOpened: number;
  readonly released: Readonly<Record<ReleaseReason, number>>;
}

export interface PoolConnectionDump {
  readonly key: string;
  readonly srcIdentity: string;
  readonly dstIdentities: readonly string[];
  readonly nextHop: string;
  readonly srcIp: string;
  readonly pooled: boolean;
  readonly connectionId: number;
  readonly activeStreams: number;
  readonly totalStreams: number;
  readonly maxStreams: number;
  readonly ready: boolean;
}

interface Pooled {
  readonly conn: HboneConnection;
  readonly entry: KeyEntry;
  idleTimer: Timer | undefined;
  released: boolean;
  /** The server chain, kept for re-checks on CRL reloads (only with `revocation`). */
  peerChain: readonly X509Certificate[] | undefined;
}

interface KeyEntry {
  readonly id: string;
  readonly key: PoolKey;
  current: Pooled | undefined;
  dialing: Promise<HboneConnection> | undefined;
}

type PoolState = 'open' | 'draining' | 'closed';

export class HbonePool {
  readonly #options: HbonePoolOptions;
  readonly #maxStreams: number;
  readonly #idleMs: number;
  readonly #entries = new Map<string, KeyEntry>();
  readonly #live = new Map<HboneConnection, Pooled>();
  readonly #dialAborts = new Set<AbortController>();
  #state: PoolState = 'open';
  #drained: Promise<void> | undefined;
  #onAllClosed: (() => void) | undefined;
  #dials = 0;
  #dialFailures = 0;
  #streamsOpened = 0;
  readonly #unsubscribeCrl: () => void;
  readonly #released: Record<ReleaseReason, number> = { 'max-streams': 0, goaway: 0, closed: 0, 'not-ready': 0, idle: 0, drain: 0 };

  constructor(options: HbonePoolOptions) {
    this.#options = options;
    this.#maxStreams = Math.max(1, Math.floor(options.maxStreamsPerConnection ?? POOL_MAX_STREAMS_PER_CONNECTION));
    this.#idleMs = options.unusedReleaseTimeoutMs ?? POOL_UNUSED_RELEASE_TIMEOUT_MS;
    this.#unsubscribeCrl = options.revocation?.onReload(() => this.#closeRevoked()) ?? (() => {});
  }

  /**
   * Opens a CONNECT stream to `key.nextHop` on a pooled connection, dialing
   * one when none can take another stream. Rejects like
   * HboneConnection.openStream, with the dial's error when the dial failed,
   * and with DRAINING once the pool is draining or closed.
   */
  async openStream(key: PoolKey, request: HboneStreamRequest): Promise<PooledStream> {
    const id = poolKeyString(key);
    for (;;) {
      if (this.#state !== 'open') throw this.#draining();
      const entry = this.#entry(id, key);
      const conn = this.#checkout(entry);
      if (conn !== undefined) return this.#open(entry, conn, request);
      entry.dialing ??= this.#dial(entry);
      let dialed: HboneConnection;
      try {
        dialed = await entry.dialing;
      } catch (err) {
        if (this.#state !== 'open') throw this.#draining();
        throw err;
      }
      // A fresh connection that can never take a stream (GOAWAY at once, or a
      // peer limit of 0) must fail the callers, not make them redial forever.
      if (!dialed.isReady || this.#limit(dialed) === 0) {
        throw new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connection to ${formatSocketAddress(key.nextHop)} accepts no streams (${dialed.isReady ? 'peer SETTINGS_MAX_CONCURRENT_STREAMS is 0' : 'closed or going away right after the handshake'})`);
      }
    }
  }

  /** The per-connection stream limit: min(our maximum, the peer's SETTINGS_MAX_CONCURRENT_STREAMS). */
  #limit(conn: HboneConnection): number {
    return Math.min(this.#maxStreams, conn.peerMaxConcurrentStreams);
  }

  #entry(id: string, key: PoolKey): KeyEntry {
    let entry = this.#entries.get(id);
    if (entry === undefined) {
      entry = { id, key, current: undefined, dialing: undefined };
      this.#entries.set(id, entry);
    }
    return entry;
  }

  /** The pooled connection if it can take one more stream; drops it when it cannot. */
  #checkout(entry: KeyEntry): HboneConnection | undefined {
    const pooled = entry.current;
    if (pooled === undefined) return undefined;
    if (!pooled.conn.isReady) {
      this.#release(pooled, 'not-ready');
      return undefined;
    }
    if (pooled.conn.activeStreams >= this.#limit(pooled.conn)) {
      // The peer lowered its limit since the last stream was taken.
      this.#release(pooled, 'max-streams');
      return undefined;
    }
    return pooled.conn;
  }

  async #open(entry: KeyEntry, conn: HboneConnection, request: HboneStreamRequest): Promise<PooledStream> {
    const pooled = entry.current as Pooled;
    pooled.idleTimer?.cancel();
    pooled.idleTimer = undefined;
    // openStream counts the stream synchronously, before anything else can check out.
    const opening = conn.openStream(request);
    this.#streamsOpened++;
    if (conn.activeStreams >= this.#limit(conn)) this.#release(pooled, 'max-streams');
    const opened = await opening;
    return { ...opened, connection: conn };
  }

  #dial(entry: KeyEntry): Promise<HboneConnection> {
    const controller = new AbortController();
    this.#dialAborts.add(controller);
    this.#dials++;
    this.#options.log?.debug({ key: entry.id }, 'dialing new HBONE pool connection');
    const dialing = this.#options.dial(entry.key, controller.signal).then(
      (conn) => {
        if (this.#state !== 'open') {
          conn.destroy();
          throw this.#draining();
        }
        this.#adopt(entry, conn);
        return conn;
      },
      (err: unknown) => {
        this.#dialFailures++;
        const error = asProxyError(err);
        this.#options.log?.debug({ key: entry.id, err: error.message }, 'HBONE pool dial failed');
        throw error;
      },
    );
    return dialing.finally(() => {
      this.#dialAborts.delete(controller);
      entry.dialing = undefined;
      this.#forgetIfEmpty(entry);
    });
  }

  #adopt(entry: KeyEntry, conn: HboneConnection): void {
    const pooled: Pooled = { conn, entry, idleTimer: undefined, released: false, peerChain: undefined };
    if (this.#options.revocation !== undefined) {
      const chain = conn.peerChain;
      if (chain.length === 0) this.#options.revocation.untracked();
      else pooled.peerChain = chain;
    }
    this.#live.set(conn, pooled);
    entry.current = pooled;
    conn.on('goaway', () => this.#release(pooled, 'goaway'));
    conn.on('idle', () => this.#onIdle(pooled));
    conn.on('close', () => this.#onClose(pooled));
    if (conn.isClosed) {
      this.#onClose(pooled);
      return;
    }
    this.#armIdle(pooled);
  }

  #onIdle(pooled: Pooled): void {
    if (pooled.released) {
      pooled.conn.close();
      return;
    }
    this.#armIdle(pooled);
  }

  #armIdle(pooled: Pooled): void {
    if (pooled.released || pooled.conn.activeStreams > 0) return;
    pooled.idleTimer?.cancel();
    pooled.idleTimer = this.#options.clock.setTimer(this.#idleMs, () => {
      pooled.idleTimer = undefined;
      if (!pooled.released && pooled.conn.activeStreams === 0) this.#release(pooled, 'idle');
    });
  }

  /** Drops the pool's reference; the connection closes once it has no streams. */
  #release(pooled: Pooled, reason: ReleaseReason): void {
    if (pooled.released) return;
    pooled.released = true;
    this.#released[reason]++;
    pooled.idleTimer?.cancel();
    pooled.idleTimer = undefined;
    const entry = pooled.entry;
    if (entry.current === pooled) entry.current = undefined;
    this.#options.log?.debug({ key: entry.id, connection: pooled.conn.id, reason, activeStreams: pooled.conn.activeStreams }, 'HBONE connection left the pool');
    if (pooled.conn.activeStreams === 0) pooled.conn.close();
    this.#forgetIfEmpty(entry);
  }

  /** After a CRL reload: destroys every live connection whose server chain is now revoked. */
  #closeRevoked(): void {
    const source = this.#options.revocation;
    if (source === undefined) return;
    for (const pooled of [...this.#live.values()]) {
      if (pooled.peerChain === undefined || pooled.conn.isClosed) continue;
      const verdict = source.check(pooled.peerChain);
      if (!verdict.revoked) continue;
      const reason = `HBONE connection to ${formatSocketAddress(pooled.entry.key.nextHop)}: ${describeRevocation(verdict)}; closing it (CRL update)`;
      this.#options.log?.warn({ key: pooled.entry.id, connection: pooled.conn.id, code: 'CERT_REVOKED', activeStreams: pooled.conn.activeStreams, reason }, 'HBONE connection closed: server certificate revoked');
      this.#release(pooled, 'closed');
      pooled.conn.destroy(new ProxyError('CERT_REVOKED', reason));
    }
  }

  #onClose(pooled: Pooled): void {
    this.#release(pooled, 'closed');
    this.#live.delete(pooled.conn);
    if (this.#live.size === 0) this.#onAllClosed?.();
  }

  #forgetIfEmpty(entry: KeyEntry): void {
    if (entry.current === undefined && entry.dialing === undefined && this.#entries.get(entry.id) === entry) this.#entries.delete(entry.id);
  }

  #draining(): ProxyError {
    return new ProxyError('DRAINING', `the HBONE connection pool is ${this.#state === 'closed' ? 'closed' : 'draining'}; no new streams`);
  }

  /**
   * Stops handing out streams, cancels dials in flight, releases every pooled
   * connection (each closes gracefully when its streams end), and resolves
   * once every connection the pool dialed is closed.
   */
  drain(): Promise<void> {
    if (this.#state === 'open') this.#state = 'draining';
    for (const controller of this.#dialAborts) controller.abort(this.#draining());
    for (const pooled of [...this.#live.values()]) this.#release(pooled, 'drain');
    this.#drained ??= new Promise<void>((resolve) => {
      this.#onAllClosed = resolve;
      if (this.#live.size === 0) resolve();
    });
    return this.#drained;
  }

  /** Destroys every connection now (streams are reset) and refuses new streams. */
  close(): void {
    this.#state = 'closed';
    this.#unsubscribeCrl();
    for (const controller of this.#dialAborts) controller.abort(this.#draining());
    for (const pooled of [...this.#live.values()]) {
      this.#release(pooled, 'drain');
      pooled.conn.destroy(new ProxyError('DRAINING', 'the HBONE connection pool was closed'));
    }
  }

  stats(): HbonePoolStats {
    let activeStreams = 0;
    let pooled = 0;
    for (const p of this.#live.values()) {
      activeStreams += p.conn.activeStreams;
      if (!p.released) pooled++;
    }
    let dialsInFlight = 0;
    for (const e of this.#entries.values()) if (e.dialing !== undefined) dialsInFlight++;
    return {
      keys: this.#entries.size,
      connections: this.#live.size,
      pooled,
      activeStreams,
      dialsInFlight,
      dials: this.#dials,
      dialFailures: this.#dialFailures,
      streamsOpened: this.#streamsOpened,
      released: { ...this.#released },
    };
  }

  /** Every live connection, for the config dump. */
  connections(): PoolConnectionDump[] {
    return [...this.#live.values()].map((p) => ({
      key: p.entry.id,
      srcIdentity: identityToString(p.entry.key.srcIdentity),
      dstIdentities: [...new Set(p.entry.key.dstIdentities.map(identityToString))].sort(),
      nextHop: formatSocketAddress(p.entry.key.nextHop),
      srcIp: p.entry.key.srcIp,
      pooled: !p.released,
      connectionId: p.conn.id,
      activeStreams: p.conn.activeStreams,
      totalStreams: p.conn.totalStreams,
      maxStreams: this.#limit(p.conn),
      ready: p.conn.isReady,
    }));
  }
}
