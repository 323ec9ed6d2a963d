/**
 * The CRL manager (ztunnel CrlManager): loads CRL_PATH, reloads it when the
 * file changes, and hands each side of the proxy a RevocationSource that
 * checks peer chains against the current CRL set, counts refusals in
 * `istio_crl_policy_rejections_total{reporter}` and tells its subscribers
 * after every successful reload so they can close live connections whose
 * peer is now revoked.
 *
 * Loading, as ztunnel: a missing file at startup is a warning and means "no
 * revocations yet" (the watcher picks the file up when it appears); an empty
 * file or a PEM file without CRL blocks means no revocations; a file that
 * cannot be read or parsed on reload keeps the last good set (logged with the
 * reason). Differs from ztunnel: a malformed file at startup disables nothing
 * — we start with no revocations, log an error, and keep watching (ztunnel
 * turns CRL checking off until restart); the reload debounce is 250 ms
 * (ztunnel: 2 s).
 *
 * Invariants: `current` is replaced only by a fully parsed set; subscribers
 * run after the swap, in subscription order, and a throwing subscriber does
 * not stop the others; loads are serialized (a change during a load schedules
 * exactly one more); after close() no reload runs and nothing is watched.
 */
import type { X509Certificate } from 'node:crypto';
import { formatRejections, watchFile, type Clock, type FileWatch, type Logger } from '@ambient/control';
import type { MetricsRegistry } from '../../metrics/registry.js';
import { CrlSet, parseCrlFile, type RevocationVerdict } from './crl-set.js';

export type CrlReporter = 'source' | 'destination';

export interface CrlMetrics {
  /** A handshake refused or a live connection closed because of a revoked peer certificate. */
  rejected(reporter: CrlReporter): void;
  /** A connection whose peer chain could not be kept for re-checks on CRL reloads. */
  untracked(reporter: CrlReporter): void;
}

/** ztunnel's two CRL counters, on the `istio_` registry. */
export function createCrlMetrics(istio: MetricsRegistry): CrlMetrics {
  const rejections = istio.counterVec({
    name: 'crl_policy_rejections',
    help: 'The total number of connections rejected due to CRL certificate revocation (unstable)',
    labelNames: ['reporter'],
  });
  const untracked = istio.counterVec({
    name: 'crl_untracked_connections',
    help: 'The total number of connections not tracked for CRL enforcement (unstable)',
    labelNames: ['reporter'],
  });
  return {
    rejected: (reporter) => rejections.inc({ reporter }),
    untracked: (reporter) => untracked.inc({ reporter }),
  };
}

/** What one side of the proxy (reporter) needs for revocation. */
export interface RevocationSource {
  readonly reporter: CrlReporter;
  /** Checks a verified peer chain; a revoked verdict is counted as a CRL rejection. */
  check(chain: readonly X509Certificate[], roots?: readonly X509Certificate[]): RevocationVerdict;
  /** Counts a connection that cannot be re-checked on reloads. */
  untracked(): void;
  /** Runs `listener` after every successful reload; returns the unsubscribe function. */
  onReload(listener: () => void): () => void;
}

/** A refusal a VerifyPeer returns for a revoked peer (see isRevocationRejection). */
export interface RevocationRejection {
  readonly code: 'CERT_REVOKED';
  readonly field: string;
  readonly reason: string;
}

export function isRevocationRejection(r: unknown): r is RevocationRejection {
  return typeof r === 'object' && r !== null && (r as { code?: unknown }).code === 'CERT_REVOKED';
}

/** The words a log line and a refusal use for a revoked verdict. */
export function describeRevocation(v: Extract<RevocationVerdict, { revoked: true }>): string {
  const which = v.depth === 0 ? 'the peer certificate' : `intermediate #${v.depth}`;
  return `${which} (serial ${v.serial}${v.subject ? `, subject "${v.subject}"` : ''}) is revoked by CRL #${v.crl} issued by "${v.issuer}"`;
}

/** Checks `chain` with `source`; the refusal for a revoked peer, or undefined (also when there is no source). */
export function revocationRejection(source: RevocationSource | undefined, chain: readonly X509Certificate[], roots: readonly X509Certificate[]): RevocationRejection | undefined {
  if (source === undefined) return undefined;
  const verdict = source.check(chain, roots);
  return verdict.revoked ? { code: 'CERT_REVOKED', field: 'certificate', reason: describeRevocation(verdict) } : undefined;
}

export interface CrlManagerOptions {
  readonly path: string;
  readonly readFile: (path: string) => Promise<Uint8Array | string>;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: CrlMetrics;
  /** Default: fs.watch on the parent directory. `false`: never reload by itself. */
  readonly watch?: typeof watchFile | false;
  /** Quiet period after the last file event before reloading (default 250 ms). */
  readonly debounceMs?: number;
}

export const CRL_RELOAD_DEBOUNCE_MS = 250;

export class CrlManager {
  readonly path: string;
  readonly #options: CrlManagerOptions;
  readonly #log: Logger;
  readonly #listeners = new Set<() => void>();
  #current: CrlSet = CrlSet.EMPTY;
  #watch: FileWatch | undefined;
  #loading: Promise<boolean> | undefined;
  #again = false;
  #closed = false;
  #generation = 0;

  private constructor(options: CrlManagerOptions) {
    this.path = options.path;
    this.#options = options;
    this.#log = options.log.child({ component: 'crl' });
  }

  /** Loads the file (a missing or malformed file is logged, not fatal) and starts watching it. */
  static async start(options: CrlManagerOptions): Promise<CrlManager> {
    const manager = new CrlManager(options);
    await manager.reload();
    const watch = options.watch ?? watchFile;
    if (watch !== false) {
      const watching = watch(options.path, {
        clock: options.clock,
        debounceMs: options.debounceMs ?? CRL_RELOAD_DEBOUNCE_MS,
        logger: manager.#log,
        onChange: () => void manager.reload(),
      });
      if (watching.ok) manager.#watch = watching.value;
      else
        manager.#log.warn(
          { path: options.path, err: formatRejections(watching.errors) },
          'cannot watch the CRL file; CRL checking continues with the current CRLs, but updates need a restart',
        );
    }
    return manager;
  }

  /** The CRL set in force. */
  get current(): CrlSet {
    return this.#current;
  }

  /** Successful loads so far. */
  get generation(): number {
    return this.#generation;
  }

  /** Reads and parses the file now; true when a new set is in force. Loads never overlap. */
  reload(): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false);
    if (this.#loading !== undefined) {
      this.#again = true;
      return this.#loading;
    }
    this.#loading = this.#load().finally(() => {
      this.#loading = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        void this.reload();
      }
    });
    return this.#loading;
  }

  /** The source for one side of the proxy. */
  source(reporter: CrlReporter): RevocationSource {
    return {
      reporter,
      check: (chain, roots = []) => {
        const verdict = this.#current.check(chain, roots);
        if (verdict.revoked) this.#options.metrics.rejected(reporter);
        return verdict;
      },
      untracked: () => this.#options.metrics.untracked(reporter),
      onReload: (listener) => {
        const wrapped = () => listener();
        this.#listeners.add(wrapped);
        return () => this.#listeners.delete(wrapped);
      },
    };
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
    this.#watch = undefined;
    this.#listeners.clear();
  }

  async #load(): Promise<boolean> {
    const path = this.path;
    let data: Uint8Array;
    try {
      const raw = await this.#options.readFile(path);
      data = typeof raw === 'string' ? Buffer.from(raw, 'latin1') : raw;
    } catch (err) {
      const code = (err as { code?: string }).code;
      const reason = err instanceof Error ? err.message : String(err);
      if (code === 'ENOENT' && this.#generation === 0) {
        this.#log.warn({ path }, 'CRL file not found; no certificate is treated as revoked until it appears');
      } else {
        this.#log.error({ path, reason }, `cannot read the CRL file; keeping the ${this.#describeCurrent()}`);
      }
      return false;
    }
    if (this.#closed) return false;
    const parsed = parseCrlFile(data);
    if (!parsed.ok) {
      this.#log.error({ path, reason: formatRejections(parsed.errors) }, `CRL file refused; keeping the ${this.#describeCurrent()}`);
      return false;
    }
    const now = this.#options.clock.now();
    const set = new CrlSet(parsed.value.crls, {
      ignored: (crl, issuer, reason) =>
        this.#log.warn({ path, crl: crl.index, crlIssuer: crl.issuer, issuer, reason }, 'CRL ignored for this issuer: its revocations are not applied'),
    });
    for (const crl of set.crls) {
      if (crl.nextUpdate !== undefined && crl.nextUpdate.getTime() < now) {
        this.#log.warn({ path, crl: crl.index, issuer: crl.issuer, nextUpdate: crl.nextUpdate.toISOString() }, 'CRL is past its nextUpdate; its revocations still apply (as ztunnel: CRL expiry is ignored)');
      }
    }
    this.#current = set;
    this.#generation++;
    this.#log.info(
      { path, format: parsed.value.format, crls: set.crls.length, revoked: set.revokedCount, ...(parsed.value.skippedBlocks > 0 ? { skippedPemBlocks: parsed.value.skippedBlocks } : {}) },
      'CRL loaded',
    );
    for (const listener of [...this.#listeners]) {
      try {
        listener();
      } catch (err) {
        this.#log.error({ err: err instanceof Error ? err.message : String(err) }, 're-checking connections after a CRL reload failed');
      }
    }
    return true;
  }

  #describeCurrent(): string {
    return this.#generation === 0 ? 'state without revocations' : `last good CRLs (${this.#current.crls.length} CRLs, ${this.#current.revokedCount} revoked serials)`;
  }
}
