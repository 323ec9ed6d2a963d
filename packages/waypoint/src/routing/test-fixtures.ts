/**
 * Test-only builders for the routing tests: validated resources written by hand (the YAML parser is
 * another module's; these mirror the conformance manifests field by field), control Services as
 * workload discovery delivers them, and a RequestView. Imported by *.test.ts files only.
 */
import type { AppProtocol, Service } from '@ambient/control';
import type {
  BackendRef,
  ConfigResources,
  GrpcRouteResource,
  GrpcRouteRule,
  HeaderMatch,
  HttpFilter,
  HttpRouteMatch,
  HttpRouteResource,
  HttpRouteRule,
  ParentRef,
  PathMatch,
  QueryParamMatch,
  RouteResource,
  ServiceResource,
  TcpRouteResource,
} from '../resources/types.js';
import { serviceLookup, type CompileInput } from './compile.js';
import { parseQuery, splitPathAndQuery } from './select.js';
import type { RequestView } from './types.js';

export const MESH_NS = 'gateway-conformance-mesh';

export function aControlService(
  namespace: string,
  name: string,
  ports: ReadonlyArray<readonly [number, number, AppProtocol?]>,
  opts: { readonly waypoint?: boolean; readonly hostname?: string } = {},
): Service {
  return {
    name,
    namespace,
    hostname: opts.hostname ?? `${name}.${namespace}.svc.cluster.local`,
    vips: [],
    cidrVips: [],
    ports: ports.map(([servicePort, targetPort, appProtocol]) => ({ servicePort, targetPort, appProtocol: appProtocol ?? 'Unknown' })),
    subjectAltNames: [],
    waypoint: opts.waypoint === false ? undefined : { destination: { kind: 'hostname', namespace: MESH_NS, hostname: `namespace.${MESH_NS}.svc.cluster.local` }, hboneMtlsPort: 15008 },
    weightedWaypoints: [],
    loadBalancing: undefined,
    ipFamilies: 'Automatic',
    canonical: false,
    ingressUseWaypoint: false,
    visibility: 'Public',
  };
}

function aKubeService(namespace: string, name: string, ports: ReadonlyArray<{ name?: string; port: number; appProtocol?: string }>): ServiceResource {
  return {
    meta: { kind: 'Service', namespace, name, creationTimestampMs: 0, generation: 1, resourceVersion: '1', labels: {}, annotations: {} },
    ports: ports.map((p) => ({ name: p.name, port: p.port, targetPort: undefined, protocol: 'TCP', appProtocol: p.appProtocol })),
    clusterIps: [],
  };
}

/** The conformance base: Services echo, echo-v1, echo-v2 (ports from conformance/mesh/manifests.yaml). */
function conformanceServices(): { control: Service[]; kube: ServiceResource[] } {
  const kubePorts = (grpcAppProtocol: string | undefined) => [
    { name: 'http', port: 80, appProtocol: 'http' },
    { name: 'http-alt', port: 8080, appProtocol: 'http' },
    { name: 'https', port: 443 },
    { name: 'tcp', port: 9090 },
    grpcAppProtocol === undefined ? { name: 'grpc', port: 7070 } : { name: 'grpc', port: 7070, appProtocol: grpcAppProtocol },
  ];
  const controlPorts: Array<readonly [number, number, AppProtocol]> = [
    [80, 8080, 'HTTP11'],
    [8080, 8080, 'HTTP11'],
    [443, 8443, 'Unknown'],
    [9090, 9090, 'TCP'],
    [7070, 7070, 'GRPC'],
  ];
  return {
    control: ['echo', 'echo-v1', 'echo-v2'].map((n) => aControlService(MESH_NS, n, controlPorts)),
    kube: [aKubeService(MESH_NS, 'echo', kubePorts('kubernetes.io/h2c')), aKubeService(MESH_NS, 'echo-v1', kubePorts(undefined)), aKubeService(MESH_NS, 'echo-v2', kubePorts(undefined))],
  };
}

export function serviceParent(name: string, port?: number, namespace = MESH_NS): ParentRef {
  return { group: '', kind: 'Service', namespace, name, port, sectionName: undefined };
}

export function pathMatch(type: PathMatch['type'], value: string): PathMatch {
  return { type, value };
}

export function aMatch(over: {
  path?: PathMatch;
  headers?: ReadonlyArray<readonly [string, string] | HeaderMatch>;
  queryParams?: ReadonlyArray<readonly [string, string] | QueryParamMatch>;
  method?: string;
} = {}): HttpRouteMatch {
  return {
    path: over.path ?? { type: 'PathPrefix', value: '/' },
    headers: (over.headers ?? []).map((h) => ('type' in h ? h : { type: 'Exact', name: h[0].toLowerCase(), value: h[1] })),
    queryParams: (over.queryParams ?? []).map((q) => ('type' in q ? q : { type: 'Exact', name: q[0], value: q[1] })),
    method: over.method,
  };
}

export function aBackend(name: string, port: number | undefined, weight = 1, over: Partial<BackendRef> = {}): BackendRef {
  return { group: '', kind: 'Service', namespace: MESH_NS, name, port, weight, filters: [], ...over };
}

export function aRule(over: Partial<HttpRouteRule> = {}): HttpRouteRule {
  return {
    name: undefined,
    matches: [aMatch()],
    filters: [],
    backendRefs: [],
    timeouts: { requestMs: undefined, backendRequestMs: undefined },
    retry: undefined,
    ...over,
  };
}

export function anHttpRoute(name: string, parentRefs: readonly ParentRef[], rules: readonly HttpRouteRule[], over: { namespace?: string; createdMs?: number } = {}): HttpRouteResource {
  return {
    meta: {
      kind: 'HTTPRoute',
      namespace: over.namespace ?? MESH_NS,
      name,
      creationTimestampMs: over.createdMs ?? 1_000,
      generation: 1,
      resourceVersion: '1',
      labels: {},
      annotations: {},
    },
    parentRefs,
    hostnames: [],
    rules,
  };
}

export function aGrpcRoute(name: string, parentRefs: readonly ParentRef[], rules: readonly GrpcRouteRule[], over: { namespace?: string; createdMs?: number } = {}): GrpcRouteResource {
  return {
    meta: {
      kind: 'GRPCRoute',
      namespace: over.namespace ?? MESH_NS,
      name,
      creationTimestampMs: over.createdMs ?? 1_000,
      generation: 1,
      resourceVersion: '1',
      labels: {},
      annotations: {},
    },
    parentRefs,
    hostnames: [],
    rules,
  };
}

export function aTcpRoute(name: string, parentRefs: readonly ParentRef[], backendRefs: readonly BackendRef[], over: { namespace?: string; createdMs?: number } = {}): TcpRouteResource {
  return {
    meta: {
      kind: 'TCPRoute',
      namespace: over.namespace ?? MESH_NS,
      name,
      creationTimestampMs: over.createdMs ?? 1_000,
      generation: 1,
      resourceVersion: '1',
      labels: {},
      annotations: {},
    },
    parentRefs,
    rules: [{ name: undefined, backendRefs }],
  };
}

export function setHeader(name: string, value: string): HttpFilter {
  return { type: 'ResponseHeaderModifier', modifier: { set: [[name, value]], add: [], remove: [] } };
}

/** A compile input over the conformance services, all served by waypoint `namespace`. */
export function conformanceInput(routes: readonly RouteResource[], extra: { services?: Service[]; kube?: ServiceResource[] } = {}): CompileInput {
  const base = conformanceServices();
  const control = [...base.control, ...(extra.services ?? [])];
  const resources: ConfigResources = { routes, services: [...base.kube, ...(extra.kube ?? [])], problems: [] };
  return {
    resources,
    services: control.filter((s) => s.waypoint !== undefined),
    waypoint: { namespace: MESH_NS, name: 'namespace' },
    lookup: serviceLookup(control),
    version: 1,
  };
}

/** A RequestView from a request target and headers ([name, value] lines). */
export function aRequest(target: string, headers: ReadonlyArray<readonly [string, string]> = [], method = 'GET'): RequestView {
  const { path, query } = splitPathAndQuery(target);
  const q = parseQuery(query);
  return {
    method,
    path,
    query: q,
    header: (name) => headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v),
  };
}

export function serviceKeyOf(name: string, namespace = MESH_NS): { namespace: string; hostname: string } {
  return { namespace, hostname: `${name}.${namespace}.svc.cluster.local` };
}
