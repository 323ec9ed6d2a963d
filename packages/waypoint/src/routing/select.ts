/**
 * Picks the route for a request: the first CompiledRoute of the port's precedence-ordered list whose
 * match holds (compile.ts did the ordering). Envoy semantics, as Istio configures them for
 * Gateway API routes (route.go TranslateRouteMatch):
 * - path (case-sensitive, without the query): Exact is string equality (no trailing-slash
 *   tolerance); PathPrefix is element-wise (Envoy path_separated_prefix: `/v2` matches `/v2`,
 *   `/v2/`, `/v2/x`, not `/v2example`; a trailing `/` in the value is ignored; `/` matches every
 *   path starting with `/`); RegularExpression is a full match;
 * - headers: names case-insensitive, only the first entry of a duplicated name counts; the value
 *   matched is the header's single value, or all its values joined with "," when it was received
 *   more than once (Envoy's getAllOfHeaderAsString) — so `version: one` sent twice does not match
 *   Exact `one`. An absent header never matches. A RegularExpression of exactly `*` means "present"
 *   (Istio's canBeConvertedToPresentMatch);
 * - query parameters: names case-sensitive, the first value of the name is matched (Envoy), values
 *   percent-decoded (parseQuery), `*` regex means present;
 * - method: exact.
 * Every regex is compiled once, when the table is compiled; the per-request path is a loop over
 * precompiled matchers with no allocation except the RequestView's own header() arrays.
 */
import type { HeaderMatch, HttpRouteMatch, QueryParamMatch } from '../resources/types.js';
import { compileFullMatch } from './regex.js';
import { normalizePrefix } from './rewrite.js';
import type { CompiledRoute, PortRoutes, RequestView, RouteSelection } from './types.js';

const PathKind = {
  Exact: 0,
  /** Plain prefix `/`: every path starting with `/`. */
  All: 1,
  /** Envoy path_separated_prefix. */
  Separated: 2,
  Regex: 3,
  /** A regex that did not compile (only reachable for hand-built tables): never matches (fail closed). */
  Never: 4,
} as const;
type PathKind = (typeof PathKind)[keyof typeof PathKind];

interface ValueMatcher {
  readonly name: string;
  /** undefined with regex undefined: presence only. */
  readonly exact: string | undefined;
  readonly regex: RegExp | undefined;
  readonly present: boolean;
  readonly never: boolean;
}

/** One route's match, precompiled. */
export interface CompiledMatch {
  readonly pathKind: PathKind;
  readonly pathValue: string;
  readonly pathRegex: RegExp | undefined;
  readonly method: string | undefined;
  readonly headers: readonly ValueMatcher[];
  readonly queryParams: readonly ValueMatcher[];
}

/** A regex that failed to compile: which field and why. */
export interface MatchCompileError {
  /** `path.value`, `headers[i].value`, `queryParams[i].value` (relative to the match). */
  readonly field: string;
  readonly message: string;
}

const NEVER: ValueMatcher = { name: '', exact: undefined, regex: undefined, present: false, never: true };

function valueMatcher(
  m: HeaderMatch | QueryParamMatch,
  field: string,
  errors: MatchCompileError[],
): ValueMatcher {
  if (m.type === 'Exact') return { name: m.name, exact: m.value, regex: undefined, present: false, never: false };
  if (m.value === '*') return { name: m.name, exact: undefined, regex: undefined, present: true, never: false };
  const compiled = compileFullMatch(m.value);
  if (!compiled.ok) {
    errors.push({ field, message: compiled.error });
    return { ...NEVER, name: m.name };
  }
  return { name: m.name, exact: undefined, regex: compiled.regex, present: false, never: false };
}

/**
 * Precompiles a match. Header names are lower-cased and deduplicated (first entry wins, Gateway
 * API); query names deduplicated case-sensitively. Regex failures are reported in `errors` and the
 * matcher then never matches.
 */
export function compileMatch(match: HttpRouteMatch, errors: MatchCompileError[] = []): CompiledMatch {
  let pathKind: PathKind;
  let pathValue = match.path.value;
  let pathRegex: RegExp | undefined;
  switch (match.path.type) {
    case 'Exact':
      pathKind = PathKind.Exact;
      break;
    case 'PathPrefix':
      pathValue = normalizePrefix(match.path.value);
      pathKind = pathValue.length === 0 ? PathKind.All : PathKind.Separated;
      break;
    case 'RegularExpression': {
      const compiled = compileFullMatch(match.path.value);
      if (compiled.ok) {
        pathKind = PathKind.Regex;
        pathRegex = compiled.regex;
      } else {
        pathKind = PathKind.Never;
        errors.push({ field: 'path.value', message: compiled.error });
      }
      break;
    }
  }
  const headers: ValueMatcher[] = [];
  const seenHeaders = new Set<string>();
  match.headers.forEach((h, i) => {
    const name = h.name.toLowerCase();
    if (seenHeaders.has(name)) return;
    seenHeaders.add(name);
    headers.push(valueMatcher({ ...h, name }, `headers[${i}].value`, errors));
  });
  const queryParams: ValueMatcher[] = [];
  const seenQuery = new Set<string>();
  match.queryParams.forEach((q, i) => {
    if (seenQuery.has(q.name)) return;
    seenQuery.add(q.name);
    queryParams.push(valueMatcher(q, `queryParams[${i}].value`, errors));
  });
  return { pathKind, pathValue, pathRegex, method: match.method, headers, queryParams };
}

function pathMatches(m: CompiledMatch, path: string): boolean {
  switch (m.pathKind) {
    case PathKind.Exact:
      return path === m.pathValue;
    case PathKind.All:
      return path.charCodeAt(0) === 47; /* / */
    case PathKind.Separated: {
      const v = m.pathValue;
      if (!path.startsWith(v)) return false;
      return path.length === v.length || path.charCodeAt(v.length) === 47;
    }
    case PathKind.Regex:
      return (m.pathRegex as RegExp).test(path);
    case PathKind.Never:
      return false;
  }
}

function valueMatches(v: ValueMatcher, value: string): boolean {
  if (v.never) return false;
  if (v.present) return true;
  if (v.exact !== undefined) return value === v.exact;
  return (v.regex as RegExp).test(value);
}

/** Whether a precompiled match holds for the request. */
export function matchHolds(m: CompiledMatch, req: RequestView): boolean {
  if (!pathMatches(m, req.path)) return false;
  if (m.method !== undefined && req.method !== m.method) return false;
  const headers = m.headers;
  for (let i = 0; i < headers.length; i++) {
    const h = headers[i] as ValueMatcher;
    const values = req.header(h.name);
    if (values.length === 0) return false;
    if (!valueMatches(h, values.length === 1 ? (values[0] as string) : values.join(','))) return false;
  }
  const queryParams = m.queryParams;
  if (queryParams.length > 0) {
    const query = req.query;
    for (let i = 0; i < queryParams.length; i++) {
      const q = queryParams[i] as ValueMatcher;
      let value: string | undefined;
      for (let j = 0; j < query.length; j++) {
        const entry = query[j] as readonly [string, string];
        if (entry[0] === q.name) {
          value = entry[1];
          break;
        }
      }
      if (value === undefined || !valueMatches(q, value)) return false;
    }
  }
  return true;
}

interface PortMatchers {
  readonly matches: readonly CompiledMatch[];
  readonly selections: readonly RouteSelection[];
}

const compiledByPort = new WeakMap<PortRoutes, PortMatchers>();

function buildPortMatchers(routes: readonly CompiledRoute[], matches?: readonly CompiledMatch[]): PortMatchers {
  return {
    matches: matches ?? routes.map((r) => compileMatch(r.match)),
    selections: routes.map((route) => ({ kind: 'route', route })),
  };
}

/**
 * Registers the matchers the compiler built for a PortRoutes, so the data path never compiles.
 * Matchers are keyed by the PortRoutes object itself: pass the table's object as it is (a copy,
 * e.g. `{ ...portRoutes }`, is a new table and gets compiled on its first selection). A PortRoutes
 * built elsewhere (tests) is compiled on its first selection, once.
 */
export function registerMatchers(portRoutes: PortRoutes, matches: readonly CompiledMatch[]): void {
  if (matches.length !== portRoutes.routes.length) {
    throw new Error(`registerMatchers: ${matches.length} matchers for ${portRoutes.routes.length} routes`);
  }
  compiledByPort.set(portRoutes, buildPortMatchers(portRoutes.routes, matches));
}

const DEFAULT: RouteSelection = Object.freeze({ kind: 'default' });
const NO_MATCH: RouteSelection = Object.freeze({ kind: 'no-match' });

/**
 * The route for a request on one service port: the first match in precedence order; 'no-match'
 * (404 NR) when routes are attached and none matches; 'default' (the service's own endpoints) when
 * no HTTPRoute/GRPCRoute is attached or the port is unknown to the table.
 */
export function selectRoute(portRoutes: PortRoutes | undefined, req: RequestView): RouteSelection {
  if (portRoutes === undefined || !portRoutes.attached) return DEFAULT;
  let compiled = compiledByPort.get(portRoutes);
  if (compiled === undefined) {
    compiled = buildPortMatchers(portRoutes.routes);
    compiledByPort.set(portRoutes, compiled);
  }
  const matches = compiled.matches;
  for (let i = 0; i < matches.length; i++) {
    if (matchHolds(matches[i] as CompiledMatch, req)) return compiled.selections[i] as RouteSelection;
  }
  return NO_MATCH;
}

// ---- query strings -------------------------------------------------------------------------

function hexValue(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 65 && c <= 70) return c - 55;
  if (c >= 97 && c <= 102) return c - 87;
  return -1;
}

/**
 * Percent-decoding as Envoy's PercentEncoding::decode: valid `%XX` become bytes, anything else is
 * kept as written, `+` stays `+`. Bytes are read as UTF-8 (invalid sequences become U+FFFD).
 */
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

export function percentDecode(text: string): string {
  if (!text.includes('%')) return text;
  const bytes: number[] = [];
  const encoder = utf8Encoder;
  let literalStart = 0;
  const flushLiteral = (end: number) => {
    if (end > literalStart) for (const b of encoder.encode(text.slice(literalStart, end))) bytes.push(b);
  };
  for (let i = 0; i < text.length; i++) {
    if (text.charCodeAt(i) !== 37 /* % */ || i + 2 >= text.length) continue;
    const hi = hexValue(text.charCodeAt(i + 1));
    const lo = hexValue(text.charCodeAt(i + 2));
    if (hi < 0 || lo < 0) continue;
    flushLiteral(i);
    bytes.push(hi * 16 + lo);
    i += 2;
    literalStart = i + 1;
  }
  flushLiteral(text.length);
  return utf8Decoder.decode(new Uint8Array(bytes));
}

const NO_QUERY: readonly (readonly [string, string])[] = Object.freeze([]);

/**
 * RequestView.query from a raw query string (with or without the leading `?`): `&`-separated,
 * the first `=` splits name and value (no `=`: value ''), both percent-decoded; empty pieces skipped.
 */
export function parseQuery(rawQuery: string | undefined): readonly (readonly [string, string])[] {
  if (rawQuery === undefined || rawQuery.length === 0) return NO_QUERY;
  const q = rawQuery.charCodeAt(0) === 63 /* ? */ ? rawQuery.slice(1) : rawQuery;
  if (q.length === 0) return NO_QUERY;
  const out: Array<readonly [string, string]> = [];
  for (const piece of q.split('&')) {
    if (piece.length === 0) continue;
    const eq = piece.indexOf('=');
    out.push(eq < 0 ? [percentDecode(piece), ''] : [percentDecode(piece.slice(0, eq)), percentDecode(piece.slice(eq + 1))]);
  }
  return out;
}

/** Splits a request target into the path and the raw query (undefined when there is no `?`). */
export function splitPathAndQuery(target: string): { readonly path: string; readonly query: string | undefined } {
  const q = target.indexOf('?');
  return q < 0 ? { path: target, query: undefined } : { path: target.slice(0, q), query: target.slice(q + 1) };
}
