/**
 * The store's immutable state: primary tables and the indexes derived from
 * them, all persistent maps (immutable.js HAMTs) so a new version shares
 * everything it did not change with the previous one.
 *
 * Invariants (kept by StateBuilder):
 * - every index entry points at the same object the primary table holds, so an
 *   index costs a map slot, never a copy of a workload or service;
 * - index keys reuse strings the objects already hold (IP strings, service
 *   keys from `Workload.services`, uids) wherever a key is a single field;
 * - an empty inner map is removed, never stored.
 */
import { Map as IMap } from 'immutable';
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import type { CidrVipEntry } from './ranking.js';

/** The workload(s) on one IP: a bare workload in the common case, an array (insertion order) on collisions. */
export type AddressSlot = Workload | readonly Workload[];

export type NestedMap<V> = IMap<string, IMap<string, V>>;

export interface StoreState {
  /** uid → workload. */
  readonly workloads: IMap<string, Workload>;
  /** network → IP → workload(s). HostNetwork workloads are left out (they share the node's IP). */
  readonly workloadsByAddress: NestedMap<AddressSlot>;
  /** `namespace/serviceAccount` → uid → workload, for workloads on the local node (all nodes when none is set). */
  readonly localByIdentity: NestedMap<Workload>;
  /** `namespace/hostname` → service. */
  readonly services: IMap<string, Service>;
  /** hostname → services (one per namespace), in insertion order; an updated service moves to the end. */
  readonly servicesByHost: IMap<string, readonly Service[]>;
  /** network → VIP → services (one slot per namespace). */
  readonly servicesByVip: NestedMap<readonly Service[]>;
  readonly cidrVips: readonly CidrVipEntry[];
  /**
   * service key → uid → workload naming that service in `Workload.services`.
   * Keys with no entry in `services` are the staged services.
   */
  readonly endpoints: NestedMap<Workload>;
  /** xDS resource name (istiod: `namespace/name`) → policy. */
  readonly policies: IMap<string, Authorization>;
  /** namespace (`""` for GLOBAL scope) → policy key → policy. WORKLOAD_SELECTOR policies are not here. */
  readonly policiesByNamespace: NestedMap<Authorization>;
}

export const EMPTY_STATE: StoreState = {
  workloads: IMap(),
  workloadsByAddress: IMap(),
  localByIdentity: IMap(),
  services: IMap(),
  servicesByHost: IMap(),
  servicesByVip: IMap(),
  cidrVips: [],
  endpoints: IMap(),
  policies: IMap(),
  policiesByNamespace: IMap(),
};

/** Key of the identity index; trust domain is left out, as in ztunnel's `WorkloadIdentity`. */
export function identityIndexKey(namespace: string, serviceAccount: string): string {
  return `${namespace}/${serviceAccount}`;
}

export function isWorkloadList(slot: AddressSlot): slot is readonly Workload[] {
  return Array.isArray(slot);
}

/**
 * A transient (in-place mutable) view of a two-level persistent map. The
 * outer map and each touched inner map are made mutable once per batch;
 * `finish()` freezes them again. The base version is never modified, so
 * snapshots taken before the batch keep seeing it.
 */
export class NestedMapBuilder<V> {
  readonly #outer: IMap<string, IMap<string, V>>;
  readonly #open = new Map<string, IMap<string, V>>();

  constructor(base: NestedMap<V>) {
    this.#outer = base.asMutable();
  }

  get(k1: string, k2: string): V | undefined {
    return this.inner(k1)?.get(k2);
  }

  inner(k1: string): IMap<string, V> | undefined {
    return this.#open.get(k1) ?? this.#outer.get(k1);
  }

  set(k1: string, k2: string, value: V): void {
    this.#openInner(k1).set(k2, value);
  }

  /** Returns whether an entry was removed. */
  delete(k1: string, k2: string): boolean {
    if (!this.inner(k1)?.has(k2)) return false;
    this.#openInner(k1).delete(k2);
    return true;
  }

  finish(): NestedMap<V> {
    for (const [k1, inner] of this.#open) {
      if (inner.size === 0) this.#outer.delete(k1);
      else this.#outer.set(k1, inner.asImmutable());
    }
    this.#open.clear();
    return this.#outer.asImmutable();
  }

  #openInner(k1: string): IMap<string, V> {
    let inner = this.#open.get(k1);
    if (inner === undefined) {
      inner = (this.#outer.get(k1) ?? IMap<string, V>()).asMutable();
      this.#open.set(k1, inner);
    }
    return inner;
  }
}
