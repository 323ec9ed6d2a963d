/**
 * Live connections, for two jobs: re-checking authorization when policies or
 * workloads change (ztunnel's PolicyWatcher: a connection that is no longer
 * allowed is closed with flag DENY; allowed ones are left alone), and listing
 * connections in the config dump.
 *
 * Invariants:
 * - a connection is registered before its authorization check, so a policy
 *   update racing with the check is seen by one or the other (ztunnel does
 *   the same);
 * - each connection is closed by the manager at most once, and released
 *   exactly once by its owner (release is idempotent);
 * - re-checks run on the snapshot the change produced, synchronously in the
 *   store's notification, so no connection is re-checked against an older
 *   state than the one that triggered it.
 */
import type { Identity, Snapshot, Store, StoreChange } from '@ambient/control';
import { ProxyError } from '@ambient/dataplane';

interface ConnectionEndpoint {
  readonly ip: string;
  readonly port: number;
}

export interface TrackedConnectionInfo {
  readonly direction: 'inbound' | 'outbound';
  readonly src: ConnectionEndpoint;
  readonly originalDst: ConnectionEndpoint;
  readonly actualDst: ConnectionEndpoint;
  readonly protocol: 'HBONE' | 'TCP';
  /** The mTLS peer identity (undefined for plaintext): authorization is re-run with it. */
  readonly srcIdentity: Identity | undefined;
  /** The workload whose policies apply (inbound: the destination); undefined when none are enforced here. */
  readonly policyWorkloadUid: string | undefined;
}

/** Re-runs authorization for a live connection; `allow: false` closes it. */
export type Reauthorize = (snapshot: Snapshot, info: TrackedConnectionInfo) => { allow: boolean; reason: string };

export interface ConnectionDump {
  readonly src: string;
  readonly originalDst: string;
  readonly actualDst: string;
  readonly protocol: 'HBONE' | 'TCP';
}

function hostPort(e: ConnectionEndpoint): string {
  return e.ip.includes(':') ? `[${e.ip}]:${e.port}` : `${e.ip}:${e.port}`;
}

export interface ConnectionHandle {
  readonly id: number;
  /** Stops tracking (the connection ended). Idempotent. */
  release(): void;
}

interface Entry {
  readonly id: number;
  readonly info: TrackedConnectionInfo;
  readonly close: (err: ProxyError) => void;
  closed: boolean;
}

export interface ConnectionManagerLog {
  info(obj: object, msg?: string): void;
}

export class ConnectionManager {
  readonly #entries = new Map<number, Entry>();
  readonly #unsubscribe: () => void;
  #nextId = 1;

  constructor(
    store: Store,
    private readonly reauthorize: Reauthorize,
    private readonly log: ConnectionManagerLog,
  ) {
    this.#unsubscribe = store.subscribe((change, snapshot) => this.#onChange(change, snapshot));
  }

  /** Registers a live connection; `close` must end it (both sides) with the given error. */
  track(info: TrackedConnectionInfo, close: (err: ProxyError) => void): ConnectionHandle {
    const id = this.#nextId++;
    const entry: Entry = { id, info, close, closed: false };
    this.#entries.set(id, entry);
    return { id, release: () => void this.#entries.delete(id) };
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Connections for the config dump (ztunnel's workloadState connections). */
  list(): TrackedConnectionInfo[] {
    return [...this.#entries.values()].map((e) => e.info);
  }

  /** ztunnel's config-dump layout of a proxy's connections: addresses as ip:port text, by direction. */
  dump(): { inbound: ConnectionDump[]; outbound: ConnectionDump[] } {
    const out = { inbound: [] as ConnectionDump[], outbound: [] as ConnectionDump[] };
    for (const { info } of this.#entries.values()) {
      out[info.direction].push({ src: hostPort(info.src), originalDst: hostPort(info.originalDst), actualDst: hostPort(info.actualDst), protocol: info.protocol });
    }
    return out;
  }

  /** Closes every tracked connection (forced drain). */
  closeAll(err: ProxyError): void {
    for (const entry of [...this.#entries.values()]) this.#close(entry, err);
  }

  close(): void {
    this.#unsubscribe();
  }

  #onChange(change: StoreChange, snapshot: Snapshot): void {
    if (this.#entries.size === 0) return;
    // Only policy changes and changes to a connection's own workload can change its verdict.
    const policiesChanged = change.policies.size > 0;
    for (const entry of [...this.#entries.values()]) {
      const uid = entry.info.policyWorkloadUid;
      if (uid === undefined || entry.closed) continue;
      if (!policiesChanged && !change.workloads.has(uid)) continue;
      const verdict = this.reauthorize(snapshot, entry.info);
      if (verdict.allow) continue;
      this.log.info(
        { src: `${entry.info.src.ip}:${entry.info.src.port}`, dst: `${entry.info.actualDst.ip}:${entry.info.actualDst.port}`, reason: verdict.reason },
        'connection closed due to policy change',
      );
      this.#close(entry, new ProxyError('POLICY_CHANGED', `connection closed due to policy change: ${verdict.reason}`));
    }
  }

  #close(entry: Entry, err: ProxyError): void {
    if (entry.closed) return;
    entry.closed = true;
    this.#entries.delete(entry.id);
    entry.close(err);
  }
}
