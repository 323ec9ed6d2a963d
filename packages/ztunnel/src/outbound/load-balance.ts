/**
 * Choosing one endpoint of a service, and one of a service's weighted
 * waypoints — ztunnel's `ProxyState::load_balance` and
 * `sample_weighted_waypoint` (src/state.rs) as pure functions over the
 * snapshot's endpoint list and an injected `random()` in [0, 1).
 *
 * Endpoint selection, in order:
 * 1. health: unhealthy endpoints only with health policy AllowAll (the
 *    snapshot already filters; checked again here);
 * 2. reachability: a workload with no IP and no hostname is reachable only
 *    through its network gateway from another network; a workload on another
 *    network with no network gateway is skipped (ztunnel keeps it and then
 *    fails the connection when it is picked);
 * 3. port: in standard mode the service must define the port, and the
 *    endpoint needs a usable target port (its own mapping or the service's);
 *    in waypoint mode the port may be missing when the workload has an
 *    application tunnel;
 * 4. locality: for any mode other than Standard with routing preferences,
 *    endpoints are ranked by how many leading scopes (region, zone, subzone,
 *    node, cluster, network) they share with the source; Strict keeps only
 *    full matches, other modes keep the best rank present;
 * 5. a random pick weighted by workload capacity (capacity 0 is never chosen;
 *    all zero means no endpoint, as in ztunnel).
 */
import type {
  GatewayAddress,
  LoadBalancerScope,
  LoadBalancing,
  Locality,
  Service,
  ServiceEndpoint,
  Workload,
} from '@ambient/control';

/** Standard: a client's service call. Waypoint: reaching a waypoint service on its HBONE port. */
export type ResolutionMode = 'standard' | 'waypoint';

export type LoadBalanceResult =
  | { readonly kind: 'picked'; readonly endpoint: ServiceEndpoint; readonly workload: Workload }
  | { readonly kind: 'none'; readonly reason: string };

export interface LoadBalanceInput {
  readonly source: Workload;
  readonly service: Service;
  readonly servicePort: number;
  readonly mode: ResolutionMode;
  /** The service's endpoints (Snapshot `endpoints(serviceKey(service))`). */
  readonly endpoints: readonly ServiceEndpoint[];
  readonly random: () => number;
}

const NO_LOCALITY: Locality = { region: '', zone: '', subzone: '' };

export function loadBalance(input: LoadBalanceInput): LoadBalanceResult {
  const { source, service, servicePort, mode } = input;
  const svcTarget = serviceTargetPort(service, servicePort);
  if (mode === 'standard' && svcTarget === undefined) {
    return { kind: 'none', reason: `service ${service.namespace}/${service.hostname} has no port ${servicePort}` };
  }
  const allowUnhealthy = service.loadBalancing?.healthPolicy === 'AllowAll';
  const candidates: ServiceEndpoint[] = [];
  for (const ep of input.endpoints) {
    const wl = ep.workload;
    if (ep.status !== 'Healthy' && !allowUnhealthy) continue;
    const inNetwork = wl.network === source.network;
    const hasGateway = wl.networkGateway !== undefined;
    const hasAddress = wl.addresses.length > 0 || wl.hostname !== '';
    // WDS is client-agnostic: a workload without an address may carry a
    // network gateway even on our network; it is only usable from elsewhere.
    if (!hasAddress && (inNetwork || !hasGateway)) continue;
    if (!inNetwork && !hasGateway) continue;
    if (mode === 'standard') {
      if ((svcTarget ?? 0) === 0 && !(positive(ep.ports.get(servicePort)))) continue;
    } else if (svcTarget === undefined && wl.applicationTunnel === undefined) {
      // Waypoints with an application tunnel need not expose the port on the service.
      continue;
    }
    candidates.push(ep);
  }
  if (candidates.length === 0) {
    return { kind: 'none', reason: `service ${service.namespace}/${service.hostname} has no healthy endpoint for port ${servicePort}` };
  }
  const options = rankByLocality(source, candidates, service.loadBalancing);
  if (options.length === 0) {
    return {
      kind: 'none',
      reason: `service ${service.namespace}/${service.hostname} has no endpoint matching its strict routing preference (${(service.loadBalancing?.routingPreference ?? []).join(', ')})`,
    };
  }
  const picked = weightedPick(options, (ep) => ep.workload.capacity, input.random);
  if (picked === undefined) {
    return { kind: 'none', reason: `service ${service.namespace}/${service.hostname} has only endpoints with capacity 0` };
  }
  return { kind: 'picked', endpoint: picked, workload: picked.workload };
}

/** The service's target port for a service port: undefined when the service lacks the port, 0 for a named port. */
function serviceTargetPort(service: Service, servicePort: number): number | undefined {
  return service.ports.find((p) => p.servicePort === servicePort)?.targetPort;
}

/**
 * ztunnel `find_upstream_from_service`'s port choice: the endpoint's own
 * mapping, else the service's target port, else (application tunnel with a
 * port) the service port itself; undefined when none applies. An endpoint
 * mapping of 0 means "the service's target port" (the model's convention;
 * ztunnel would use port 0 verbatim).
 */
export function resolveTargetPort(service: Service, servicePort: number, endpoint: ServiceEndpoint): number | undefined {
  const own = endpoint.ports.get(servicePort);
  if (positive(own)) return own;
  const svc = serviceTargetPort(service, servicePort);
  if (positive(svc)) return svc;
  if (endpoint.workload.applicationTunnel?.port !== undefined) return servicePort;
  return undefined;
}

/**
 * Locality ranking (ztunnel `load_balance`). For each routing preference in
 * order, the endpoint scores a point while it shares that scope with the
 * source and stops at the first difference. When Network is the first
 * preference it is special: a network mismatch does not stop the count, and
 * a network match is worth all the other scopes together (so same-network
 * endpoints always outrank other networks).
 */
function rankByLocality(source: Workload, endpoints: readonly ServiceEndpoint[], lb: LoadBalancing | undefined): ServiceEndpoint[] {
  if (lb === undefined || lb.mode === 'Standard') return [...endpoints];
  const prefs = lb.routingPreference;
  const networkFirst = prefs[0] === 'Network';
  const ranked: Array<{ rank: number; ep: ServiceEndpoint }> = [];
  for (const ep of endpoints) {
    let rank = 0;
    let adjust = 0;
    for (const scope of prefs) {
      let matches = sameScope(scope, source, ep.workload);
      if (scope === 'Network' && networkFirst) {
        if (matches) adjust = prefs.length - 1;
        else continue;
        matches = true;
      }
      if (!matches) break;
      rank++;
    }
    // Strict: only endpoints matching every preference qualify.
    if (lb.mode === 'Strict' && rank !== prefs.length) continue;
    ranked.push({ rank: rank + adjust, ep });
  }
  if (ranked.length === 0) return [];
  const best = Math.max(...ranked.map((r) => r.rank));
  return ranked.filter((r) => r.rank === best).map((r) => r.ep);
}

function sameScope(scope: LoadBalancerScope, src: Workload, dst: Workload): boolean {
  const a = src.locality ?? NO_LOCALITY;
  const b = dst.locality ?? NO_LOCALITY;
  switch (scope) {
    case 'Region':
      return a.region === b.region;
    case 'Zone':
      return a.zone === b.zone;
    case 'Subzone':
      return a.subzone === b.subzone;
    case 'Node':
      return src.node === dst.node;
    case 'Cluster':
      return src.clusterId === dst.clusterId;
    case 'Network':
      return src.network === dst.network;
  }
}

/**
 * ztunnel `sample_weighted_waypoint` then the `waypoint` field: a weighted
 * random choice among `weightedWaypoints` (weight 0 never chosen); when the
 * list is empty or every weight is 0, the single `waypoint` (if any).
 */
export function pickServiceWaypoint(service: Service, random: () => number): GatewayAddress | undefined {
  if (service.weightedWaypoints.length > 0) {
    const picked = weightedPick(service.weightedWaypoints, (w) => w.weight, random);
    if (picked !== undefined) return picked.destination;
  }
  return service.waypoint;
}

/**
 * A random element with probability proportional to its weight. Elements
 * with weight ≤ 0 (or not finite) are never chosen; undefined when no
 * element has a positive weight.
 */
export function weightedPick<T>(items: readonly T[], weight: (item: T) => number, random: () => number): T | undefined {
  let total = 0;
  for (const item of items) {
    const w = weight(item);
    if (Number.isFinite(w) && w > 0) total += w;
  }
  if (total <= 0) return undefined;
  const r = clamp01(random()) * total;
  let acc = 0;
  let last: T | undefined;
  for (const item of items) {
    const w = weight(item);
    if (!(Number.isFinite(w) && w > 0)) continue;
    acc += w;
    last = item;
    if (r < acc) return item;
  }
  return last;
}

function clamp01(x: number): number {
  if (!Number.isFinite(x) || x < 0) return 0;
  return x >= 1 ? 1 - Number.EPSILON : x;
}

function positive(n: number | undefined): n is number {
  return n !== undefined && n > 0;
}
