/**
 * Model → JSON in the layout of ztunnel's `/config_dump` (src/admin.rs and the
 * serde derives in src/state/workload.rs, src/state/service.rs, src/rbac.rs):
 * camelCase keys, the same enum spellings, the same "skip when default"
 * choices, so tools written against ztunnel's dump read ours. The same keys
 * are what the static-config loader (src/local/static-config.ts) reads back.
 *
 * The model keeps two things ztunnel's dump does not show: a service's
 * `ingressUseWaypoint` (printed only when true, an extra key our loader reads)
 * and each port's app protocol (not printed: ztunnel keeps ports as a plain
 * `{servicePort: targetPort}` map, so it does not survive a dump → load).
 */
import {
  policyKey,
  type Authorization,
  type Match,
  type PolicyAction,
  type PolicyScope,
  type StringMatch,
} from '../model/authorization.js';
import { gatewayDestinationString, type GatewayAddress } from '../model/gateway.js';
import { formatCidr } from '../model/ip.js';
import {
  serviceKey,
  type Endpoint,
  type LoadBalancerHealthPolicy,
  type LoadBalancerMode,
  type LoadBalancerScope,
  type Service,
  type ServicePort,
  type Visibility,
} from '../model/service.js';
import type {
  ApplicationTunnel,
  Locality,
  NetworkMode,
  PortMapping,
  TunnelProtocol,
  Workload,
  WorkloadStatus,
} from '../model/workload.js';

export interface GatewayDump {
  /** `network/ip` or `namespace/hostname`. */
  readonly destination: string;
  readonly hboneMtlsPort: number;
}

export interface WorkloadDump {
  readonly workloadIps: readonly string[];
  readonly waypoint?: GatewayDump;
  readonly networkGateway?: GatewayDump;
  readonly protocol: TunnelProtocol;
  readonly networkMode: NetworkMode;
  readonly uid?: string;
  readonly name: string;
  readonly namespace: string;
  readonly trustDomain?: string;
  readonly serviceAccount?: string;
  readonly network?: string;
  readonly workloadName?: string;
  readonly workloadType?: string;
  readonly canonicalName?: string;
  readonly canonicalRevision?: string;
  readonly hostname?: string;
  readonly node?: string;
  readonly nativeTunnel?: true;
  readonly applicationTunnel?: { readonly protocol: ApplicationTunnel['protocol']; readonly port: number | null };
  readonly authorizationPolicies?: readonly string[];
  readonly status: WorkloadStatus;
  readonly clusterId: string;
  readonly locality?: Locality;
  /** `namespace/hostname` of each service this workload backs (its ports are in the service's endpoints). */
  readonly services?: readonly string[];
  readonly capacity: number;
}

export interface EndpointDump {
  readonly workloadUid: string;
  /** Service port → target port (0: the service's target port). JSON keys are strings. */
  readonly port: Readonly<Record<string, number>>;
  readonly status: WorkloadStatus;
}

export interface ServiceDump {
  readonly name: string;
  readonly namespace: string;
  readonly hostname: string;
  /** `network/ip`. */
  readonly vips: readonly string[];
  readonly cidrVips?: ReadonlyArray<{ readonly network: string; readonly cidr: string }>;
  readonly ports: Readonly<Record<string, number>>;
  /** Keyed by workload uid. */
  readonly endpoints: Readonly<Record<string, EndpointDump>>;
  readonly subjectAltNames: readonly string[];
  readonly waypoint?: GatewayDump;
  readonly weightedWaypoints?: ReadonlyArray<{ readonly destination: GatewayDump; readonly weight: number }>;
  readonly loadBalancer?: {
    readonly routingPreferences: readonly LoadBalancerScope[];
    readonly mode: LoadBalancerMode;
    readonly healthPolicy: LoadBalancerHealthPolicy;
  };
  /** Absent for Automatic (ztunnel: `Option<IpFamily>` = None). */
  readonly ipFamilies?: 'Dual' | 'IPv4' | 'IPv6';
  readonly canonical: boolean;
  readonly visibility: Visibility;
  readonly ingressUseWaypoint?: true;
}

export type StringMatchDump =
  | { readonly Exact: string }
  | { readonly Prefix: string }
  | { readonly Suffix: string }
  | { readonly Presence: readonly [] };

/** Only non-empty lists are printed (ztunnel: `skip_serializing_if = "Vec::is_empty"`). */
export interface MatchDump {
  readonly namespaces?: readonly StringMatchDump[];
  readonly notNamespaces?: readonly StringMatchDump[];
  readonly serviceAccounts?: ReadonlyArray<{ readonly namespace: string; readonly serviceAccount: string }>;
  readonly notServiceAccounts?: ReadonlyArray<{ readonly namespace: string; readonly serviceAccount: string }>;
  readonly principals?: readonly StringMatchDump[];
  readonly notPrincipals?: readonly StringMatchDump[];
  readonly sourceIps?: readonly string[];
  readonly notSourceIps?: readonly string[];
  readonly destinationIps?: readonly string[];
  readonly notDestinationIps?: readonly string[];
  readonly destinationPorts?: readonly number[];
  readonly notDestinationPorts?: readonly number[];
}

export interface PolicyDump {
  readonly name: string;
  readonly namespace: string;
  readonly scope: PolicyScope;
  readonly action: PolicyAction;
  /** rules → clauses → matches. */
  readonly rules: ReadonlyArray<ReadonlyArray<readonly MatchDump[]>>;
  readonly dryRun: boolean;
}

/** The mesh part of config_dump: what the static config can load back. */
export interface MeshDump {
  readonly workloads: readonly WorkloadDump[];
  readonly services: readonly ServiceDump[];
  readonly policies: readonly PolicyDump[];
  /** Endpoints of services not (yet) known, by `namespace/hostname`, then workload uid. */
  readonly stagedServices: Readonly<Record<string, Readonly<Record<string, EndpointDump>>>>;
}

/** An endpoint to print; `status` is the backing workload's (Healthy when not given). */
export type DumpEndpoint = Endpoint & { readonly status?: WorkloadStatus };

export function workloadToDump(w: Workload): WorkloadDump {
  const out: Record<string, unknown> = { workloadIps: [...w.addresses] };
  if (w.waypoint) out['waypoint'] = gatewayToDump(w.waypoint);
  if (w.networkGateway) out['networkGateway'] = gatewayToDump(w.networkGateway);
  out['protocol'] = w.protocol;
  out['networkMode'] = w.networkMode;
  setIfNotEmpty(out, 'uid', w.uid);
  out['name'] = w.name;
  out['namespace'] = w.namespace;
  setIfNotEmpty(out, 'trustDomain', w.identity.trustDomain);
  setIfNotEmpty(out, 'serviceAccount', w.identity.serviceAccount);
  setIfNotEmpty(out, 'network', w.network);
  setIfNotEmpty(out, 'workloadName', w.workloadName);
  setIfNotEmpty(out, 'workloadType', w.workloadType);
  setIfNotEmpty(out, 'canonicalName', w.canonicalName);
  setIfNotEmpty(out, 'canonicalRevision', w.canonicalRevision);
  setIfNotEmpty(out, 'hostname', w.hostname);
  setIfNotEmpty(out, 'node', w.node);
  if (w.nativeTunnel) out['nativeTunnel'] = true;
  if (w.applicationTunnel) out['applicationTunnel'] = { protocol: w.applicationTunnel.protocol, port: w.applicationTunnel.port ?? null };
  if (w.authorizationPolicies.length > 0) out['authorizationPolicies'] = [...w.authorizationPolicies];
  out['status'] = w.status;
  out['clusterId'] = w.clusterId;
  if (w.locality) out['locality'] = { region: w.locality.region, zone: w.locality.zone, subzone: w.locality.subzone };
  if (w.services.length > 0) out['services'] = w.services.map((s) => s.key);
  out['capacity'] = w.capacity;
  return out as unknown as WorkloadDump;
}

export function serviceToDump(s: Service, endpoints: readonly DumpEndpoint[]): ServiceDump {
  const out: Record<string, unknown> = {
    name: s.name,
    namespace: s.namespace,
    hostname: s.hostname,
    vips: s.vips.map((v) => `${v.network}/${v.address}`),
  };
  if (s.cidrVips.length > 0) out['cidrVips'] = s.cidrVips.map((c) => ({ network: c.network, cidr: formatCidr(c.cidr) }));
  out['ports'] = portsToDump(s.ports);
  out['endpoints'] = endpointsToDump(endpoints);
  out['subjectAltNames'] = [...s.subjectAltNames];
  if (s.waypoint) out['waypoint'] = gatewayToDump(s.waypoint);
  if (s.weightedWaypoints.length > 0) {
    out['weightedWaypoints'] = s.weightedWaypoints.map((w) => ({ destination: gatewayToDump(w.destination), weight: w.weight }));
  }
  if (s.loadBalancing) {
    out['loadBalancer'] = {
      routingPreferences: [...s.loadBalancing.routingPreference],
      mode: s.loadBalancing.mode,
      healthPolicy: s.loadBalancing.healthPolicy,
    };
  }
  if (s.ipFamilies !== 'Automatic') out['ipFamilies'] = s.ipFamilies;
  out['canonical'] = s.canonical;
  out['visibility'] = s.visibility;
  if (s.ingressUseWaypoint) out['ingressUseWaypoint'] = true;
  return out as unknown as ServiceDump;
}

export function policyToDump(p: Authorization): PolicyDump {
  return {
    name: p.name,
    namespace: p.namespace,
    scope: p.scope,
    action: p.action,
    rules: p.rules.map((r) => r.clauses.map((c) => c.matches.map(matchToDump))),
    dryRun: p.dryRun,
  };
}

/**
 * The workloads, services and policies sections (sorted by uid, hostname and
 * key, as ztunnel sorts them), with each service's endpoints derived from the
 * workloads' `services` entries. Endpoints of services not in `services` go to
 * `stagedServices`. Unlike ztunnel, which leaves unhealthy endpoints out of a
 * service unless its health policy is AllowAll, every endpoint is listed with
 * its status, so the dump shows every workload → service link.
 */
export function meshToDump(mesh: {
  readonly workloads: readonly Workload[];
  readonly services: readonly Service[];
  readonly policies: readonly Authorization[];
}): MeshDump {
  const byService = new Map<string, DumpEndpoint[]>();
  for (const w of mesh.workloads) {
    for (const ref of w.services) {
      const list = byService.get(ref.key) ?? [];
      list.push({ workloadUid: w.uid, ports: portMap(ref.ports), status: w.status });
      byService.set(ref.key, list);
    }
  }
  const services = [...mesh.services].sort((a, b) => compare(a.hostname, b.hostname) || compare(a.namespace, b.namespace));
  const known = new Set(services.map(serviceKey));
  const stagedServices: Record<string, Record<string, EndpointDump>> = {};
  for (const [key, eps] of [...byService].sort(([a], [b]) => compare(a, b))) {
    if (!known.has(key)) stagedServices[key] = endpointsToDump(eps);
  }
  return {
    workloads: [...mesh.workloads].sort((a, b) => compare(a.uid, b.uid)).map(workloadToDump),
    services: services.map((s) => serviceToDump(s, byService.get(serviceKey(s)) ?? [])),
    policies: [...mesh.policies].sort((a, b) => compare(policyKey(a), policyKey(b))).map(policyToDump),
    stagedServices,
  };
}

function gatewayToDump(g: GatewayAddress): GatewayDump {
  return { destination: gatewayDestinationString(g.destination), hboneMtlsPort: g.hboneMtlsPort };
}

function portsToDump(ports: readonly (ServicePort | PortMapping)[]): Record<string, number> {
  return Object.fromEntries(ports.map((p) => [String(p.servicePort), p.targetPort]));
}

function portMap(ports: readonly PortMapping[]): Map<number, number> {
  return new Map(ports.map((p) => [p.servicePort, p.targetPort]));
}

function endpointsToDump(endpoints: readonly DumpEndpoint[]): Record<string, EndpointDump> {
  const out: Record<string, EndpointDump> = {};
  for (const e of [...endpoints].sort((a, b) => compare(a.workloadUid, b.workloadUid))) {
    const port = Object.fromEntries([...e.ports].sort(([a], [b]) => a - b).map(([svc, target]) => [String(svc), target]));
    out[e.workloadUid] = { workloadUid: e.workloadUid, port, status: e.status ?? 'Healthy' };
  }
  return out;
}

function matchToDump(m: Match): MatchDump {
  const out: Record<string, unknown> = {};
  const put = (key: keyof MatchDump, list: readonly unknown[]) => {
    if (list.length > 0) out[key] = list;
  };
  put('namespaces', m.namespaces.map(stringMatchToDump));
  put('notNamespaces', m.notNamespaces.map(stringMatchToDump));
  put('serviceAccounts', m.serviceAccounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })));
  put('notServiceAccounts', m.notServiceAccounts.map((s) => ({ namespace: s.namespace, serviceAccount: s.serviceAccount })));
  put('principals', m.principals.map(stringMatchToDump));
  put('notPrincipals', m.notPrincipals.map(stringMatchToDump));
  put('sourceIps', m.sourceIps.map(formatCidr));
  put('notSourceIps', m.notSourceIps.map(formatCidr));
  put('destinationIps', m.destinationIps.map(formatCidr));
  put('notDestinationIps', m.notDestinationIps.map(formatCidr));
  put('destinationPorts', [...m.destinationPorts]);
  put('notDestinationPorts', [...m.notDestinationPorts]);
  return out as MatchDump;
}

/** serde's externally tagged enum, as serde_json prints it (`Presence()` is an empty tuple). */
function stringMatchToDump(s: StringMatch): StringMatchDump {
  switch (s.kind) {
    case 'exact':
      return { Exact: s.value };
    case 'prefix':
      return { Prefix: s.value };
    case 'suffix':
      return { Suffix: s.value };
    case 'presence':
      return { Presence: [] };
  }
}

function setIfNotEmpty(out: Record<string, unknown>, key: string, value: string): void {
  if (value !== '') out[key] = value;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
