/**
 * Builders for valid WDS protobuf messages (Workload, Service, Authorization)
 * and a ztunnel-shaped Node, with defaults a test can rely on. Every value a
 * builder fills in is one a real istiod would send; override what the test is
 * about and leave the rest.
 *
 * Defaults: namespace "default", service account "default", trust domain
 * "cluster.local", cluster "Kubernetes", network "" (the default network),
 * HBONE for workloads (they are in the ambient mesh), uid in istiod's
 * `<cluster>//Pod/<namespace>/<name>` form.
 */
import { create, type JsonObject } from '@bufbuild/protobuf';
import { EmptySchema } from '@bufbuild/protobuf/wkt';
import { NodeSchema, type Node } from '../gen/envoy/config/core/v3/base_pb.js';
import {
  Action,
  AddressSchema as AuthzAddressSchema,
  AuthorizationSchema,
  ClauseSchema,
  MatchSchema,
  RuleSchema,
  Scope,
  ServiceAccountMatchSchema,
  StringMatchSchema,
  type Authorization,
  type StringMatch,
} from '../gen/istio/security/authorization_pb.js';
import {
  GatewayAddressSchema,
  NamespacedHostnameSchema,
  NetworkAddressSchema,
  PortListSchema,
  PortSchema,
  ServiceSchema,
  TunnelProtocol,
  WorkloadSchema,
  WorkloadStatus,
  WorkloadType,
  type GatewayAddress,
  type Service,
  type Workload,
} from '../gen/istio/workload/workload_pb.js';
import { canonicalIp, ipToBytes, parseCidr } from '../model/ip.js';

/** Service port -> target port (0 = same as the service port). */
export type PortMap = Readonly<Record<number, number>>;

/** A waypoint or network gateway: `network/ip` or `namespace/hostname`, plus the HBONE port (default 15008). */
export interface GatewaySpec {
  readonly destination: string;
  readonly hboneMtlsPort?: number;
}

export interface WorkloadSpec {
  readonly uid?: string;
  readonly name?: string;
  readonly namespace?: string;
  readonly serviceAccount?: string;
  readonly trustDomain?: string;
  /** Workload IPs (default ["10.0.0.1"]). */
  readonly ips?: readonly string[];
  readonly network?: string;
  /** The node it runs on (default: none). */
  readonly node?: string;
  /** Default "HBONE". */
  readonly protocol?: 'HBONE' | 'TCP';
  /** `namespace/hostname` -> ports; these make the workload an endpoint of the service. */
  readonly services?: Readonly<Record<string, PortMap>>;
  readonly waypoint?: GatewaySpec;
  readonly networkGateway?: GatewaySpec;
  readonly canonicalName?: string;
  readonly canonicalRevision?: string;
  readonly workloadName?: string;
  readonly healthy?: boolean;
  readonly clusterId?: string;
  /** Policy keys (`namespace/name`) selecting this workload. */
  readonly authorizationPolicies?: readonly string[];
}

/** A valid Workload message. */
export function workload(spec: WorkloadSpec = {}): Workload {
  const name = spec.name ?? 'app-0';
  const namespace = spec.namespace ?? 'default';
  const clusterId = spec.clusterId ?? 'Kubernetes';
  const workloadName = spec.workloadName ?? name.replace(/-[^-]+$/, '');
  return create(WorkloadSchema, {
    uid: spec.uid ?? `${clusterId}//Pod/${namespace}/${name}`,
    name,
    namespace,
    addresses: (spec.ips ?? ['10.0.0.1']).map(ipBytes),
    network: spec.network ?? '',
    tunnelProtocol: (spec.protocol ?? 'HBONE') === 'HBONE' ? TunnelProtocol.HBONE : TunnelProtocol.NONE,
    trustDomain: spec.trustDomain ?? 'cluster.local',
    serviceAccount: spec.serviceAccount ?? 'default',
    node: spec.node ?? '',
    canonicalName: spec.canonicalName ?? workloadName,
    canonicalRevision: spec.canonicalRevision ?? 'latest',
    workloadType: WorkloadType.POD,
    workloadName,
    services: Object.fromEntries(
      Object.entries(spec.services ?? {}).map(([key, ports]) => [key, create(PortListSchema, { ports: portList(ports) })]),
    ),
    authorizationPolicies: [...(spec.authorizationPolicies ?? [])],
    status: spec.healthy === false ? WorkloadStatus.UNHEALTHY : WorkloadStatus.HEALTHY,
    clusterId,
    ...(spec.waypoint ? { waypoint: gateway(spec.waypoint) } : {}),
    ...(spec.networkGateway ? { networkGateway: gateway(spec.networkGateway) } : {}),
  });
}

export interface ServiceSpec {
  readonly name?: string;
  readonly namespace?: string;
  /** Default `<name>.<namespace>.svc.cluster.local`. */
  readonly hostname?: string;
  /** VIPs as `network/ip` or a bare IP on the default network (default ["10.96.0.1"]). */
  readonly vips?: readonly string[];
  /** Default {80: 8080}. */
  readonly ports?: PortMap;
  readonly subjectAltNames?: readonly string[];
  readonly waypoint?: GatewaySpec;
}

/** A valid Service message. Its resource name is `namespace/hostname`. */
export function service(spec: ServiceSpec = {}): Service {
  const name = spec.name ?? 'app';
  const namespace = spec.namespace ?? 'default';
  return create(ServiceSchema, {
    name,
    namespace,
    hostname: spec.hostname ?? `${name}.${namespace}.svc.cluster.local`,
    addresses: (spec.vips ?? ['10.96.0.1']).map((v) => {
      const { network, ip } = splitNetworkIp(v);
      return create(NetworkAddressSchema, { network, address: ipBytes(ip) });
    }),
    ports: portList(spec.ports ?? { 80: 8080 }),
    subjectAltNames: [...(spec.subjectAltNames ?? [])],
    ...(spec.waypoint ? { waypoint: gateway(spec.waypoint) } : {}),
  });
}

/**
 * One match (all its fields must hold). String matchers use Istio's syntax:
 * "x" exact, "x*" prefix, "*x" suffix, "*" presence.
 */
export interface MatchSpec {
  readonly namespaces?: readonly string[];
  readonly notNamespaces?: readonly string[];
  readonly principals?: readonly string[];
  readonly notPrincipals?: readonly string[];
  readonly serviceAccounts?: ReadonlyArray<{ readonly namespace: string; readonly serviceAccount: string }>;
  readonly notServiceAccounts?: ReadonlyArray<{ readonly namespace: string; readonly serviceAccount: string }>;
  /** CIDRs or bare IPs. */
  readonly sourceIps?: readonly string[];
  readonly notSourceIps?: readonly string[];
  readonly destinationIps?: readonly string[];
  readonly notDestinationIps?: readonly string[];
  readonly destinationPorts?: readonly number[];
  readonly notDestinationPorts?: readonly number[];
}

export interface PolicySpec {
  readonly name?: string;
  readonly namespace?: string;
  /** Default "Namespace" (or "Global" when namespace is istio-system and scope is unset). */
  readonly scope?: 'Global' | 'Namespace' | 'WorkloadSelector';
  readonly dryRun?: boolean;
  /**
   * Rules (OR) of clauses (AND) of matches (OR), as in ztunnel's config_dump
   * and static config. Default: one rule with one clause matching every source
   * in the mesh (`principals: ["*"]`), so an allow policy allows and a deny
   * policy denies everything it selects.
   */
  readonly rules?: ReadonlyArray<ReadonlyArray<ReadonlyArray<MatchSpec>>>;
}

export function allowPolicy(spec: PolicySpec = {}): Authorization {
  return policy(Action.ALLOW, { name: 'allow', ...spec });
}

export function denyPolicy(spec: PolicySpec = {}): Authorization {
  return policy(Action.DENY, { name: 'deny', ...spec });
}

export interface ZtunnelNodeSpec {
  /** Default "node-a". */
  readonly nodeName?: string;
  readonly podName?: string;
  /** Default "istio-system". */
  readonly namespace?: string;
  readonly instanceIp?: string;
  /** Extra Node.metadata entries (e.g. CLUSTER_ID). */
  readonly metadata?: JsonObject;
}

/** The Node ztunnel sends (reference ztunnel.md 4.3). */
export function ztunnelNode(spec: ZtunnelNodeSpec = {}): Node {
  const namespace = spec.namespace ?? 'istio-system';
  const pod = spec.podName ?? 'ztunnel-0';
  const ip = spec.instanceIp ?? '1.1.1.1';
  return create(NodeSchema, {
    id: `ztunnel~${ip}~${pod}.${namespace}~${namespace}.svc.cluster.local`,
    metadata: {
      NAME: pod,
      NAMESPACE: namespace,
      INSTANCE_IPS: ip,
      NODE_NAME: spec.nodeName ?? 'node-a',
      ...spec.metadata,
    },
  });
}

function policy(action: Action, spec: PolicySpec & { name: string }): Authorization {
  const namespace = spec.namespace ?? 'default';
  const scope = spec.scope ?? (namespace === 'istio-system' ? 'Global' : 'Namespace');
  const rules = spec.rules ?? [[[{ principals: ['*'] }]]];
  return create(AuthorizationSchema, {
    name: spec.name,
    namespace,
    scope: scope === 'Global' ? Scope.GLOBAL : scope === 'Namespace' ? Scope.NAMESPACE : Scope.WORKLOAD_SELECTOR,
    action,
    dryRun: spec.dryRun ?? false,
    rules: rules.map((clauses) =>
      create(RuleSchema, {
        clauses: clauses.map((matches) => create(ClauseSchema, { matches: matches.map(match) })),
      }),
    ),
  });
}

function match(m: MatchSpec) {
  const sa = (list: MatchSpec['serviceAccounts']) =>
    (list ?? []).map((s) => create(ServiceAccountMatchSchema, { namespace: s.namespace, serviceAccount: s.serviceAccount }));
  return create(MatchSchema, {
    namespaces: strings(m.namespaces),
    notNamespaces: strings(m.notNamespaces),
    principals: strings(m.principals),
    notPrincipals: strings(m.notPrincipals),
    serviceAccounts: sa(m.serviceAccounts),
    notServiceAccounts: sa(m.notServiceAccounts),
    sourceIps: cidrs(m.sourceIps),
    notSourceIps: cidrs(m.notSourceIps),
    destinationIps: cidrs(m.destinationIps),
    notDestinationIps: cidrs(m.notDestinationIps),
    destinationPorts: [...(m.destinationPorts ?? [])],
    notDestinationPorts: [...(m.notDestinationPorts ?? [])],
  });
}

function strings(list: readonly string[] | undefined): StringMatch[] {
  return (list ?? []).map((s) => {
    if (s === '*') return create(StringMatchSchema, { matchType: { case: 'presence', value: create(EmptySchema) } });
    if (s.endsWith('*')) return create(StringMatchSchema, { matchType: { case: 'prefix', value: s.slice(0, -1) } });
    if (s.startsWith('*')) return create(StringMatchSchema, { matchType: { case: 'suffix', value: s.slice(1) } });
    return create(StringMatchSchema, { matchType: { case: 'exact', value: s } });
  });
}

function cidrs(list: readonly string[] | undefined) {
  return (list ?? []).map((text) => {
    const cidr = text.includes('/') ? parseCidr(text) : undefined;
    if (text.includes('/') && !cidr) throw new TypeError(`builders: "${text}" is not a CIDR`);
    const ip = cidr ? cidr.address : text;
    const bytes = ipBytes(ip);
    return create(AuthzAddressSchema, { address: bytes, length: cidr ? cidr.prefixLength : bytes.length * 8 });
  });
}

function portList(ports: PortMap) {
  return Object.entries(ports).map(([servicePort, targetPort]) =>
    create(PortSchema, { servicePort: Number(servicePort), targetPort }),
  );
}

function gateway(spec: GatewaySpec): GatewayAddress {
  const hboneMtlsPort = spec.hboneMtlsPort ?? 15008;
  const { network, ip } = splitNetworkIp(spec.destination);
  if (canonicalIp(ip) !== undefined) {
    return create(GatewayAddressSchema, {
      destination: { case: 'address', value: create(NetworkAddressSchema, { network, address: ipBytes(ip) }) },
      hboneMtlsPort,
    });
  }
  const slash = spec.destination.indexOf('/');
  return create(GatewayAddressSchema, {
    destination: {
      case: 'hostname',
      value: create(NamespacedHostnameSchema, {
        namespace: spec.destination.slice(0, slash),
        hostname: spec.destination.slice(slash + 1),
      }),
    },
    hboneMtlsPort,
  });
}

/** `network/ip` or a bare IP. */
function splitNetworkIp(text: string): { network: string; ip: string } {
  const slash = text.lastIndexOf('/');
  if (slash < 0) return { network: '', ip: text };
  return { network: text.slice(0, slash), ip: text.slice(slash + 1) };
}

function ipBytes(ip: string): Uint8Array {
  if (canonicalIp(ip) === undefined) throw new TypeError(`builders: "${ip}" is not an IP address`);
  return ipToBytes(ip);
}
