/**
 * Applies one batch of upserts and removals to a private, mutable copy of a
 * StoreState and records what changed. Nothing here is visible to readers
 * until `finish()` hands back the new immutable state and the store swaps it
 * in, so a batch may be spread over many event-loop turns.
 *
 * Semantics follow ztunnel's `ProxyStateUpdateMutator` (`src/xds.rs`) and the
 * stores in `src/state/{workload,service,policy}.rs`:
 * - inserting a workload first removes every index entry of the previous
 *   version with the same uid, then indexes the new one;
 * - an Address removal name is a workload uid first; only when no workload
 *   had it, and it is `namespace/hostname` with exactly one '/', a service;
 * - service endpoints are derived from `Workload.services`; a key naming a
 *   service that is absent is a staged service (see StoreState.endpoints).
 *   Endpoint edits are collected per service and applied once in finish(),
 *   like ztunnel's `EndpointAccumulator`, so a push touching E endpoints of
 *   one service costs O(E), not O(E²).
 */
import type { Authorization } from '../model/authorization.js';
import { serviceKey, type Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import type { TransientMap } from './persistent-map.js';
import { makeCidrVipEntry, type CidrVipEntry } from './ranking.js';
import {
  identityIndexKey,
  isWorkloadList,
  NestedMapBuilder,
  type AddressSlot,
  type StoreState,
} from './state.js';
import type { StoreChange } from './types.js';

export interface StateBuilderOptions {
  /** Only workloads on this node go into the identity index; undefined indexes every workload (as ztunnel). */
  readonly localNode: string | undefined;
}

export class StateBuilder {
  readonly #options: StateBuilderOptions;
  readonly #workloads: TransientMap<Workload>;
  readonly #byAddress: NestedMapBuilder<AddressSlot>;
  readonly #byIdentity: NestedMapBuilder<Workload>;
  readonly #services: TransientMap<Service>;
  readonly #byHost: TransientMap<readonly Service[]>;
  readonly #byVip: NestedMapBuilder<readonly Service[]>;
  #cidrVips: readonly CidrVipEntry[];
  #cidrVipsCopied = false;
  readonly #endpoints: TransientMap<readonly Workload[]>;
  /** Per touched service key: uid → the workload now naming it, or null when it no longer does. */
  readonly #endpointEdits = new Map<string, Map<string, Workload | null>>();
  readonly #policies: TransientMap<Authorization>;
  readonly #policiesByNamespace: NestedMapBuilder<Authorization>;

  readonly #changedWorkloads = new Set<string>();
  readonly #changedServices = new Set<string>();
  readonly #changedPolicies = new Set<string>();

  constructor(base: StoreState, options: StateBuilderOptions) {
    this.#options = options;
    this.#workloads = base.workloads.asMutable();
    this.#byAddress = new NestedMapBuilder(base.workloadsByAddress);
    this.#byIdentity = new NestedMapBuilder(base.localByIdentity);
    this.#services = base.services.asMutable();
    this.#byHost = base.servicesByHost.asMutable();
    this.#byVip = new NestedMapBuilder(base.servicesByVip);
    this.#cidrVips = base.cidrVips;
    this.#endpoints = base.endpoints.asMutable();
    this.#policies = base.policies.asMutable();
    this.#policiesByNamespace = new NestedMapBuilder(base.policiesByNamespace);
  }

  // === workloads ===

  upsertWorkload(w: Workload): void {
    this.removeWorkload(w.uid);
    this.#workloads.set(w.uid, w);
    if (w.networkMode !== 'HostNetwork') {
      for (const ip of w.addresses) this.#addAddress(w.network, ip, w);
    }
    if (this.#isLocal(w)) {
      this.#byIdentity.set(identityIndexKey(w.identity.namespace, w.identity.serviceAccount), w.uid, w);
    }
    for (const ref of w.services) {
      this.#editEndpoint(ref.key, w.uid, w);
      this.#changedServices.add(ref.key);
    }
    this.#changedWorkloads.add(w.uid);
  }

  /** Removes the workload with this uid and every index entry it had; false when there was none. */
  removeWorkload(uid: string): boolean {
    const prev = this.#workloads.get(uid);
    if (prev === undefined) return false;
    this.#workloads.delete(uid);
    if (prev.networkMode !== 'HostNetwork') {
      for (const ip of prev.addresses) this.#removeAddress(prev.network, ip, uid);
    }
    if (this.#isLocal(prev)) {
      this.#byIdentity.delete(identityIndexKey(prev.identity.namespace, prev.identity.serviceAccount), uid);
    }
    for (const ref of prev.services) {
      this.#editEndpoint(ref.key, uid, null);
      this.#changedServices.add(ref.key);
    }
    this.#changedWorkloads.add(uid);
    return true;
  }

  #editEndpoint(key: string, uid: string, w: Workload | null): void {
    let edits = this.#endpointEdits.get(key);
    if (edits === undefined) {
      edits = new Map();
      this.#endpointEdits.set(key, edits);
    }
    edits.set(uid, w);
  }

  /** Applies one service's accumulated endpoint edits: kept order, replaced in place, new ones appended. */
  #rebuildEndpoints(key: string, edits: ReadonlyMap<string, Workload | null>): void {
    const base = this.#endpoints.get(key) ?? [];
    const next: Workload[] = [];
    const placed = new Set<string>();
    for (const w of base) {
      const edit = edits.get(w.uid);
      if (edit === undefined) next.push(w);
      else {
        placed.add(w.uid);
        if (edit !== null) next.push(edit);
      }
    }
    for (const [uid, edit] of edits) if (edit !== null && !placed.has(uid)) next.push(edit);
    if (next.length === 0) this.#endpoints.delete(key);
    // slice(): an exact-size copy; push() leaves spare capacity behind.
    else this.#endpoints.set(key, Object.freeze(next.slice()));
  }

  #isLocal(w: Workload): boolean {
    return this.#options.localNode === undefined || w.node === this.#options.localNode;
  }

  #addAddress(network: string, ip: string, w: Workload): void {
    const cur = this.#byAddress.get(network, ip);
    if (cur === undefined) this.#byAddress.set(network, ip, w);
    else if (isWorkloadList(cur)) this.#byAddress.set(network, ip, cur.concat([w]));
    else this.#byAddress.set(network, ip, [cur, w]);
  }

  #removeAddress(network: string, ip: string, uid: string): void {
    const cur = this.#byAddress.get(network, ip);
    if (cur === undefined) return;
    if (!isWorkloadList(cur)) {
      if (cur.uid === uid) this.#byAddress.delete(network, ip);
      return;
    }
    const rest = cur.filter((w) => w.uid !== uid);
    if (rest.length === cur.length) return;
    const [only] = rest;
    if (rest.length === 0 || only === undefined) this.#byAddress.delete(network, ip);
    else this.#byAddress.set(network, ip, rest.length === 1 ? only : rest);
  }

  // === services ===

  upsertService(s: Service): void {
    const key = serviceKey(s);
    const prev = this.#services.get(key);
    if (prev !== undefined) this.#unindexService(prev);
    this.#services.set(key, s);
    const hosts = this.#byHost.get(s.hostname);
    this.#byHost.set(s.hostname, hosts === undefined ? [s] : hosts.concat([s]));
    for (const vip of s.vips) {
      const list = this.#byVip.get(vip.network, vip.address);
      if (list === undefined) {
        this.#byVip.set(vip.network, vip.address, [s]);
        continue;
      }
      // One slot per namespace: a second service of the same namespace on this
      // VIP takes over the slot in place (ztunnel `insert_internal`).
      const slot = list.findIndex((x) => x.namespace === s.namespace);
      this.#byVip.set(vip.network, vip.address, slot < 0 ? list.concat([s]) : list.map((x, i) => (i === slot ? s : x)));
    }
    if (s.cidrVips.length > 0) {
      const entries = this.#mutableCidrVips();
      for (const c of s.cidrVips) entries.push(makeCidrVipEntry(c.network, c.cidr, s));
    }
    this.#changedServices.add(key);
  }

  /** Removes the service with this key; its workloads' references stay, so it becomes staged. */
  removeService(key: string): boolean {
    const prev = this.#services.get(key);
    if (prev === undefined) return false;
    this.#services.delete(key);
    this.#unindexService(prev);
    this.#changedServices.add(key);
    return true;
  }

  #unindexService(prev: Service): void {
    const same = (x: Service) => x.namespace === prev.namespace && x.hostname === prev.hostname;
    const hosts = this.#byHost.get(prev.hostname);
    if (hosts !== undefined) {
      const rest = hosts.filter((x) => !same(x));
      if (rest.length === 0) this.#byHost.delete(prev.hostname);
      else this.#byHost.set(prev.hostname, rest);
    }
    for (const vip of prev.vips) {
      const list = this.#byVip.get(vip.network, vip.address);
      if (list === undefined) continue;
      // Only this service's own entry goes; ztunnel drops whatever holds the
      // namespace's slot, which could be another service that took it over.
      const rest = list.filter((x) => !same(x));
      if (rest.length === 0) this.#byVip.delete(vip.network, vip.address);
      else if (rest.length !== list.length) this.#byVip.set(vip.network, vip.address, rest);
    }
    if (prev.cidrVips.length > 0) {
      const entries = this.#mutableCidrVips();
      const rest = entries.filter((e) => !same(e.service));
      entries.length = 0;
      entries.push(...rest);
    }
  }

  #mutableCidrVips(): CidrVipEntry[] {
    if (!this.#cidrVipsCopied) {
      this.#cidrVips = [...this.#cidrVips];
      this.#cidrVipsCopied = true;
    }
    return this.#cidrVips as CidrVipEntry[];
  }

  // === addresses (workload or service by xDS name) ===

  /** ztunnel `remove_internal`: a workload uid first, else a `namespace/hostname` service. */
  removeAddress(name: string): void {
    if (this.removeWorkload(name)) return;
    const slash = name.indexOf('/');
    if (slash < 0 || name.indexOf('/', slash + 1) >= 0) return;
    this.removeService(name);
  }

  // === policies ===

  upsertPolicy(name: string, p: Authorization): void {
    this.removePolicy(name);
    this.#policies.set(name, p);
    const ns = policyIndexNamespace(p);
    if (ns !== undefined) this.#policiesByNamespace.set(ns, name, p);
    this.#changedPolicies.add(name);
  }

  removePolicy(name: string): boolean {
    const prev = this.#policies.get(name);
    if (prev === undefined) return false;
    this.#policies.delete(name);
    const ns = policyIndexNamespace(prev);
    if (ns !== undefined) this.#policiesByNamespace.delete(ns, name);
    this.#changedPolicies.add(name);
    return true;
  }

  // === change tracking for replace-all ===

  noteWorkloadChanged(uid: string): void {
    this.#changedWorkloads.add(uid);
  }

  noteServiceChanged(key: string): void {
    this.#changedServices.add(key);
  }

  notePolicyChanged(name: string): void {
    this.#changedPolicies.add(name);
  }

  // === result ===

  /**
   * Publishes the batch. Freezing the nested indexes costs one step per
   * touched inner map (e.g. per service whose endpoints changed), so it runs
   * through `pause`, which may yield to the event loop.
   */
  async finish(pause: () => Promise<void>): Promise<{ readonly state: StoreState; readonly change: StoreChange }> {
    for (const [key, edits] of this.#endpointEdits) {
      this.#rebuildEndpoints(key, edits);
      await pause();
    }
    this.#endpointEdits.clear();
    for (const nested of [this.#byAddress, this.#byIdentity, this.#byVip, this.#policiesByNamespace]) {
      while (nested.finishOne()) await pause();
    }
    const state: StoreState = {
      workloads: this.#workloads.freeze(),
      workloadsByAddress: this.#byAddress.finish(),
      localByIdentity: this.#byIdentity.finish(),
      services: this.#services.freeze(),
      servicesByHost: this.#byHost.freeze(),
      servicesByVip: this.#byVip.finish(),
      cidrVips: this.#cidrVips,
      endpoints: this.#endpoints.freeze(),
      policies: this.#policies.freeze(),
      policiesByNamespace: this.#policiesByNamespace.finish(),
    };
    const change: StoreChange = {
      workloads: this.#changedWorkloads,
      services: this.#changedServices,
      policies: this.#changedPolicies,
    };
    return { state, change };
  }
}

/** ztunnel `PolicyStore::insert`: GLOBAL under "", NAMESPACE under its namespace, selector policies not indexed. */
function policyIndexNamespace(p: Authorization): string | undefined {
  switch (p.scope) {
    case 'Global':
      return '';
    case 'Namespace':
      return p.namespace;
    case 'WorkloadSelector':
      return undefined;
  }
}
