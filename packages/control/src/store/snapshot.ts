/**
 * A consistent, immutable view of the store at one version. The data path
 * takes one per connection and looks things up synchronously; holding it
 * across awaits is safe, since later updates produce new snapshots and never
 * touch this one.
 */
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload, WorkloadServiceRef } from '../model/workload.js';
import { pickBestService, pickCidrVipService, pickWorkloadForAddress, serviceVisibleTo } from './ranking.js';
import { identityIndexKey, isWorkloadList, type StoreState } from './state.js';
import type { ApplicablePolicies, ServiceEndpoint, StoreCounts } from './types.js';

/** ztunnel `find_address`: a workload IP first, then a service VIP. */
export type AddressMatch =
  | { readonly kind: 'workload'; readonly workload: Workload }
  | { readonly kind: 'service'; readonly service: Service };

/** What the in-pod protocol knows about a pod (ztunnel `WorkloadInfo`). */
export interface WorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface SnapshotOptions {
  /** PREFERED_SERVICE_NAMESPACE; carried for the DNS resolver's hostname ranking (see `preferredServiceNamespace`). */
  readonly preferredServiceNamespace: string | undefined;
}

const NO_ENDPOINTS: readonly ServiceEndpoint[] = Object.freeze([]);

// Endpoint views are derived lazily and cached by identity of what they are
// derived from, so they are shared across snapshots and dropped with it:
// one view per (workload version, service ref), one list per endpoint set.
const endpointViews = new WeakMap<WorkloadServiceRef, ServiceEndpoint>();
const endpointLists = new WeakMap<readonly Workload[], { all?: readonly ServiceEndpoint[]; healthy?: readonly ServiceEndpoint[] }>();

export class Snapshot {
  /** Increases by one with every applied update. */
  readonly version: number;
  /**
   * PREFERED_SERVICE_NAMESPACE. ztunnel uses it only when its DNS proxy ranks
   * services for a hostname (`dns/server.rs`), not for VIP or proxy hostname
   * lookups; pass it to `pickBestService` there.
   */
  readonly preferredServiceNamespace: string | undefined;
  readonly #state: StoreState;
  #stagedCount: number | undefined;

  constructor(state: StoreState, version: number, options: SnapshotOptions) {
    this.#state = state;
    this.version = version;
    this.preferredServiceNamespace = options.preferredServiceNamespace;
  }

  // === workloads ===

  workload(uid: string): Workload | undefined {
    return this.#state.workloads.get(uid);
  }

  /** The workload an IP belongs to; on collisions ztunnel's rule picks one (pods, then HBONE, then the latest). */
  workloadByAddress(network: string, ip: string): Workload | undefined {
    const slot = this.#state.workloadsByAddress.get(network)?.get(ip);
    if (slot === undefined) return undefined;
    return isWorkloadList(slot) ? pickWorkloadForAddress(slot) : slot;
  }

  /** Every workload indexed on this IP, oldest first. */
  workloadsByAddress(network: string, ip: string): readonly Workload[] {
    const slot = this.#state.workloadsByAddress.get(network)?.get(ip);
    if (slot === undefined) return [];
    return isWorkloadList(slot) ? slot : [slot];
  }

  /** Local-node workloads (every workload when the store has no local node) with this namespace and service account. */
  localWorkloadsByIdentity(namespace: string, serviceAccount: string): Workload[] {
    const inner = this.#state.localByIdentity.get(identityIndexKey(namespace, serviceAccount));
    return inner === undefined ? [] : [...inner.values()];
  }

  /** ztunnel `find_by_info`: the local workload for an in-pod enrolment. */
  findLocalWorkload(info: WorkloadInfo): Workload | undefined {
    const inner = this.#state.localByIdentity.get(identityIndexKey(info.namespace, info.serviceAccount));
    return inner?.find((w) => w.name === info.name && w.namespace === info.namespace);
  }

  // === services ===

  /** By `namespace/hostname`. */
  service(key: string): Service | undefined {
    return this.#state.services.get(key);
  }

  /** Services holding this exact VIP (at most one per namespace), unranked. */
  servicesByVip(network: string, ip: string): readonly Service[] {
    return this.#state.servicesByVip.get(network)?.get(ip) ?? [];
  }

  /**
   * ztunnel `get_best_by_vip`. With a client namespace, services not visible
   * to it are skipped. Exact VIPs rank: client's namespace, then canonical,
   * then first. Without a visible exact match, CIDR VIPs rank by (client's
   * namespace, longest prefix, canonical).
   */
  serviceByVip(network: string, ip: string, clientNamespace?: string): Service | undefined {
    const exact = this.#state.servicesByVip.get(network)?.get(ip);
    if (exact !== undefined) {
      const visible = clientNamespace === undefined ? exact : exact.filter((s) => serviceVisibleTo(s, clientNamespace));
      const best = pickBestService(visible, clientNamespace, undefined);
      if (best !== undefined) return best;
    }
    return pickCidrVipService(this.#state.cidrVips, network, ip, clientNamespace);
  }

  /** All services with this hostname (ServiceEntry allows one per namespace), in insertion order. */
  servicesByHostname(hostname: string): readonly Service[] {
    return this.#state.servicesByHost.get(hostname) ?? [];
  }

  /**
   * ztunnel `get_best_by_host`: among services with this hostname visible to
   * the client, one in the client's namespace, else canonical, else first.
   */
  serviceByHostname(hostname: string, clientNamespace?: string): Service | undefined {
    const all = this.#state.servicesByHost.get(hostname);
    if (all === undefined) return undefined;
    const visible = clientNamespace === undefined ? all : all.filter((s) => serviceVisibleTo(s, clientNamespace));
    return pickBestService(visible, clientNamespace, undefined);
  }

  /** ztunnel `find_address`: the workload on the IP, else the best service on it as a VIP. */
  findAddress(network: string, ip: string, clientNamespace?: string): AddressMatch | undefined {
    const workload = this.workloadByAddress(network, ip);
    if (workload !== undefined) return { kind: 'workload', workload };
    const service = this.serviceByVip(network, ip, clientNamespace);
    return service === undefined ? undefined : { kind: 'service', service };
  }

  /** The present services a workload names in `Workload.services` (ztunnel `get_by_workload`). */
  servicesForWorkload(w: Workload): Service[] {
    const out: Service[] = [];
    for (const ref of w.services) {
      const s = this.#state.services.get(ref.key);
      if (s !== undefined) out.push(s);
    }
    return out;
  }

  /**
   * Endpoints of a present service: every workload naming it, except
   * unhealthy ones unless the service's health policy is AllowAll (ztunnel
   * `should_include_endpoint`). Empty for an absent (possibly staged) service.
   */
  endpoints(key: string): readonly ServiceEndpoint[] {
    const service = this.#state.services.get(key);
    if (service === undefined) return NO_ENDPOINTS;
    const set = this.#state.endpoints.get(key);
    if (set === undefined) return NO_ENDPOINTS;
    let cached = endpointLists.get(set);
    if (cached === undefined) {
      cached = {};
      endpointLists.set(set, cached);
    }
    if (service.loadBalancing?.healthPolicy === 'AllowAll') {
      cached.all ??= endpointList(set, key, false);
      return cached.all;
    }
    cached.healthy ??= endpointList(set, key, true);
    return cached.healthy;
  }

  /** Service keys workloads name but that have not been received, with those workloads' endpoints (no health filter). */
  stagedServices(): ReadonlyMap<string, readonly ServiceEndpoint[]> {
    const out = new Map<string, readonly ServiceEndpoint[]>();
    for (const [key, set] of this.#state.endpoints) {
      if (!this.#state.services.has(key)) out.set(key, endpointList(set, key, false));
    }
    return out;
  }

  // === policies ===

  /** By xDS resource name (istiod: `namespace/name`). */
  policy(key: string): Authorization | undefined {
    return this.#state.policies.get(key);
  }

  /**
   * ztunnel `assert_rbac` selection for a destination workload: NAMESPACE
   * policies of its namespace, GLOBAL policies, then the keys in
   * `Workload.authorizationPolicies`. Keys not received are listed in
   * `missing` (ztunnel skips them with a warning).
   */
  policiesFor(w: Workload): ApplicablePolicies {
    const policies: Authorization[] = [];
    const seen = new Set<string>();
    const add = (key: string, p: Authorization) => {
      if (seen.has(key)) return;
      seen.add(key);
      policies.push(p);
    };
    const byNs = this.#state.policiesByNamespace;
    byNs.get(w.namespace)?.forEach((p, key) => add(key, p));
    if (w.namespace !== '') byNs.get('')?.forEach((p, key) => add(key, p));
    const missing: string[] = [];
    for (const key of w.authorizationPolicies) {
      const p = this.#state.policies.get(key);
      if (p === undefined) missing.push(key);
      else add(key, p);
    }
    return { policies, missing };
  }

  // === iteration (config_dump) ===

  workloads(): IterableIterator<Workload> {
    return this.#state.workloads.values();
  }

  services(): IterableIterator<Service> {
    return this.#state.services.values();
  }

  policies(): IterableIterator<Authorization> {
    return this.#state.policies.values();
  }

  /** [xDS resource name, policy] pairs. */
  policyEntries(): IterableIterator<[string, Authorization]> {
    return this.#state.policies.entries();
  }

  counts(): StoreCounts {
    this.#stagedCount ??= this.#countStaged();
    return {
      workloads: this.#state.workloads.size,
      services: this.#state.services.size,
      stagedServices: this.#stagedCount,
      policies: this.#state.policies.size,
    };
  }

  #countStaged(): number {
    let n = 0;
    for (const key of this.#state.endpoints.keys()) if (!this.#state.services.has(key)) n++;
    return n;
  }
}

function endpointList(set: readonly Workload[], key: string, healthyOnly: boolean): readonly ServiceEndpoint[] {
  const out: ServiceEndpoint[] = [];
  for (const w of set) {
    if (healthyOnly && w.status !== 'Healthy') continue;
    const ref = w.services.find((r) => r.key === key);
    if (ref !== undefined) out.push(endpointView(w, ref));
  }
  return Object.freeze(out);
}

function endpointView(workload: Workload, ref: WorkloadServiceRef): ServiceEndpoint {
  let view = endpointViews.get(ref);
  // A ref may be shared by two versions of a workload (e.g. built with
  // `{ ...old, status }`), so the cached view must be for this very object.
  if (view === undefined || view.workload !== workload) {
    const ports = new Map<number, number>();
    for (const p of ref.ports) ports.set(p.servicePort, p.targetPort);
    view = { workloadUid: workload.uid, ports, status: workload.status, workload };
    endpointViews.set(ref, view);
  }
  return view;
}
