/** A service (VIPs, ports, waypoint, load balancing) as the data plane sees it. */
import type { GatewayAddress, WeightedWaypoint } from './gateway.js';
import type { NetworkAddress, NetworkCidr } from './ip.js';
import type { AppProtocol } from './workload.js';

export type LoadBalancerScope = 'Region' | 'Zone' | 'Subzone' | 'Node' | 'Cluster' | 'Network';
export type LoadBalancerMode = 'Standard' | 'Strict' | 'Failover' | 'Passthrough';
export type LoadBalancerHealthPolicy = 'OnlyHealthy' | 'AllowAll';
export type IpFamilies = 'Automatic' | 'IPv4' | 'IPv6' | 'Dual';
export type Visibility = 'Public' | 'Namespace';

export interface LoadBalancing {
  readonly routingPreference: readonly LoadBalancerScope[];
  readonly mode: LoadBalancerMode;
  readonly healthPolicy: LoadBalancerHealthPolicy;
}

export interface ServicePort {
  readonly servicePort: number;
  readonly targetPort: number;
  readonly appProtocol: AppProtocol;
}

export interface Service {
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** Exact VIPs (full-length addresses). */
  readonly vips: readonly NetworkAddress[];
  /** CIDR VIPs (a prefix shorter than the address width). */
  readonly cidrVips: readonly NetworkCidr[];
  readonly ports: readonly ServicePort[];
  readonly subjectAltNames: readonly string[];
  readonly waypoint: GatewayAddress | undefined;
  readonly weightedWaypoints: readonly WeightedWaypoint[];
  readonly loadBalancing: LoadBalancing | undefined;
  readonly ipFamilies: IpFamilies;
  readonly canonical: boolean;
  readonly ingressUseWaypoint: boolean;
  readonly visibility: Visibility;
}

/** The service's xDS resource name and store key. */
export function serviceKey(s: { readonly namespace: string; readonly hostname: string }): string {
  return `${s.namespace}/${s.hostname}`;
}

/** One endpoint of a service, derived from a workload's `services` entry. */
export interface Endpoint {
  readonly workloadUid: string;
  /** Service port to target port for this workload (0: the service's target port). */
  readonly ports: ReadonlyMap<number, number>;
}
