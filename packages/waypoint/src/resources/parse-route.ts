/**
 * HTTPRoute, GRPCRoute and TCPRoute specs (already schema-valid, see
 * parse-schema.ts) → the validated model of types.ts, in three steps per
 * field: the CRD's defaults (apis/v1 `+kubebuilder:default` markers), the
 * CRD's CEL rules (`x-kubernetes-validations`, which the schema validators do
 * not evaluate) and the list-map/list-set uniqueness the API server enforces,
 * then the hard errors of istiod's conversion (pilot/pkg/config/kube/gateway/
 * conversion.go).
 *
 * What is dropped, following istiod: a CEL or uniqueness violation is what the
 * API server refuses on admission, so the whole object is rejected. istiod's
 * hard conversion errors (an unsupported filter type such as ExtensionRef, a
 * header value with forbidden characters, a Service backend named by its
 * hostname, a backend without a port, a Hostname backend with a namespace, and
 * for GRPCRoute any mirror error) make computeRoute return no routes at all for
 * the route — so the whole route is rejected too, never only the rule. Soft
 * errors stay in: an HTTPRoute mirror whose backend istiod cannot build is
 * dropped (noted), and a backendRef of an unsupported group/kind keeps its
 * weight as an `Unsupported` target (its traffic share gets a 500). parentRefs
 * of kinds istiod does not handle are left out silently, as istiod does
 * ("maybe it is for another controller").
 */
import type {
  BackendRef,
  BackendTarget,
  CorsPolicy,
  GrpcMethodMatch,
  GrpcRouteMatch,
  GrpcRouteRule,
  HeaderMatch,
  HeaderModifier,
  HttpFilter,
  HttpRouteMatch,
  HttpRouteRetry,
  HttpRouteRule,
  HttpRouteTimeouts,
  ParentRef,
  PathMatch,
  PathModifier,
  QueryParamMatch,
  RequestMirror,
  RequestRedirect,
  TcpRouteRule,
  UrlRewrite,
} from './types.js';
import { bool, field, has, index, int, isValidHeaderValue, list, parseGepDuration, rec, str, type Json, type Problems } from './parse-common.js';

export type RouteFlavour = 'HTTPRoute' | 'GRPCRoute' | 'TCPRoute';

interface Ctx {
  readonly flavour: RouteFlavour;
  /** The route's namespace: the default of parentRef/backendRef namespaces. */
  readonly namespace: string;
  readonly p: Problems;
}

// ---- parentRefs ------------------------------------------------------------------------------

const PARENT_KINDS: ReadonlyMap<string, Pick<ParentRef, 'group' | 'kind'>> = new Map([
  ['gateway.networking.k8s.io/Gateway', { group: 'gateway.networking.k8s.io', kind: 'Gateway' }],
  ['/Service', { group: '', kind: 'Service' }],
  ['networking.istio.io/ServiceEntry', { group: 'networking.istio.io', kind: 'ServiceEntry' }],
]);

function parseParentRefs(v: unknown, path: string, ctx: Ctx): ParentRef[] {
  const out: ParentRef[] = [];
  const raw = list(v).map((x) => rec(x) ?? {});
  // CEL (experimental channel, shared_types.go): several references to one parent need distinct sectionName/port.
  const parentOf = (r: Json) => `${str(r['group']) ?? 'gateway.networking.k8s.io'}/${str(r['kind']) ?? 'Gateway'}/${str(r['namespace']) ?? ''}/${str(r['name']) ?? ''}`;
  const sectionOf = (r: Json) => `${str(r['sectionName']) ?? ''}/${int(r['port']) ?? ''}`;
  raw.forEach((r, i) => {
    const same = raw.filter((o) => parentOf(o) === parentOf(r));
    if (same.length < 2) return;
    if (sectionOf(r) === '/') ctx.p.reject(index(path, i), 'sectionName or port must be specified when parentRefs includes 2 or more references to the same parent');
    else if (same.filter((o) => sectionOf(o) === sectionOf(r)).length > 1) ctx.p.reject(index(path, i), 'sectionName or port must be unique when parentRefs includes 2 or more references to the same parent');
  });
  for (const r of raw) {
    const group = str(r['group']) ?? 'gateway.networking.k8s.io';
    const kind = str(r['kind']) ?? 'Gateway';
    const known = PARENT_KINDS.get(`${group}/${kind}`);
    if (known === undefined) continue;
    out.push({
      ...known,
      namespace: str(r['namespace']) || ctx.namespace,
      name: str(r['name']) ?? '',
      port: int(r['port']),
      sectionName: str(r['sectionName']),
    });
  }
  return out;
}

// ---- backends --------------------------------------------------------------------------------

type TargetResult = { readonly target: BackendTarget } | { readonly istioError: { readonly field: string; readonly message: string } };

/**
 * One BackendObjectReference, as the CRD defaults it (group "", kind Service), checked by its CEL rule
 * ("Must have port for Service reference") and read as istiod's buildDestination does.
 */
function parseTarget(r: Json, path: string, ctx: Ctx): TargetResult {
  const group = str(r['group']) ?? '';
  const kind = str(r['kind']) ?? 'Service';
  const name = str(r['name']) ?? '';
  const rawNs = str(r['namespace']);
  const port = int(r['port']);
  if (group === '' && kind === 'Service' && port === undefined) ctx.p.reject(field(path, 'port'), 'must have port for Service reference');
  if ((group === '' && kind === 'Service') || (group === 'multicluster.x-k8s.io' && kind === 'ServiceImport')) {
    if (name.includes('.')) return { istioError: { field: field(path, 'name'), message: 'service name invalid; the name of the Service must be used, not the hostname.' } };
    if (port === undefined) return { istioError: { field: field(path, 'port'), message: 'port is required in backendRef' } };
    return { target: { group: '', kind: 'Service', namespace: rawNs || ctx.namespace, name, port } };
  }
  if (group === 'networking.istio.io' && kind === 'Hostname') {
    if (rawNs !== undefined) return { istioError: { field: field(path, 'namespace'), message: 'namespace may not be set with Hostname type' } };
    if (port === undefined) return { istioError: { field: field(path, 'port'), message: 'port is required in backendRef' } };
    return { target: { group: 'networking.istio.io', kind: 'Hostname', namespace: ctx.namespace, name, port } };
  }
  ctx.p.note(path, `referencing unsupported backendRef: group "${group}" kind "${kind}"; its share of traffic is answered with 500`);
  return { target: { group: '', kind: 'Unsupported', namespace: rawNs || ctx.namespace, name, port, unsupported: { group, kind } } };
}

function parseBackendRefs(v: unknown, path: string, ctx: Ctx, where: FilterPlace): BackendRef[] {
  const out: BackendRef[] = [];
  list(v).forEach((x, i) => {
    const r = rec(x) ?? {};
    const at = index(path, i);
    const t = parseTarget(r, at, ctx);
    if ('istioError' in t) {
      ctx.p.reject(t.istioError.field, t.istioError.message);
      return;
    }
    const filters = where === 'none' ? [] : parseFilters(r['filters'], field(at, 'filters'), ctx, where);
    out.push({ ...t.target, weight: int(r['weight']) ?? 1, filters });
  });
  return out;
}

// ---- filters ---------------------------------------------------------------------------------

/** Where a filter list sits, which decides the filter types istiod converts there. */
type FilterPlace = 'rule' | 'backend' | 'none';

const FILTER_FIELDS: Readonly<Record<string, string>> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestMirror: 'requestMirror',
  RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite',
  CORS: 'cors',
  ExtensionRef: 'extensionRef',
  ExternalAuth: 'externalAuth',
};
const GRPC_FILTER_TYPES = new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror', 'ExtensionRef']);

/** The types istiod's conversion handles at each place; anything else is "unsupported filter type". */
const SUPPORTED: Readonly<Record<'HTTPRoute' | 'GRPCRoute', Readonly<Record<'rule' | 'backend', ReadonlySet<string>>>>> = {
  HTTPRoute: {
    rule: new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror', 'CORS']),
    backend: new Set(['RequestHeaderModifier', 'ResponseHeaderModifier']),
  },
  GRPCRoute: {
    rule: new Set(['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror']),
    backend: new Set(['RequestHeaderModifier', 'ResponseHeaderModifier']),
  },
};

/** CEL on filter lists: these types may appear at most once per list (HTTPRoute: all five; GRPCRoute: the header modifiers). */
const UNIQUE_FILTERS: Readonly<Record<'HTTPRoute' | 'GRPCRoute', readonly string[]>> = {
  HTTPRoute: ['CORS', 'RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite'],
  GRPCRoute: ['RequestHeaderModifier', 'ResponseHeaderModifier'],
};

function parseFilters(v: unknown, path: string, ctx: Ctx, where: 'rule' | 'backend'): HttpFilter[] {
  const flavour = ctx.flavour === 'GRPCRoute' ? 'GRPCRoute' : 'HTTPRoute';
  const raw = list(v).map((x) => rec(x) ?? {});
  const types = raw.map((r) => str(r['type']) ?? '');
  for (const t of UNIQUE_FILTERS[flavour]) {
    if (types.filter((x) => x === t).length > 1) ctx.p.reject(path, `${t} filter cannot be repeated`);
  }
  if (flavour === 'HTTPRoute' && types.includes('RequestRedirect') && types.includes('URLRewrite')) {
    ctx.p.reject(path, 'may specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both');
  }
  const out: HttpFilter[] = [];
  raw.forEach((r, i) => {
    const f = parseFilter(r, index(path, i), ctx, flavour, where);
    if (f !== undefined) out.push(f);
  });
  return out;
}

function parseFilter(r: Json, path: string, ctx: Ctx, flavour: 'HTTPRoute' | 'GRPCRoute', where: 'rule' | 'backend'): HttpFilter | undefined {
  const type = str(r['type']) ?? '';
  // CEL: the field named after the type is set, and no other filter field is.
  for (const [t, key] of Object.entries(FILTER_FIELDS)) {
    if (flavour === 'GRPCRoute' && !GRPC_FILTER_TYPES.has(t)) continue;
    if (has(r, key) && type !== t) ctx.p.reject(field(path, key), `filter.${key} must be nil if the filter.type is not ${t}`);
    if (!has(r, key) && type === t) ctx.p.reject(field(path, key), `filter.${key} must be specified for ${t} filter.type`);
  }
  if (!SUPPORTED[flavour][where].has(type)) {
    ctx.p.reject(field(path, 'type'), `unsupported filter type ${JSON.stringify(type)}${where === 'backend' ? ' in backendRefs (only RequestHeaderModifier and ResponseHeaderModifier)' : ''}`);
    return undefined;
  }
  const body = rec(r[FILTER_FIELDS[type] ?? '']);
  if (body === undefined) return undefined; // reported above
  const at = field(path, FILTER_FIELDS[type] ?? '');
  switch (type) {
    case 'RequestHeaderModifier':
      return { type, modifier: parseHeaderModifier(body, at, ctx) };
    case 'ResponseHeaderModifier':
      return { type, modifier: parseHeaderModifier(body, at, ctx) };
    case 'RequestRedirect':
      return { type, redirect: parseRedirect(body, at, ctx) };
    case 'URLRewrite':
      return { type, rewrite: parseRewrite(body, at, ctx) };
    case 'RequestMirror': {
      const mirror = parseMirror(body, at, ctx);
      return mirror === undefined ? undefined : { type, mirror };
    }
    case 'CORS':
      return { type, cors: parseCors(body, at, ctx) };
    default:
      return undefined;
  }
}

function parseHeaderModifier(r: Json, path: string, ctx: Ctx): HeaderModifier {
  const pairs = (key: 'set' | 'add'): (readonly [string, string])[] => {
    const out: (readonly [string, string])[] = [];
    const names = new Set<string>();
    list(r[key]).forEach((x, i) => {
      const h = rec(x) ?? {};
      const name = str(h['name']) ?? '';
      const value = str(h['value']) ?? '';
      const at = index(field(path, key), i);
      // listType=map keyed by name: the API server refuses two entries with the same key.
      if (names.has(name)) ctx.p.reject(field(at, 'name'), `duplicate header name ${JSON.stringify(name)} (names in ${key} must be unique)`);
      names.add(name);
      if (!isValidHeaderValue(value)) {
        ctx.p.reject(field(at, 'value'), `header ${JSON.stringify(name)} value contains invalid characters (expected tab, 0x20-0x7E or 0x80 and above)`);
      }
      out.push([name, value]);
    });
    return out;
  };
  const set = pairs('set');
  const add = pairs('add');
  const remove: string[] = [];
  list(r['remove']).forEach((x, i) => {
    const name = str(x) ?? '';
    if (remove.includes(name)) ctx.p.reject(index(field(path, 'remove'), i), `duplicate header name ${JSON.stringify(name)} (remove is a set)`);
    else remove.push(name);
  });
  return { set, add, remove };
}

function parsePathModifier(v: unknown, path: string, ctx: Ctx): PathModifier | undefined {
  const r = rec(v);
  if (r === undefined) return undefined;
  const type = str(r['type']);
  const full = str(r['replaceFullPath']);
  const prefix = str(r['replacePrefixMatch']);
  // CEL (HTTPPathModifier): the value field matches the type.
  if (type === 'ReplaceFullPath' && full === undefined) ctx.p.reject(field(path, 'replaceFullPath'), "replaceFullPath must be specified when type is set to 'ReplaceFullPath'");
  if (full !== undefined && type !== 'ReplaceFullPath') ctx.p.reject(field(path, 'type'), "type must be 'ReplaceFullPath' when replaceFullPath is set");
  if (type === 'ReplacePrefixMatch' && prefix === undefined) ctx.p.reject(field(path, 'replacePrefixMatch'), "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'");
  if (prefix !== undefined && type !== 'ReplacePrefixMatch') ctx.p.reject(field(path, 'type'), "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
  if (type === 'ReplaceFullPath' && full !== undefined) return { type, value: full };
  if (type === 'ReplacePrefixMatch' && prefix !== undefined) return { type, value: prefix };
  return undefined;
}

function parseRedirect(r: Json, path: string, ctx: Ctx): RequestRedirect {
  const scheme = str(r['scheme']);
  return {
    scheme: scheme === 'http' || scheme === 'https' ? scheme : undefined,
    hostname: str(r['hostname']),
    path: parsePathModifier(r['path'], field(path, 'path'), ctx),
    port: int(r['port']),
    statusCode: int(r['statusCode']) ?? 302,
  };
}

function parseRewrite(r: Json, path: string, ctx: Ctx): UrlRewrite {
  return { hostname: str(r['hostname']), path: parsePathModifier(r['path'], field(path, 'path'), ctx) };
}

function parseMirror(r: Json, path: string, ctx: Ctx): RequestMirror | undefined {
  const fraction = rec(r['fraction']);
  const percentField = int(r['percent']);
  if (fraction !== undefined && percentField !== undefined) ctx.p.reject(path, 'only one of percent or fraction may be specified in HTTPRequestMirrorFilter');
  let percent = percentField ?? 100;
  if (fraction !== undefined) {
    const numerator = int(fraction['numerator']) ?? 0;
    const denominator = int(fraction['denominator']) ?? 100;
    if (numerator > denominator) ctx.p.reject(field(path, 'fraction'), 'numerator must be less than or equal to denominator');
    percent = denominator > 0 ? (100 * numerator) / denominator : 0;
  }
  const at = field(path, 'backendRef');
  const t = parseTarget(rec(r['backendRef']) ?? {}, at, ctx);
  const error = 'istioError' in t ? t.istioError : t.target.kind === 'Unsupported' ? { field: at, message: 'unsupported backendRef kind' } : undefined;
  if (error !== undefined) {
    // istiod: an HTTPRoute mirror whose destination fails is dropped (a ResolvedRefs error); in a GRPCRoute it is a hard error.
    if (ctx.flavour === 'GRPCRoute') ctx.p.reject(error.field, error.message);
    else ctx.p.note(error.field, `${error.message}; the mirror is left out`);
    return undefined;
  }
  return 'target' in t ? { backendRef: t.target, percent } : undefined;
}

function parseCors(r: Json, path: string, ctx: Ctx): CorsPolicy {
  const strings = (key: string, what: string): string[] => {
    const out = list(r[key]).map((x) => str(x) ?? '');
    if (out.includes('*') && out.length > 1) ctx.p.reject(field(path, key), `${what} cannot contain '*' alongside other ${what === 'AllowOrigins' ? 'origins' : 'methods'}`);
    return out;
  };
  return {
    allowOrigins: strings('allowOrigins', 'AllowOrigins'),
    allowMethods: strings('allowMethods', 'AllowMethods'),
    allowHeaders: strings('allowHeaders', 'AllowHeaders'),
    exposeHeaders: list(r['exposeHeaders']).map((x) => str(x) ?? ''),
    allowCredentials: bool(r['allowCredentials']) ?? false,
    maxAgeSeconds: int(r['maxAge']) ?? 5,
  };
}

// ---- HTTPRoute matches -----------------------------------------------------------------------

const PATH_CHARS = /^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$/;

/** CEL of HTTPPathMatch for Exact and PathPrefix values. */
function checkPathValue(value: string, path: string, ctx: Ctx): void {
  const bad = (m: string) => ctx.p.reject(path, `${m} when type one of ['Exact', 'PathPrefix']`);
  if (!value.startsWith('/')) bad("value must be an absolute path and start with '/'");
  for (const s of ['//', '/./', '/../', '%2f', '%2F', '#']) if (value.includes(s)) bad(`must not contain '${s}'`);
  if (value.endsWith('/..')) bad("must not end with '/..'");
  else if (value.endsWith('/.')) bad("must not end with '/.'");
  if (!PATH_CHARS.test(value)) bad("must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$)");
}

const DEFAULT_PATH: PathMatch = { type: 'PathPrefix', value: '/' };

function parsePathMatch(v: unknown, path: string, ctx: Ctx): PathMatch {
  const r = rec(v);
  if (r === undefined) return DEFAULT_PATH;
  const type = str(r['type']) ?? 'PathPrefix';
  const value = str(r['value']) ?? '/';
  if (type === 'Exact' || type === 'PathPrefix') {
    checkPathValue(value, field(path, 'value'), ctx);
    return { type, value };
  }
  if (type === 'RegularExpression') return { type, value };
  ctx.p.reject(field(path, 'type'), "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']");
  return DEFAULT_PATH;
}

function parseStringMatches(v: unknown, path: string, ctx: Ctx, what: 'header' | 'query parameter'): { type: 'Exact' | 'RegularExpression'; name: string; value: string }[] {
  const out: { type: 'Exact' | 'RegularExpression'; name: string; value: string }[] = [];
  const names = new Set<string>();
  list(v).forEach((x, i) => {
    const r = rec(x) ?? {};
    const name = str(r['name']) ?? '';
    const at = index(path, i);
    // listType=map keyed by name: the same name twice is refused by the API server.
    if (names.has(name)) ctx.p.reject(field(at, 'name'), `duplicate ${what} name ${JSON.stringify(name)}`);
    names.add(name);
    const type = str(r['type']) ?? 'Exact';
    if (type !== 'Exact' && type !== 'RegularExpression') {
      ctx.p.reject(field(at, 'type'), `unknown type: ${JSON.stringify(type)} is not supported ${what === 'header' ? 'HeaderMatch' : 'QueryParams'} type`);
      return;
    }
    out.push({ type, name, value: str(r['value']) ?? '' });
  });
  return out;
}

function parseHttpMatch(v: unknown, path: string, ctx: Ctx): HttpRouteMatch {
  const r = rec(v) ?? {};
  const headers: HeaderMatch[] = parseStringMatches(r['headers'], field(path, 'headers'), ctx, 'header').map((h) => ({ ...h, name: h.name.toLowerCase() }));
  const queryParams: QueryParamMatch[] = parseStringMatches(r['queryParams'], field(path, 'queryParams'), ctx, 'query parameter');
  return { path: parsePathMatch(r['path'], field(path, 'path'), ctx), headers, queryParams, method: str(r['method']) };
}

// ---- HTTPRoute rules -------------------------------------------------------------------------

function parseTimeouts(v: unknown, path: string, ctx: Ctx): HttpRouteTimeouts {
  const r = rec(v);
  if (r === undefined) return { requestMs: undefined, backendRequestMs: undefined };
  const read = (key: string): number | undefined => {
    const s = str(r[key]);
    if (s === undefined) return undefined;
    const ms = parseGepDuration(s);
    if (ms === undefined) ctx.p.reject(field(path, key), `must be a GEP-2257 duration such as 10s, 500ms or 1m30s, got ${JSON.stringify(s)}`);
    return ms;
  };
  const requestMs = read('request');
  const backendRequestMs = read('backendRequest');
  if (requestMs !== undefined && backendRequestMs !== undefined && requestMs !== 0 && backendRequestMs > requestMs) {
    ctx.p.reject(field(path, 'backendRequest'), 'backendRequest timeout cannot be longer than request timeout');
  }
  return { requestMs, backendRequestMs };
}

function parseRetry(v: unknown, path: string, ctx: Ctx): HttpRouteRetry | undefined {
  const r = rec(v);
  if (r === undefined) return undefined;
  const codes: number[] = [];
  list(r['codes']).forEach((x, i) => {
    const c = int(x);
    if (c === undefined) return;
    if (c < 400 || c > 599) ctx.p.reject(index(field(path, 'codes'), i), `must be an HTTP status code from 400 to 599, got ${c}`);
    else if (codes.includes(c)) ctx.p.reject(index(field(path, 'codes'), i), `duplicate code ${c} (codes is a set)`);
    else codes.push(c);
  });
  const backoff = str(r['backoff']);
  let backoffMs: number | undefined;
  if (backoff !== undefined) {
    backoffMs = parseGepDuration(backoff);
    if (backoffMs === undefined) ctx.p.reject(field(path, 'backoff'), `must be a GEP-2257 duration such as 100ms, got ${JSON.stringify(backoff)}`);
  }
  return { codes, attempts: int(r['attempts']), backoffMs };
}

/**
 * CEL on HTTPRouteRule: ReplacePrefixMatch needs exactly one PathPrefix match (the same rule for backend-level
 * filters never fires here: istiod accepts only header modifiers there, anything else is already rejected).
 */
function checkPrefixRewrites(filters: readonly HttpFilter[], matches: readonly HttpRouteMatch[], path: string, ctx: Ctx): void {
  const onePrefix = matches.length === 1 && matches[0]?.path.type === 'PathPrefix';
  if (onePrefix) return;
  const usesPrefix = (fs: readonly HttpFilter[], t: 'RequestRedirect' | 'URLRewrite') =>
    fs.some((f) => (t === 'RequestRedirect' && f.type === t && f.redirect.path?.type === 'ReplacePrefixMatch') || (t === 'URLRewrite' && f.type === t && f.rewrite.path?.type === 'ReplacePrefixMatch'));
  if (usesPrefix(filters, 'RequestRedirect')) ctx.p.reject(field(path, 'matches'), 'when using RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified');
  if (usesPrefix(filters, 'URLRewrite')) ctx.p.reject(field(path, 'matches'), 'when using URLRewrite filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified');
}

const DEFAULT_MATCH: readonly unknown[] = [{ path: { type: 'PathPrefix', value: '/' } }];

function parseHttpRule(v: unknown, path: string, ctx: Ctx): HttpRouteRule {
  const r = rec(v) ?? {};
  const rawMatches = has(r, 'matches') && list(r['matches']).length > 0 ? list(r['matches']) : DEFAULT_MATCH;
  const matches = rawMatches.map((m, i) => parseHttpMatch(m, index(field(path, 'matches'), i), ctx));
  const filters = parseFilters(r['filters'], field(path, 'filters'), ctx, 'rule');
  const backendRefs = parseBackendRefs(r['backendRefs'], field(path, 'backendRefs'), ctx, 'backend');
  if (list(r['backendRefs']).length > 0 && filters.some((f) => f.type === 'RequestRedirect')) {
    ctx.p.reject(field(path, 'filters'), 'RequestRedirect filter must not be used together with backendRefs');
  }
  checkPrefixRewrites(filters, matches, path, ctx);
  return {
    name: str(r['name']),
    matches,
    filters,
    backendRefs,
    timeouts: parseTimeouts(r['timeouts'], field(path, 'timeouts'), ctx),
    retry: parseRetry(r['retry'], field(path, 'retry'), ctx),
  };
}

/** CEL on rules: unique rule names, and at most 128 matches over all rules. */
function checkRules(rules: readonly unknown[], path: string, ctx: Ctx, countMatches: (r: Json) => number): void {
  const names = rules.map((x) => str(rec(x)?.['name']));
  names.forEach((n, i) => {
    if (n !== undefined && names.indexOf(n) !== i) ctx.p.reject(field(index(path, i), 'name'), 'Rule name must be unique within the route');
  });
  const total = rules.reduce<number>((sum, x) => sum + countMatches(rec(x) ?? {}), 0);
  if (total > 128) ctx.p.reject(path, `While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128 (got ${total})`);
}

export function parseHttpRules(spec: Json, namespace: string, p: Problems): HttpRouteRule[] {
  const ctx: Ctx = { flavour: 'HTTPRoute', namespace, p };
  const raw = has(spec, 'rules') ? list(spec['rules']) : [{}];
  checkRules(raw, 'spec.rules', ctx, (r) => Math.max(1, list(r['matches']).length));
  return raw.map((x, i) => parseHttpRule(x, index('spec.rules', i), ctx));
}

// ---- GRPCRoute -------------------------------------------------------------------------------

const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;

function parseGrpcMethod(v: unknown, path: string, ctx: Ctx): GrpcMethodMatch | undefined {
  const r = rec(v);
  if (r === undefined) return undefined;
  const type = str(r['type']) ?? 'Exact';
  const service = str(r['service']);
  const method = str(r['method']);
  if (service === undefined && method === undefined) ctx.p.reject(path, "One or both of 'service' or 'method' must be specified");
  if (type === 'Exact' && service !== undefined && !GRPC_SERVICE.test(service)) {
    ctx.p.reject(field(path, 'service'), 'service must only contain valid characters (matching ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)');
  }
  if (type === 'Exact' && method !== undefined && !GRPC_METHOD.test(method)) {
    ctx.p.reject(field(path, 'method'), 'method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)');
  }
  if (type !== 'Exact' && type !== 'RegularExpression') {
    ctx.p.reject(field(path, 'type'), `unknown type: ${JSON.stringify(type)} is not supported Path match type`);
    return undefined;
  }
  return { type, service, method };
}

function parseGrpcRule(v: unknown, path: string, ctx: Ctx): GrpcRouteRule {
  const r = rec(v) ?? {};
  const matches: GrpcRouteMatch[] = list(r['matches']).map((m, i) => {
    const at = index(field(path, 'matches'), i);
    const mr = rec(m) ?? {};
    const headers = parseStringMatches(mr['headers'], field(at, 'headers'), ctx, 'header').map((h) => ({ ...h, name: h.name.toLowerCase() }));
    return { method: parseGrpcMethod(mr['method'], field(at, 'method'), ctx), headers };
  });
  return {
    name: str(r['name']),
    matches,
    filters: parseFilters(r['filters'], field(path, 'filters'), ctx, 'rule'),
    backendRefs: parseBackendRefs(r['backendRefs'], field(path, 'backendRefs'), ctx, 'backend'),
  };
}

export function parseGrpcRules(spec: Json, namespace: string, p: Problems): GrpcRouteRule[] {
  const ctx: Ctx = { flavour: 'GRPCRoute', namespace, p };
  const raw = list(spec['rules']);
  checkRules(raw, 'spec.rules', ctx, (r) => list(r['matches']).length);
  return raw.map((x, i) => parseGrpcRule(x, index('spec.rules', i), ctx));
}

// ---- TCPRoute --------------------------------------------------------------------------------

export function parseTcpRules(spec: Json, namespace: string, p: Problems): TcpRouteRule[] {
  const ctx: Ctx = { flavour: 'TCPRoute', namespace, p };
  const raw = list(spec['rules']);
  checkRules(raw, 'spec.rules', ctx, () => 0);
  return raw.map((x, i) => {
    const r = rec(x) ?? {};
    return { name: str(r['name']), backendRefs: parseBackendRefs(r['backendRefs'], field(index('spec.rules', i), 'backendRefs'), ctx, 'none') };
  });
}

export function routeParents(spec: Json, namespace: string, flavour: RouteFlavour, p: Problems): ParentRef[] {
  return parseParentRefs(spec['parentRefs'], 'spec.parentRefs', { flavour, namespace, p });
}
