/**
 * The user's resources as the waypoint understands them: Gateway API HTTPRoute,
 * GRPCRoute and TCPRoute, and the Kubernetes Service ports that say which
 * protocol a port speaks. These are the *validated* forms: the parsers in
 * resources/parse.ts turn a Kubernetes object (from a YAML file or the API
 * server) into one of these or into problems naming the field, and nothing
 * downstream ever sees an unvalidated object. Defaults are applied here as the
 * CRDs' OpenAPI defaults do (path PathPrefix "/", weight 1, redirect 302, …),
 * so the compiler (routing/compile.ts) and the data path never guess.
 *
 * Field names follow Gateway API (apis/v1/httproute_types.go, grpcroute_types.go).
 */

/** Which object a resource is (kind + namespace + name), for logs, status and the config dump. */
export interface ResourceId {
  readonly kind: ResourceKind;
  readonly namespace: string;
  readonly name: string;
}

export type ResourceKind = 'HTTPRoute' | 'GRPCRoute' | 'TCPRoute' | 'Service';

export interface ResourceMeta extends ResourceId {
  /** metadata.creationTimestamp in ms since the epoch (route precedence ties go to the oldest). */
  readonly creationTimestampMs: number;
  readonly generation: number;
  /** metadata.resourceVersion from the API server, or a content hash for the directory source. */
  readonly resourceVersion: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly annotations: Readonly<Record<string, string>>;
}

/** One problem with one resource: which field, what was wrong, what was expected. */
export interface ResourceProblem {
  readonly resource: ResourceId;
  /** A JSONPath-like field path: `spec.rules[0].matches[1].path.value`. */
  readonly field: string;
  readonly message: string;
}

/** A route's parent in the mesh (GAMMA): a Service or an Istio ServiceEntry, optionally one port. */
export interface ParentRef {
  readonly group: '' | 'networking.istio.io' | 'gateway.networking.k8s.io';
  readonly kind: 'Service' | 'ServiceEntry' | 'Gateway';
  readonly namespace: string;
  readonly name: string;
  readonly port: number | undefined;
  readonly sectionName: string | undefined;
}

// ---- matches -------------------------------------------------------------------------------

export type PathMatch =
  | { readonly type: 'Exact'; readonly value: string }
  | { readonly type: 'PathPrefix'; readonly value: string }
  | { readonly type: 'RegularExpression'; readonly value: string };

export interface HeaderMatch {
  readonly type: 'Exact' | 'RegularExpression';
  /** Lower-cased: header names compare case-insensitively. */
  readonly name: string;
  readonly value: string;
}

export interface QueryParamMatch {
  readonly type: 'Exact' | 'RegularExpression';
  /** Query parameter names are case-sensitive (Gateway API). */
  readonly name: string;
  readonly value: string;
}

export interface HttpRouteMatch {
  /** Always present after defaulting: an absent path is PathPrefix "/". */
  readonly path: PathMatch;
  readonly headers: readonly HeaderMatch[];
  readonly queryParams: readonly QueryParamMatch[];
  /** Upper-case HTTP method, or undefined for any. */
  readonly method: string | undefined;
}

/** GRPCRoute method match (grpcroute_types.go GRPCMethodMatch). */
export interface GrpcMethodMatch {
  readonly type: 'Exact' | 'RegularExpression';
  readonly service: string | undefined;
  readonly method: string | undefined;
}

export interface GrpcRouteMatch {
  readonly method: GrpcMethodMatch | undefined;
  readonly headers: readonly HeaderMatch[];
}

// ---- filters -------------------------------------------------------------------------------

export interface HeaderModifier {
  /** [name, value] in the order given; names as written (matching is case-insensitive). */
  readonly set: readonly (readonly [string, string])[];
  readonly add: readonly (readonly [string, string])[];
  readonly remove: readonly string[];
}

export type PathModifier =
  | { readonly type: 'ReplaceFullPath'; readonly value: string }
  | { readonly type: 'ReplacePrefixMatch'; readonly value: string };

export interface RequestRedirect {
  readonly scheme: 'http' | 'https' | undefined;
  readonly hostname: string | undefined;
  readonly path: PathModifier | undefined;
  readonly port: number | undefined;
  /** 301 | 302 | 303 | 307 | 308; defaults to 302. */
  readonly statusCode: number;
}

export interface UrlRewrite {
  readonly hostname: string | undefined;
  readonly path: PathModifier | undefined;
}

export interface RequestMirror {
  readonly backendRef: BackendTarget;
  /** 0..100 (fraction numerator/denominator or percent; 100 when neither is set). */
  readonly percent: number;
}

export interface CorsPolicy {
  readonly allowOrigins: readonly string[];
  readonly allowMethods: readonly string[];
  readonly allowHeaders: readonly string[];
  readonly exposeHeaders: readonly string[];
  readonly allowCredentials: boolean;
  readonly maxAgeSeconds: number | undefined;
}

export type HttpFilter =
  | { readonly type: 'RequestHeaderModifier'; readonly modifier: HeaderModifier }
  | { readonly type: 'ResponseHeaderModifier'; readonly modifier: HeaderModifier }
  | { readonly type: 'RequestRedirect'; readonly redirect: RequestRedirect }
  | { readonly type: 'URLRewrite'; readonly rewrite: UrlRewrite }
  | { readonly type: 'RequestMirror'; readonly mirror: RequestMirror }
  | { readonly type: 'CORS'; readonly cors: CorsPolicy };

// ---- backends ------------------------------------------------------------------------------

/**
 * What a backendRef points at (mesh backendRefs need no ReferenceGrant, GEP-1294), as istiod's
 * buildDestination reads it: `Service` (group ""; also multicluster.x-k8s.io ServiceImport, which istiod
 * treats as the Service of that name), `Hostname` (group networking.istio.io: `name` is a ServiceEntry
 * host, no namespace), or `Unsupported`: any other group/kind ("referencing unsupported backendRef"),
 * kept in its place so that its share of the traffic is answered with a 500 and ResolvedRefs says
 * InvalidKind (§3.1); `unsupported` then holds what was asked for. The parser never produces
 * `ServiceEntry` for a backend (istiod has no such backend kind); it stays for the contract's users.
 */
export interface BackendTarget {
  readonly group: '' | 'networking.istio.io';
  readonly kind: 'Service' | 'ServiceEntry' | 'Hostname' | 'Unsupported';
  readonly namespace: string;
  readonly name: string;
  readonly port: number | undefined;
  /** Present exactly when kind is `Unsupported`: the group and kind the reference named. */
  readonly unsupported?: { readonly group: string; readonly kind: string };
}

export interface BackendRef extends BackendTarget {
  /** Default 1; 0 means "no traffic". */
  readonly weight: number;
  /** Backend-level filters (MeshHTTPRouteBackendRequestHeaderModification). */
  readonly filters: readonly HttpFilter[];
}

// ---- rules and routes ----------------------------------------------------------------------

export interface HttpRouteTimeouts {
  /** timeouts.request in ms; undefined or 0 = no timeout. */
  readonly requestMs: number | undefined;
  /** timeouts.backendRequest in ms. */
  readonly backendRequestMs: number | undefined;
}

/** rules[].retry (GEP-1731). */
export interface HttpRouteRetry {
  readonly codes: readonly number[];
  /** undefined = Istio's default of 2. */
  readonly attempts: number | undefined;
  readonly backoffMs: number | undefined;
}

export interface HttpRouteRule {
  readonly name: string | undefined;
  /** At least one (an absent list is one default match). */
  readonly matches: readonly HttpRouteMatch[];
  readonly filters: readonly HttpFilter[];
  readonly backendRefs: readonly BackendRef[];
  readonly timeouts: HttpRouteTimeouts;
  readonly retry: HttpRouteRetry | undefined;
}

export interface GrpcRouteRule {
  readonly name: string | undefined;
  readonly matches: readonly GrpcRouteMatch[];
  readonly filters: readonly HttpFilter[];
  readonly backendRefs: readonly BackendRef[];
}

export interface TcpRouteRule {
  readonly name: string | undefined;
  readonly backendRefs: readonly BackendRef[];
}

export interface HttpRouteResource {
  readonly meta: ResourceMeta & { readonly kind: 'HTTPRoute' };
  readonly parentRefs: readonly ParentRef[];
  /** Ignored for mesh parents (§3.1); kept for the config dump. */
  readonly hostnames: readonly string[];
  readonly rules: readonly HttpRouteRule[];
}

export interface GrpcRouteResource {
  readonly meta: ResourceMeta & { readonly kind: 'GRPCRoute' };
  readonly parentRefs: readonly ParentRef[];
  readonly hostnames: readonly string[];
  readonly rules: readonly GrpcRouteRule[];
}

export interface TcpRouteResource {
  readonly meta: ResourceMeta & { readonly kind: 'TCPRoute' };
  readonly parentRefs: readonly ParentRef[];
  readonly rules: readonly TcpRouteRule[];
}

export type RouteResource = HttpRouteResource | GrpcRouteResource | TcpRouteResource;

/** A Kubernetes Service port as far as protocol selection needs it. */
export interface ServicePortResource {
  readonly name: string | undefined;
  readonly port: number;
  readonly targetPort: number | string | undefined;
  /** TCP | UDP | SCTP. */
  readonly protocol: string;
  readonly appProtocol: string | undefined;
}

export interface ServiceResource {
  readonly meta: ResourceMeta & { readonly kind: 'Service' };
  readonly ports: readonly ServicePortResource[];
  readonly clusterIps: readonly string[];
}

/** Everything a config source knows at one moment (immutable; a new object on every change). */
export interface ConfigResources {
  readonly routes: readonly RouteResource[];
  readonly services: readonly ServiceResource[];
  /** Problems of resources that were rejected (or partly: a rejected rule). Valid resources are unaffected. */
  readonly problems: readonly ResourceProblem[];
}

export function resourceIdText(id: ResourceId): string {
  return `${id.kind} ${id.namespace}/${id.name}`;
}
