/**
 * Certificate prefetch and forget, as ztunnel's cert_fetcher does in shared
 * mode: when a workload on this node that speaks HBONE (or tunnels natively)
 * appears in workload discovery, its identity's certificate is fetched ahead
 * of the first connection; when the last such workload with that identity is
 * gone, the certificate is forgotten (no more refreshes).
 *
 * Invariants: `counts` holds, per identity, the number of local tunnel
 * workloads currently in the store with that identity; prefetch is called on
 * 0 → 1 and forget on 1 → 0, and nothing else calls them here.
 */
import {
  identityToString,
  type Identity,
  type Snapshot,
  type Store,
  type StoreChange,
  type Workload,
} from '@ambient/control';

/** The part of the certificate manager this module may use. */
export interface CertificateWarmer {
  prefetch(identity: Identity): void;
  forget(identity: Identity): void;
}

function isLocalTunnelWorkload(w: Workload, nodeName: string): boolean {
  return nodeName !== '' && w.node === nodeName && (w.protocol === 'HBONE' || w.nativeTunnel);
}

export class CertPrefetcher {
  readonly #counts = new Map<string, { identity: Identity; count: number }>();
  readonly #unsubscribe: () => void;

  constructor(
    store: Store,
    private readonly nodeName: string,
    private readonly certs: CertificateWarmer,
  ) {
    for (const w of store.snapshot().workloads()) this.#add(w);
    this.#unsubscribe = store.subscribe((change, snapshot, previous) => this.#onChange(change, snapshot, previous));
  }

  /** Identities currently prefetched (for config dump and tests). */
  identities(): Identity[] {
    return [...this.#counts.values()].map((e) => e.identity);
  }

  close(): void {
    this.#unsubscribe();
  }

  #onChange(change: StoreChange, snapshot: Snapshot, previous: Snapshot): void {
    // Add the new versions first, so an identity that stays does not flap through 0.
    for (const uid of change.workloads) {
      const now = snapshot.workload(uid);
      if (now) this.#add(now);
    }
    for (const uid of change.workloads) {
      const before = previous.workload(uid);
      if (before) this.#remove(before);
    }
  }

  #add(w: Workload): void {
    if (!isLocalTunnelWorkload(w, this.nodeName)) return;
    const key = identityToString(w.identity);
    const entry = this.#counts.get(key);
    if (entry) {
      entry.count++;
      return;
    }
    this.#counts.set(key, { identity: w.identity, count: 1 });
    this.certs.prefetch(w.identity);
  }

  #remove(w: Workload): void {
    if (!isLocalTunnelWorkload(w, this.nodeName)) return;
    const key = identityToString(w.identity);
    const entry = this.#counts.get(key);
    if (!entry) return;
    entry.count--;
    if (entry.count > 0) return;
    this.#counts.delete(key);
    this.certs.forget(entry.identity);
  }
}
