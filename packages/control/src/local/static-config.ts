/**
 * The local static config (ztunnel's `LOCAL_XDS_PATH` / `LOCAL_XDS` YAML):
 * parsed into the same protobuf messages istiod sends, so a local run goes
 * through the very translators and store that xDS uses (ztunnel's LocalClient
 * does the same with its internal types, src/xds.rs).
 *
 * Shape (ztunnel `LocalConfig`, serde camelCase; unknown keys are refused at
 * the top level and inside workload, service and policy records, as ztunnel's
 * `deny_unknown_fields` does):
 *
 * ```yaml
 * workloads:            # LocalWorkload = Workload fields + `services`
 *   - uid: …            # the resource name (if absent: `<clusterId|Kubernetes>//Pod/<namespace>/<name>`)
 *     workloadIps: ["10.0.0.1"]
 *     protocol: HBONE   # TCP (default) | HBONE
 *     services: {"<ns>/<hostname>": {80: 8080}}   # or, as config_dump prints it, ["<ns>/<hostname>"]
 *     waypoint: {destination: "<network>/<ip>" | "<namespace>/<hostname>", hboneMtlsPort: 15008}
 * services:
 *   - {name, namespace, hostname, vips: ["<network>/<ip>"], cidrVips: [{network, cidr}], ports: {80: 8080}, …}
 * policies:
 *   - {name, namespace, scope: Global|Namespace|WorkloadSelector, action: Allow|Deny, dryRun, rules: [[[match]]]}
 * stagedServices: {"<ns>/<hostname>": {<uid>: {workloadUid, port, status}}}   # config_dump only
 * ```
 *
 * String matches: ztunnel parses YAML with serde_yaml 0.9, which spells enum
 * variants carrying data as YAML tags — `!Exact "x"`, `!Prefix "x"`,
 * `!Suffix "x"`, `!Presence []` — and no longer accepts the single-key
 * mapping form. config_dump (JSON) prints `{"Exact": "x"}` and
 * `{"Presence": []}`. We accept both forms so dumps load back.
 *
 * Differences from ztunnel's loader, all on the lenient side unless noted:
 * missing `services`, `workloadIps`, `vips`, `ports`, locality parts,
 * `dryRun`, load-balancer parts and `hboneMtlsPort` (15008) take defaults;
 * trust domain, service account and cluster id defaults are applied (ztunnel
 * applies them only to protobuf, leaving local workloads with empty ones);
 * a bare IP is accepted as a full-length policy CIDR; a workload without uid
 * gets one derived from its name (ztunnel keys it by "" so uid-less workloads
 * replace each other). Stricter: unknown keys inside a policy match are
 * refused (ztunnel ignores them, silently widening a match on a typo), as are
 * duplicate resource names (ztunnel lets the last win) and the model-level
 * checks the translators apply to everything. (ztunnel's own
 * examples/localhost.yaml once carried `not_destination_ports`, which its
 * loader silently ignored until commit b42cc976 renamed it.)
 */
import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { EmptySchema } from '@bufbuild/protobuf/wkt';
import {
  Action,
  AuthorizationSchema,
  Scope,
  type Authorization as PbAuthorization,
  type MatchSchema,
  type StringMatchSchema,
} from '../gen/istio/security/authorization_pb.js';
import {
  AddressSchema,
  ApplicationTunnel_Protocol,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  NetworkMode,
  Service_Visibility,
  TunnelProtocol,
  WorkloadStatus,
  WorkloadType,
  type Address as PbAddress,
  type GatewayAddressSchema,
  type NetworkAddressSchema,
  type PortSchema,
  ServiceSchema,
  WorkloadSchema,
} from '../gen/istio/workload/workload_pb.js';
import { canonicalIp, ipFamily, ipToBytes } from '../model/ip.js';
import { DEFAULT_CLUSTER_ID } from '../model/workload.js';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';
import type { AddressResource, AddressUpdate, PolicyUpdate } from '../store/types.js';
import { translateAuthorization } from '../translate/authorization.js';
import { translateService } from '../translate/service.js';
import { translateWorkload } from '../translate/workload.js';
import { isList, isMapping, YamlReader, type Entry, type YamlRecord, type YamlNode } from './yaml-reader.js';

interface StaticAddress {
  /** xDS resource name: the workload uid, or `namespace/hostname` for a service. */
  readonly name: string;
  readonly address: PbAddress;
  /** Where it came from in the file, e.g. `workloads[2]`. */
  readonly path: string;
}

interface StaticAuthorization {
  /** `namespace/name`. */
  readonly name: string;
  readonly authorization: PbAuthorization;
  readonly path: string;
}

export interface StaticConfig {
  readonly addresses: readonly StaticAddress[];
  readonly authorizations: readonly StaticAuthorization[];
}

/** The whole desired state from a static config; each load replaces everything (ztunnel LocalClient). */
export interface LoadedStaticConfig {
  readonly update: AddressUpdate;
  readonly policies: PolicyUpdate;
}

type WorkloadInit = MessageInitShape<typeof WorkloadSchema>;
type ServiceInit = MessageInitShape<typeof ServiceSchema>;
type GatewayInit = MessageInitShape<typeof GatewayAddressSchema>;
type NetworkAddressInit = MessageInitShape<typeof NetworkAddressSchema>;
type PortInit = MessageInitShape<typeof PortSchema>;
type MatchInit = MessageInitShape<typeof MatchSchema>;
type StringMatchInit = MessageInitShape<typeof StringMatchSchema>;

const TOP_KEYS = ['workloads', 'services', 'policies', 'stagedServices'] as const;
const WORKLOAD_KEYS = [
  'workloadIps', 'waypoint', 'networkGateway', 'protocol', 'networkMode', 'uid', 'name', 'namespace',
  'trustDomain', 'serviceAccount', 'network', 'workloadName', 'workloadType', 'canonicalName',
  'canonicalRevision', 'hostname', 'node', 'nativeTunnel', 'applicationTunnel', 'authorizationPolicies',
  'status', 'clusterId', 'locality', 'services', 'capacity',
] as const;
// `ingressUseWaypoint` is ours (ztunnel does not keep Service.ingress_use_waypoint); config_dump prints it when true.
const SERVICE_KEYS = [
  'name', 'namespace', 'hostname', 'vips', 'cidrVips', 'ports', 'endpoints', 'subjectAltNames', 'waypoint',
  'weightedWaypoints', 'loadBalancer', 'ipFamilies', 'canonical', 'visibility', 'ingressUseWaypoint',
] as const;
const POLICY_KEYS = ['name', 'namespace', 'scope', 'action', 'rules', 'dryRun'] as const;
const MATCH_KEYS = [
  'namespaces', 'notNamespaces', 'serviceAccounts', 'notServiceAccounts', 'principals', 'notPrincipals',
  'sourceIps', 'notSourceIps', 'destinationIps', 'notDestinationIps', 'destinationPorts', 'notDestinationPorts',
] as const;
const GATEWAY_KEYS = ['destination', 'hboneMtlsPort'] as const;
const ENDPOINT_KEYS = ['workloadUid', 'port', 'status'] as const;

const U16 = 65535;
const U32 = 0xffffffff;
const DEFAULT_HBONE_PORT = 15008;

const PROTOCOLS = { TCP: TunnelProtocol.NONE, HBONE: TunnelProtocol.HBONE } as const;
const NETWORK_MODES = { Standard: NetworkMode.STANDARD, HostNetwork: NetworkMode.HOST_NETWORK } as const;
const STATUSES = { Healthy: WorkloadStatus.HEALTHY, Unhealthy: WorkloadStatus.UNHEALTHY } as const;
const WORKLOAD_TYPES = {
  deployment: WorkloadType.DEPLOYMENT,
  cronjob: WorkloadType.CRONJOB,
  pod: WorkloadType.POD,
  job: WorkloadType.JOB,
} as const;
const APP_TUNNEL_PROTOCOLS = { NONE: ApplicationTunnel_Protocol.NONE, PROXY: ApplicationTunnel_Protocol.PROXY } as const;
const SCOPES = {
  Region: LoadBalancing_Scope.REGION,
  Zone: LoadBalancing_Scope.ZONE,
  Subzone: LoadBalancing_Scope.SUBZONE,
  Node: LoadBalancing_Scope.NODE,
  Cluster: LoadBalancing_Scope.CLUSTER,
  Network: LoadBalancing_Scope.NETWORK,
} as const;
const MODES = {
  Standard: LoadBalancing_Mode.UNSPECIFIED_MODE,
  Strict: LoadBalancing_Mode.STRICT,
  Failover: LoadBalancing_Mode.FAILOVER,
  Passthrough: LoadBalancing_Mode.PASSTHROUGH,
} as const;
const HEALTH_POLICIES = {
  OnlyHealthy: LoadBalancing_HealthPolicy.ONLY_HEALTHY,
  AllowAll: LoadBalancing_HealthPolicy.ALLOW_ALL,
} as const;
const IP_FAMILIES = { Dual: IPFamilies.DUAL, IPv4: IPFamilies.IPV4_ONLY, IPv6: IPFamilies.IPV6_ONLY } as const;
const VISIBILITIES = { Public: Service_Visibility.PUBLIC, Namespace: Service_Visibility.NAMESPACE } as const;
const POLICY_SCOPES = { Global: Scope.GLOBAL, Namespace: Scope.NAMESPACE, WorkloadSelector: Scope.WORKLOAD_SELECTOR } as const;
const ACTIONS = { Allow: Action.ALLOW, Deny: Action.DENY } as const;
const STRING_MATCHES = { Exact: 'exact', Prefix: 'prefix', Suffix: 'suffix', Presence: 'presence' } as const;

/** Parses static config YAML into protobuf resources; every problem is reported, with its path and position. */
export function parseStaticConfig(text: string, source: string): Result<StaticConfig> {
  const parsed = parse(text, source);
  if (!parsed.ok) return parsed;
  return ok({
    addresses: parsed.value.addresses.map(({ name, address, path }) => ({ name, address, path })),
    authorizations: parsed.value.authorizations.map(({ name, authorization, path }) => ({ name, authorization, path })),
  });
}

/**
 * Parses and translates a static config: the complete desired state, as one
 * Address update and one policy update (no removals: a load replaces all).
 * Translator rejections name the resource: `workloads[1](<uid>).serviceAccount`.
 */
export function loadStaticConfig(text: string, source: string): Result<LoadedStaticConfig> {
  const parsed = parse(text, source);
  if (!parsed.ok) return parsed;
  const errors: Rejection[] = [];
  const upserts: Array<{ name: string; resource: AddressResource }> = [];
  const nest = (e: Located, problems: readonly Rejection[]) =>
    errors.push(...problems.map((p) => rejection(`${e.path}(${e.name})${p.field ? `.${p.field}` : ''}`, `${p.reason} (${e.where})`)));
  for (const e of parsed.value.addresses) {
    const t = e.address.type;
    if (t.case === 'workload') {
      const r = translateWorkload(t.value);
      if (r.ok) upserts.push({ name: e.name, resource: { kind: 'workload', workload: r.value } });
      else nest(e, r.errors);
    } else if (t.case === 'service') {
      const r = translateService(t.value);
      if (r.ok) upserts.push({ name: e.name, resource: { kind: 'service', service: r.value } });
      else nest(e, r.errors);
    }
  }
  const policies: PolicyUpdate['upserts'][number][] = [];
  for (const e of parsed.value.authorizations) {
    const r = translateAuthorization(e.authorization);
    if (r.ok) policies.push({ name: e.name, policy: r.value });
    else nest(e, r.errors);
  }
  if (errors.length > 0) return fail(...errors);
  return ok({ update: { upserts, removals: [] }, policies: { upserts: policies, removals: [] } });
}

interface Located {
  readonly name: string;
  readonly path: string;
  /** `source:line:col` of the record. */
  readonly where: string;
}

interface Parsed {
  readonly addresses: ReadonlyArray<StaticAddress & Located>;
  readonly authorizations: ReadonlyArray<StaticAuthorization & Located>;
}

/** Port maps by service key, then workload uid: config_dump's `endpoints` / `stagedServices`. */
type EndpointPorts = Map<string, Map<string, PortInit[]>>;

function parse(text: string, source: string): Result<Parsed> {
  const r = YamlReader.parse(text, source);
  const root = r.root();
  if (root === undefined) return fail(...r.problems);
  if (r.isNull(root)) return ok({ addresses: [], authorizations: [] });
  const top = r.record(root, '', TOP_KEYS);
  if (top === undefined) return fail(...r.problems);

  const endpoints: EndpointPorts = new Map();
  const services = top.items('services').flatMap((e) => service(r, e, endpoints) ?? []);
  const staged = top.get('stagedServices');
  for (const entry of staged === undefined ? [] : (r.mapEntries(staged, 'stagedServices') ?? [])) {
    endpointSet(r, entry.node, entry.path, entry.key, endpoints);
  }
  const workloads = top.items('workloads').flatMap((e) => workload(r, e, endpoints) ?? []);
  const policies = top.items('policies').flatMap((e) => policy(r, e) ?? []);

  const addresses = [...workloads, ...services];
  unique(r, addresses, 'address resource name (workload uid or service namespace/hostname)');
  unique(r, policies, 'policy namespace/name');
  if (r.problems.length > 0) return fail(...r.problems);
  return ok({ addresses, authorizations: policies });
}

function unique(r: YamlReader, entries: readonly Located[], what: string): void {
  const seen = new Map<string, string>();
  for (const e of entries) {
    const first = seen.get(e.name);
    if (first === undefined) seen.set(e.name, e.path);
    else r.problems.push(rejection(e.path, `duplicate ${what} ${JSON.stringify(e.name)}, first defined at ${first} (${e.where})`));
  }
}

// === workloads ===

function workload(r: YamlReader, e: Entry, endpoints: EndpointPorts): (StaticAddress & Located) | undefined {
  const rec = r.record(e.node, e.path, WORKLOAD_KEYS);
  if (rec === undefined) return undefined;
  rec.require('namespace', 'namespace');
  const namespace = rec.string('namespace');
  const name = rec.string('name');
  const clusterId = rec.string('clusterId');
  let uid = rec.string('uid');
  if (uid === '') {
    if (name === '') rec.reader.report(rec.pathOf('uid'), rec.node, 'uid is required when the workload has no name');
    // ztunnel leaves a missing uid empty (and uid-less workloads then replace each other);
    // we derive the uid istiod would give a pod.
    else uid = `${clusterId || DEFAULT_CLUSTER_ID}//Pod/${namespace}/${name}`;
  }

  const init: WorkloadInit = {
    uid,
    name,
    namespace,
    addresses: rec.items('workloadIps').flatMap((i) => ipBytes(r, i) ?? []),
    hostname: rec.string('hostname'),
    network: rec.string('network'),
    tunnelProtocol: enumKey(rec, 'protocol', PROTOCOLS) ?? TunnelProtocol.NONE,
    trustDomain: rec.string('trustDomain'),
    serviceAccount: rec.string('serviceAccount'),
    node: rec.string('node'),
    canonicalName: rec.string('canonicalName'),
    canonicalRevision: rec.string('canonicalRevision'),
    workloadType: workloadType(rec),
    workloadName: rec.string('workloadName'),
    nativeTunnel: rec.boolean('nativeTunnel'),
    services: workloadServices(rec, uid, endpoints),
    authorizationPolicies: rec.strings('authorizationPolicies'),
    status: enumKey(rec, 'status', STATUSES) ?? WorkloadStatus.HEALTHY,
    clusterId,
    networkMode: enumKey(rec, 'networkMode', NETWORK_MODES) ?? NetworkMode.STANDARD,
  };
  const waypoint = gateway(r, rec, 'waypoint');
  if (waypoint) init.waypoint = waypoint;
  const networkGateway = gateway(r, rec, 'networkGateway');
  if (networkGateway) init.networkGateway = networkGateway;
  const tunnel = rec.get('applicationTunnel');
  if (tunnel !== undefined) {
    const t = r.record(tunnel, rec.pathOf('applicationTunnel'), ['protocol', 'port']);
    if (t) {
      t.require('protocol', 'application tunnel protocol');
      init.applicationTunnel = {
        protocol: enumKey(t, 'protocol', APP_TUNNEL_PROTOCOLS) ?? ApplicationTunnel_Protocol.NONE,
        port: t.integer('port', 0, U16, 'a port') ?? 0,
      };
    }
  }
  const loc = rec.get('locality');
  if (loc !== undefined) {
    const l = r.record(loc, rec.pathOf('locality'), ['region', 'zone', 'subzone']);
    if (l) init.locality = { region: l.string('region'), zone: l.string('zone'), subzone: l.string('subzone') };
  }
  const capacity = rec.integer('capacity', 0, U32, 'a capacity');
  if (capacity !== undefined) init.capacity = capacity;

  return {
    name: uid,
    path: e.path,
    where: r.where(rec.node),
    address: create(AddressSchema, { type: { case: 'workload', value: create(WorkloadSchema, init) } }),
  };
}

/** ztunnel keeps workloadType as free text (the lower-cased enum name); we need one of the four. */
function workloadType(rec: YamlRecord): WorkloadType {
  const node = rec.get('workloadType');
  if (node === undefined) return WorkloadType.DEPLOYMENT;
  const text = rec.reader.string(node, rec.pathOf('workloadType'));
  if (text === undefined) return WorkloadType.DEPLOYMENT;
  const known = WORKLOAD_TYPES[text.toLowerCase() as keyof typeof WORKLOAD_TYPES] as WorkloadType | undefined;
  if (known === undefined) {
    rec.reader.report(rec.pathOf('workloadType'), node, `${JSON.stringify(text)} is not one of ${Object.keys(WORKLOAD_TYPES).join(', ')}`);
    return WorkloadType.DEPLOYMENT;
  }
  return known;
}

/**
 * `services` as ztunnel's LocalWorkload has it (`{"ns/host": {svcPort: targetPort}}`),
 * or as config_dump prints a workload (`["ns/host"]`, ports in the service's endpoints).
 */
function workloadServices(rec: YamlRecord, uid: string, endpoints: EndpointPorts): Record<string, { ports: PortInit[] }> {
  const r = rec.reader;
  const node = rec.get('services');
  const out = new Map<string, { ports: PortInit[] }>();
  if (node !== undefined) {
    const path = rec.pathOf('services');
    if (isList(node)) {
      for (const item of r.items(node, path) ?? []) {
        const key = item.node === null ? undefined : r.string(item.node, item.path);
        if (key !== undefined) out.set(key, { ports: endpoints.get(key)?.get(uid) ?? [] });
      }
    } else {
      for (const entry of r.mapEntries(node, path) ?? []) out.set(entry.key, { ports: portMap(r, entry.node, entry.path) });
    }
  }
  // fromEntries defines own properties, so even a "__proto__" key stays a plain entry.
  return Object.fromEntries(out);
}

/** `{80: 8080}`: service port → target port (both u16, as ztunnel's HashMap<u16, u16>). */
function portMap(r: YamlReader, node: YamlNode | null, path: string): PortInit[] {
  if (node === null || r.isNull(node)) return [];
  const ports: PortInit[] = [];
  for (const entry of r.mapEntries(node, path) ?? []) {
    const servicePort = r.integerKey(entry.key, entry.keyNode, entry.path, 0, U16, 'a port');
    const targetPort = entry.node === null ? undefined : r.integer(entry.node, entry.path, 0, U16, 'a port');
    if (servicePort !== undefined && targetPort !== undefined) ports.push({ servicePort, targetPort });
  }
  return ports;
}

function ipBytes(r: YamlReader, e: Entry): Uint8Array | undefined {
  const text = e.node === null ? undefined : r.string(e.node, e.path);
  if (text === undefined) return undefined;
  const ip = canonicalIp(text);
  if (ip === undefined) {
    r.report(e.path, e.node, `${JSON.stringify(text)} is not an IP address`);
    return undefined;
  }
  return ipToBytes(ip);
}

/** `{destination: "<network>/<ip>" | "<namespace>/<hostname>", hboneMtlsPort}` (ztunnel: untagged, address tried first). */
function gateway(r: YamlReader, parent: YamlRecord, key: string): GatewayInit | undefined {
  const node = parent.get(key);
  if (node === undefined) return undefined;
  return gatewayRecord(r, node, parent.pathOf(key));
}

function gatewayRecord(r: YamlReader, node: YamlNode, path: string): GatewayInit | undefined {
  const rec = r.record(node, path, GATEWAY_KEYS);
  if (rec === undefined) return undefined;
  const destNode = rec.require('destination', 'destination');
  const hboneMtlsPort = rec.integer('hboneMtlsPort', 0, U16, 'a port') ?? DEFAULT_HBONE_PORT;
  const text = destNode === undefined ? undefined : r.string(destNode, rec.pathOf('destination'));
  if (text === undefined) return undefined;
  const slash = text.indexOf('/');
  if (slash < 0) {
    r.report(rec.pathOf('destination'), destNode, `${JSON.stringify(text)} must be "<network>/<ip>" or "<namespace>/<hostname>"`);
    return undefined;
  }
  const before = text.slice(0, slash);
  const after = text.slice(slash + 1);
  const ip = canonicalIp(after);
  if (ip !== undefined) {
    return { destination: { case: 'address', value: { network: before, address: ipToBytes(ip) } }, hboneMtlsPort };
  }
  return { destination: { case: 'hostname', value: { namespace: before, hostname: after } }, hboneMtlsPort };
}

// === services ===

function service(r: YamlReader, e: Entry, endpoints: EndpointPorts): (StaticAddress & Located) | undefined {
  const rec = r.record(e.node, e.path, SERVICE_KEYS);
  if (rec === undefined) return undefined;
  rec.require('name', 'name');
  rec.require('namespace', 'namespace');
  rec.require('hostname', 'hostname');
  const namespace = rec.string('namespace');
  const hostname = rec.string('hostname');
  const key = `${namespace}/${hostname}`;

  const addresses: NetworkAddressInit[] = [
    ...rec.items('vips').flatMap((i) => vip(r, i) ?? []),
    ...rec.items('cidrVips').flatMap((i) => cidrVip(r, i) ?? []),
  ];
  const init: ServiceInit = {
    name: rec.string('name'),
    namespace,
    hostname,
    addresses,
    ports: portMap(r, rec.get('ports') ?? null, rec.pathOf('ports')),
    subjectAltNames: rec.strings('subjectAltNames'),
    weightedWaypoints: rec.items('weightedWaypoints').flatMap((w) => weighted(r, w) ?? []),
    ipFamilies: enumKey(rec, 'ipFamilies', IP_FAMILIES) ?? IPFamilies.AUTOMATIC,
    canonical: rec.boolean('canonical'),
    ingressUseWaypoint: rec.boolean('ingressUseWaypoint'),
    visibility: enumKey(rec, 'visibility', VISIBILITIES) ?? Service_Visibility.PUBLIC,
  };
  const waypoint = gateway(r, rec, 'waypoint');
  if (waypoint) init.waypoint = waypoint;
  const lbNode = rec.get('loadBalancer');
  if (lbNode !== undefined) {
    const lb = r.record(lbNode, rec.pathOf('loadBalancer'), ['routingPreferences', 'mode', 'healthPolicy']);
    if (lb) {
      init.loadBalancing = {
        routingPreference: lb.items('routingPreferences').flatMap((s) => {
          const v = s.node === null ? undefined : r.oneOf(s.node, s.path, Object.keys(SCOPES) as Array<keyof typeof SCOPES>);
          return v === undefined ? [] : [SCOPES[v]];
        }),
        mode: enumKey(lb, 'mode', MODES) ?? LoadBalancing_Mode.UNSPECIFIED_MODE,
        healthPolicy: enumKey(lb, 'healthPolicy', HEALTH_POLICIES) ?? LoadBalancing_HealthPolicy.ONLY_HEALTHY,
      };
    }
  }
  const eps = rec.get('endpoints');
  if (eps !== undefined) endpointSet(r, eps, rec.pathOf('endpoints'), key, endpoints);

  return {
    name: key,
    path: e.path,
    where: r.where(rec.node),
    address: create(AddressSchema, { type: { case: 'service', value: create(ServiceSchema, init) } }),
  };
}

/** `"<network>/<ip>"`, split at the first `/` as ztunnel's NetworkAddress parser does. */
function vip(r: YamlReader, e: Entry): NetworkAddressInit | undefined {
  const text = e.node === null ? undefined : r.string(e.node, e.path);
  if (text === undefined) return undefined;
  const slash = text.indexOf('/');
  const ip = slash < 0 ? undefined : canonicalIp(text.slice(slash + 1));
  if (ip === undefined) {
    r.report(e.path, e.node, `${JSON.stringify(text)} is not "<network>/<ip>" (e.g. "/10.96.0.10" on the default network)`);
    return undefined;
  }
  return { network: text.slice(0, slash), address: ipToBytes(ip) };
}

/** `{network, cidr: "10.96.0.0/12"}` (ztunnel's NetworkCidr derives serde as a struct). */
function cidrVip(r: YamlReader, e: Entry): NetworkAddressInit | undefined {
  const rec = r.record(e.node, e.path, ['network', 'cidr']);
  if (rec === undefined) return undefined;
  const node = rec.require('cidr', 'cidr');
  const text = node === undefined ? undefined : r.string(node, rec.pathOf('cidr'));
  if (text === undefined) return undefined;
  const parsed = cidrParts(text, { requirePrefix: true });
  if (parsed === undefined) {
    r.report(rec.pathOf('cidr'), node, `${JSON.stringify(text)} is not a CIDR ("<ip>/<prefix length>")`);
    return undefined;
  }
  return { network: rec.string('network'), address: ipToBytes(parsed.ip), length: parsed.length };
}

/** IP and prefix length of "ip/len" (or a bare IP: full length), without masking host bits. */
function cidrParts(text: string, opts: { requirePrefix: boolean }): { ip: string; length: number } | undefined {
  const slash = text.indexOf('/');
  const ip = canonicalIp(slash < 0 ? text : text.slice(0, slash));
  if (ip === undefined) return undefined;
  const width = ipFamily(ip) === 4 ? 32 : 128;
  if (slash < 0) return opts.requirePrefix ? undefined : { ip, length: width };
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText) || Number(lenText) > width) return undefined;
  return { ip, length: Number(lenText) };
}

function weighted(r: YamlReader, e: Entry): { destination: GatewayInit; weight: number } | undefined {
  const rec = r.record(e.node, e.path, ['destination', 'weight']);
  if (rec === undefined) return undefined;
  const destNode = rec.require('destination', 'destination');
  const destination = destNode === undefined ? undefined : gatewayRecord(r, destNode, rec.pathOf('destination'));
  const weight = rec.integer('weight', 0, U32, 'a weight') ?? 0;
  return destination === undefined ? undefined : { destination, weight };
}

/** config_dump's endpoints `{<uid>: {workloadUid, port: {80: 8080}, status}}`, indexed for list-form workload services. */
function endpointSet(r: YamlReader, node: YamlNode | null, path: string, serviceKey: string, out: EndpointPorts): void {
  for (const entry of r.mapEntries(node, path) ?? []) {
    const rec = r.record(entry.node, entry.path, ENDPOINT_KEYS);
    if (rec === undefined) continue;
    const uid = rec.string('workloadUid', entry.key);
    const ports = portMap(r, rec.get('port') ?? null, rec.pathOf('port'));
    // Status comes from the workload itself; the copy in the endpoint is only checked.
    enumKey(rec, 'status', STATUSES);
    let byUid = out.get(serviceKey);
    if (byUid === undefined) out.set(serviceKey, (byUid = new Map()));
    byUid.set(uid, ports);
  }
}

// === policies ===

function policy(r: YamlReader, e: Entry): (StaticAuthorization & Located) | undefined {
  const rec = r.record(e.node, e.path, POLICY_KEYS);
  if (rec === undefined) return undefined;
  rec.require('name', 'name');
  rec.require('namespace', 'namespace');
  rec.require('scope', 'scope');
  rec.require('action', 'action');
  rec.require('rules', 'rules');
  const name = rec.string('name');
  const namespace = rec.string('namespace');
  const rules = rec.items('rules').map((rule) => ({
    clauses: listOf(r, rule).map((clause) => ({
      matches: listOf(r, clause).flatMap((m) => match(r, m) ?? []),
    })),
  }));
  return {
    name: `${namespace}/${name}`,
    path: e.path,
    where: r.where(rec.node),
    authorization: create(AuthorizationSchema, {
      name,
      namespace,
      scope: enumKey(rec, 'scope', POLICY_SCOPES) ?? Scope.GLOBAL,
      action: enumKey(rec, 'action', ACTIONS) ?? Action.ALLOW,
      dryRun: rec.boolean('dryRun'),
      rules,
    }),
  };
}

function listOf(r: YamlReader, e: Entry): Entry[] {
  return e.node === null ? [] : (r.items(e.node, e.path) ?? []);
}

function match(r: YamlReader, e: Entry): MatchInit | undefined {
  const rec = r.record(e.node, e.path, MATCH_KEYS);
  if (rec === undefined) return undefined;
  const strings = (key: string) => rec.items(key).flatMap((i) => stringMatch(r, i) ?? []);
  const accounts = (key: string) =>
    rec.items(key).flatMap((i) => {
      const sa = r.record(i.node, i.path, ['namespace', 'serviceAccount']);
      return sa ? [{ namespace: sa.string('namespace'), serviceAccount: sa.string('serviceAccount') }] : [];
    });
  const cidrs = (key: string) =>
    rec.items(key).flatMap((i) => {
      const text = i.node === null ? undefined : r.string(i.node, i.path);
      if (text === undefined) return [];
      const parsed = cidrParts(text, { requirePrefix: false });
      if (parsed === undefined) {
        r.report(i.path, i.node, `${JSON.stringify(text)} is not an IP address or CIDR`);
        return [];
      }
      return [{ address: ipToBytes(parsed.ip), length: parsed.length }];
    });
  const ports = (key: string) =>
    rec.items(key).flatMap((i) => (i.node === null ? [] : (r.integer(i.node, i.path, 0, U16, 'a port') ?? [])));
  return {
    namespaces: strings('namespaces'),
    notNamespaces: strings('notNamespaces'),
    serviceAccounts: accounts('serviceAccounts'),
    notServiceAccounts: accounts('notServiceAccounts'),
    principals: strings('principals'),
    notPrincipals: strings('notPrincipals'),
    sourceIps: cidrs('sourceIps'),
    notSourceIps: cidrs('notSourceIps'),
    destinationIps: cidrs('destinationIps'),
    notDestinationIps: cidrs('notDestinationIps'),
    destinationPorts: ports('destinationPorts'),
    notDestinationPorts: ports('notDestinationPorts'),
  };
}

/** `!Exact "x"` (serde_yaml 0.9) or `{Exact: "x"}` (config_dump); `!Presence []` or `{Presence: []}`. */
function stringMatch(r: YamlReader, e: Entry): StringMatchInit | undefined {
  const node = e.node;
  const expected = 'expected a string match: !Exact "<value>", !Prefix "<value>", !Suffix "<value>", !Presence [], or {Exact: "<value>"}';
  if (node === null) return undefined;
  let variant: string | undefined;
  let value: YamlNode | null = null;
  const tag = node.tag?.startsWith('!') && !node.tag.startsWith('!!') ? node.tag.slice(1) : undefined;
  if (tag !== undefined) {
    variant = tag;
    value = node;
  } else if (isMapping(node)) {
    const entries = r.mapEntries(node, e.path) ?? [];
    const only = entries.length === 1 ? entries[0] : undefined;
    if (only !== undefined) {
      variant = only.key;
      value = only.node;
    }
  }
  const kind = variant === undefined ? undefined : STRING_MATCHES[variant as keyof typeof STRING_MATCHES];
  if (kind === undefined) {
    r.report(e.path, node, variant === undefined ? `${expected}; got ${r.describe(node)}` : `unknown string match ${JSON.stringify(variant)}; ${expected}`);
    return undefined;
  }
  if (kind === 'presence') return { matchType: { case: 'presence', value: create(EmptySchema) } };
  const text = value === null ? undefined : r.string(value, e.path);
  return text === undefined ? undefined : { matchType: { case: kind, value: text } };
}

// === helpers ===

/** Reads `key` as one of `table`'s spellings and returns its protobuf value; undefined when absent or wrong. */
function enumKey<T extends Record<string, number>>(rec: YamlRecord, key: string, table: T): T[keyof T] | undefined {
  const spelled = rec.oneOf(key, Object.keys(table) as Array<keyof T & string>);
  return spelled === undefined ? undefined : table[spelled];
}
