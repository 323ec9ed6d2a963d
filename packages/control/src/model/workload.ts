/**
 * A workload (pod, VM, WorkloadEntry) as the data plane sees it: validated,
 * defaults applied, immutable. Built only by the translators.
 */
import type { GatewayAddress } from './gateway.js';
import type { Identity } from './identity.js';

export type TunnelProtocol = 'HBONE' | 'TCP';
export type WorkloadStatus = 'Healthy' | 'Unhealthy';
export type WorkloadType = 'deployment' | 'cronjob' | 'pod' | 'job';
export type NetworkMode = 'Standard' | 'HostNetwork';
export type AppProtocol = 'Unknown' | 'HTTP11' | 'HTTP2' | 'GRPC' | 'TCP' | 'TLS';

export interface Locality {
  readonly region: string;
  readonly zone: string;
  readonly subzone: string;
}

export interface PortMapping {
  readonly servicePort: number;
  /** 0: use the service's target port for this service port. */
  readonly targetPort: number;
  readonly appProtocol: AppProtocol;
}

export interface ApplicationTunnel {
  readonly protocol: 'NONE' | 'PROXY';
  /** Port the tunnel listens on; undefined means the original target port. */
  readonly port: number | undefined;
}

/** A service this workload backs, with its per-workload port map. */
export interface WorkloadServiceRef {
  /** `namespace/hostname`. */
  readonly key: string;
  readonly ports: readonly PortMapping[];
}

export interface Workload {
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  /** Canonical IPs; empty for workloads known only by hostname. */
  readonly addresses: readonly string[];
  readonly hostname: string;
  readonly network: string;
  readonly protocol: TunnelProtocol;
  /** Defaulted: trust domain `cluster.local`, service account `default`. */
  readonly identity: Identity;
  readonly waypoint: GatewayAddress | undefined;
  readonly networkGateway: GatewayAddress | undefined;
  readonly node: string;
  readonly canonicalName: string;
  readonly canonicalRevision: string;
  readonly workloadType: WorkloadType;
  readonly workloadName: string;
  readonly nativeTunnel: boolean;
  readonly applicationTunnel: ApplicationTunnel | undefined;
  readonly services: readonly WorkloadServiceRef[];
  /** `namespace/name` keys of selector-scoped policies. */
  readonly authorizationPolicies: readonly string[];
  readonly status: WorkloadStatus;
  /** Defaulted to `Kubernetes`. */
  readonly clusterId: string;
  readonly locality: Locality | undefined;
  readonly networkMode: NetworkMode;
  /** Load-balancing weight; defaulted to 1. */
  readonly capacity: number;
}

export const DEFAULT_CLUSTER_ID = 'Kubernetes';
