/**
 * The compiled routing table and the values the matcher works on. compile.ts
 * builds a RouteTable from the validated resources and the services this
 * waypoint serves (pure, deterministic; rebuilt on every config or discovery
 * change); select.ts picks a route for a request (pure, synchronous); filters.ts
 * applies a route's filters to the upstream request. The data path holds one
 * RouteTable per request (like ztunnel's one snapshot per connection), so a
 * change never applies halfway through a request.
 */
import type {
  BackendTarget,
  CorsPolicy,
  HeaderModifier,
  HttpFilter,
  HttpRouteMatch,
  RequestMirror,
  RequestRedirect,
  ResourceId,
  UrlRewrite,
} from '../resources/types.js';

/** How a service port speaks, as Istio decides from appProtocol / the port-name prefix (§2.2). */
export type PortProtocol = 'http' | 'http2' | 'grpc' | 'tcp' | 'tls' | 'unknown';

/** A service (frontend) this waypoint serves, in the table's own terms. */
export interface ServiceKey {
  readonly namespace: string;
  /** FQDN: `<name>.<namespace>.svc.<domain>`. */
  readonly hostname: string;
}

/** Where a chosen route sends traffic. */
export interface WeightedBackend {
  readonly target: BackendTarget;
  /** The resolved service port (backendRef.port, or the single port of a one-port service). */
  readonly port: number;
  readonly weight: number;
  /** Backend-level filters (RequestHeaderModifier, ResponseHeaderModifier), applied after the rule's. */
  readonly filters: readonly HttpFilter[];
  /**
   * Set when the backendRef cannot be served (unknown Service, unsupported kind, a port the service
   * does not have). Istio keeps such a backend's share of the weight, pointing at a cluster that does
   * not exist, so requests picked for it get Envoy's cluster-not-found answer: 500, response flag NC.
   * A TCP connection picked for it is closed.
   */
  readonly invalid?: { readonly reason: string; readonly message: string };
}

export type RouteAction =
  | { readonly kind: 'forward'; readonly backends: readonly WeightedBackend[] }
  | { readonly kind: 'redirect'; readonly redirect: RequestRedirect }
  /** All-zero weights or only invalid backends: Istio answers with a direct 500. */
  | { readonly kind: 'direct'; readonly status: number; readonly body: string };

/** The retry policy of a route, in Envoy's terms (§6.1). */
export interface RetryPolicy {
  /** Number of retries after the first attempt (0 = none). */
  readonly numRetries: number;
  /** connect-failure, refused-stream, unavailable, cancelled, retriable-status-codes, ... */
  readonly retryOn: readonly string[];
  readonly retriableStatusCodes: readonly number[];
  /** Base of the fully-jittered exponential backoff (Envoy default 25 ms; max 10×). */
  readonly backoffBaseMs: number;
  /** Per-try timeout in ms (0 = none). */
  readonly perTryTimeoutMs: number;
}

export interface CompiledRoute {
  /** rules[].name, or `<ns>.<route>.<ruleIndex>` (Istio's route name, the access log's ROUTE_NAME). */
  readonly name: string;
  /** The one match this entry was expanded from (every generated route has exactly one match). */
  readonly match: HttpRouteMatch;
  readonly source: { readonly route: ResourceId; readonly ruleIndex: number; readonly matchIndex: number };
  readonly requestHeaders: readonly HeaderModifier[];
  readonly responseHeaders: readonly HeaderModifier[];
  readonly rewrite: UrlRewrite | undefined;
  readonly mirrors: readonly RequestMirror[];
  readonly cors: CorsPolicy | undefined;
  readonly action: RouteAction;
  /** Route timeout in ms (0 = none), with Istio's backendRequest quirk applied. */
  readonly timeoutMs: number;
  readonly retry: RetryPolicy;
}

/** The routes for one service port, in precedence order (first match wins). */
export interface PortRoutes {
  readonly protocol: PortProtocol;
  /** True when at least one HTTPRoute/GRPCRoute is attached: no match is then 404, never the default route. */
  readonly attached: boolean;
  readonly routes: readonly CompiledRoute[];
  /**
   * TCPRoute backends for opaque TCP (undefined: the service's own endpoints; [] : the TCPRoute's
   * weights are all 0, so connections are refused, as Istio's zero-weight blackhole does).
   */
  readonly tcpBackends: readonly WeightedBackend[] | undefined;
}

export interface RouteTable {
  /** Monotonic version, for the config dump and logs. */
  readonly version: number;
  /** `${namespace}/${hostname}` → service port → routes. */
  portRoutes(service: ServiceKey, port: number): PortRoutes | undefined;
  /** Every (service, port) the table has, for /config_dump. */
  entries(): Iterable<{ readonly service: ServiceKey; readonly port: number; readonly routes: PortRoutes }>;
}

/** What the matcher reads of a request (no body; values as received). */
export interface RequestView {
  /** Upper-case method. */
  readonly method: string;
  /** The path without the query, as it will be forwarded (normalized by the data path first). */
  readonly path: string;
  /** Decoded query parameters in order (`a=1&a=2` → two entries). */
  readonly query: readonly (readonly [string, string])[];
  /** All values of a header (lower-case name), in arrival order; [] when absent. */
  header(name: string): readonly string[];
}

export type RouteSelection =
  | { readonly kind: 'route'; readonly route: CompiledRoute }
  /** Routes are attached but none matched: 404 NR. */
  | { readonly kind: 'no-match' }
  /** No route attached to this service port: the default route to the service's own endpoints. */
  | { readonly kind: 'default' };
