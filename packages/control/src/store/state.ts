/**
 * The store's immutable state: primary tables and the indexes derived from
 * them, all persistent maps (see persistent-map.ts) so a new version shares
 * everything it did not change with the previous one.
 *
 * Invariants (kept by StateBuilder):
 * - every index entry points at the same object the primary table holds, so an
 *   index costs a map slot, never a copy of a workload or service;
 * - index keys reuse strings the objects already hold (IP strings, service
 *   keys from `Workload.services`, uids) wherever a key is a single field;
 * - an empty inner map or endpoint list is removed, never stored.
 */
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import { PersistentMap, type TransientMap } from './persistent-map.js';
import type { CidrVipEntry } from './ranking.js';

/** The workload(s) on one IP: a bare workload in the common case, an array (insertion order) on collisions. */
export type AddressSlot = Workload | readonly Workload[];

export type NestedMap<V> = PersistentMap<PersistentMap<V>>;

export interface StoreState {
  /** uid → workload. */
  readonly workloads: PersistentMap<Workload>;
  /** network → IP → workload(s). HostNetwork workloads are left out (they share the node's IP). */
  readonly workloadsByAddress: NestedMap<AddressSlot>;
  /** `namespace/serviceAccount` → uid → workload, for workloads on the local node (all nodes when none is set). */
  readonly localByIdentity: NestedMap<Workload>;
  /** `namespace/hostname` → service. */
  readonly services: PersistentMap<Service>;
  /** hostname → services (one per namespace), in insertion order; an updated service moves to the end. */
  readonly servicesByHost: PersistentMap<readonly Service[]>;
  /** network → VIP → services (one slot per namespace). */
  readonly servicesByVip: NestedMap<readonly Service[]>;
  readonly cidrVips: readonly CidrVipEntry[];
  /**
   * service key → the workloads naming that service in `Workload.services`.
   * A plain array per service (rebuilt once per batch that touches it, as
   * ztunnel clones a service's endpoint set once per push): 8 bytes per
   * endpoint instead of a map entry. Keys with no entry in `services` are the
   * staged services.
   */
  readonly endpoints: PersistentMap<readonly Workload[]>;
  /** xDS resource name (istiod: `namespace/name`) → policy. */
  readonly policies: PersistentMap<Authorization>;
  /** namespace (`""` for GLOBAL scope) → policy key → policy. WORKLOAD_SELECTOR policies are not here. */
  readonly policiesByNamespace: NestedMap<Authorization>;
}

export const EMPTY_STATE: StoreState = {
  workloads: PersistentMap.empty(),
  workloadsByAddress: PersistentMap.empty(),
  localByIdentity: PersistentMap.empty(),
  services: PersistentMap.empty(),
  servicesByHost: PersistentMap.empty(),
  servicesByVip: PersistentMap.empty(),
  cidrVips: [],
  endpoints: PersistentMap.empty(),
  policies: PersistentMap.empty(),
  policiesByNamespace: PersistentMap.empty(),
};

/** Key of the identity index; trust domain is left out, as in ztunnel's `WorkloadIdentity`. */
export function identityIndexKey(namespace: string, serviceAccount: string): string {
  return `${namespace}/${serviceAccount}`;
}

export function isWorkloadList(slot: AddressSlot): slot is readonly Workload[] {
  return Array.isArray(slot);
}

/**
 * A transient view of a two-level persistent map. The outer map and each
 * touched inner map get one transient per batch; `finish()` freezes them.
 * The base version is never modified, so snapshots taken before the batch
 * keep seeing it.
 */
export class NestedMapBuilder<V> {
  readonly #outer: TransientMap<PersistentMap<V>>;
  readonly #open = new Map<string, TransientMap<V>>();
  /** Keys of #open in opening order, walked once by finishOne. */
  readonly #openOrder: string[] = [];
  #finished = 0;

  constructor(base: NestedMap<V>) {
    this.#outer = base.asMutable();
  }

  get(k1: string, k2: string): V | undefined {
    const open = this.#open.get(k1);
    return open !== undefined ? open.get(k2) : this.#outer.get(k1)?.get(k2);
  }

  has(k1: string, k2: string): boolean {
    const open = this.#open.get(k1);
    return open !== undefined ? open.has(k2) : this.#outer.get(k1)?.has(k2) === true;
  }

  set(k1: string, k2: string, value: V): void {
    this.#openInner(k1).set(k2, value);
  }

  /** Returns whether an entry was removed. */
  delete(k1: string, k2: string): boolean {
    if (!this.has(k1, k2)) return false;
    return this.#openInner(k1).delete(k2);
  }

  /**
   * Freezes the next touched inner map into the outer one; false when none
   * is left. Lets the caller spread a large finish over several slices.
   */
  finishOne(): boolean {
    const k1 = this.#openOrder[this.#finished];
    if (k1 === undefined) return false;
    this.#finished++;
    const inner = this.#open.get(k1);
    if (inner === undefined) return true;
    this.#open.delete(k1);
    if (inner.size === 0) this.#outer.delete(k1);
    else this.#outer.set(k1, inner.freeze());
    return true;
  }

  finish(): NestedMap<V> {
    while (this.finishOne());
    return this.#outer.freeze();
  }

  #openInner(k1: string): TransientMap<V> {
    let inner = this.#open.get(k1);
    if (inner === undefined) {
      inner = (this.#outer.get(k1) ?? PersistentMap.empty<V>()).asMutable();
      this.#open.set(k1, inner);
      this.#openOrder.push(k1);
    }
    return inner;
  }
}
