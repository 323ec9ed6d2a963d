import { describe, expect, it } from 'vitest';
import type { HttpFilter, RouteResource } from '../resources/types.js';
import { compileRoutes, serviceLookup, type CompileResult } from './compile.js';
import { applyHeaderModifier, HeaderList } from './headers.js';
import { DEFAULT_RETRY_POLICY, NO_RETRY_POLICY } from './retry.js';
import { rewritePath } from './rewrite.js';
import { selectRoute } from './select.js';
import {
  aBackend,
  aControlService,
  aGrpcRoute,
  aMatch,
  anHttpRoute,
  aRequest,
  aRule,
  aTcpRoute,
  conformanceInput,
  MESH_NS,
  pathMatch,
  serviceKeyOf,
  serviceParent,
  setHeader,
} from './test-fixtures.js';
import type { CompiledRoute, RouteSelection } from './types.js';

function compile(routes: readonly RouteResource[], extra?: Parameters<typeof conformanceInput>[1]): CompileResult {
  return compileRoutes(conformanceInput(routes, extra));
}

function select(result: CompileResult, service: string, port: number, target: string, headers: ReadonlyArray<readonly [string, string]> = [], method = 'GET'): RouteSelection {
  return selectRoute(result.table.portRoutes(serviceKeyOf(service), port), aRequest(target, headers, method));
}

function routeOf(selection: RouteSelection): CompiledRoute {
  if (selection.kind !== 'route') throw new Error(`expected a route, got ${selection.kind}`);
  return selection.route;
}

/** The echo deployment a selection sends to: the single backend of the route, or the service itself for the default route. */
function backendOf(selection: RouteSelection, service: string): string {
  if (selection.kind === 'default') return service;
  if (selection.kind === 'no-match') return '404';
  const action = selection.route.action;
  if (action.kind !== 'forward') return action.kind;
  if (action.backends.length !== 1) throw new Error('expected one backend');
  return action.backends[0]?.target.name ?? '';
}

const headerRule = (path: string, backend: string, filters: HttpFilter[]) =>
  aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', path) })], filters, backendRefs: [aBackend(backend, 8080)] });

describe('MeshHTTPRouteMatching (every case)', () => {
  const route = anHttpRoute('mesh-matching', [serviceParent('echo', 80)], [
    aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', '/') }), aMatch({ headers: [['version', 'one']] })], backendRefs: [aBackend('echo-v1', 8080)] }),
    aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', '/v2') }), aMatch({ headers: [['version', 'two']] })], backendRefs: [aBackend('echo-v2', 8080)] }),
  ]);
  const result = compile([route]);
  const cases: Array<[string, ReadonlyArray<readonly [string, string]>, string]> = [
    ['/', [], 'echo-v1'],
    ['/example', [], 'echo-v1'],
    ['/', [['Version', 'one']], 'echo-v1'],
    ['/v2', [], 'echo-v2'],
    ['/v2/example', [], 'echo-v2'],
    ['/', [['Version', 'two']], 'echo-v2'],
    ['/v2/', [], 'echo-v2'],
    ['/v2example', [], 'echo-v1'],
    ['/foo/v2/example', [], 'echo-v1'],
  ];
  it.each(cases)('%s %j → %s', (target, headers, backend) => {
    expect(backendOf(select(result, 'echo', 80, target, headers), 'echo')).toBe(backend);
  });

  it('orders the four generated routes by Istio ranking', () => {
    const routes = result.table.portRoutes(serviceKeyOf('echo'), 80)?.routes ?? [];
    expect(routes.map((r) => `${r.name}#${r.source.matchIndex}`)).toEqual([
      'gateway-conformance-mesh.mesh-matching.1#0', // PathPrefix /v2
      'gateway-conformance-mesh.mesh-matching.0#1', // PathPrefix / + 1 header (version: one)
      'gateway-conformance-mesh.mesh-matching.1#1', // PathPrefix / + 1 header (version: two)
      'gateway-conformance-mesh.mesh-matching.0#0', // PathPrefix /
    ]);
  });

  it('scopes a port-80 parentRef to port 80 only', () => {
    expect(result.table.portRoutes(serviceKeyOf('echo'), 80)?.attached).toBe(true);
    expect(result.table.portRoutes(serviceKeyOf('echo'), 8080)?.attached).toBe(false);
    expect(select(result, 'echo', 8080, '/v2')).toEqual({ kind: 'default' });
  });
});

describe('MeshHTTPRouteQueryParamMatching (every case)', () => {
  const rule = (matches: ReturnType<typeof aMatch>[], backend: string) => aRule({ matches, backendRefs: [aBackend(backend, 8080)] });
  const route = anHttpRoute('mesh-query-param-matching', [serviceParent('echo', 80)], [
    rule([aMatch({ queryParams: [['animal', 'whale']] })], 'echo-v1'),
    rule([aMatch({ queryParams: [['animal', 'dolphin']] })], 'echo-v2'),
    rule([aMatch({ path: pathMatch('PathPrefix', '/path1'), queryParams: [['animal', 'whale']] })], 'echo-v1'),
    rule([aMatch({ headers: [['version', 'one']], queryParams: [['animal', 'whale']] })], 'echo-v2'),
    rule(
      [
        aMatch({ path: pathMatch('PathPrefix', '/path3'), queryParams: [['animal', 'shark']] }),
        aMatch({ path: pathMatch('PathPrefix', '/path4'), headers: [['version', 'three']], queryParams: [['animal', 'kraken']] }),
      ],
      'echo-v1',
    ),
    rule([aMatch({ path: pathMatch('PathPrefix', '/path5') })], 'echo-v1'),
    rule([aMatch({ queryParams: [['animal', 'hydra']] })], 'echo-v2'),
  ]);
  const result = compile([route]);
  const cases: Array<[string, ReadonlyArray<readonly [string, string]>, string]> = [
    ['/?animal=whale', [], 'echo-v1'],
    ['/?animal=dolphin', [], 'echo-v2'],
    ['/?animal=whale&otherparam=irrelevant', [], 'echo-v1'],
    ['/?animal=dolphin&color=yellow', [], 'echo-v2'],
    ['/?color=blue', [], '404'],
    ['/?animal=dog', [], '404'],
    ['/?animal=whaledolphin', [], '404'],
    ['/', [], '404'],
    ['/path1?animal=whale', [], 'echo-v1'],
    ['/?animal=whale', [['version', 'one']], 'echo-v2'],
    ['/path3?animal=shark', [], 'echo-v1'],
    ['/path4?animal=kraken', [['version', 'three']], 'echo-v1'],
    ['/?animal=shark', [], '404'],
    ['/path4?animal=kraken', [], '404'],
    ['/path5?animal=hydra', [], 'echo-v1'],
  ];
  it.each(cases)('%s %j → %s', (target, headers, backend) => {
    expect(backendOf(select(result, 'echo', 80, target, headers), 'echo')).toBe(backend);
  });
});

describe('MeshPorts (every case) and MeshFrontend', () => {
  const routes = [
    anHttpRoute('mesh-split-v1', [serviceParent('echo-v1', 80)], [aRule({ filters: [setHeader('X-Header-Set', 'v1')], backendRefs: [aBackend('echo-v1', 80)] })]),
    anHttpRoute('mesh-split-v2', [serviceParent('echo-v2')], [aRule({ filters: [setHeader('X-Header-Set', 'v2')], backendRefs: [aBackend('echo-v2', 80)] })]),
  ];
  const result = compile(routes);
  const responseHeader = (s: RouteSelection): string | undefined => {
    if (s.kind !== 'route') return undefined;
    const list = HeaderList.empty();
    for (const m of s.route.responseHeaders) applyHeaderModifier(list, m);
    return list.get('x-header-set');
  };
  const cases: Array<[string, number, string, string | undefined]> = [
    ['echo-v1', 80, 'echo-v1', 'v1'],
    ['echo-v1', 8080, 'echo-v1', undefined],
    ['echo-v2', 80, 'echo-v2', 'v2'],
    ['echo-v2', 8080, 'echo-v2', 'v2'],
  ];
  it.each(cases)('%s:%d → backend %s, X-Header-Set %s', (service, port, backend, header) => {
    const s = select(result, service, port, '/');
    expect(backendOf(s, service)).toBe(backend);
    expect(responseHeader(s)).toBe(header);
  });

  it('keys routes by the destination service, never by Host (MeshFrontendHostname): echo has no route', () => {
    expect(select(result, 'echo', 80, '/', [['host', 'echo-v2']])).toEqual({ kind: 'default' });
  });
});

describe('MeshTrafficSplit (every case)', () => {
  const result = compile([
    anHttpRoute('mesh-split', [serviceParent('echo')], [
      aRule({ matches: [aMatch({ path: pathMatch('Exact', '/v1') })], backendRefs: [aBackend('echo-v1', 80)] }),
      aRule({ matches: [aMatch({ path: pathMatch('Exact', '/v2') })], backendRefs: [aBackend('echo-v2', 80)] }),
    ]),
  ]);
  it.each([
    ['/v1', 'echo-v1'],
    ['/v2', 'echo-v2'],
  ])('%s → %s', (target, backend) => {
    expect(backendOf(select(result, 'echo', 80, target), 'echo')).toBe(backend);
  });
  it('a parentRef without port covers every HTTP port; unmatched paths are 404', () => {
    expect(backendOf(select(result, 'echo', 8080, '/v2'), 'echo')).toBe('echo-v2');
    expect(select(result, 'echo', 80, '/v3')).toEqual({ kind: 'no-match' });
  });
});

describe('MeshHTTPRouteRewritePath (every case: path and headers reaching the backend)', () => {
  const modify: HttpFilter = {
    type: 'RequestHeaderModifier',
    modifier: {
      set: [['X-Header-Set', 'set-overwrites-values']],
      add: [
        ['X-Header-Add', 'header-val-1'],
        ['X-Header-Add-Append', 'header-val-2'],
      ],
      remove: ['X-Header-Remove'],
    },
  };
  const rewrite = (type: 'ReplacePrefixMatch' | 'ReplaceFullPath', value: string): HttpFilter => ({
    type: 'URLRewrite',
    rewrite: { hostname: undefined, path: { type, value } },
  });
  const result = compile([
    anHttpRoute('mesh-rewrite-path', [serviceParent('echo', 80)], [
      headerRule('/prefix/one', 'echo-v1', [rewrite('ReplacePrefixMatch', '/one')]),
      headerRule('/strip-prefix', 'echo-v1', [rewrite('ReplacePrefixMatch', '/')]),
      headerRule('/full/one', 'echo-v1', [rewrite('ReplaceFullPath', '/one')]),
      headerRule('/full/rewrite-path-and-modify-headers', 'echo-v1', [rewrite('ReplaceFullPath', '/test'), modify]),
      headerRule('/prefix/rewrite-path-and-modify-headers', 'echo-v1', [rewrite('ReplacePrefixMatch', '/prefix'), modify]),
    ]),
  ]);
  const sent = [
    ['X-Header-Remove', 'remove-val'],
    ['X-Header-Add-Append', 'append-val-1'],
    ['X-Header-Set', 'set-val'],
  ] as const;
  const cases: Array<[string, ReadonlyArray<readonly [string, string]>, string, Record<string, string>]> = [
    ['/prefix/one/two', [], '/one/two', {}],
    ['/strip-prefix/three', [], '/three', {}],
    ['/strip-prefix', [], '/', {}],
    ['/full/one/two', [], '/one', {}],
    ['/full/rewrite-path-and-modify-headers/test', sent, '/test', { 'X-Header-Add': 'header-val-1', 'X-Header-Add-Append': 'append-val-1,header-val-2', 'X-Header-Set': 'set-overwrites-values' }],
    ['/prefix/rewrite-path-and-modify-headers/one', sent, '/prefix/one', { 'X-Header-Add': 'header-val-1', 'X-Header-Add-Append': 'append-val-1,header-val-2', 'X-Header-Set': 'set-overwrites-values' }],
  ];
  it.each(cases)('%s → %s', (target, headers, path, expectedHeaders) => {
    const s = select(result, 'echo', 80, target, headers);
    const route = routeOf(s);
    expect(backendOf(s, 'echo')).toBe('echo-v1');
    const modifier = route.rewrite?.path;
    expect(modifier === undefined ? target : rewritePath(modifier, route.match, target)).toBe(path);
    const list = HeaderList.fromPairs(headers);
    for (const m of route.requestHeaders) applyHeaderModifier(list, m);
    for (const [name, value] of Object.entries(expectedHeaders)) expect(list.getAll(name).join(',')).toBe(value);
    expect(list.has('x-header-remove')).toBe(false);
  });
});

describe('redirects compile into redirect actions (status codes of the conformance tests)', () => {
  const redirectRule = (path: string, statusCode: number, over: Partial<{ hostname: string; port: number; scheme: 'https' }> = {}) =>
    aRule({
      matches: [aMatch({ path: pathMatch('PathPrefix', path) })],
      filters: [{ type: 'RequestRedirect', redirect: { scheme: over.scheme, hostname: over.hostname, path: undefined, port: over.port, statusCode } }],
    });
  const result = compile([
    anHttpRoute('redirects', [serviceParent('echo', 80)], [
      redirectRule('/redirect', 303),
      redirectRule('/temporary', 307),
      redirectRule('/permanent', 308),
      redirectRule('/hostname-redirect', 302, { hostname: 'example.org' }),
      redirectRule('/port', 301, { port: 8083 }),
      redirectRule('/scheme', 302, { scheme: 'https' }),
    ]),
  ]);
  it.each([
    ['/redirect', 303],
    ['/temporary', 307],
    ['/permanent', 308],
    ['/hostname-redirect', 302],
    ['/port', 301],
    ['/scheme', 302],
  ])('%s → %d (no backends, so not a direct 500)', (target, status) => {
    const action = routeOf(select(result, 'echo', 80, target)).action;
    expect(action.kind).toBe('redirect');
    expect(action.kind === 'redirect' && action.redirect.statusCode).toBe(status);
  });
});

describe('weights and backends', () => {
  it('MeshHTTPRouteWeight: 70/30 weighted backends; MeshGRPCRouteWeight drops the weight-0 echo-v3 that does not exist, without an error', () => {
    const result = compile([
      anHttpRoute('mesh-weighted-backends', [serviceParent('echo', 80)], [aRule({ backendRefs: [aBackend('echo-v1', 8080, 70), aBackend('echo-v2', 8080, 30)] })]),
      aGrpcRoute('mesh-grpc-weighted-backends', [serviceParent('echo', 7070)], [
        { name: undefined, matches: [], filters: [], backendRefs: [aBackend('echo-v1', 7070, 70), aBackend('echo-v2', 7070, 30), aBackend('echo-v3', 7070, 0)] },
      ]),
    ]);
    const http = routeOf(select(result, 'echo', 80, '/')).action;
    expect(http.kind === 'forward' && http.backends.map((b) => [b.target.name, b.port, b.weight])).toEqual([
      ['echo-v1', 8080, 70],
      ['echo-v2', 8080, 30],
    ]);
    const grpc = routeOf(select(result, 'echo', 7070, '/proto.EchoTestService/Echo')).action;
    expect(grpc.kind === 'forward' && grpc.backends.map((b) => [b.target.name, b.weight, b.invalid])).toEqual([
      ['echo-v1', 70, undefined],
      ['echo-v2', 30, undefined],
    ]);
    const grpcStatus = result.routeStatuses.find((s) => s.route.kind === 'GRPCRoute');
    expect(grpcStatus?.parents[0]?.conditions.find((c) => c.type === 'ResolvedRefs')?.status).toBe('True');
  });

  it('all weights 0 and no redirect: a direct 500', () => {
    const result = compile([anHttpRoute('zero', [serviceParent('echo')], [aRule({ backendRefs: [aBackend('echo-v1', 8080, 0)] }), aRule({ matches: [aMatch({ path: pathMatch('Exact', '/none') })] })])]);
    expect(routeOf(select(result, 'echo', 80, '/')).action).toEqual({ kind: 'direct', status: 500, body: '' });
    expect(routeOf(select(result, 'echo', 80, '/none')).action).toEqual({ kind: 'direct', status: 500, body: '' });
  });

  it('an unknown backend keeps its share, marked invalid (500), and ResolvedRefs says BackendNotFound', () => {
    const result = compile([anHttpRoute('partly', [serviceParent('echo', 80)], [aRule({ backendRefs: [aBackend('echo-v1', 8080, 50), aBackend('missing', 8080, 50)] })])]);
    const action = routeOf(select(result, 'echo', 80, '/')).action;
    expect(action.kind === 'forward' && action.backends.map((b) => [b.target.name, b.weight, b.invalid?.reason])).toEqual([
      ['echo-v1', 50, undefined],
      ['missing', 50, 'BackendNotFound'],
    ]);
    const refs = result.routeStatuses[0]?.parents[0]?.conditions.find((c) => c.type === 'ResolvedRefs');
    expect(refs).toEqual({ type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound', message: 'backend(missing.gateway-conformance-mesh.svc.cluster.local) not found' });
    expect(result.problems.some((p) => p.field === 'spec.rules[0].backendRefs[1]')).toBe(true);
  });

  it('an unsupported backend kind keeps its share, marked invalid, with InvalidKind', () => {
    const result = compile([
      anHttpRoute('kinds', [serviceParent('echo', 80)], [
        aRule({ backendRefs: [aBackend('thing', 80, 1, { kind: 'Unsupported', unsupported: { group: 'example.com', kind: 'Thing' } })] }),
      ]),
    ]);
    const action = routeOf(select(result, 'echo', 80, '/')).action;
    expect(action.kind === 'forward' && action.backends[0]?.invalid?.reason).toBe('InvalidKind');
    expect(result.routeStatuses[0]?.parents[0]?.conditions[1]).toEqual({
      type: 'ResolvedRefs',
      status: 'False',
      reason: 'InvalidKind',
      message: 'referencing unsupported backendRef: group "example.com" kind "Thing"',
    });
  });

  it('a port the backend service does not have is answered 500 but is not a status error (istiod does not check it)', () => {
    const result = compile([anHttpRoute('noport', [serviceParent('echo', 80)], [aRule({ backendRefs: [aBackend('echo-v1', 1234)] })])]);
    const action = routeOf(select(result, 'echo', 80, '/')).action;
    expect(action.kind === 'forward' && action.backends[0]?.invalid?.message).toBe('service echo-v1.gateway-conformance-mesh.svc.cluster.local has no port 1234');
    expect(result.routeStatuses[0]?.parents[0]?.conditions[1]?.status).toBe('True');
  });

  it('a Service backend without a port is a hard error (istiod: port is required in backendRef), even for a single-port service', () => {
    const single = aControlService(MESH_NS, 'single', [[80, 8080, 'HTTP11']]);
    const result = compile([anHttpRoute('needs-port', [serviceParent('echo', 80)], [aRule({ backendRefs: [aBackend('single', undefined)] })])], { services: [single] });
    expect(result.table.portRoutes(serviceKeyOf('echo'), 80)?.attached).toBe(false);
    expect(result.routeStatuses[0]?.parents[0]?.conditions[1]).toEqual({ type: 'ResolvedRefs', status: 'False', reason: 'InvalidDestination', message: 'port is required in backendRef' });
  });

  it('a Hostname backend resolves a ServiceEntry host', () => {
    const external = aControlService(MESH_NS, 'ext', [[443, 443, 'TLS']], { hostname: 'api.example.com', waypoint: false });
    const result = compile(
      [
        anHttpRoute('hostnames', [serviceParent('echo', 80)], [
          aRule({ backendRefs: [aBackend('api.example.com', 443, 1, { kind: 'Hostname', group: 'networking.istio.io' }), aBackend('nope.example.com', 443, 1, { kind: 'Hostname', group: 'networking.istio.io' })] }),
        ]),
      ],
      { services: [external] },
    );
    const action = routeOf(select(result, 'echo', 80, '/')).action;
    expect(action.kind === 'forward' && action.backends.map((b) => b.invalid?.message)).toEqual([undefined, 'backend(nope.example.com) not found']);
  });
});

describe('precedence across rules and routes', () => {
  const at = (path: string, backend: string, over: Partial<Parameters<typeof aMatch>[0]> = {}) =>
    aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', path), ...over })], backendRefs: [aBackend(backend, 8080)] });

  it('Exact beats PathPrefix, longer prefixes first, then method, then headers, then query params', () => {
    const result = compile([
      anHttpRoute('ranking', [serviceParent('echo', 80)], [
        at('/', 'prefix-root'),
        at('/a', 'prefix-a'),
        at('/a/b', 'prefix-ab'),
        aRule({ matches: [aMatch({ path: pathMatch('Exact', '/a') })], backendRefs: [aBackend('exact-a', 8080)] }),
        aRule({ matches: [aMatch({ path: pathMatch('RegularExpression', '/a.*') })], backendRefs: [aBackend('regex', 8080)] }),
        at('/a', 'prefix-a-post', { method: 'POST' }),
        at('/a', 'prefix-a-header', { headers: [['x', '1']] }),
        at('/a', 'prefix-a-query', { queryParams: [['q', '1']] }),
        at('/a', 'prefix-a-2headers', { headers: [['x', '1'], ['y', '1']] }),
      ]),
    ]);
    const names = (result.table.portRoutes(serviceKeyOf('echo'), 80)?.routes ?? []).map((r) =>
      r.action.kind === 'forward' ? r.action.backends[0]?.target.name : r.action.kind,
    );
    expect(names).toEqual(['exact-a', 'prefix-ab', 'prefix-a-post', 'prefix-a-2headers', 'prefix-a-header', 'prefix-a-query', 'prefix-a', 'prefix-root', 'regex']);
    expect(backendOf(select(result, 'echo', 80, '/a'), 'echo')).toBe('exact-a');
    expect(backendOf(select(result, 'echo', 80, '/a/x', [], 'POST'), 'echo')).toBe('prefix-a-post');
    expect(backendOf(select(result, 'echo', 80, '/a/x', [['x', '1'], ['y', '1']]), 'echo')).toBe('prefix-a-2headers');
    expect(backendOf(select(result, 'echo', 80, '/a/x?q=1'), 'echo')).toBe('prefix-a-query');
    expect(backendOf(select(result, 'echo', 80, '/ab'), 'echo')).toBe('prefix-root');
  });

  it('ties go to the older route, then namespace/name, then rule order; a trailing slash does not lengthen a prefix', () => {
    const older = anHttpRoute('zzz-older', [serviceParent('echo')], [at('/same', 'older')], { createdMs: 1 });
    const newerA = anHttpRoute('aaa-newer', [serviceParent('echo')], [at('/same/', 'newer-a'), at('/same', 'newer-a-rule1')], { createdMs: 2 });
    const newerB = anHttpRoute('bbb-newer', [serviceParent('echo')], [at('/same', 'newer-b')], { createdMs: 2 });
    const result = compile([newerB, older, newerA]);
    const routes = result.table.portRoutes(serviceKeyOf('echo'), 80)?.routes ?? [];
    expect(routes.map((r) => r.name)).toEqual([
      'gateway-conformance-mesh.zzz-older.0',
      'gateway-conformance-mesh.aaa-newer.0',
      'gateway-conformance-mesh.aaa-newer.1',
      'gateway-conformance-mesh.bbb-newer.0',
    ]);
    expect(backendOf(select(result, 'echo', 80, '/same/x'), 'echo')).toBe('older');
  });

  it('routes in the waypoint namespace apply; consumer routes from other namespaces are ignored with a problem, yet Accepted', () => {
    const other = aControlService('other', 'svc', [[80, 8080, 'HTTP11']]);
    const result = compile(
      [
        anHttpRoute('consumer', [serviceParent('echo', 80)], [at('/', 'echo-v2')], { namespace: 'consumer-ns' }),
        anHttpRoute('from-waypoint-ns', [serviceParent('svc', 80, 'other')], [at('/', 'echo-v1')]),
      ],
      { services: [other] },
    );
    expect(select(result, 'echo', 80, '/')).toEqual({ kind: 'default' });
    expect(result.problems.filter((p) => p.resource.name === 'consumer').map((p) => p.message)).toEqual([
      'consumer route ignored: a waypoint applies only routes in the service\'s namespace (gateway-conformance-mesh) or its own (gateway-conformance-mesh)',
    ]);
    expect(selectRoute(result.table.portRoutes(serviceKeyOf('svc', 'other'), 80), aRequest('/')).kind).toBe('route');
    expect(result.routeStatuses.find((s) => s.route.name === 'consumer')?.parents[0]?.conditions[0]?.status).toBe('True');
  });

  it('rule names: rules[].name when set (MeshHTTPRouteNamedRule), else <ns>.<route>.<index>', () => {
    const result = compile([
      anHttpRoute('mesh-named-rule', [serviceParent('echo', 80)], [
        aRule({ name: 'named-rule', matches: [aMatch({ path: pathMatch('PathPrefix', '/named') })], backendRefs: [aBackend('echo-v1', 8080)] }),
        aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', '/unnamed') })], backendRefs: [aBackend('echo-v2', 8080)] }),
      ]),
    ]);
    expect(routeOf(select(result, 'echo', 80, '/named')).name).toBe('named-rule');
    expect(routeOf(select(result, 'echo', 80, '/unnamed')).name).toBe('gateway-conformance-mesh.mesh-named-rule.1');
  });
});

describe('filters', () => {
  it('MeshHTTPRouteBackendRequestHeaderModifier: backend-level modifiers stay on the backend', () => {
    const filter: HttpFilter = { type: 'RequestHeaderModifier', modifier: { set: [['X-Header-Set', 'set-overwrites-values']], add: [], remove: [] } };
    const result = compile([
      anHttpRoute('mesh-request-header-modifier', [serviceParent('echo', 80)], [
        aRule({ matches: [aMatch({ path: pathMatch('PathPrefix', '/set') })], backendRefs: [aBackend('echo-v1', 8080, 1, { filters: [filter] })] }),
      ]),
    ]);
    const route = routeOf(select(result, 'echo', 80, '/set'));
    expect(route.requestHeaders).toEqual([]);
    expect(route.action.kind === 'forward' && route.action.backends[0]?.filters).toEqual([filter]);
  });

  it('set/add de-duplicate names (first wins), pseudo-headers are dropped, host becomes the host rewrite (set over add)', () => {
    const result = compile([
      anHttpRoute('hdrs', [serviceParent('echo', 80)], [
        aRule({
          filters: [
            {
              type: 'RequestHeaderModifier',
              modifier: {
                set: [['X-A', 'first'], ['x-a', 'second'], ['Host', 'set-host'], [':path', '/evil']],
                add: [['host', 'add-host'], ['X-B', 'b']],
                remove: ['X-C', ':authority'],
              },
            },
          ],
          backendRefs: [aBackend('echo-v1', 8080)],
        }),
      ]),
    ]);
    const route = routeOf(select(result, 'echo', 80, '/'));
    expect(route.requestHeaders).toEqual([{ set: [['X-A', 'first']], add: [['X-B', 'b']], remove: ['X-C'] }]);
    expect(route.rewrite).toEqual({ hostname: 'set-host', path: undefined });
  });

  it('an explicit URLRewrite hostname beats a host header modifier', () => {
    const result = compile([
      anHttpRoute('rw', [serviceParent('echo', 80)], [
        aRule({
          filters: [
            { type: 'RequestHeaderModifier', modifier: { set: [['host', 'from-header']], add: [], remove: [] } },
            { type: 'URLRewrite', rewrite: { hostname: 'from-rewrite', path: undefined } },
          ],
          backendRefs: [aBackend('echo-v1', 8080)],
        }),
      ]),
    ]);
    expect(routeOf(select(result, 'echo', 80, '/')).rewrite?.hostname).toBe('from-rewrite');
  });

  it('mirrors: resolved with their port, percent 0 never mirrors, an unknown mirror backend is dropped with a ResolvedRefs error', () => {
    const mirror = (name: string, percent: number): HttpFilter => ({
      type: 'RequestMirror',
      mirror: { backendRef: { group: '', kind: 'Service', namespace: MESH_NS, name, port: 8080 }, percent },
    });
    const result = compile([
      anHttpRoute('mirrors', [serviceParent('echo', 80)], [aRule({ filters: [mirror('echo-v2', 50), mirror('echo-v1', 0), mirror('ghost', 100)], backendRefs: [aBackend('echo-v1', 8080)] })]),
    ]);
    const route = routeOf(select(result, 'echo', 80, '/'));
    expect(route.mirrors.map((m) => [m.backendRef.name, m.percent])).toEqual([['echo-v2', 50]]);
    expect(result.routeStatuses[0]?.parents[0]?.conditions[1]?.reason).toBe('BackendNotFound');
  });

  it('CORS passes through', () => {
    const cors = { allowOrigins: ['https://a.example'], allowMethods: ['GET'], allowHeaders: [], exposeHeaders: [], allowCredentials: false, maxAgeSeconds: 5 };
    const result = compile([anHttpRoute('cors', [serviceParent('echo', 80)], [aRule({ filters: [{ type: 'CORS', cors }], backendRefs: [aBackend('echo-v1', 8080)] })])]);
    expect(routeOf(select(result, 'echo', 80, '/')).cors).toEqual(cors);
  });

  it('a GRPCRoute filter istiod does not support drops the whole route (InvalidFilter), leaving the default route', () => {
    const result = compile([
      aGrpcRoute('bad-filter', [serviceParent('echo', 7070)], [
        {
          name: undefined,
          matches: [],
          filters: [{ type: 'URLRewrite', rewrite: { hostname: 'x', path: undefined } }],
          backendRefs: [aBackend('echo-v1', 7070)],
        },
      ]),
    ]);
    expect(select(result, 'echo', 7070, '/proto.EchoTestService/Echo')).toEqual({ kind: 'default' });
    expect(result.routeStatuses[0]?.parents[0]?.conditions).toEqual([
      { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Route was valid' },
      { type: 'ResolvedRefs', status: 'False', reason: 'InvalidFilter', message: 'unsupported filter type "URLRewrite"' },
      { type: 'ResolvedWaypoints', status: 'True', reason: 'ResolvedWaypoints', message: 'All waypoints resolved' },
    ]);
    expect(result.problems[0]).toMatchObject({ field: 'spec.rules[0].filters[0]', message: 'unsupported filter type "URLRewrite"; the route is not applied' });
  });

  it('a header value with control characters is a hard error (istiod isValidHeaderValue)', () => {
    const result = compile([
      anHttpRoute('ctl', [serviceParent('echo', 80)], [aRule({ filters: [setHeader('X-Bad', 'a\u0001b')], backendRefs: [aBackend('echo-v1', 8080)] })]),
    ]);
    expect(result.table.portRoutes(serviceKeyOf('echo'), 80)?.attached).toBe(false);
    expect(result.routeStatuses[0]?.parents[0]?.conditions[1]?.message).toBe('header "X-Bad" value contains invalid characters');
  });

  it('a regular expression this proxy cannot run as RE2 rejects the route with a problem naming the field', () => {
    const result = compile([
      anHttpRoute('re', [serviceParent('echo', 80)], [aRule({ matches: [aMatch({ path: pathMatch('RegularExpression', '/(?<=x)y') })], backendRefs: [aBackend('echo-v1', 8080)] })]),
    ]);
    expect(result.table.portRoutes(serviceKeyOf('echo'), 80)?.attached).toBe(false);
    expect(result.problems[0]?.field).toBe('spec.rules[0].matches[0].path.value');
  });
});

describe('timeouts and retries', () => {
  const withTimeouts = (requestMs: number | undefined, backendRequestMs: number | undefined, retry?: { attempts?: number; codes?: number[]; backoffMs?: number }) =>
    compile([
      anHttpRoute('t', [serviceParent('echo', 80)], [
        aRule({
          timeouts: { requestMs, backendRequestMs },
          retry: retry === undefined ? undefined : { codes: retry.codes ?? [], attempts: retry.attempts, backoffMs: retry.backoffMs },
          backendRefs: [aBackend('echo-v1', 8080)],
        }),
      ]),
    ]);
  const routeOfT = (r: CompileResult) => routeOf(select(r, 'echo', 80, '/'));

  it('no timeouts: 0 and the default retry policy', () => {
    const r = routeOfT(withTimeouts(undefined, undefined));
    expect(r.timeoutMs).toBe(0);
    expect(r.retry).toBe(DEFAULT_RETRY_POLICY);
  });

  it('request is the route timeout; backendRequest without retry overwrites it (Istio quirk)', () => {
    expect(routeOfT(withTimeouts(5000, undefined)).timeoutMs).toBe(5000);
    expect(routeOfT(withTimeouts(5000, 1000)).timeoutMs).toBe(1000);
    expect(routeOfT(withTimeouts(0, 1000)).timeoutMs).toBe(1000);
  });

  it('backendRequest with a retry stanza is the per-try timeout', () => {
    const r = routeOfT(withTimeouts(5000, 1000, { attempts: 3 }));
    expect(r.timeoutMs).toBe(5000);
    expect(r.retry).toEqual({ numRetries: 3, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled'], retriableStatusCodes: [], backoffBaseMs: 25, perTryTimeoutMs: 1000 });
  });

  it('GEP-1731 retry: codes become retriable-status-codes, attempts default 2, backoff is the base interval', () => {
    const r = routeOfT(withTimeouts(undefined, undefined, { codes: [500, 503, 599], backoffMs: 100 }));
    expect(r.retry).toEqual({
      numRetries: 2,
      retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', '599', 'retriable-status-codes'],
      retriableStatusCodes: [500, 503],
      backoffBaseMs: 100,
      perTryTimeoutMs: 0,
    });
  });

  it('attempts 0 disables retries entirely, and the per-try timeout goes with the policy', () => {
    const r = routeOfT(withTimeouts(undefined, 1000, { attempts: 0 }));
    expect(r.retry).toBe(NO_RETRY_POLICY);
    expect(r.timeoutMs).toBe(0);
  });
});

describe('GRPCRoute method matches (createGRPCURIMatch)', () => {
  const grpcRule = (method: { type: 'Exact' | 'RegularExpression'; service?: string; method?: string } | undefined, backend: string, headers: Array<[string, string]> = []) => ({
    name: undefined,
    matches: [{ method: method === undefined ? undefined : { type: method.type, service: method.service, method: method.method }, headers: headers.map(([name, value]) => ({ type: 'Exact' as const, name, value })) }],
    filters: [],
    backendRefs: [aBackend(backend, 7070)],
  });
  const result = compile([
    aGrpcRoute('grpc', [serviceParent('echo', 7070)], [
      grpcRule({ type: 'Exact', service: 'proto.EchoTestService', method: 'Echo' }, 'exact'),
      grpcRule({ type: 'Exact', service: 'proto.EchoTestService' }, 'service-only'),
      grpcRule({ type: 'Exact', method: 'ForwardEcho' }, 'method-only'),
      grpcRule({ type: 'RegularExpression', service: 'grpc\\.health\\.v1\\..*' }, 'regex-service'),
      grpcRule(undefined, 'header-only', [['x-test-case', 'multi']]),
    ]),
  ]);
  it.each([
    ['/proto.EchoTestService/Echo', [], 'exact'],
    ['/proto.EchoTestService/Other', [], 'service-only'],
    ['/other.Service/ForwardEcho', [], 'method-only'],
    ['/grpc.health.v1.Health/Check', [], 'regex-service'],
    ['/x.Y/Z', [['x-test-case', 'multi']], 'header-only'],
    ['/x.Y/Z', [], '404'],
  ] as Array<[string, Array<[string, string]>, string]>)('%s %j → %s', (path, headers, backend) => {
    expect(backendOf(select(result, 'echo', 7070, path, headers, 'POST'), 'echo')).toBe(backend);
  });
  it('writes the paths as istiod does', () => {
    const paths = (result.table.portRoutes(serviceKeyOf('echo'), 7070)?.routes ?? []).map((r) => `${r.match.path.type} ${r.match.path.value}`);
    expect(paths).toEqual([
      'Exact /proto.EchoTestService/Echo',
      'PathPrefix /proto.EchoTestService/',
      'RegularExpression /grpc\\.health\\.v1\\..*/.+',
      'RegularExpression /[^/]+/ForwardEcho',
      'PathPrefix /',
    ]);
  });
  it('a GRPCRoute rule without matches sorts after every matching route of an unscoped parent', () => {
    const r = compile([
      aGrpcRoute('catch-all', [serviceParent('echo')], [{ name: undefined, matches: [], filters: [], backendRefs: [aBackend('echo-v1', 7070)] }], { createdMs: 1 }),
      anHttpRoute('specific', [serviceParent('echo')], [aRule({ matches: [aMatch({ headers: [['x', '1']] })], backendRefs: [aBackend('echo-v2', 7070)] })], { createdMs: 2 }),
    ]);
    expect((r.table.portRoutes(serviceKeyOf('echo'), 7070)?.routes ?? []).map((x) => x.source.route.name)).toEqual(['specific', 'catch-all']);
  });
});

describe('TCPRoute', () => {
  it('the first rule of the oldest route is the port tcpBackends; HTTP routing stays unattached', () => {
    const result = compile([
      aTcpRoute('tcp-new', [serviceParent('echo', 9090)], [aBackend('echo-v2', 9090)], { createdMs: 5 }),
      aTcpRoute('tcp-old', [serviceParent('echo', 9090)], [aBackend('echo-v1', 9090, 80), aBackend('echo-v2', 9090, 20), aBackend('echo-v3', 9090, 0)], { createdMs: 1 }),
    ]);
    const port = result.table.portRoutes(serviceKeyOf('echo'), 9090);
    expect(port?.protocol).toBe('tcp');
    expect(port?.attached).toBe(false);
    expect(port?.tcpBackends?.map((b) => [b.target.name, b.weight])).toEqual([
      ['echo-v1', 80],
      ['echo-v2', 20],
    ]);
    expect(result.table.portRoutes(serviceKeyOf('echo'), 80)?.tcpBackends).toBeUndefined();
  });

  it('all weights 0: [] (connections refused)', () => {
    const result = compile([aTcpRoute('tcp-zero', [serviceParent('echo', 9090)], [aBackend('echo-v1', 9090, 0)])]);
    expect(result.table.portRoutes(serviceKeyOf('echo'), 9090)?.tcpBackends).toEqual([]);
  });
});

describe('the table', () => {
  it('has every served port with its protocol, and skips UDP', () => {
    const result = compile([]);
    const protocols = [...result.table.entries()]
      .filter((e) => e.service.hostname.startsWith('echo.'))
      .map((e) => [e.port, e.routes.protocol]);
    expect(protocols).toEqual([
      [80, 'http'],
      [443, 'tls'],
      [7070, 'http2'],
      [8080, 'http'],
      [9090, 'tcp'],
    ]);
    expect(result.table.portRoutes(serviceKeyOf('echo-v1'), 7070)?.protocol).toBe('grpc');
    expect(result.table.portRoutes(serviceKeyOf('echo'), 1)).toBeUndefined();
    expect(result.table.portRoutes({ namespace: 'elsewhere', hostname: 'echo.gateway-conformance-mesh.svc.cluster.local' }, 80)).toBeUndefined();
    expect(result.table.version).toBe(1);
  });

  it('is deterministic: input order does not change tables, statuses or problems', () => {
    const routes = [
      anHttpRoute('a', [serviceParent('echo'), serviceParent('missing')], [aRule({ backendRefs: [aBackend('ghost', 80)] })], { createdMs: 3 }),
      anHttpRoute('b', [serviceParent('echo', 80)], [aRule({ matches: [aMatch({ path: pathMatch('Exact', '/b') })], backendRefs: [aBackend('echo-v1', 80)] })], { createdMs: 3 }),
      aTcpRoute('c', [serviceParent('echo', 9090)], [aBackend('echo-v1', 9090)]),
    ];
    const one = compile(routes);
    const two = compile([...routes].reverse());
    const dump = (r: CompileResult) => JSON.stringify({ entries: [...r.table.entries()], statuses: r.routeStatuses, problems: r.problems });
    expect(dump(two)).toBe(dump(one));
  });
});

describe('route parent statuses', () => {
  it('a served parent: Accepted, ResolvedRefs, ResolvedWaypoints, controller istio.io/gateway-controller', () => {
    const result = compile([anHttpRoute('ok', [serviceParent('echo', 80)], [aRule({ backendRefs: [aBackend('echo-v1', 8080)] })])]);
    expect(result.routeStatuses).toEqual([
      {
        route: { kind: 'HTTPRoute', namespace: MESH_NS, name: 'ok' },
        parents: [
          {
            parentRef: { group: '', kind: 'Service', namespace: MESH_NS, name: 'echo', port: 80 },
            controllerName: 'istio.io/gateway-controller',
            conditions: [
              { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Route was valid' },
              { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'All references resolved' },
              { type: 'ResolvedWaypoints', status: 'True', reason: 'ResolvedWaypoints', message: 'All waypoints resolved' },
            ],
          },
        ],
      },
    ]);
  });

  it('a missing parent Service: Accepted False NoMatchingParent `parent service: "<name>" not found`, ResolvedWaypoints "parent not found"', () => {
    const result = compile([anHttpRoute('lost', [serviceParent('nope')], [aRule({ backendRefs: [aBackend('echo-v1', 8080)] })])]);
    expect(result.routeStatuses[0]?.parents[0]?.conditions).toEqual([
      { type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message: 'parent service: "nope" not found' },
      { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'All references resolved' },
      { type: 'ResolvedWaypoints', status: 'True', reason: 'ResolvedWaypoints', message: 'parent not found' },
    ]);
  });

  it('a parent bound to no waypoint gets the missing-label message; one bound to another waypoint is left to it', () => {
    const unbound = aControlService(MESH_NS, 'unbound', [[80, 8080, 'HTTP11']], { waypoint: false });
    const elsewhere = { ...aControlService(MESH_NS, 'elsewhere', [[80, 8080, 'HTTP11']]), waypoint: { destination: { kind: 'hostname' as const, namespace: 'x', hostname: 'other-wp.x.svc.cluster.local' }, hboneMtlsPort: 15008 } };
    const input = conformanceInput([anHttpRoute('r', [serviceParent('unbound'), serviceParent('elsewhere')], [aRule({ backendRefs: [aBackend('echo-v1', 8080)] })])], { services: [unbound] });
    const result = compileRoutes({ ...input, lookup: serviceLookup([...conformanceInputServices(), unbound, elsewhere]) });
    const parents = result.routeStatuses[0]?.parents ?? [];
    expect(parents.map((p) => p.parentRef.name)).toEqual(['unbound']);
    expect(parents[0]?.conditions[2]?.message).toBe(
      'istio.io/use-waypoint label missing from parent and parent namespace; in ambient mode, route will not be respected',
    );
  });

  it('a parentRef to the waypoint Gateway itself is not converted, and the status says so', () => {
    const gatewayParent = { group: 'gateway.networking.k8s.io' as const, kind: 'Gateway' as const, namespace: MESH_NS, name: 'namespace', port: undefined, sectionName: undefined };
    const result = compile([anHttpRoute('on-gateway', [gatewayParent], [aRule({ backendRefs: [aBackend('echo-v1', 8080)] })])]);
    expect([...result.table.entries()].some((e) => e.routes.attached)).toBe(false);
    expect(result.routeStatuses[0]?.parents[0]?.conditions[0]).toMatchObject({ type: 'Accepted', status: 'False', reason: 'NoMatchingParent' });
    expect(result.problems[0]?.message).toMatch(/own Gateway/);
  });

  it('orders parents as istiod does (descending parentRef string, byte order: "echo/" after "echo-")', () => {
    const result = compile([anHttpRoute('multi', [serviceParent('echo-v1', 80), serviceParent('echo'), serviceParent('echo-v2', 8080)], [aRule({ backendRefs: [aBackend('echo-v1', 8080)] })])]);
    expect(result.routeStatuses[0]?.parents.map((p) => `${p.parentRef.name}:${p.parentRef.port ?? ''}`)).toEqual(['echo:', 'echo-v2:8080', 'echo-v1:80']);
  });
});

function conformanceInputServices() {
  return conformanceInput([]).services;
}
