import { describe, expect, it } from 'vitest';
import type { HttpRouteMatch } from '../resources/types.js';
import { compileFullMatch } from './regex.js';
import { compileMatch, matchHolds, parseQuery, percentDecode, selectRoute, splitPathAndQuery, type MatchCompileError } from './select.js';
import { aMatch, aRequest, pathMatch } from './test-fixtures.js';
import type { CompiledRoute, PortRoutes } from './types.js';
import { DEFAULT_RETRY_POLICY } from './retry.js';

const holds = (match: HttpRouteMatch, target: string, headers: ReadonlyArray<readonly [string, string]> = [], method = 'GET') =>
  matchHolds(compileMatch(match), aRequest(target, headers, method));

describe('path matching', () => {
  it('PathPrefix is element-wise and ignores a trailing slash in the value', () => {
    const m = aMatch({ path: pathMatch('PathPrefix', '/v2') });
    expect(holds(m, '/v2')).toBe(true);
    expect(holds(m, '/v2/')).toBe(true);
    expect(holds(m, '/v2/example')).toBe(true);
    expect(holds(m, '/v2example')).toBe(false);
    expect(holds(m, '/foo/v2/example')).toBe(false);
    expect(holds(m, '/V2')).toBe(false);
    const slash = aMatch({ path: pathMatch('PathPrefix', '/v2/') });
    expect(holds(slash, '/v2')).toBe(true);
    expect(holds(slash, '/v2/x')).toBe(true);
    expect(holds(slash, '/v2x')).toBe(false);
  });

  it('PathPrefix / matches every path that starts with a slash', () => {
    const m = aMatch();
    expect(holds(m, '/')).toBe(true);
    expect(holds(m, '/anything/at/all')).toBe(true);
    expect(holds(m, '*')).toBe(false);
  });

  it('Exact is case-sensitive with no trailing-slash tolerance, and ignores the query', () => {
    const m = aMatch({ path: pathMatch('Exact', '/v1') });
    expect(holds(m, '/v1')).toBe(true);
    expect(holds(m, '/v1?x=1')).toBe(true);
    expect(holds(m, '/v1/')).toBe(false);
    expect(holds(m, '/V1')).toBe(false);
    expect(holds(m, '/v1/x')).toBe(false);
  });

  it('RegularExpression is a full match', () => {
    const m = aMatch({ path: pathMatch('RegularExpression', '/items/[0-9]+') });
    expect(holds(m, '/items/42')).toBe(true);
    expect(holds(m, '/items/42/x')).toBe(false);
    expect(holds(m, '/x/items/42')).toBe(false);
    const alt = aMatch({ path: pathMatch('RegularExpression', '/a|/b') });
    expect(holds(alt, '/a')).toBe(true);
    expect(holds(alt, '/b')).toBe(true);
    expect(holds(alt, '/ab')).toBe(false);
  });
});

describe('header, query and method matching', () => {
  it('header names are case-insensitive, values exact and case-sensitive', () => {
    const m = aMatch({ headers: [['Version', 'one']] });
    expect(holds(m, '/', [['version', 'one']])).toBe(true);
    expect(holds(m, '/', [['VERSION', 'one']])).toBe(true);
    expect(holds(m, '/', [['version', 'One']])).toBe(false);
    expect(holds(m, '/')).toBe(false);
  });

  it('a repeated header is matched as its values joined with "," (Envoy)', () => {
    const m = aMatch({ headers: [['version', 'one']] });
    expect(holds(m, '/', [['version', 'one'], ['version', 'one']])).toBe(false);
    expect(holds(aMatch({ headers: [['version', 'one,two']] }), '/', [['version', 'one'], ['version', 'two']])).toBe(true);
  });

  it('only the first entry of a duplicated header name counts', () => {
    const m = aMatch({ headers: [['version', 'one'], ['Version', 'two']] });
    expect(holds(m, '/', [['version', 'one']])).toBe(true);
    expect(holds(m, '/', [['version', 'two']])).toBe(false);
  });

  it('header RegularExpression is a full match; the value `*` means present', () => {
    const m = aMatch({ headers: [{ type: 'RegularExpression', name: 'x-id', value: '[a-f0-9]{4}' }] });
    expect(holds(m, '/', [['x-id', 'beef']])).toBe(true);
    expect(holds(m, '/', [['x-id', 'beef1']])).toBe(false);
    const present = aMatch({ headers: [{ type: 'RegularExpression', name: 'x-id', value: '*' }] });
    expect(holds(present, '/', [['x-id', '']])).toBe(true);
    expect(holds(present, '/')).toBe(false);
  });

  it('query params: names case-sensitive, the first value counts, values decoded', () => {
    const m = aMatch({ queryParams: [['animal', 'whale']] });
    expect(holds(m, '/?animal=whale')).toBe(true);
    expect(holds(m, '/?Animal=whale')).toBe(false);
    expect(holds(m, '/?animal=whale&animal=dolphin')).toBe(true);
    expect(holds(m, '/?animal=dolphin&animal=whale')).toBe(false);
    expect(holds(m, '/?animal=wh%61le')).toBe(true);
    expect(holds(m, '/?animal=whaledolphin')).toBe(false);
    expect(holds(m, '/')).toBe(false);
    const re = aMatch({ queryParams: [{ type: 'RegularExpression', name: 'n', value: '[0-9]+' }] });
    expect(holds(re, '/?n=123')).toBe(true);
    expect(holds(re, '/?n=12a')).toBe(false);
  });

  it('method is exact', () => {
    const m = aMatch({ method: 'POST' });
    expect(holds(m, '/', [], 'POST')).toBe(true);
    expect(holds(m, '/', [], 'GET')).toBe(false);
  });

  it('all conditions of one match must hold', () => {
    const m = aMatch({ path: pathMatch('PathPrefix', '/path4'), headers: [['version', 'three']], queryParams: [['animal', 'kraken']] });
    expect(holds(m, '/path4?animal=kraken', [['version', 'three']])).toBe(true);
    expect(holds(m, '/path4?animal=kraken')).toBe(false);
    expect(holds(m, '/path4', [['version', 'three']])).toBe(false);
  });
});

describe('regex compilation (RE2 semantics, refused patterns)', () => {
  it('reports patterns JavaScript or RE2 cannot run, naming the field', () => {
    const errors: MatchCompileError[] = [];
    const m = compileMatch(
      aMatch({
        path: pathMatch('RegularExpression', '/(?=x)'),
        headers: [{ type: 'RegularExpression', name: 'a', value: '(a)\\1' }],
        queryParams: [{ type: 'RegularExpression', name: 'q', value: '[' }],
      }),
      errors,
    );
    expect(errors.map((e) => e.field)).toEqual(['path.value', 'headers[0].value', 'queryParams[0].value']);
    expect(errors[0]?.message).toMatch(/lookaround/);
    expect(errors[1]?.message).toMatch(/backreferences/);
    // A matcher that failed to compile never matches (fail closed).
    expect(matchHolds(m, aRequest('/x?q=[', [['a', 'aa']]))).toBe(false);
  });

  it('translates RE2 named groups and leading flags; accepts RE2 punctuation escapes', () => {
    const named = compileFullMatch('/(?P<id>[0-9]+)');
    expect(named.ok && named.regex.test('/12')).toBe(true);
    const ci = compileFullMatch('(?i)/abc');
    expect(ci.ok && ci.regex.test('/ABC')).toBe(true);
    const dash = compileFullMatch('/a\\-b');
    expect(dash.ok && dash.regex.test('/a-b')).toBe(true);
    expect(compileFullMatch('\\pN').ok).toBe(false);
    expect(compileFullMatch('/\\z').ok).toBe(false);
  });
});

describe('selectRoute', () => {
  const route = (name: string, match: HttpRouteMatch): CompiledRoute => ({
    name,
    match,
    source: { route: { kind: 'HTTPRoute', namespace: 'ns', name: 'r' }, ruleIndex: 0, matchIndex: 0 },
    requestHeaders: [],
    responseHeaders: [],
    rewrite: undefined,
    mirrors: [],
    cors: undefined,
    action: { kind: 'direct', status: 500, body: '' },
    timeoutMs: 0,
    retry: DEFAULT_RETRY_POLICY,
  });
  const table: PortRoutes = {
    protocol: 'http',
    attached: true,
    routes: [route('exact', aMatch({ path: pathMatch('Exact', '/a') })), route('prefix', aMatch({ path: pathMatch('PathPrefix', '/a') }))],
    tcpBackends: undefined,
  };

  it('first match in order wins; a hand-built table is compiled once and reused', () => {
    const first = selectRoute(table, aRequest('/a'));
    expect(first.kind === 'route' && first.route.name).toBe('exact');
    const second = selectRoute(table, aRequest('/a/b'));
    expect(second.kind === 'route' && second.route.name).toBe('prefix');
    expect(selectRoute(table, aRequest('/a'))).toBe(first);
  });

  it('no match with routes attached is no-match (404); nothing attached is the default route', () => {
    expect(selectRoute(table, aRequest('/b'))).toEqual({ kind: 'no-match' });
    expect(selectRoute({ ...table, attached: false, routes: [] }, aRequest('/a'))).toEqual({ kind: 'default' });
    expect(selectRoute(undefined, aRequest('/a'))).toEqual({ kind: 'default' });
  });
});

describe('parseQuery and splitPathAndQuery', () => {
  it('splits pieces, decodes percent escapes, keeps order and repeats', () => {
    expect(parseQuery('a=1&a=2&b')).toEqual([
      ['a', '1'],
      ['a', '2'],
      ['b', ''],
    ]);
    expect(parseQuery('?x=%20y&&z=a=b')).toEqual([
      ['x', ' y'],
      ['z', 'a=b'],
    ]);
    expect(parseQuery(undefined)).toEqual([]);
    expect(parseQuery('')).toEqual([]);
    expect(parseQuery('?')).toEqual([]);
  });

  it('decodes like Envoy: + stays +, invalid escapes stay, UTF-8 bytes join', () => {
    expect(percentDecode('a+b')).toBe('a+b');
    expect(percentDecode('%zz%4')).toBe('%zz%4');
    expect(percentDecode('%C3%A9t%C3%A9')).toBe('été');
    expect(percentDecode('plain')).toBe('plain');
  });

  it('splits a request target at the first ?', () => {
    expect(splitPathAndQuery('/a?b=1?c')).toEqual({ path: '/a', query: 'b=1?c' });
    expect(splitPathAndQuery('/a')).toEqual({ path: '/a', query: undefined });
  });
});
