/**
 * Which endpoint of a (service, service port) gets the next attempt: the
 * candidates from one workload-discovery snapshot (pure, cached per snapshot
 * endpoint list), then Envoy's LEAST_REQUEST pick over them with an injected
 * Random.
 *
 * Candidates, in order:
 * 1. the service must define the port (otherwise there is nothing to route);
 * 2. health: only Healthy endpoints (the snapshot already drops the others
 *    unless the service's health policy is AllowAll; checked again here);
 * 3. the endpoint needs an IP (hostname-only workloads cannot be dialed) on
 *    the waypoint's own network (other networks would need an east-west
 *    gateway, which this waypoint does not do) and a usable target port: its
 *    own port map entry, else the service's targetPort (0 means neither);
 * 4. capacity 0 is never chosen;
 * 5. locality, when the service has a load-balancing mode other than
 *    Standard with routing preferences (trafficDistribution / PreferClose):
 *    ztunnel's ranking with the waypoint's own workload as the source —
 *    Strict keeps only full matches, other modes the best rank present.
 *
 * Workload-addressed traffic (`target.workload`, Istio's `encap` cluster)
 * has exactly that workload as its candidate, without health or locality
 * filters.
 *
 * The pick (Envoy's LEAST_REQUEST with its defaults, choice_count 2, active
 * request bias 1): with equal weights, two random candidates (with
 * replacement), the one with fewer active requests, the first on a tie; with
 * unequal capacities, a random pick weighted by capacity / (active + 1)
 * (Envoy runs an EDF scheduler over the same effective weights). A retry
 * applies Envoy's previous_hosts predicate: a candidate already attempted is
 * rejected and the pick re-run, up to `hostSelectionRetryMaxAttempts` (Istio
 * sets 5) extra times; the last pick stands if all were rejected.
 *
 * Invariants: resolution never throws and never returns an empty candidate
 * list (it says why there is none); the same snapshot endpoint list,
 * service and local workload always give the same (cached) candidate set.
 */
import {
  identityToString,
  parseIdentity,
  serviceKey,
  type Identity,
  type LoadBalancerScope,
  type Locality,
  type Random,
  type Service,
  type ServiceEndpoint,
  type Snapshot,
  type Workload,
} from '@ambient/control';
import { formatSocketAddress } from '@ambient/dataplane';
import type { ChosenEndpoint, UpstreamTarget } from './types.js';

/** Istio's host_selection_retry_max_attempts. */
const HOST_SELECTION_RETRY_MAX_ATTEMPTS = 5;

/** How the waypoint reaches an endpoint: HBONE to its ztunnel, or plain TCP for a workload outside the mesh. */
type EndpointTransport = 'hbone' | 'plaintext';

export interface Candidate {
  readonly endpoint: ChosenEndpoint;
  /** Identifies the endpoint's connections: workload, address, transport and expected identities. */
  readonly key: string;
  readonly ip: string;
  readonly transport: EndpointTransport;
  /** Identities the endpoint's ztunnel may prove: the workload's own, then the service's SANs (as ztunnel's outbound). */
  readonly expectedIdentities: readonly Identity[];
  readonly weight: number;
}

export type CandidateSet =
  | { readonly kind: 'candidates'; readonly candidates: readonly Candidate[]; readonly equalWeights: boolean }
  | { readonly kind: 'none'; readonly reason: string };

/** What the waypoint knows about itself, for network and locality decisions. */
export interface LocalInfo {
  /** NETWORK of this waypoint ('' by default). */
  readonly network: string;
  /** The waypoint's own workload from discovery, when known (locality ranking needs it). */
  readonly workload: Workload | undefined;
}

interface CacheEntry {
  readonly local: LocalInfo;
  readonly set: CandidateSet;
}

const cache = new WeakMap<readonly ServiceEndpoint[], WeakMap<Service, Map<number, CacheEntry>>>();

const pinnedCache = new WeakMap<Workload, WeakMap<Service, Map<number, CacheEntry>>>();

/**
 * The candidate endpoints of a service port in one snapshot. With
 * `target.workload` (workload-addressed traffic) the one candidate is that
 * workload as the snapshot has it now, whatever its health, on the target
 * port the service maps for it.
 */
export function resolveCandidates(snapshot: Snapshot, target: UpstreamTarget, local: LocalInfo): CandidateSet {
  if (target.workload !== undefined) return resolvePinned(snapshot, target, target.workload, local);
  const endpoints = snapshot.endpoints(serviceKey(target.service));
  let byService = cache.get(endpoints);
  if (byService === undefined) {
    byService = new WeakMap();
    cache.set(endpoints, byService);
  }
  let byPort = byService.get(target.service);
  if (byPort === undefined) {
    byPort = new Map();
    byService.set(target.service, byPort);
  }
  const hit = byPort.get(target.servicePort);
  if (hit !== undefined && sameLocal(hit.local, local)) return hit.set;
  const set = buildCandidates(endpoints, target, local);
  byPort.set(target.servicePort, { local, set });
  return set;
}

function resolvePinned(snapshot: Snapshot, target: UpstreamTarget, pinned: Workload, local: LocalInfo): CandidateSet {
  const wl = snapshot.workload(pinned.uid) ?? pinned;
  let byService = pinnedCache.get(wl);
  if (byService === undefined) {
    byService = new WeakMap();
    pinnedCache.set(wl, byService);
  }
  let byPort = byService.get(target.service);
  if (byPort === undefined) {
    byPort = new Map();
    byService.set(target.service, byPort);
  }
  const hit = byPort.get(target.servicePort);
  if (hit !== undefined && sameLocal(hit.local, local)) return hit.set;
  const key = serviceKey(target.service);
  const ports = new Map<number, number>();
  for (const p of wl.services.find((ref) => ref.key === key)?.ports ?? []) ports.set(p.servicePort, p.targetPort);
  const endpoint: ServiceEndpoint = { workloadUid: wl.uid, ports, workload: wl, status: wl.status };
  const set = buildCandidates([endpoint], target, local, true);
  byPort.set(target.servicePort, { local, set });
  return set;
}

function sameLocal(a: LocalInfo, b: LocalInfo): boolean {
  return a === b || (a.network === b.network && a.workload === b.workload);
}

/** Pure: the candidates of `endpoints` for the target (see the module comment); `pinned`: no health or locality filter. */
function buildCandidates(endpoints: readonly ServiceEndpoint[], target: UpstreamTarget, local: LocalInfo, pinned = false): CandidateSet {
  const { service, servicePort } = target;
  const name = `${service.namespace}/${service.hostname}`;
  const port = service.ports.find((p) => p.servicePort === servicePort);
  if (port === undefined) return { kind: 'none', reason: `service ${name} has no port ${servicePort}` };
  const allowUnhealthy = pinned || service.loadBalancing?.healthPolicy === 'AllowAll';
  const sans = serviceSanIdentities(service);
  const usable: Candidate[] = [];
  for (const ep of endpoints) {
    const wl = ep.workload;
    if (ep.status !== 'Healthy' && !allowUnhealthy) continue;
    if (!(wl.capacity > 0)) continue;
    const ip = wl.addresses[0];
    if (ip === undefined) continue;
    if (wl.network !== local.network) continue;
    const own = ep.ports.get(servicePort);
    const targetPort = own !== undefined && own > 0 ? own : port.targetPort;
    if (!(targetPort > 0)) continue;
    const transport: EndpointTransport = wl.protocol === 'HBONE' ? 'hbone' : 'plaintext';
    const expectedIdentities = transport === 'hbone' ? uniqueIdentities([wl.identity, ...sans]) : [];
    const address = formatSocketAddress({ ip, port: targetPort });
    usable.push({
      endpoint: { workload: wl, identity: wl.identity, address, service, servicePort, targetPort },
      key: JSON.stringify([wl.uid, address, transport, expectedIdentities.map(identityToString)]),
      ip,
      transport,
      expectedIdentities,
      weight: wl.capacity,
    });
  }
  if (usable.length === 0) return { kind: 'none', reason: `service ${name} has no healthy endpoint for port ${servicePort}` };
  const ranked = pinned ? usable : rankByLocality(usable, service, local.workload);
  if (ranked.length === 0) {
    const prefs = service.loadBalancing?.routingPreference ?? [];
    return { kind: 'none', reason: `service ${name} has no endpoint matching its strict routing preference (${prefs.join(', ')})` };
  }
  const first = ranked[0] as Candidate;
  return { kind: 'candidates', candidates: ranked, equalWeights: ranked.every((c) => c.weight === first.weight) };
}

function serviceSanIdentities(service: Service): Identity[] {
  const out: Identity[] = [];
  for (const san of service.subjectAltNames) {
    const parsed = parseIdentity(san);
    if (parsed.ok) out.push(parsed.value);
  }
  return out;
}

function uniqueIdentities(ids: readonly Identity[]): Identity[] {
  const seen = new Set<string>();
  return ids.filter((id) => {
    const s = identityToString(id);
    if (seen.has(s)) return false;
    seen.add(s);
    return true;
  });
}

const NO_LOCALITY: Locality = { region: '', zone: '', subzone: '' };

/**
 * ztunnel's locality ranking: for each routing preference in order an
 * endpoint scores while it shares that scope with the source, stopping at the
 * first difference; Network as the first preference does not stop the count
 * and a match is worth all other scopes together. Without a source workload
 * or with mode Standard there is no ranking.
 */
function rankByLocality(candidates: Candidate[], service: Service, source: Workload | undefined): Candidate[] {
  const lb = service.loadBalancing;
  if (lb === undefined || lb.mode === 'Standard' || lb.routingPreference.length === 0 || source === undefined) return candidates;
  const prefs = lb.routingPreference;
  const networkFirst = prefs[0] === 'Network';
  let best = -1;
  const ranks: number[] = [];
  const kept: Candidate[] = [];
  for (const c of candidates) {
    let rank = 0;
    let bonus = 0;
    for (const scope of prefs) {
      if (scope === 'Network' && networkFirst) {
        if (sameScope(scope, source, c.endpoint.workload)) bonus = prefs.length - 1;
        else continue;
      } else if (!sameScope(scope, source, c.endpoint.workload)) {
        break;
      }
      rank++;
    }
    if (lb.mode === 'Strict' && rank !== prefs.length) continue;
    const total = rank + bonus;
    kept.push(c);
    ranks.push(total);
    if (total > best) best = total;
  }
  return kept.filter((_, i) => ranks[i] === best);
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

export interface EndpointPickerOptions {
  readonly random: Random;
  /** In-flight requests per candidate key (the connections' count). */
  readonly activeRequests: (key: string) => number;
  readonly hostSelectionRetryMaxAttempts?: number;
}

/** Envoy's LEAST_REQUEST with the previous_hosts retry predicate. */
export class EndpointPicker {
  readonly #random: Random;
  readonly #active: (key: string) => number;
  readonly #maxReselect: number;

  constructor(options: EndpointPickerOptions) {
    this.#random = options.random;
    this.#active = options.activeRequests;
    this.#maxReselect = Math.max(0, Math.floor(options.hostSelectionRetryMaxAttempts ?? HOST_SELECTION_RETRY_MAX_ATTEMPTS));
  }

  /** One candidate; `attempted` holds the keys of endpoints earlier attempts went to. */
  pick(set: Extract<CandidateSet, { kind: 'candidates' }>, attempted?: ReadonlySet<string>): Candidate {
    let picked = this.#pickOnce(set);
    if (attempted === undefined || attempted.size === 0) return picked;
    for (let i = 0; i < this.#maxReselect && attempted.has(picked.key); i++) picked = this.#pickOnce(set);
    return picked;
  }

  #pickOnce(set: Extract<CandidateSet, { kind: 'candidates' }>): Candidate {
    const list = set.candidates;
    if (list.length === 1) return list[0] as Candidate;
    if (set.equalWeights) {
      let host = list[this.#index(list.length)] as Candidate;
      const other = list[this.#index(list.length)] as Candidate;
      if (this.#active(other.key) < this.#active(host.key)) host = other;
      return host;
    }
    let total = 0;
    for (const c of list) total += c.weight / (this.#active(c.key) + 1);
    let r = unit(this.#random()) * total;
    for (const c of list) {
      r -= c.weight / (this.#active(c.key) + 1);
      if (r < 0) return c;
    }
    return list[list.length - 1] as Candidate;
  }

  #index(n: number): number {
    return Math.min(n - 1, Math.floor(unit(this.#random()) * n));
  }
}

function unit(x: number): number {
  return Number.isFinite(x) && x > 0 ? (x >= 1 ? 1 - Number.EPSILON : x) : 0;
}
