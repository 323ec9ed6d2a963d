/**
 * istio.workload.Service → model Service, following ztunnel's
 * `TryFrom<&XdsService>` (src/state/service.rs):
 *
 * - VIPs: `NetworkAddress.length` present and different from the address width
 *   makes a CIDR VIP (`length` 0 included); absent or equal to the width is an
 *   exact VIP; longer than the width is refused (ztunnel: `PrefixLenError`).
 * - Load balancing: routing preference UNSPECIFIED_SCOPE is refused ("invalid
 *   target"); mode UNSPECIFIED_MODE means Standard; unknown numbers refused.
 * - `ip_families` AUTOMATIC → Automatic (ztunnel: no family restriction).
 * - `visibility`: an unknown number falls back to PUBLIC (ztunnel fails open
 *   there rather than dropping the service).
 * - Weighted waypoints need a destination.
 *
 * Beyond ztunnel (which does not check them) we require a SPIFFE-safe namespace
 * and an RFC 1123 hostname (wildcard `*.` allowed, as ServiceEntry hosts are),
 * and ports in 1..65535 (target port 0: resolved per endpoint, a named port).
 *
 * `extensions` are accepted and ignored, as ztunnel does.
 */
import {
  IPFamilies,
  IPFamiliesSchema,
  LoadBalancing_HealthPolicy,
  LoadBalancing_HealthPolicySchema,
  LoadBalancing_Mode,
  LoadBalancing_ModeSchema,
  LoadBalancing_Scope,
  LoadBalancing_ScopeSchema,
  Service_Visibility,
  type LoadBalancing as PbLoadBalancing,
  type Service as PbService,
} from '../gen/istio/workload/workload_pb.js';
import type { WeightedWaypoint } from '../model/gateway.js';
import { spiffeSegmentProblem } from '../model/identity.js';
import { makeCidr, type NetworkAddress, type NetworkCidr } from '../model/ip.js';
import type {
  IpFamilies,
  LoadBalancerHealthPolicy,
  LoadBalancerMode,
  LoadBalancerScope,
  LoadBalancing,
  Service,
  Visibility,
} from '../model/service.js';
import type { Result } from '../result.js';
import { hostnameProblem, ipFromWire, mapEnum, Problems } from './common.js';
import { gatewayAddress, weightedWaypoint } from './gateway.js';
import { portMappings } from './workload.js';

const SCOPES: Partial<Record<number, LoadBalancerScope>> = {
  [LoadBalancing_Scope.REGION]: 'Region',
  [LoadBalancing_Scope.ZONE]: 'Zone',
  [LoadBalancing_Scope.SUBZONE]: 'Subzone',
  [LoadBalancing_Scope.NODE]: 'Node',
  [LoadBalancing_Scope.CLUSTER]: 'Cluster',
  [LoadBalancing_Scope.NETWORK]: 'Network',
};
const SCOPE_UNSUPPORTED = { [LoadBalancing_Scope.UNSPECIFIED_SCOPE]: 'is not a routing preference' };

const MODES: Record<number, LoadBalancerMode> = {
  [LoadBalancing_Mode.UNSPECIFIED_MODE]: 'Standard',
  [LoadBalancing_Mode.STRICT]: 'Strict',
  [LoadBalancing_Mode.FAILOVER]: 'Failover',
  [LoadBalancing_Mode.PASSTHROUGH]: 'Passthrough',
};

const HEALTH_POLICIES: Record<number, LoadBalancerHealthPolicy> = {
  [LoadBalancing_HealthPolicy.ONLY_HEALTHY]: 'OnlyHealthy',
  [LoadBalancing_HealthPolicy.ALLOW_ALL]: 'AllowAll',
};

const IP_FAMILIES: Record<number, IpFamilies> = {
  [IPFamilies.AUTOMATIC]: 'Automatic',
  [IPFamilies.IPV4_ONLY]: 'IPv4',
  [IPFamilies.IPV6_ONLY]: 'IPv6',
  [IPFamilies.DUAL]: 'Dual',
};

const VISIBILITIES: Record<number, Visibility> = {
  [Service_Visibility.PUBLIC]: 'Public',
  [Service_Visibility.NAMESPACE]: 'Namespace',
};

export function translateService(pb: PbService): Result<Service> {
  const problems = Problems.root();
  return problems.result(service(pb, problems));
}

function service(pb: PbService, problems: Problems): Service | undefined {
  const ns = spiffeSegmentProblem(pb.namespace);
  if (ns) problems.add('namespace', `namespace ${ns}`);
  const host = hostnameProblem(pb.hostname, { allowWildcard: true });
  if (host) problems.add('hostname', host);

  const vips: NetworkAddress[] = [];
  const cidrVips: NetworkCidr[] = [];
  pb.addresses.forEach((a, i) => {
    const field = `addresses[${i}]`;
    const ip = ipFromWire(a.address, `${field}.address`, problems);
    if (ip === undefined) return;
    const width = a.address.length * 8;
    if (a.length === undefined || a.length === width) {
      vips.push({ network: a.network, address: ip });
    } else if (a.length > width) {
      problems.add(`${field}.length`, `prefix length ${a.length} is longer than the ${width}-bit address ${ip}`);
    } else {
      const cidr = makeCidr(ip, a.length);
      if (cidr !== undefined) cidrVips.push({ network: a.network, cidr });
    }
  });

  const ports = portMappings(pb.ports, 'ports', problems);
  const waypoint = pb.waypoint && gatewayAddress(pb.waypoint, problems.at('waypoint'));
  const weightedWaypoints: WeightedWaypoint[] = [];
  pb.weightedWaypoints.forEach((w, i) => {
    const ww = weightedWaypoint(w, problems.at(`weightedWaypoints[${i}]`));
    if (ww !== undefined) weightedWaypoints.push(ww);
  });
  const loadBalancing = pb.loadBalancing && loadBalancer(pb.loadBalancing, problems.at('loadBalancing'));
  const ipFamilies = mapEnum(pb.ipFamilies, IPFamiliesSchema, IP_FAMILIES, 'ipFamilies', problems);
  const visibility = VISIBILITIES[pb.visibility] ?? 'Public';

  if (problems.count > 0 || ipFamilies === undefined) return undefined;
  return {
    name: pb.name,
    namespace: pb.namespace,
    hostname: pb.hostname,
    vips,
    cidrVips,
    ports,
    subjectAltNames: [...pb.subjectAltNames],
    waypoint,
    weightedWaypoints,
    loadBalancing,
    ipFamilies,
    canonical: pb.canonical,
    ingressUseWaypoint: pb.ingressUseWaypoint,
    visibility,
  };
}

function loadBalancer(pb: PbLoadBalancing, problems: Problems): LoadBalancing | undefined {
  const before = problems.count;
  const routingPreference: LoadBalancerScope[] = [];
  pb.routingPreference.forEach((s, i) => {
    const scope = mapEnum(s, LoadBalancing_ScopeSchema, SCOPES, `routingPreference[${i}]`, problems, SCOPE_UNSUPPORTED);
    if (scope !== undefined) routingPreference.push(scope);
  });
  const mode = mapEnum(pb.mode, LoadBalancing_ModeSchema, MODES, 'mode', problems);
  const healthPolicy = mapEnum(pb.healthPolicy, LoadBalancing_HealthPolicySchema, HEALTH_POLICIES, 'healthPolicy', problems);
  if (problems.count !== before || mode === undefined || healthPolicy === undefined) return undefined;
  return { routingPreference, mode, healthPolicy };
}
