/**
 * Keeps one workload certificate per identity, fetched, refreshed and retried
 * with the semantics of ztunnel's SecretManager (`identity/manager.rs`):
 *
 * - One certificate per identity, shared by every caller; concurrent requests
 *   for an identity that is still initializing wait for the same fetch.
 * - Refresh at half-life, `notBefore + (notAfter - notBefore) / 2`; when that
 *   is already past, at half of the remaining lifetime instead: a CA that back-dates
 *   certificates (istiod: 2 minutes) and a short SECRET_TTL would otherwise put
 *   the half-life in the past and make every refresh trigger another one at
 *   once (a CSR storm; ztunnel's formula has this problem).
 * - On failure, a per-identity exponential backoff (500 ms, x2, ±20 % jitter,
 *   capped at 150 s, reset by a success). A still-valid certificate keeps being
 *   served and the retry happens at min(backoff, expiry); without one the state
 *   is Unavailable and callers fail closed until a retry succeeds.
 * - At most `concurrency` (8) CSRs in flight; queued work is started by
 *   priority RealTime > Warmup > Background (refresh), then first come first
 *   served.
 * - `forget` drops the identity: no more refreshes, waiters are rejected, a
 *   late answer is discarded.
 *
 * Invariants:
 * - An entry is in exactly one phase: `queued` (in #queue), `fetching` (counted
 *   in #inFlight), `scheduled` (has a timer) or `idle` (closed only).
 * - #inFlight counts every fetch that has not settled, including fetches of
 *   forgotten identities (their CSRs still occupy the CA), so the cap holds.
 * - A certificate is installed only if it is for the entry's identity and not
 *   expired; nothing else ever reaches callers or subscribers.
 * - All time comes from the injected Clock, all jitter from the injected Random.
 */
import type { Logger } from 'pino';
import { X509Certificate } from 'node:crypto';
import { identityEquals, identityToString, type Identity } from '../model/identity.js';
import { systemRandom, type Clock, type Random, type Timer } from '../platform/clock.js';
import { validity } from './chain.js';
import { CaError, type CertificateFetcher, type WorkloadCertificate } from './types.js';

/** Why a certificate is wanted: a connection waiting, a prefetch, or a scheduled refresh. */
export type CertPriority = 'realtime' | 'warmup' | 'background';

const RANK: Readonly<Record<CertPriority, number>> = { background: 0, warmup: 1, realtime: 2 };

/** State of one identity, as reported to callers and the config dump. */
export type CertState =
  | { readonly kind: 'Initializing' }
  | { readonly kind: 'Available'; readonly certificate: WorkloadCertificate }
  | { readonly kind: 'Unavailable'; readonly error: CaError };

/** One certificate in /config_dump (ztunnel admin.rs CertDump, camelCase). */
interface CertDump {
  /** Base64 of the PEM text. */
  readonly pem: string;
  /** Decimal, as ztunnel prints it. */
  readonly serialNumber: string;
  /** RFC 3339, seconds precision, UTC. */
  readonly validFrom: string;
  readonly expirationTime: string;
}

/** One identity in /config_dump `certificates` (ztunnel admin.rs CertsDump). Never holds the key. */
export interface CertsDump {
  readonly identity: string;
  /** "Initializing", "Available" or "Unavailable: <error>". */
  readonly state: string;
  readonly certChain: readonly CertDump[];
  readonly rootCerts: readonly CertDump[];
}

export interface BackoffPolicy {
  readonly initialMs: number;
  readonly multiplier: number;
  readonly maxMs: number;
  /** Randomization factor: each delay is scaled by a factor in [1 - jitter, 1 + jitter]. */
  readonly jitter: number;
}

export const CERT_BACKOFF: BackoffPolicy = { initialMs: 500, multiplier: 2, maxMs: 150_000, jitter: 0.2 };
export const DEFAULT_CSR_CONCURRENCY = 8;

export type CertificateListener = (identity: Identity, certificate: WorkloadCertificate) => void;

export interface CertManagerOptions {
  readonly fetcher: CertificateFetcher;
  readonly clock: Clock;
  readonly random?: Random;
  /** Maximum CSRs in flight (default 8). */
  readonly concurrency?: number;
  readonly backoff?: BackoffPolicy;
  readonly log?: Pick<Logger, 'debug' | 'info' | 'warn' | 'error'>;
}

type Phase = 'queued' | 'fetching' | 'scheduled' | 'idle';

interface Waiter {
  resolve(cert: WorkloadCertificate): void;
  reject(err: unknown): void;
}

interface Entry {
  readonly key: string;
  readonly identity: Identity;
  state: CertState;
  phase: Phase;
  /** While queued: priority rank and arrival order. */
  rank: number;
  seq: number;
  timer: Timer | undefined;
  abort: AbortController | undefined;
  /** Base of the next retry delay; undefined after a success (backoff reset). */
  nextBackoffMs: number | undefined;
  lastError: CaError | undefined;
  readonly waiters: Set<Waiter>;
}

export class CertManager {
  readonly #fetcher: CertificateFetcher;
  readonly #clock: Clock;
  readonly #random: Random;
  readonly #concurrency: number;
  readonly #backoff: BackoffPolicy;
  readonly #log: CertManagerOptions['log'];
  readonly #entries = new Map<string, Entry>();
  readonly #queue: Entry[] = [];
  readonly #listeners = new Set<CertificateListener>();
  #inFlight = 0;
  #seq = 0;
  #closed = false;

  constructor(options: CertManagerOptions) {
    if (options.concurrency !== undefined && options.concurrency < 1) throw new RangeError('CertManager: concurrency must be at least 1');
    this.#fetcher = options.fetcher;
    this.#clock = options.clock;
    this.#random = options.random ?? systemRandom;
    this.#concurrency = options.concurrency ?? DEFAULT_CSR_CONCURRENCY;
    this.#backoff = options.backoff ?? CERT_BACKOFF;
    this.#log = options.log;
  }

  /**
   * The current certificate for `identity`, starting to manage it if needed.
   * Waits while the first fetch is in progress. Rejects with CaError
   * CERT_UNAVAILABLE (cause: the CA error) when there is no valid certificate:
   * the last fetch failed, the certificate expired, the identity was forgotten,
   * or the manager was closed.
   */
  fetchCertificate(identity: Identity, priority: CertPriority = 'realtime', signal?: AbortSignal): Promise<WorkloadCertificate> {
    if (this.#closed) return Promise.reject(new CaError('CERT_UNAVAILABLE', 'certificate manager is closed'));
    if (signal?.aborted) return Promise.reject(signal.reason);
    const entry = this.#manage(identity, priority);
    const state = this.#effectiveState(entry);
    switch (state.kind) {
      case 'Available':
        return Promise.resolve(state.certificate);
      case 'Unavailable':
        return Promise.reject(unavailable(entry, state.error));
      case 'Initializing':
        return new Promise<WorkloadCertificate>((resolve, reject) => {
          const onAbort = () => {
            entry.waiters.delete(waiter);
            reject(signal?.reason);
          };
          const waiter: Waiter = {
            resolve: (cert) => {
              signal?.removeEventListener('abort', onAbort);
              resolve(cert);
            },
            reject: (err) => {
              signal?.removeEventListener('abort', onAbort);
              reject(err);
            },
          };
          entry.waiters.add(waiter);
          signal?.addEventListener('abort', onAbort, { once: true });
        });
    }
  }

  /** Starts fetching at Warmup priority (a local workload appeared) without waiting. */
  prefetch(identity: Identity): void {
    if (this.#closed) return;
    this.#manage(identity, 'warmup');
  }

  /** Stops managing `identity`: cancels refreshes, drops the certificate, rejects waiters. */
  forget(identity: Identity): void {
    const key = identityToString(identity);
    const entry = this.#entries.get(key);
    if (entry === undefined) return;
    this.#entries.delete(key);
    this.#stop(entry, new CaError('CERT_UNAVAILABLE', `certificate for ${key} was forgotten`));
    this.#log?.debug({ identity: key }, 'certificate forgotten');
  }

  /** The state of one identity, or undefined when it is not managed. */
  state(identity: Identity): CertState | undefined {
    const entry = this.#entries.get(identityToString(identity));
    return entry === undefined ? undefined : this.#effectiveState(entry);
  }

  /** Managed identities. */
  identities(): Identity[] {
    return [...this.#entries.values()].map((e) => e.identity);
  }

  /** Every managed identity for /config_dump, sorted by identity; never includes private keys. */
  certificates(): CertsDump[] {
    return [...this.#entries.values()]
      .map((entry) => {
        const state = this.#effectiveState(entry);
        const identity = entry.key;
        switch (state.kind) {
          case 'Initializing':
            return { identity, state: 'Initializing', certChain: [], rootCerts: [] };
          case 'Unavailable':
            return { identity, state: `Unavailable: ${state.error.message}`, certChain: [], rootCerts: [] };
          case 'Available':
            return {
              identity,
              state: 'Available',
              certChain: state.certificate.chainPem.map(dumpCert),
              rootCerts: state.certificate.rootsPem.map(dumpCert),
            };
        }
      })
      .sort((a, b) => (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0));
  }

  /** Called after every install (first certificate and each rotation). Returns an unsubscribe function. */
  onCertificate(listener: CertificateListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Stops all timers and fetches and rejects every waiter. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const entry of this.#entries.values()) this.#stop(entry, new CaError('CERT_UNAVAILABLE', 'certificate manager is closed'));
    this.#entries.clear();
    this.#listeners.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // === Scheduling ===

  #manage(identity: Identity, priority: CertPriority): Entry {
    const key = identityToString(identity);
    let entry = this.#entries.get(key);
    if (entry === undefined) {
      entry = {
        key,
        identity,
        state: { kind: 'Initializing' },
        phase: 'idle',
        rank: RANK[priority],
        seq: 0,
        timer: undefined,
        abort: undefined,
        nextBackoffMs: undefined,
        lastError: undefined,
        waiters: new Set(),
      };
      this.#entries.set(key, entry);
      this.#enqueue(entry, priority);
      this.#pump();
    } else if (entry.phase === 'queued' && entry.state.kind === 'Initializing' && RANK[priority] > entry.rank) {
      // ztunnel push_increase: a more urgent request raises the queued priority.
      entry.rank = RANK[priority];
      this.#pump();
    }
    return entry;
  }

  #enqueue(entry: Entry, priority: CertPriority): void {
    entry.phase = 'queued';
    entry.rank = RANK[priority];
    entry.seq = this.#seq++;
    this.#queue.push(entry);
  }

  #schedule(entry: Entry, delayMs: number): void {
    entry.phase = 'scheduled';
    entry.timer = this.#clock.setTimer(Math.max(0, delayMs), () => {
      entry.timer = undefined;
      if (this.#entries.get(entry.key) !== entry) return;
      this.#enqueue(entry, 'background');
      this.#pump();
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#concurrency && this.#queue.length > 0) {
      let best = 0;
      for (let i = 1; i < this.#queue.length; i++) {
        const a = this.#queue[i] as Entry;
        const b = this.#queue[best] as Entry;
        if (a.rank > b.rank || (a.rank === b.rank && a.seq < b.seq)) best = i;
      }
      const [entry] = this.#queue.splice(best, 1);
      if (entry !== undefined) this.#start(entry);
    }
  }

  #start(entry: Entry): void {
    entry.phase = 'fetching';
    const abort = new AbortController();
    entry.abort = abort;
    this.#inFlight++;
    let pending: Promise<WorkloadCertificate>;
    try {
      pending = this.#fetcher.fetch(entry.identity, abort.signal);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (cert) => this.#settle(entry, abort, { ok: true, cert }),
      (err: unknown) => this.#settle(entry, abort, { ok: false, err }),
    );
  }

  #settle(entry: Entry, abort: AbortController, result: { ok: true; cert: WorkloadCertificate } | { ok: false; err: unknown }): void {
    this.#inFlight--;
    const current = this.#entries.get(entry.key) === entry && entry.abort === abort && !abort.signal.aborted;
    if (current) {
      entry.abort = undefined;
      const problem = result.ok ? this.#installProblem(entry, result.cert) : toCaError(result.err, entry.key);
      if (result.ok && problem === undefined) this.#onSuccess(entry, result.cert);
      else this.#onFailure(entry, problem ?? new CaError('CA_BAD_RESPONSE', 'unknown failure'));
    }
    this.#pump();
  }

  #onSuccess(entry: Entry, cert: WorkloadCertificate): void {
    const rotated = entry.state.kind === 'Available';
    entry.state = { kind: 'Available', certificate: cert };
    entry.nextBackoffMs = undefined;
    entry.lastError = undefined;
    const now = this.#clock.now();
    const halfLife = cert.notBefore + (cert.notAfter - cert.notBefore) / 2;
    const refreshAt = halfLife > now ? halfLife : now + (cert.notAfter - now) / 2;
    this.#schedule(entry, refreshAt - this.#clock.now());
    this.#log?.info(
      { identity: entry.key, notAfter: new Date(cert.notAfter).toISOString(), refreshAt: new Date(refreshAt).toISOString() },
      rotated ? 'certificate rotated' : 'certificate installed',
    );
    for (const waiter of [...entry.waiters]) waiter.resolve(cert);
    entry.waiters.clear();
    for (const listener of [...this.#listeners]) {
      try {
        listener(entry.identity, cert);
      } catch (err) {
        this.#log?.error({ identity: entry.key, err }, 'certificate listener threw');
      }
    }
  }

  #onFailure(entry: Entry, error: CaError): void {
    entry.lastError = error;
    const delay = this.#nextBackoff(entry);
    const now = this.#clock.now();
    if (entry.state.kind === 'Available' && now < entry.state.certificate.notAfter) {
      const untilExpiry = entry.state.certificate.notAfter - now;
      const retryIn = Math.min(delay, untilExpiry);
      this.#log?.info(
        { identity: entry.key, error: error.message, expires: new Date(entry.state.certificate.notAfter).toISOString(), retryInMs: retryIn },
        'certificate renewal failed; keeping the current certificate until it expires',
      );
      this.#schedule(entry, retryIn);
      return;
    }
    entry.state = { kind: 'Unavailable', error };
    this.#log?.warn({ identity: entry.key, error: error.message, retryInMs: delay }, 'certificate fetch failed and no valid certificate is available');
    const rejection = unavailable(entry, error);
    for (const waiter of [...entry.waiters]) waiter.reject(rejection);
    entry.waiters.clear();
    this.#schedule(entry, delay);
  }

  /** Defence in depth: the fetcher verifies, but nothing for another identity or expired is installed. */
  #installProblem(entry: Entry, cert: WorkloadCertificate): CaError | undefined {
    if (!identityEquals(cert.identity, entry.identity)) {
      return new CaError('CA_IDENTITY_MISMATCH', `fetched certificate is for ${identityToString(cert.identity)}, expected ${entry.key}`);
    }
    if (this.#clock.now() >= cert.notAfter) {
      return new CaError('CA_EXPIRED', `fetched certificate for ${entry.key} expired at ${new Date(cert.notAfter).toISOString()}`);
    }
    return undefined;
  }

  /** ±jitter around the current base, capped; the base doubles up to the cap. */
  #nextBackoff(entry: Entry): number {
    const { initialMs, multiplier, maxMs, jitter } = this.#backoff;
    const base = entry.nextBackoffMs ?? initialMs;
    entry.nextBackoffMs = Math.min(base * multiplier, maxMs);
    const factor = 1 + jitter * (2 * this.#random() - 1);
    return Math.min(Math.round(base * factor), maxMs);
  }

  /** An Available certificate past notAfter is reported as Unavailable. */
  #effectiveState(entry: Entry): CertState {
    const state = entry.state;
    if (state.kind === 'Available' && this.#clock.now() >= state.certificate.notAfter) {
      const expired = new CaError('CA_EXPIRED', `certificate expired at ${new Date(state.certificate.notAfter).toISOString()}`
        + (entry.lastError ? `; last renewal error: ${entry.lastError.message}` : ''), { cause: entry.lastError });
      return { kind: 'Unavailable', error: expired };
    }
    return state;
  }

  #stop(entry: Entry, reason: CaError): void {
    entry.timer?.cancel();
    entry.timer = undefined;
    const i = this.#queue.indexOf(entry);
    if (i >= 0) this.#queue.splice(i, 1);
    entry.abort?.abort(reason);
    entry.phase = 'idle';
    for (const waiter of [...entry.waiters]) waiter.reject(reason);
    entry.waiters.clear();
  }
}

function unavailable(entry: Entry, cause: CaError): CaError {
  return new CaError('CERT_UNAVAILABLE', `no valid certificate for ${entry.key}: ${cause.message}`, { cause });
}

function toCaError(err: unknown, key: string): CaError {
  if (err instanceof CaError) return err;
  return new CaError('CA_UNAVAILABLE', `certificate fetch for ${key} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
}

function dumpCert(pem: string): CertDump {
  const cert = new X509Certificate(pem);
  const { notBefore, notAfter } = validity(cert);
  return {
    pem: Buffer.from(pem, 'utf8').toString('base64'),
    serialNumber: BigInt(`0x${cert.serialNumber}`).toString(10),
    validFrom: rfc3339(notBefore),
    expirationTime: rfc3339(notAfter),
  };
}

function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}
