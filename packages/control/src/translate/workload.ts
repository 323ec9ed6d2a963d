/**
 * istio.workload.Workload → model Workload, with ztunnel's defaults and
 * validation (src/state/workload.rs `TryFrom<XdsWorkload>`), plus the checks
 * istiod's output always satisfies (SPIFFE-safe identity parts, RFC 1123
 * hostnames, `namespace/hostname` service keys, in-range ports), so that a
 * malformed resource is refused as a whole instead of half-applied.
 *
 * Defaults exactly as ztunnel applies them when converting protobuf: empty
 * trust domain → `cluster.local`, empty service account → `default`, empty
 * cluster id → `Kubernetes`, absent capacity → 1 (a present 0 stays 0: ztunnel
 * uses `capacity.unwrap_or(1)`, and a weight-0 endpoint is never picked while
 * another endpoint has weight).
 *
 * `extensions` are accepted and ignored, as ztunnel does.
 */
import {
  AppProtocol as PbAppProtocol,
  ApplicationTunnel_Protocol,
  ApplicationTunnel_ProtocolSchema,
  NetworkMode as PbNetworkMode,
  NetworkModeSchema,
  TunnelProtocol as PbTunnelProtocol,
  TunnelProtocolSchema,
  WorkloadStatus as PbWorkloadStatus,
  WorkloadStatusSchema,
  WorkloadType as PbWorkloadType,
  type ApplicationTunnel as PbApplicationTunnel,
  type Locality as PbLocality,
  type Port as PbPort,
  type Workload as PbWorkload,
} from '../gen/istio/workload/workload_pb.js';
import {
  DEFAULT_SERVICE_ACCOUNT,
  DEFAULT_TRUST_DOMAIN,
  spiffeSegmentProblem,
  trustDomainProblem,
  type Identity,
} from '../model/identity.js';
import {
  DEFAULT_CLUSTER_ID,
  type AppProtocol,
  type ApplicationTunnel,
  type Locality,
  type NetworkMode,
  type PortMapping,
  type TunnelProtocol,
  type Workload,
  type WorkloadServiceRef,
  type WorkloadStatus,
  type WorkloadType,
} from '../model/workload.js';
import type { Result } from '../result.js';
import {
  checkNamespacedName,
  checkPort,
  hostnameProblem,
  ipFromWire,
  mapEnum,
  parseNamespacedHostname,
  Problems,
} from './common.js';
import { gatewayAddress } from './gateway.js';
import { intern, internIdentity, internPorts } from './intern.js';

const TUNNEL_PROTOCOLS: Partial<Record<number, TunnelProtocol>> = {
  [PbTunnelProtocol.NONE]: 'TCP',
  [PbTunnelProtocol.HBONE]: 'HBONE',
};
// ztunnel: `InboundProtocol::try_from` → "unsupported tunnel protocol: legacy istio mtls".
const TUNNEL_UNSUPPORTED = { [PbTunnelProtocol.LEGACY_ISTIO_MTLS]: 'is not supported by ztunnel (legacy Istio mTLS)' };

const STATUSES: Record<number, WorkloadStatus> = {
  [PbWorkloadStatus.HEALTHY]: 'Healthy',
  [PbWorkloadStatus.UNHEALTHY]: 'Unhealthy',
};

const NETWORK_MODES: Record<number, NetworkMode> = {
  [PbNetworkMode.STANDARD]: 'Standard',
  [PbNetworkMode.HOST_NETWORK]: 'HostNetwork',
};

const WORKLOAD_TYPES: Record<number, WorkloadType> = {
  [PbWorkloadType.DEPLOYMENT]: 'deployment',
  [PbWorkloadType.CRONJOB]: 'cronjob',
  [PbWorkloadType.POD]: 'pod',
  [PbWorkloadType.JOB]: 'job',
};

const APPLICATION_TUNNEL_PROTOCOLS: Record<number, ApplicationTunnel['protocol']> = {
  [ApplicationTunnel_Protocol.NONE]: 'NONE',
  [ApplicationTunnel_Protocol.PROXY]: 'PROXY',
};

const APP_PROTOCOLS: Record<number, AppProtocol> = {
  [PbAppProtocol.UNKNOWN]: 'Unknown',
  [PbAppProtocol.HTTP11]: 'HTTP11',
  [PbAppProtocol.HTTP2]: 'HTTP2',
  [PbAppProtocol.GRPC]: 'GRPC',
  [PbAppProtocol.TCP]: 'TCP',
  [PbAppProtocol.TLS]: 'TLS',
};

export function translateWorkload(pb: PbWorkload): Result<Workload> {
  const problems = Problems.root();
  return problems.result(workload(pb, problems));
}

function workload(pb: PbWorkload, problems: Problems): Workload | undefined {
  // ztunnel keys workloads by uid and does not check it; an empty uid would make
  // every such workload replace the previous one, so it is refused here.
  if (pb.uid === '') problems.add('uid', 'uid must not be empty (workloads are keyed by uid)');

  const addresses: string[] = [];
  pb.addresses.forEach((bytes, i) => {
    const ip = ipFromWire(bytes, `addresses[${i}]`, problems);
    if (ip !== undefined) addresses.push(ip);
  });

  if (pb.hostname !== '') {
    const host = hostnameProblem(pb.hostname, { allowWildcard: false });
    if (host) problems.add('hostname', host);
  }

  const protocol = mapEnum(
    pb.tunnelProtocol, TunnelProtocolSchema, TUNNEL_PROTOCOLS, 'tunnelProtocol', problems, TUNNEL_UNSUPPORTED,
  );
  const identity = workloadIdentity(pb, problems);
  const waypoint = pb.waypoint && gatewayAddress(pb.waypoint, problems.at('waypoint'));
  const networkGateway = pb.networkGateway && gatewayAddress(pb.networkGateway, problems.at('networkGateway'));

  // ztunnel reads workload_type through prost's getter, which maps an unknown
  // number to the default (DEPLOYMENT) instead of refusing the workload.
  const workloadType = WORKLOAD_TYPES[pb.workloadType] ?? 'deployment';

  const applicationTunnel = pb.applicationTunnel && appTunnel(pb.applicationTunnel, problems.at('applicationTunnel'));

  const services: WorkloadServiceRef[] = [];
  for (const [key, portList] of Object.entries(pb.services)) {
    const field = `services[${JSON.stringify(key)}]`;
    parseNamespacedHostname(key, field, problems);
    const ports = portMappings(portList.ports, `${field}.ports`, problems);
    services.push({ key: intern(key), ports: internPorts(ports) });
  }

  pb.authorizationPolicies.forEach((key, i) => checkNamespacedName(key, `authorizationPolicies[${i}]`, problems));

  const status = mapEnum(pb.status, WorkloadStatusSchema, STATUSES, 'status', problems);
  const networkMode = mapEnum(pb.networkMode, NetworkModeSchema, NETWORK_MODES, 'networkMode', problems);

  if (problems.count > 0 || protocol === undefined || identity === undefined) return undefined;
  if (status === undefined || networkMode === undefined) return undefined;
  return {
    uid: pb.uid,
    name: pb.name,
    namespace: identity.namespace,
    addresses,
    hostname: pb.hostname,
    network: intern(pb.network),
    protocol,
    identity,
    waypoint,
    networkGateway,
    node: intern(pb.node),
    canonicalName: intern(pb.canonicalName),
    canonicalRevision: intern(pb.canonicalRevision),
    workloadType,
    workloadName: intern(pb.workloadName),
    nativeTunnel: pb.nativeTunnel,
    applicationTunnel,
    services,
    authorizationPolicies: pb.authorizationPolicies.map(intern),
    status,
    clusterId: pb.clusterId === '' ? DEFAULT_CLUSTER_ID : intern(pb.clusterId),
    locality: locality(pb.locality),
    networkMode,
    capacity: pb.capacity ?? 1,
  };
}

/** The SPIFFE identity after ztunnel's defaults; every part must be usable in a SPIFFE ID. */
function workloadIdentity(pb: PbWorkload, problems: Problems): Identity | undefined {
  const before = problems.count;
  const trustDomain = pb.trustDomain === '' ? DEFAULT_TRUST_DOMAIN : pb.trustDomain;
  const serviceAccount = pb.serviceAccount === '' ? DEFAULT_SERVICE_ACCOUNT : pb.serviceAccount;
  const td = trustDomainProblem(trustDomain);
  if (td) problems.add('trustDomain', `trust domain ${td}`);
  const ns = spiffeSegmentProblem(pb.namespace);
  if (ns) problems.add('namespace', `namespace ${ns}`);
  const sa = spiffeSegmentProblem(serviceAccount);
  if (sa) problems.add('serviceAccount', `service account ${sa}`);
  return problems.count === before ? internIdentity(trustDomain, pb.namespace, serviceAccount) : undefined;
}

function appTunnel(pb: PbApplicationTunnel, problems: Problems): ApplicationTunnel | undefined {
  const protocol = mapEnum(pb.protocol, ApplicationTunnel_ProtocolSchema, APPLICATION_TUNNEL_PROTOCOLS, 'protocol', problems);
  // ztunnel: port 0 means "the original target port".
  const port = pb.port === 0 ? undefined : checkPort(pb.port, 'port', problems, { allowZero: false });
  return protocol === undefined ? undefined : { protocol, port };
}

/**
 * ztunnel keeps a workload's ports as a map service port → target port, so
 * a repeated service port means the last one wins; we sort by service port so
 * equal inputs give equal models whatever the order on the wire.
 */
export function portMappings(ports: readonly PbPort[], field: string, problems: Problems): PortMapping[] {
  const byServicePort = new Map<number, PortMapping>();
  ports.forEach((p, i) => {
    const servicePort = checkPort(p.servicePort, `[${i}].servicePort`, problems.at(field), { allowZero: false });
    const targetPort = checkPort(p.targetPort, `[${i}].targetPort`, problems.at(field), { allowZero: true });
    byServicePort.set(servicePort, { servicePort, targetPort, appProtocol: appProtocol(p.appProtocol) });
  });
  return [...byServicePort.values()].sort((a, b) => a.servicePort - b.servicePort);
}

/**
 * ztunnel never reads Port.app_protocol, so an unknown number cannot make it
 * refuse a resource; we keep the known values and read unknown ones as Unknown.
 */
function appProtocol(value: number): AppProtocol {
  return APP_PROTOCOLS[value] ?? 'Unknown';
}

// ztunnel stores `locality.unwrap_or_default()`: absent and all-empty are the same.
function locality(pb: PbLocality | undefined): Locality | undefined {
  if (pb === undefined || (pb.region === '' && pb.zone === '' && pb.subzone === '')) return undefined;
  return { region: intern(pb.region), zone: intern(pb.zone), subzone: intern(pb.subzone) };
}
