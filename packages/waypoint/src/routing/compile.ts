/**
 * The route compiler: validated HTTPRoute/GRPCRoute/TCPRoute resources + the services this waypoint
 * serves → the RouteTable the data path reads, the route parent statuses, and problems. Pure and
 * deterministic: the same input gives the same table, statuses and problems in the same order.
 *
 * It follows istiod's conversion for mesh parents (pilot/pkg/config/kube/gateway conversion.go and
 * route_collections.go, then listener_waypoint.go for what a waypoint keeps):
 * - Attachment: a parentRef `{group: "", kind: Service}` or `{group: networking.istio.io, kind:
 *   ServiceEntry}` naming a served service. `spec.hostnames` is ignored for mesh parents;
 *   `parentRef.sectionName` too. `parentRef.port` scopes the route to that service port; unset means
 *   every port. A parentRef to this waypoint's own Gateway is not converted (istiod builds nothing
 *   for the istio-waypoint class; we say so in the status instead of staying silent).
 * - Scope: a waypoint only considers routes in the service's namespace or in its own namespace
 *   (getVirtualServiceForWaypoint). A route elsewhere (a "consumer route", GEP-1294) is still
 *   Accepted in its status, as istiod writes it, but ignored here; a problem says so. Istio ambient
 *   has no consumer routes (its conformance run drops MeshConsumerRoute).
 * - Expansion and order: each rule becomes one route per match, named `rules[].name` or
 *   `<ns>.<route>.<ruleIndex>`. For a (service, port), the routes of all attached HTTPRoutes and
 *   GRPCRoutes are concatenated in creationTimestamp, namespace, name order (rule order inside),
 *   then stable-sorted by Istio's ranking (sortHTTPRoutes): path type Exact 3 > PathPrefix 2 >
 *   RegularExpression 1 > none −1; then the longer path value; then having a method; then more
 *   headers; then more query params; a route without any match last. istiod merges per
 *   (route namespace, parentRef port, host) and a waypoint then concatenates those merged groups
 *   without re-sorting; we sort the whole (service, port) list once, which is the same whenever the
 *   routes of a service share one namespace and one parentRef port shape (the usual case and every
 *   conformance test), and is what Gateway API asks for otherwise.
 * - Filters: RequestHeaderModifier/ResponseHeaderModifier (set and add de-duplicated by name, first
 *   wins; `host`/`:authority` in set/add becomes the host rewrite, set over add; other pseudo-headers
 *   dropped), RequestRedirect → a redirect action, URLRewrite, RequestMirror (mirrors whose backend
 *   does not resolve are left out with a ResolvedRefs error; percent 0 never mirrors), CORS. A filter
 *   type istiod does not handle where it appears (GRPCRoute: only the two header modifiers and
 *   RequestMirror; backendRefs: only the header modifiers) is a hard error: the whole route yields
 *   nothing (computeRoute returns no routes), so the service falls back to its default route, and
 *   ResolvedRefs says InvalidFilter `unsupported filter type "<T>"`. (The resource parser already
 *   refuses such routes; the compiler checks again so a hand-built input cannot slip through.)
 * - Backends: weight-0 backendRefs are dropped; when the weights sum to 0 and there is no redirect
 *   the action is a direct 500. A backend that cannot be served keeps its weight and is marked
 *   `invalid` (its share gets 500 NC): an unknown Service or Hostname (ResolvedRefs BackendNotFound
 *   `backend(<host>) not found`), an unsupported kind (InvalidKind), a port the service does not
 *   have (no status error: istiod does not check it, Envoy just finds no cluster). A Service backend
 *   without a port is a hard error (`port is required in backendRef`), as istiod's buildDestination
 *   says for every Service backend, single-port or not.
 * - Timeouts (GEP-1742): `request` is the route timeout; a non-zero `backendRequest` becomes the per-try
 *   timeout when `retry` is set, otherwise it *replaces* the route timeout (Istio's quirk). 0 = none.
 * - Retries (GEP-1731): retryOn `connect-failure,refused-stream,unavailable,cancelled` plus the codes
 *   (codes Go's net/http knows become retriable-status-codes, others stay retryOn tokens, as
 *   parseRetryOn does); attempts default 2; `attempts: 0` means no retry policy at all (and the
 *   per-try timeout goes with it); backoff is the base interval. No retry stanza: Istio's default
 *   policy (DEFAULT_RETRY_POLICY). GRPCRoute has neither field: default policy, no timeout.
 * - GRPCRoute method matches become path matches on `/<service>/<method>` as createGRPCURIMatch
 *   writes them (Exact both → Exact; service only → PathPrefix `/<service>/`; method only → regex
 *   `/[^/]+/<method>`; RegularExpression → regex), values not escaped, exactly as istiod.
 * - TCPRoute: the first rule of the oldest attached route is the port's tcpBackends (istiod's
 *   getTCPRouteMatch takes the first rule); all weights 0 → [] (connections refused).
 * - Statuses (conditions.go createRouteStatus): per parentRef, Accepted (Accepted "Route was valid",
 *   or False NoMatchingParent `parent service: "<name>" not found`), ResolvedRefs (True "All
 *   references resolved", or False with the last conversion error's reason and message), and
 *   ResolvedWaypoints (always reason ResolvedWaypoints, status True; message "All waypoints resolved",
 *   "parent not found", or the missing use-waypoint label text). Only parents this waypoint is
 *   responsible for get an entry: served services, this waypoint's Gateway, and — in the waypoint's
 *   namespace or a served service's namespace — parents that do not exist or are bound to no
 *   waypoint. Parents bound to another waypoint are left to it.
 */
import type { Service } from '@ambient/control';
import type {
  BackendRef,
  BackendTarget,
  ConfigResources,
  CorsPolicy,
  GrpcRouteMatch,
  GrpcRouteResource,
  GrpcRouteRule,
  HeaderModifier,
  HttpFilter,
  HttpRouteMatch,
  HttpRouteResource,
  HttpRouteRule,
  ParentRef,
  RequestMirror,
  RequestRedirect,
  ResourceId,
  ResourceProblem,
  RouteResource,
  ServiceResource,
  TcpRouteResource,
  UrlRewrite,
} from '../resources/types.js';
import type { RouteCondition, RouteParentStatus } from '../sources/source.js';
import { isProtectedHeaderName } from './headers.js';
import { portProtocol } from './protocol.js';
import { DEFAULT_BACKOFF_BASE_MS, DEFAULT_RETRY_POLICY, NO_RETRY_POLICY } from './retry.js';
import { compileMatch, registerMatchers, type CompiledMatch, type MatchCompileError } from './select.js';
import type { CompiledRoute, PortRoutes, RetryPolicy, RouteAction, RouteTable, ServiceKey, WeightedBackend } from './types.js';

const DEFAULT_DOMAIN_SUFFIX = 'cluster.local';
const CONTROLLER_NAME = 'istio.io/gateway-controller';

// ---- inputs and outputs --------------------------------------------------------------------

/** How the compiler resolves parentRefs and backendRefs to services. */
export interface ServiceLookup {
  /** The Kubernetes Service `namespace/name` (hostname `<name>.<namespace>.svc.<domainSuffix>`). */
  service(namespace: string, name: string): Service | undefined;
  /** The services of ServiceEntry `namespace/name` (one per host); [] when unknown. */
  serviceEntry(namespace: string, name: string): readonly Service[];
  /** A service by hostname (a `Hostname` backendRef), preferring the given namespace. */
  hostname(hostname: string, namespace: string): Service | undefined;
}

export interface CompileInput {
  readonly resources: ConfigResources;
  /** The services this waypoint serves (the caller decides: their `waypoint` names this waypoint). */
  readonly services: readonly Service[];
  /** This waypoint's own Gateway. */
  readonly waypoint: { readonly namespace: string; readonly name: string };
  readonly lookup: ServiceLookup;
  /** Default `cluster.local`. */
  readonly domainSuffix?: string;
  readonly version: number;
}

interface RouteStatusReport {
  readonly route: ResourceId;
  readonly parents: readonly RouteParentStatus[];
}

export interface CompileResult {
  readonly table: RouteTable;
  readonly routeStatuses: readonly RouteStatusReport[];
  readonly problems: readonly ResourceProblem[];
}

/** A ServiceLookup over a list of services (e.g. every service of a discovery snapshot). */
export function serviceLookup(services: Iterable<Service>, domainSuffix = DEFAULT_DOMAIN_SUFFIX): ServiceLookup {
  const kube = new Map<string, Service>();
  const entries = new Map<string, Service[]>();
  const byHost = new Map<string, Service[]>();
  for (const s of services) {
    const key = `${s.namespace}/${s.name}`;
    if (s.hostname === `${s.name}.${s.namespace}.svc.${domainSuffix}`) kube.set(key, s);
    else {
      const list = entries.get(key) ?? [];
      list.push(s);
      entries.set(key, list);
    }
    const hosts = byHost.get(s.hostname) ?? [];
    hosts.push(s);
    byHost.set(s.hostname, hosts);
  }
  return {
    service: (namespace, name) => kube.get(`${namespace}/${name}`),
    serviceEntry: (namespace, name) => entries.get(`${namespace}/${name}`) ?? [],
    hostname: (hostname, namespace) => {
      const all = byHost.get(hostname);
      if (all === undefined) return undefined;
      return all.find((s) => s.namespace === namespace) ?? all[0];
    },
  };
}

// ---- conversion of one route ---------------------------------------------------------------

interface ConfigError {
  readonly reason: string;
  readonly message: string;
}

/** Istio's getURIRank/getURILength and the other keys of sortHTTPRoutes, for one generated route. */
interface SortKey {
  readonly rank: number;
  readonly length: number;
  readonly method: boolean;
  readonly headers: number;
  readonly queryParams: number;
  /** A GRPCRoute rule without matches: no match at all (sorted last unless a parentRef port adds one). */
  readonly matchless: boolean;
}

interface GeneratedRoute {
  readonly route: CompiledRoute;
  readonly matcher: CompiledMatch;
  readonly key: SortKey;
}

interface Conversion {
  readonly resource: RouteResource;
  /** HTTPRoute/GRPCRoute: the generated routes (empty when dropped). */
  readonly routes: readonly GeneratedRoute[];
  /** TCPRoute: the first rule's backends; undefined when dropped or not a TCPRoute. */
  readonly tcp: readonly WeightedBackend[] | undefined;
  /** The ResolvedRefs error (the last one, as istiod keeps it). */
  readonly error: ConfigError | undefined;
  /** A hard error: the route yields nothing. */
  readonly dropped: boolean;
}

class HardError extends Error {
  constructor(
    readonly config: ConfigError,
    readonly field: string,
  ) {
    super(config.message);
  }
}

/** Go net/http StatusText knows these (Istio's parseRetryOn keeps only them as status codes). */
const KNOWN_STATUS_CODES: ReadonlySet<number> = new Set([
  400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421, 422, 423, 424, 425, 426,
  428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
]);

const GEP_1731_RETRY_ON = ['connect-failure', 'refused-stream', 'unavailable', 'cancelled'] as const;

function isValidHeaderValue(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x09 || (c >= 0x20 && c !== 0x7f)) continue;
    return false;
  }
  return true;
}

class RouteConverter {
  readonly problems: ResourceProblem[] = [];
  #error: ConfigError | undefined;

  constructor(
    private readonly resource: RouteResource,
    private readonly lookup: ServiceLookup,
    private readonly domainSuffix: string,
  ) {}

  get error(): ConfigError | undefined {
    return this.#error;
  }

  softError(error: ConfigError, field: string): void {
    this.#error = error;
    this.problems.push({ resource: this.resource.meta, field, message: error.message });
  }

  note(field: string, message: string): void {
    this.problems.push({ resource: this.resource.meta, field, message });
  }

  // -- headers --

  /** headerListToMap + TranslateHeadersOperations: dedupe, validate, pull out the authority, drop pseudo-headers. */
  headerModifier(mod: HeaderModifier, field: string): { modifier: HeaderModifier; authority: string | undefined } {
    for (const [name, value] of [...mod.set, ...mod.add]) {
      if (!isValidHeaderValue(value)) {
        throw new HardError({ reason: 'InvalidFilter', message: `header ${JSON.stringify(name)} value contains invalid characters` }, field);
      }
    }
    const pick = (entries: readonly (readonly [string, string])[]) => {
      const seen = new Set<string>();
      const out: Array<readonly [string, string]> = [];
      let authority: string | undefined;
      for (const [name, value] of entries) {
        const lower = name.toLowerCase();
        if (seen.has(lower)) continue; // "Subsequent entries with an equivalent header name MUST be ignored"
        seen.add(lower);
        if (lower === 'host' || lower === ':authority') authority = value;
        if (isProtectedHeaderName(lower)) continue;
        out.push([name, value]);
      }
      return { out, authority };
    };
    const set = pick(mod.set);
    const add = pick(mod.add);
    return {
      modifier: { set: set.out, add: add.out, remove: mod.remove.filter((n) => !isProtectedHeaderName(n.toLowerCase())) },
      authority: set.authority ?? add.authority,
    };
  }

  // -- backends --

  /** buildDestination: a hard error throws; a soft one marks the backend invalid (and, when istiod reports it, sets ResolvedRefs). */
  backend(ref: BackendTarget, field: string): { target: BackendTarget; port: number; invalid: ConfigError | undefined } {
    const unsupported = (group: string, kind: string): ConfigError => ({
      reason: 'InvalidKind',
      message: `referencing unsupported backendRef: group ${JSON.stringify(group)} kind ${JSON.stringify(kind)}`,
    });
    let service: Service | undefined;
    let notFound: ConfigError | undefined;
    switch (ref.kind) {
      case 'Service': {
        if (ref.name.includes('.')) {
          throw new HardError({ reason: 'InvalidDestination', message: 'service name invalid; the name of the Service must be used, not the hostname.' }, field);
        }
        service = this.lookup.service(ref.namespace, ref.name);
        if (service === undefined) {
          notFound = { reason: 'BackendNotFound', message: `backend(${ref.name}.${ref.namespace}.svc.${this.domainSuffix}) not found` };
        }
        break;
      }
      case 'Hostname': {
        service = this.lookup.hostname(ref.name, ref.namespace);
        if (service === undefined) notFound = { reason: 'BackendNotFound', message: `backend(${ref.name}) not found` };
        break;
      }
      case 'ServiceEntry':
      case 'Unsupported': {
        const asked = ref.unsupported ?? { group: ref.group, kind: ref.kind };
        const error = unsupported(asked.group, asked.kind);
        this.softError(error, field);
        return { target: ref, port: ref.port ?? 0, invalid: error };
      }
    }
    if (ref.port === undefined) {
      throw new HardError({ reason: 'InvalidDestination', message: 'port is required in backendRef' }, field);
    }
    if (notFound !== undefined) {
      this.softError(notFound, field);
      return { target: ref, port: ref.port, invalid: notFound };
    }
    const port = ref.port;
    if (service !== undefined && !service.ports.some((p) => p.servicePort === port)) {
      // istiod does not check the port; Envoy then finds no cluster for it.
      const invalid = { reason: 'BackendNotFound', message: `service ${service.hostname} has no port ${port}` };
      this.note(field, `${invalid.message}; its share of traffic is answered with 500`);
      return { target: ref, port, invalid };
    }
    return { target: ref, port, invalid: undefined };
  }

  weightedBackends(refs: readonly BackendRef[], field: string, backendFilters: boolean): WeightedBackend[] {
    const out: WeightedBackend[] = [];
    refs.forEach((ref, i) => {
      if (ref.weight === 0) return;
      const at = `${field}[${i}]`;
      const resolved = this.backend(ref, at);
      const filters: HttpFilter[] = [];
      ref.filters.forEach((f, j) => {
        const fAt = `${at}.filters[${j}]`;
        if (!backendFilters || (f.type !== 'RequestHeaderModifier' && f.type !== 'ResponseHeaderModifier')) {
          throw new HardError({ reason: 'InvalidFilter', message: `unsupported filter type ${JSON.stringify(f.type)}` }, fAt);
        }
        const { modifier, authority } = this.headerModifier(f.modifier, fAt);
        if (authority !== undefined && f.type === 'RequestHeaderModifier') {
          this.note(fAt, 'a host header set by a backendRef filter is not applied (backend-level host rewrite is not supported)');
        }
        filters.push({ type: f.type, modifier });
      });
      const target: BackendTarget = { ...stripRefFields(ref), port: resolved.port };
      out.push(
        resolved.invalid === undefined
          ? { target, port: resolved.port, weight: ref.weight, filters }
          : { target, port: resolved.port, weight: ref.weight, filters, invalid: resolved.invalid },
      );
    });
    return out;
  }

  /**
   * createMirrorFilter: a mirror whose backend does not resolve is left out with a ResolvedRefs
   * error in an HTTPRoute, and is a hard error in a GRPCRoute (`hard`).
   */
  mirror(m: RequestMirror, field: string, hard: boolean): RequestMirror | undefined {
    let resolved: ReturnType<RouteConverter['backend']>;
    try {
      resolved = this.backend(m.backendRef, `${field}.backendRef`);
    } catch (e) {
      if (hard || !(e instanceof HardError)) throw e;
      this.softError(e.config, e.field);
      return undefined;
    }
    if (resolved.invalid !== undefined) {
      if (hard) throw new HardError(resolved.invalid, field);
      return undefined;
    }
    if (m.percent <= 0) return undefined;
    return { backendRef: { ...m.backendRef, port: resolved.port }, percent: m.percent };
  }

  // -- HTTPRoute --

  httpRule(rule: HttpRouteRule, ruleIndex: number, field: string): GeneratedRoute[] {
    const meta = this.resource.meta;
    const name = rule.name ?? `${meta.namespace}.${meta.name}.${ruleIndex}`;
    let requestHeaders: HeaderModifier | undefined;
    let responseHeaders: HeaderModifier | undefined;
    let headerAuthority: string | undefined;
    let redirect: RequestRedirect | undefined;
    let rewrite: UrlRewrite | undefined;
    let cors: CorsPolicy | undefined;
    const mirrors: RequestMirror[] = [];
    rule.filters.forEach((f, j) => {
      const at = `${field}.filters[${j}]`;
      switch (f.type) {
        case 'RequestHeaderModifier': {
          const r = this.headerModifier(f.modifier, at);
          requestHeaders = r.modifier;
          headerAuthority = r.authority;
          break;
        }
        case 'ResponseHeaderModifier':
          responseHeaders = this.headerModifier(f.modifier, at).modifier;
          break;
        case 'RequestRedirect':
          redirect = f.redirect;
          break;
        case 'URLRewrite':
          rewrite = f.rewrite.hostname === undefined && f.rewrite.path === undefined ? undefined : f.rewrite;
          break;
        case 'RequestMirror': {
          const m = this.mirror(f.mirror, at, false);
          if (m !== undefined) mirrors.push(m);
          break;
        }
        case 'CORS':
          cors = f.cors;
          break;
        default:
          throw new HardError({ reason: 'InvalidFilter', message: `unsupported filter type ${JSON.stringify((f as { type: string }).type)}` }, at);
      }
    });

    const retry = retryPolicyOf(rule);
    let timeoutMs = rule.timeouts.requestMs ?? 0;
    const backendRequestMs = rule.timeouts.backendRequestMs ?? 0;
    let perTryTimeoutMs = 0;
    if (backendRequestMs > 0) {
      if (rule.retry !== undefined) perTryTimeoutMs = backendRequestMs;
      else timeoutMs = backendRequestMs;
    }
    const finalRetry: RetryPolicy = retry.numRetries > 0 && perTryTimeoutMs > 0 ? { ...retry, perTryTimeoutMs } : retry;

    const action = this.action(rule.backendRefs, `${field}.backendRefs`, redirect, true);
    const hostRewrite = rewrite?.hostname ?? headerAuthority;
    const finalRewrite: UrlRewrite | undefined =
      rewrite === undefined && hostRewrite === undefined ? undefined : { hostname: hostRewrite, path: rewrite?.path };

    return rule.matches.map((match, matchIndex) => {
      const route: CompiledRoute = {
        name,
        match,
        source: { route: idOf(this.resource), ruleIndex, matchIndex },
        requestHeaders: requestHeaders === undefined ? [] : [requestHeaders],
        responseHeaders: responseHeaders === undefined ? [] : [responseHeaders],
        rewrite: finalRewrite,
        mirrors,
        cors,
        action,
        timeoutMs,
        retry: finalRetry,
      };
      return { route, matcher: this.matcher(match, `${field}.matches[${matchIndex}]`), key: httpSortKey(match) };
    });
  }

  action(refs: readonly BackendRef[], field: string, redirect: RequestRedirect | undefined, backendFilters: boolean): RouteAction {
    if (redirect !== undefined) return { kind: 'redirect', redirect };
    let sum = 0;
    for (const r of refs) sum += r.weight;
    if (sum === 0) return { kind: 'direct', status: 500, body: '' };
    return { kind: 'forward', backends: this.weightedBackends(refs, field, backendFilters) };
  }

  matcher(match: HttpRouteMatch, field: string): CompiledMatch {
    const errors: MatchCompileError[] = [];
    const compiled = compileMatch(match, errors);
    const first = errors[0];
    if (first !== undefined) {
      throw new HardError({ reason: 'UnsupportedValue', message: first.message }, `${field}.${first.field}`);
    }
    return compiled;
  }

  // -- GRPCRoute --

  grpcRule(rule: GrpcRouteRule, ruleIndex: number, field: string): GeneratedRoute[] {
    const meta = this.resource.meta;
    const name = rule.name ?? `${meta.namespace}.${meta.name}.${ruleIndex}`;
    let requestHeaders: HeaderModifier | undefined;
    let responseHeaders: HeaderModifier | undefined;
    let headerAuthority: string | undefined;
    const mirrors: RequestMirror[] = [];
    rule.filters.forEach((f, j) => {
      const at = `${field}.filters[${j}]`;
      switch (f.type) {
        case 'RequestHeaderModifier': {
          const r = this.headerModifier(f.modifier, at);
          requestHeaders = r.modifier;
          headerAuthority = r.authority;
          break;
        }
        case 'ResponseHeaderModifier':
          responseHeaders = this.headerModifier(f.modifier, at).modifier;
          break;
        case 'RequestMirror': {
          const m = this.mirror(f.mirror, at, true);
          if (m !== undefined) mirrors.push(m);
          break;
        }
        default:
          throw new HardError({ reason: 'InvalidFilter', message: `unsupported filter type ${JSON.stringify(f.type)}` }, at);
      }
    });
    const action = this.action(rule.backendRefs, `${field}.backendRefs`, undefined, true);
    const rewrite: UrlRewrite | undefined = headerAuthority === undefined ? undefined : { hostname: headerAuthority, path: undefined };
    const build = (match: HttpRouteMatch, matchIndex: number, key: SortKey, matcherField: string): GeneratedRoute => ({
      route: {
        name,
        match,
        source: { route: idOf(this.resource), ruleIndex, matchIndex },
        requestHeaders: requestHeaders === undefined ? [] : [requestHeaders],
        responseHeaders: responseHeaders === undefined ? [] : [responseHeaders],
        rewrite,
        mirrors,
        cors: undefined,
        action,
        timeoutMs: 0,
        retry: DEFAULT_RETRY_POLICY,
      },
      matcher: this.matcher(match, matcherField),
      key,
    });
    if (rule.matches.length === 0) {
      const match: HttpRouteMatch = { path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: undefined };
      return [build(match, 0, { rank: -1, length: 0, method: false, headers: 0, queryParams: 0, matchless: true }, field)];
    }
    return rule.matches.map((m, i) => {
      const at = `${field}.matches[${i}]`;
      const { match, key } = this.grpcMatch(m, at);
      return build(match, i, key, at);
    });
  }

  /** createGRPCURIMatch + createGRPCHeadersMatch, into an HttpRouteMatch and its sort key. */
  grpcMatch(m: GrpcRouteMatch, field: string): { match: HttpRouteMatch; key: SortKey } {
    const headers = m.headers;
    const headerCount = new Set(headers.map((h) => h.name.toLowerCase())).size;
    const method = m.method;
    if (method === undefined) {
      return {
        match: { path: { type: 'PathPrefix', value: '/' }, headers, queryParams: [], method: undefined },
        key: { rank: -1, length: 0, method: false, headers: headerCount, queryParams: 0, matchless: false },
      };
    }
    if (method.service === undefined && method.method === undefined) {
      throw new HardError({ reason: 'InvalidConfiguration', message: 'gRPC match must have method or service defined' }, `${field}.method`);
    }
    let path: HttpRouteMatch['path'];
    if (method.type === 'Exact') {
      if (method.method === undefined) path = { type: 'PathPrefix', value: `/${method.service as string}/` };
      else if (method.service === undefined) path = { type: 'RegularExpression', value: `/[^/]+/${method.method}` };
      else path = { type: 'Exact', value: `/${method.service}/${method.method}` };
    } else if (method.method === undefined) path = { type: 'RegularExpression', value: `/${method.service as string}/.+` };
    else if (method.service === undefined) path = { type: 'RegularExpression', value: `/[^/]+/${method.method}` };
    else path = { type: 'RegularExpression', value: `/${method.service}/${method.method}` };
    const rank = path.type === 'Exact' ? 3 : path.type === 'PathPrefix' ? 2 : 1;
    return {
      match: { path, headers, queryParams: [], method: undefined },
      key: { rank, length: path.value.length, method: false, headers: headerCount, queryParams: 0, matchless: false },
    };
  }

  // -- TCPRoute --

  tcpBackends(route: TcpRouteResource): WeightedBackend[] | undefined {
    const rule = route.rules[0];
    if (rule === undefined) return undefined;
    let sum = 0;
    for (const r of rule.backendRefs) sum += r.weight;
    if (sum === 0) return [];
    return this.weightedBackends(rule.backendRefs, 'spec.rules[0].backendRefs', false);
  }
}

function stripRefFields(ref: BackendRef | BackendTarget): BackendTarget {
  const base = { group: ref.group, kind: ref.kind, namespace: ref.namespace, name: ref.name, port: ref.port };
  return ref.unsupported === undefined ? base : { ...base, unsupported: ref.unsupported };
}

function idOf(r: RouteResource): ResourceId {
  return { kind: r.meta.kind, namespace: r.meta.namespace, name: r.meta.name };
}

function retryPolicyOf(rule: HttpRouteRule): RetryPolicy {
  const r = rule.retry;
  if (r === undefined) return DEFAULT_RETRY_POLICY;
  const attempts = r.attempts ?? 2;
  if (attempts <= 0) return NO_RETRY_POLICY;
  const retryOn: string[] = [...GEP_1731_RETRY_ON];
  const codes: number[] = [];
  for (const code of r.codes) {
    if (KNOWN_STATUS_CODES.has(code)) codes.push(code);
    else retryOn.push(String(code));
  }
  if (codes.length > 0) retryOn.push('retriable-status-codes');
  return {
    numRetries: attempts,
    retryOn,
    retriableStatusCodes: codes,
    backoffBaseMs: r.backoffMs !== undefined && r.backoffMs > 0 ? r.backoffMs : DEFAULT_BACKOFF_BASE_MS,
    perTryTimeoutMs: 0,
  };
}

function httpSortKey(match: HttpRouteMatch): SortKey {
  const p = match.path;
  let length: number;
  if (p.type === 'PathPrefix') {
    // createURIMatch trims one trailing "/" unless the value is "/".
    length = p.value !== '/' && p.value.endsWith('/') ? p.value.length - 1 : p.value.length;
  } else length = p.value.length;
  return {
    rank: p.type === 'Exact' ? 3 : p.type === 'PathPrefix' ? 2 : 1,
    length,
    method: match.method !== undefined,
    headers: new Set(match.headers.map((h) => h.name.toLowerCase())).size,
    queryParams: new Set(match.queryParams.map((q) => q.name)).size,
    matchless: false,
  };
}

/** sortHTTPRoutes as a comparator (negative: a first). */
function compareKeys(a: SortKey, b: SortKey): number {
  if (a.matchless || b.matchless) return a.matchless === b.matchless ? 0 : a.matchless ? 1 : -1;
  if (a.rank !== b.rank) return b.rank - a.rank;
  if (a.length !== b.length) return b.length - a.length;
  if (a.method !== b.method) return a.method ? -1 : 1;
  if (a.headers !== b.headers) return b.headers - a.headers;
  return b.queryParams - a.queryParams;
}

function convert(resource: RouteResource, lookup: ServiceLookup, domainSuffix: string): { conversion: Conversion; problems: ResourceProblem[] } {
  const c = new RouteConverter(resource, lookup, domainSuffix);
  try {
    let routes: GeneratedRoute[] = [];
    let tcp: WeightedBackend[] | undefined;
    switch (resource.meta.kind) {
      case 'HTTPRoute':
        (resource as HttpRouteResource).rules.forEach((rule, i) => routes.push(...c.httpRule(rule, i, `spec.rules[${i}]`)));
        break;
      case 'GRPCRoute':
        (resource as GrpcRouteResource).rules.forEach((rule, i) => routes.push(...c.grpcRule(rule, i, `spec.rules[${i}]`)));
        break;
      case 'TCPRoute':
        tcp = c.tcpBackends(resource as TcpRouteResource);
        routes = [];
        break;
    }
    return { conversion: { resource, routes, tcp, error: c.error, dropped: false }, problems: c.problems };
  } catch (e) {
    if (!(e instanceof HardError)) throw e;
    c.problems.push({ resource: resource.meta, field: e.field, message: `${e.config.message}; the route is not applied` });
    return { conversion: { resource, routes: [], tcp: undefined, error: e.config, dropped: true }, problems: c.problems };
  }
}

// ---- the table -----------------------------------------------------------------------------

interface TableEntry {
  readonly service: ServiceKey;
  readonly port: number;
  readonly routes: PortRoutes;
}

class CompiledRouteTable implements RouteTable {
  readonly #byHost = new Map<string, Map<string, Map<number, PortRoutes>>>();
  readonly #entries: TableEntry[];

  constructor(
    readonly version: number,
    entries: TableEntry[],
  ) {
    this.#entries = entries;
    for (const e of entries) {
      let byNs = this.#byHost.get(e.service.hostname);
      if (byNs === undefined) this.#byHost.set(e.service.hostname, (byNs = new Map()));
      let ports = byNs.get(e.service.namespace);
      if (ports === undefined) byNs.set(e.service.namespace, (ports = new Map()));
      ports.set(e.port, e.routes);
    }
  }

  portRoutes(service: ServiceKey, port: number): PortRoutes | undefined {
    return this.#byHost.get(service.hostname)?.get(service.namespace)?.get(port);
  }

  entries(): Iterable<TableEntry> {
    return this.#entries;
  }
}

// ---- statuses ------------------------------------------------------------------------------

type ParentRefStatus = RouteParentStatus['parentRef'];

function parentRefOf(p: ParentRef): ParentRefStatus {
  const base = { group: p.group, kind: p.kind, namespace: p.namespace, name: p.name };
  return p.port === undefined ? base : { ...base, port: p.port };
}

function parentRefString(p: ParentRef): string {
  return `${p.group === '' && p.kind === 'Gateway' ? 'gateway.networking.k8s.io' : p.group}/${p.kind}/${p.name}/${p.sectionName ?? ''}/${p.port ?? 0}.${p.namespace}`;
}

const WAYPOINT_MISSING_LABEL =
  'istio.io/use-waypoint label missing from parent and parent namespace; in ambient mode, route will not be respected';

function conditionsFor(accepted: ConfigError | undefined, refs: ConfigError | undefined, waypointMessage: string | undefined): RouteCondition[] {
  return [
    accepted === undefined
      ? { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Route was valid' }
      : { type: 'Accepted', status: 'False', reason: accepted.reason, message: accepted.message },
    refs === undefined
      ? { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'All references resolved' }
      : { type: 'ResolvedRefs', status: 'False', reason: refs.reason, message: refs.message },
    { type: 'ResolvedWaypoints', status: 'True', reason: 'ResolvedWaypoints', message: waypointMessage ?? 'All waypoints resolved' },
  ];
}

// ---- compileRoutes -------------------------------------------------------------------------

interface Attachment {
  readonly conversion: Conversion;
  /** parentRef.port, undefined = every port. */
  readonly port: number | undefined;
}

function compareResources(a: RouteResource, b: RouteResource): number {
  if (a.meta.creationTimestampMs !== b.meta.creationTimestampMs) return a.meta.creationTimestampMs - b.meta.creationTimestampMs;
  if (a.meta.namespace !== b.meta.namespace) return a.meta.namespace < b.meta.namespace ? -1 : 1;
  if (a.meta.name !== b.meta.name) return a.meta.name < b.meta.name ? -1 : 1;
  return a.meta.kind < b.meta.kind ? -1 : a.meta.kind > b.meta.kind ? 1 : 0;
}

function serviceId(s: ServiceKey): string {
  return `${s.namespace}/${s.hostname}`;
}

/** Compiles the table, the route statuses and the problems (see the module comment). */
export function compileRoutes(input: CompileInput): CompileResult {
  const domainSuffix = input.domainSuffix ?? DEFAULT_DOMAIN_SUFFIX;
  const { lookup, waypoint } = input;
  const problems: ResourceProblem[] = [];

  const served = [...input.services].sort((a, b) => (serviceId(a) < serviceId(b) ? -1 : serviceId(a) > serviceId(b) ? 1 : 0));
  const servedIds = new Set(served.map(serviceId));
  const responsibleNamespaces = new Set([waypoint.namespace, ...served.map((s) => s.namespace)]);
  const attachments = new Map<string, Attachment[]>();

  const routes = [...input.resources.routes].sort(compareResources);
  const statuses: RouteStatusReport[] = [];

  for (const resource of routes) {
    const { conversion, problems: routeProblems } = convert(resource, lookup, domainSuffix);
    problems.push(...routeProblems);
    const meta = resource.meta;
    const parents: Array<{ ref: ParentRef; status: RouteParentStatus }> = [];
    const report = (ref: ParentRef, accepted: ConfigError | undefined, waypointMessage: string | undefined) => {
      parents.push({
        ref,
        status: { parentRef: parentRefOf(ref), controllerName: CONTROLLER_NAME, conditions: conditionsFor(accepted, conversion.error, waypointMessage) },
      });
    };
    const seenAttachment = new Set<string>();

    resource.parentRefs.forEach((ref, i) => {
      if (ref.kind === 'Gateway') {
        if (ref.namespace === waypoint.namespace && ref.name === waypoint.name) {
          report(
            ref,
            {
              reason: 'NoMatchingParent',
              message: `routes attached to the waypoint Gateway ${waypoint.namespace}/${waypoint.name} itself are not applied; use a Service or ServiceEntry parentRef`,
            },
            undefined,
          );
          problems.push({ resource: meta, field: `spec.parentRefs[${i}]`, message: 'a waypoint does not apply routes whose parent is its own Gateway; use a Service or ServiceEntry parentRef' });
        }
        return;
      }
      const isEntry = ref.kind === 'ServiceEntry';
      const targets = isEntry ? lookup.serviceEntry(ref.namespace, ref.name) : [lookup.service(ref.namespace, ref.name)].filter((s): s is Service => s !== undefined);
      if (targets.length === 0) {
        if (responsibleNamespaces.has(ref.namespace)) {
          report(
            ref,
            { reason: 'NoMatchingParent', message: `${isEntry ? 'parent service entry' : 'parent service'}: ${JSON.stringify(ref.name)} not found` },
            'parent not found',
          );
        }
        return;
      }
      const ours = targets.filter((s) => servedIds.has(serviceId(s)));
      if (ours.length === 0) {
        if (targets.every((s) => s.waypoint === undefined) && responsibleNamespaces.has(ref.namespace)) report(ref, undefined, WAYPOINT_MISSING_LABEL);
        return;
      }
      report(ref, undefined, undefined);
      if (conversion.dropped) return;
      for (const s of ours) {
        if (meta.namespace !== s.namespace && meta.namespace !== waypoint.namespace) {
          problems.push({
            resource: meta,
            field: `spec.parentRefs[${i}]`,
            message: `consumer route ignored: a waypoint applies only routes in the service's namespace (${s.namespace}) or its own (${waypoint.namespace})`,
          });
          continue;
        }
        const dedupe = `${serviceId(s)}|${ref.port ?? '*'}`;
        if (seenAttachment.has(dedupe)) continue;
        seenAttachment.add(dedupe);
        const list = attachments.get(serviceId(s)) ?? [];
        list.push({ conversion, port: ref.port });
        attachments.set(serviceId(s), list);
      }
    });

    if (parents.length > 0) {
      parents.sort((a, b) => {
        const x = parentRefString(a.ref);
        const y = parentRefString(b.ref);
        return x > y ? -1 : x < y ? 1 : 0;
      });
      statuses.push({ route: idOf(resource), parents: parents.map((p) => p.status) });
    }
  }

  const kubeServices = new Map<string, ServiceResource>();
  for (const s of input.resources.services) kubeServices.set(`${s.meta.namespace}/${s.meta.name}`, s);

  const entries: TableEntry[] = [];
  for (const s of served) {
    const key: ServiceKey = { namespace: s.namespace, hostname: s.hostname };
    const kube = s.hostname === `${s.name}.${s.namespace}.svc.${domainSuffix}` ? kubeServices.get(`${s.namespace}/${s.name}`) : undefined;
    const list = attachments.get(serviceId(s)) ?? [];
    const ports = [...s.ports].sort((a, b) => a.servicePort - b.servicePort);
    for (const p of ports) {
      const kubePort = kube?.ports.find((k) => k.port === p.servicePort);
      const protocol = portProtocol({ kube: kubePort, discovered: p.appProtocol });
      if (protocol === undefined) continue; // UDP: no chain
      const applicable = list.filter((a) => a.port === undefined || a.port === p.servicePort);
      const generated: Array<{ g: GeneratedRoute; key: SortKey }> = [];
      let tcpBackends: readonly WeightedBackend[] | undefined;
      for (const a of applicable) {
        // augmentPortMatch: a parentRef port gives a matchless rule a (port) match, so it no longer sorts last.
        for (const g of a.conversion.routes) generated.push({ g, key: a.port !== undefined && g.key.matchless ? { ...g.key, matchless: false } : g.key });
        if (tcpBackends === undefined && a.conversion.tcp !== undefined) tcpBackends = a.conversion.tcp;
      }
      generated.sort((x, y) => compareKeys(x.key, y.key));
      const portRoutes: PortRoutes = {
        protocol,
        attached: generated.length > 0,
        routes: generated.map((x) => x.g.route),
        tcpBackends,
      };
      registerMatchers(
        portRoutes,
        generated.map((x) => x.g.matcher),
      );
      entries.push({ service: key, port: p.servicePort, routes: portRoutes });
    }
  }

  return { table: new CompiledRouteTable(input.version, entries), routeStatuses: statuses, problems };
}
