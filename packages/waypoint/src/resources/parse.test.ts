import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseResource, type ParseResult } from './parse.js';
import { MAX_SCHEMA_PROBLEMS } from './parse-schema.js';
import type { GrpcRouteResource, HttpRouteResource, ServiceResource, TcpRouteResource } from './types.js';

const meta = { name: 'r', namespace: 'demo', creationTimestamp: '2024-05-01T10:00:00Z', generation: 3, resourceVersion: '17' };

function httpRoute(spec: unknown, apiVersion = 'gateway.networking.k8s.io/v1'): unknown {
  return { apiVersion, kind: 'HTTPRoute', metadata: meta, spec };
}

const echoParent = { group: '', kind: 'Service', name: 'echo' };

function accepted<T>(r: ParseResult): T {
  if (r.status !== 'accepted') throw new Error(`expected accepted, got ${JSON.stringify(r)}`);
  return r.resource as T;
}

/** The problems of a rejected result as `field: message` lines. */
function rejected(r: ParseResult): string[] {
  if (r.status !== 'rejected') throw new Error(`expected rejected, got ${JSON.stringify(r)}`);
  return r.problems.map((p) => `${p.field}: ${p.message}`);
}

function rejectsWith(spec: unknown, field: string, message: RegExp | string): void {
  const lines = rejected(parseResource(httpRoute(spec)));
  expect(lines.some((l) => l.startsWith(`${field}: `) && (typeof message === 'string' ? l.includes(message) : message.test(l))), lines.join('\n')).toBe(true);
}

describe('parseResource: HTTPRoute defaults', () => {
  it('applies the CRD defaults: PathPrefix "/", backend group ""/kind Service, weight 1, namespaces from the route', () => {
    const r = accepted<HttpRouteResource>(
      parseResource(httpRoute({ parentRefs: [echoParent], rules: [{ backendRefs: [{ name: 'echo-v1', port: 8080 }] }] })),
    );
    expect(r.meta).toEqual({
      kind: 'HTTPRoute',
      namespace: 'demo',
      name: 'r',
      creationTimestampMs: Date.parse('2024-05-01T10:00:00Z'),
      generation: 3,
      resourceVersion: '17',
      labels: {},
      annotations: {},
    });
    expect(r.parentRefs).toEqual([{ group: '', kind: 'Service', namespace: 'demo', name: 'echo', port: undefined, sectionName: undefined }]);
    expect(r.rules).toHaveLength(1);
    const rule = r.rules[0]!;
    expect(rule.matches).toEqual([{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: undefined }]);
    expect(rule.backendRefs).toEqual([{ group: '', kind: 'Service', namespace: 'demo', name: 'echo-v1', port: 8080, weight: 1, filters: [] }]);
    expect(rule.timeouts).toEqual({ requestMs: undefined, backendRequestMs: undefined });
    expect(rule.retry).toBeUndefined();
  });

  it('an absent rules list is one rule with the default match and no backends', () => {
    const r = accepted<HttpRouteResource>(parseResource(httpRoute({ parentRefs: [echoParent] })));
    expect(r.rules).toEqual([
      {
        name: undefined,
        matches: [{ path: { type: 'PathPrefix', value: '/' }, headers: [], queryParams: [], method: undefined }],
        filters: [],
        backendRefs: [],
        timeouts: { requestMs: undefined, backendRequestMs: undefined },
        retry: undefined,
      },
    ]);
  });

  it('a parentRef without group/kind is a Gateway (the CRD default), so mesh parents must say group "" kind Service', () => {
    const r = accepted<HttpRouteResource>(parseResource(httpRoute({ parentRefs: [{ name: 'waypoint' }, { ...echoParent, namespace: 'other', port: 80 }] })));
    expect(r.parentRefs).toEqual([
      { group: 'gateway.networking.k8s.io', kind: 'Gateway', namespace: 'demo', name: 'waypoint', port: undefined, sectionName: undefined },
      { group: '', kind: 'Service', namespace: 'other', name: 'echo', port: 80, sectionName: undefined },
    ]);
  });

  it('leaves out parentRefs of kinds istiod does not handle (another controller may)', () => {
    const r = accepted<HttpRouteResource>(parseResource(httpRoute({ parentRefs: [{ group: 'example.com', kind: 'Mesh', name: 'm' }, echoParent] })));
    expect(r.parentRefs.map((p) => p.name)).toEqual(['echo']);
  });

  it('match defaults: header and query types Exact, header names lower-cased, query names as written; redirect status 302', () => {
    const r = accepted<HttpRouteResource>(
      parseResource(
        httpRoute({
          parentRefs: [echoParent],
          rules: [
            {
              matches: [{ path: { type: 'Exact', value: '/v1' }, headers: [{ name: 'Version', value: 'one' }], queryParams: [{ name: 'Animal', value: 'whale' }], method: 'GET' }],
              filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'example.org' } }],
            },
          ],
        }),
      ),
    );
    const rule = r.rules[0]!;
    expect(rule.matches[0]).toEqual({
      path: { type: 'Exact', value: '/v1' },
      headers: [{ type: 'Exact', name: 'version', value: 'one' }],
      queryParams: [{ type: 'Exact', name: 'Animal', value: 'whale' }],
      method: 'GET',
    });
    expect(rule.filters).toEqual([{ type: 'RequestRedirect', redirect: { scheme: undefined, hostname: 'example.org', path: undefined, port: undefined, statusCode: 302 } }]);
  });

  it('keeps filters in the order given and reads every filter type istiod converts', () => {
    const r = accepted<HttpRouteResource>(
      parseResource(
        httpRoute({
          parentRefs: [echoParent],
          rules: [
            {
              matches: [{ path: { type: 'PathPrefix', value: '/prefix/one' } }],
              filters: [
                { type: 'ResponseHeaderModifier', responseHeaderModifier: { set: [{ name: 'X-Header-Set', value: 'set' }] } },
                { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/one' }, hostname: 'rewritten.example' } },
                { type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'a', value: 'b\tc é' }], remove: ['x-remove'] } },
                { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror', port: 80 }, fraction: { numerator: 1, denominator: 4 } } },
                { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror2', port: 80, namespace: 'x' }, percent: 30 } },
                { type: 'CORS', cors: { allowOrigins: ['https://a.example'], allowCredentials: true } },
              ],
              backendRefs: [{ name: 'echo', port: 80, weight: 0 }],
            },
          ],
        }),
      ),
    );
    expect(r.rules[0]!.filters).toEqual([
      { type: 'ResponseHeaderModifier', modifier: { set: [['X-Header-Set', 'set']], add: [], remove: [] } },
      { type: 'URLRewrite', rewrite: { hostname: 'rewritten.example', path: { type: 'ReplacePrefixMatch', value: '/one' } } },
      { type: 'RequestHeaderModifier', modifier: { set: [], add: [['a', 'b\tc é']], remove: ['x-remove'] } },
      { type: 'RequestMirror', mirror: { backendRef: { group: '', kind: 'Service', namespace: 'demo', name: 'mirror', port: 80 }, percent: 25 } },
      { type: 'RequestMirror', mirror: { backendRef: { group: '', kind: 'Service', namespace: 'x', name: 'mirror2', port: 80 }, percent: 30 } },
      { type: 'CORS', cors: { allowOrigins: ['https://a.example'], allowMethods: [], allowHeaders: [], exposeHeaders: [], allowCredentials: true, maxAgeSeconds: 5 } },
    ]);
    expect(r.rules[0]!.backendRefs[0]!.weight).toBe(0);
  });

  it('reads GEP-2257 durations for timeouts and retry backoff', () => {
    const r = accepted<HttpRouteResource>(
      parseResource(
        httpRoute({
          parentRefs: [echoParent],
          rules: [{ timeouts: { request: '1m30s', backendRequest: '500ms' }, retry: { codes: [503, 500], attempts: 3, backoff: '1s100ms' } }],
        }),
      ),
    );
    expect(r.rules[0]!.timeouts).toEqual({ requestMs: 90_000, backendRequestMs: 500 });
    expect(r.rules[0]!.retry).toEqual({ codes: [503, 500], attempts: 3, backoffMs: 1100 });
  });

  it('request 0s disables the request timeout, so a longer backendRequest is allowed', () => {
    const r = accepted<HttpRouteResource>(parseResource(httpRoute({ parentRefs: [echoParent], rules: [{ timeouts: { request: '0s', backendRequest: '1h' } }] })));
    expect(r.rules[0]!.timeouts).toEqual({ requestMs: 0, backendRequestMs: 3_600_000 });
  });

  it('reads HTTPRoute v1beta1 the same way', () => {
    const r = accepted<HttpRouteResource>(parseResource(httpRoute({ parentRefs: [echoParent], rules: [{ backendRefs: [{ name: 'echo', port: 80 }] }] }, 'gateway.networking.k8s.io/v1beta1')));
    expect(r.rules[0]!.backendRefs[0]!.name).toBe('echo');
  });

  it('uses the default namespace and resourceVersion the caller gives for objects without them', () => {
    const r = accepted<HttpRouteResource>(
      parseResource({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r' }, spec: {} }, { defaultNamespace: 'default', resourceVersion: 'sha-1' }),
    );
    expect(r.meta.namespace).toBe('default');
    expect(r.meta.resourceVersion).toBe('sha-1');
    expect(r.meta.creationTimestampMs).toBe(0);
  });
});

describe('parseResource: identification', () => {
  it('ignores kinds the waypoint does not read, and non-objects', () => {
    expect(parseResource({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } })).toEqual({ status: 'ignored', what: 'v1 ConfigMap' });
    expect(parseResource({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService' }).status).toBe('ignored');
    expect(parseResource('text')).toEqual({ status: 'ignored', what: 'not an object (string)' });
    expect(parseResource(null).status).toBe('ignored');
    expect(parseResource([1]).status).toBe('ignored');
  });

  it('rejects a kind of ours in a version it does not read, naming the versions it does', () => {
    const r = parseResource({ apiVersion: 'gateway.networking.k8s.io/v1alpha1', kind: 'HTTPRoute', metadata: meta, spec: {} });
    expect(r).toEqual({
      status: 'rejected',
      id: { kind: 'HTTPRoute', namespace: 'demo', name: 'r' },
      problems: [
        {
          resource: { kind: 'HTTPRoute', namespace: 'demo', name: 'r' },
          field: 'apiVersion',
          message: 'HTTPRoute is read as gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1, got "gateway.networking.k8s.io/v1alpha1"',
        },
      ],
    });
  });

  it('requires metadata.name and, without a default, metadata.namespace', () => {
    const lines = rejected(parseResource({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: {}, spec: {} }));
    expect(lines).toEqual(['metadata.name: is required', 'metadata.namespace: is required']);
    expect(rejected(parseResource({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'Bad_Name', namespace: 'a' }, spec: {} }))[0]).toMatch(/^metadata\.name: must be a DNS-1035 label/);
  });
});

describe('parseResource: schema problems name the field and what was expected', () => {
  it('enum', () => {
    rejectsWith({ rules: [{ matches: [{}, { path: { type: 'Prefix', value: '/x' } }] }] }, 'spec.rules[0].matches[1].path.type', 'must be one of "Exact", "PathPrefix", "RegularExpression", got "Prefix"');
  });
  it('bounds', () => {
    rejectsWith({ rules: [{ backendRefs: [{ name: 'a', port: 70000 }] }] }, 'spec.rules[0].backendRefs[0].port', 'must be <= 65535, got 70000');
    rejectsWith({ rules: [{ retry: { codes: [200] } }] }, 'spec.rules[0].retry.codes[0]', 'must be >= 400, got 200');
  });
  it('required', () => {
    rejectsWith({ rules: [{ backendRefs: [{ port: 80 }] }] }, 'spec.rules[0].backendRefs[0].name', 'is required');
  });
  it('type and pattern', () => {
    rejectsWith({ rules: 'all' }, 'spec.rules', 'must be an array, got the string "all"');
    rejectsWith({ rules: [{ timeouts: { request: '10 seconds' } }] }, 'spec.rules[0].timeouts.request', /must match .*got "10 seconds"/);
    rejectsWith({ rules: [{ matches: [{ headers: [{ name: 'a b', value: 'x' }] }] }] }, 'spec.rules[0].matches[0].headers[0].name', 'must match');
  });
  it('a huge bad object yields a bounded list of problems', () => {
    const lines = rejected(parseResource(httpRoute({ hostnames: Array.from({ length: 5000 }, () => 'NOT A HOST') })));
    expect(lines.length).toBe(MAX_SCHEMA_PROBLEMS + 1);
    expect(lines.at(-1)).toMatch(/more schema problems left out/);
  });
  it('list sizes', () => {
    rejectsWith({ rules: Array.from({ length: 17 }, () => ({})) }, 'spec.rules', 'must have at most 16 items, got 17');
  });
});

describe('parseResource: the CRD CEL rules the schema check misses', () => {
  it('path values for Exact and PathPrefix', () => {
    rejectsWith({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: 'v1' } }] }] }, 'spec.rules[0].matches[0].path.value', "must be an absolute path and start with '/'");
    rejectsWith({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a//b' } }] }] }, 'spec.rules[0].matches[0].path.value', "must not contain '//'");
    rejectsWith({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a/..' } }] }] }, 'spec.rules[0].matches[0].path.value', "must not end with '/..'");
    rejectsWith({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a%2Fb' } }] }] }, 'spec.rules[0].matches[0].path.value', "must not contain '%2F'");
    rejectsWith({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a b' } }] }] }, 'spec.rules[0].matches[0].path.value', 'must only contain valid characters');
    // RegularExpression values are not paths.
    expect(parseResource(httpRoute({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '.*foo' } }] }] })).status).toBe('accepted');
  });

  it('RequestRedirect and URLRewrite not together; RequestRedirect not with backendRefs', () => {
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }, { type: 'URLRewrite', urlRewrite: {} }] }] },
      'spec.rules[0].filters',
      'may specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both',
    );
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }], backendRefs: [{ name: 'a', port: 80 }] }] },
      'spec.rules[0].filters',
      'RequestRedirect filter must not be used together with backendRefs',
    );
  });

  it('ReplacePrefixMatch needs exactly one PathPrefix match', () => {
    const rewrite = { type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/x' } } };
    rejectsWith({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/a' } }, { path: { type: 'PathPrefix', value: '/b' } }], filters: [rewrite] }] }, 'spec.rules[0].matches', 'exactly one PathPrefix match');
    rejectsWith({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [rewrite] }] }, 'spec.rules[0].matches', 'exactly one PathPrefix match');
    const redirect = { type: 'RequestRedirect', requestRedirect: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/x' } } };
    rejectsWith({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/a.*' } }], filters: [redirect] }] }, 'spec.rules[0].matches', 'RequestRedirect filter with path.replacePrefixMatch');
    // The default match is one PathPrefix match.
    expect(parseResource(httpRoute({ rules: [{ filters: [rewrite] }] })).status).toBe('accepted');
  });

  it('path modifier fields match their type', () => {
    rejectsWith(
      { rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath', replacePrefixMatch: '/x' } } }] }] },
      'spec.rules[0].filters[0].urlRewrite.path.replaceFullPath',
      "replaceFullPath must be specified when type is set to 'ReplaceFullPath'",
    );
  });

  it('filter types that may not repeat', () => {
    const h = { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: 'b' }] } };
    rejectsWith({ rules: [{ filters: [h, h] }] }, 'spec.rules[0].filters', 'RequestHeaderModifier filter cannot be repeated');
    rejectsWith({ rules: [{ backendRefs: [{ name: 'a', port: 80, filters: [h, h] }] }] }, 'spec.rules[0].backendRefs[0].filters', 'RequestHeaderModifier filter cannot be repeated');
    const m = { type: 'RequestMirror', requestMirror: { backendRef: { name: 'm', port: 80 } } };
    expect(parseResource(httpRoute({ rules: [{ filters: [m, m] }] })).status).toBe('accepted');
  });

  it('a filter carries the field of its type and no other', () => {
    rejectsWith({ rules: [{ filters: [{ type: 'RequestHeaderModifier' }] }] }, 'spec.rules[0].filters[0].requestHeaderModifier', 'must be specified for RequestHeaderModifier filter.type');
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: {}, urlRewrite: {} }] }] },
      'spec.rules[0].filters[0].urlRewrite',
      'filter.urlRewrite must be nil if the filter.type is not URLRewrite',
    );
  });

  it('backendRequest may not exceed request', () => {
    rejectsWith({ rules: [{ timeouts: { request: '1s', backendRequest: '2s' } }] }, 'spec.rules[0].timeouts.backendRequest', 'backendRequest timeout cannot be longer than request timeout');
  });

  it('a Service backend needs a port; mirror percent and fraction exclude each other; numerator <= denominator', () => {
    rejectsWith({ rules: [{ backendRefs: [{ name: 'a' }] }] }, 'spec.rules[0].backendRefs[0].port', 'must have port for Service reference');
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'm', port: 80 }, percent: 5, fraction: { numerator: 1 } } }] }] },
      'spec.rules[0].filters[0].requestMirror',
      'only one of percent or fraction may be specified',
    );
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'm', port: 80 }, fraction: { numerator: 5, denominator: 4 } } }] }] },
      'spec.rules[0].filters[0].requestMirror.fraction',
      'numerator must be less than or equal to denominator',
    );
  });

  it('unique names in list maps and sets (the API server refuses duplicates)', () => {
    rejectsWith(
      { rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'a', value: '1' }, { name: 'a', value: '2' }] } }] }] },
      'spec.rules[0].filters[0].requestHeaderModifier.set[1].name',
      'duplicate header name "a"',
    );
    rejectsWith({ rules: [{ matches: [{ queryParams: [{ name: 'q', value: '1' }, { name: 'q', value: '2' }] }] }] }, 'spec.rules[0].matches[0].queryParams[1].name', 'duplicate query parameter name "q"');
    rejectsWith({ rules: [{ retry: { codes: [503, 503] } }] }, 'spec.rules[0].retry.codes[1]', 'duplicate code 503');
    rejectsWith({ rules: [{ name: 'a' }, { name: 'a' }] }, 'spec.rules[1].name', 'Rule name must be unique within the route');
  });

  it('CORS wildcards stand alone', () => {
    rejectsWith({ rules: [{ filters: [{ type: 'CORS', cors: { allowOrigins: ['*', 'https://a.example'] } }] }] }, 'spec.rules[0].filters[0].cors.allowOrigins', "cannot contain '*'");
  });

  it('two references to one parent need distinct sectionName or port', () => {
    rejectsWith({ parentRefs: [echoParent, echoParent] }, 'spec.parentRefs[0]', 'sectionName or port must be specified');
    rejectsWith({ parentRefs: [{ ...echoParent, port: 80 }, { ...echoParent, port: 80 }] }, 'spec.parentRefs[1]', 'sectionName or port must be unique');
    expect(parseResource(httpRoute({ parentRefs: [{ ...echoParent, port: 80 }, { ...echoParent, port: 8080 }] })).status).toBe('accepted');
  });

  it('at most 128 matches over all rules', () => {
    const rule = { matches: Array.from({ length: 64 }, (_, i) => ({ path: { type: 'Exact', value: `/p${i}` } })) };
    rejectsWith({ rules: [rule, rule, { matches: [{}] }] }, 'spec.rules', 'must be less than 128 (got 129)');
    expect(parseResource(httpRoute({ rules: [rule, rule] })).status).toBe('accepted');
  });
});

describe("parseResource: istiod's conversion errors reject the whole route", () => {
  it('an unsupported filter type (ExtensionRef)', () => {
    const lines = rejected(
      parseResource(
        httpRoute({
          parentRefs: [echoParent],
          rules: [{ backendRefs: [{ name: 'ok', port: 80 }] }, { filters: [{ type: 'ExtensionRef', extensionRef: { group: 'x.io', kind: 'F', name: 'f' } }] }],
        }),
      ),
    );
    expect(lines).toEqual(['spec.rules[1].filters[0].type: unsupported filter type "ExtensionRef"']);
  });

  it('header values with characters other than tab, 0x20-0x7E or 0x80+', () => {
    for (const bad of ['a\u0001b', 'a\nb', 'a\u007fb']) {
      rejectsWith(
        { rules: [{ filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { add: [{ name: 'x-h', value: bad }] } }] }] },
        'spec.rules[0].filters[0].responseHeaderModifier.add[0].value',
        'header "x-h" value contains invalid characters',
      );
    }
  });

  it('backend refs: a hostname as Service name, a Hostname backend with a namespace, a filter other than the header modifiers', () => {
    rejectsWith({ rules: [{ backendRefs: [{ name: 'echo.demo.svc.cluster.local', port: 80 }] }] }, 'spec.rules[0].backendRefs[0].name', 'the name of the Service must be used, not the hostname');
    rejectsWith(
      { rules: [{ backendRefs: [{ group: 'networking.istio.io', kind: 'Hostname', name: 'api.example.com', namespace: 'x', port: 443 }] }] },
      'spec.rules[0].backendRefs[0].namespace',
      'namespace may not be set with Hostname type',
    );
    rejectsWith(
      { rules: [{ backendRefs: [{ name: 'a', port: 80, filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'x' } }] }] }] },
      'spec.rules[0].backendRefs[0].filters[0].type',
      'unsupported filter type "URLRewrite" in backendRefs',
    );
  });
});

describe("parseResource: istiod's soft errors leave the route in", () => {
  it('an unsupported backend kind keeps its weight as an Unsupported target, with a problem', () => {
    const r = parseResource(httpRoute({ rules: [{ backendRefs: [{ group: 'inference.networking.k8s.io', kind: 'InferencePool', name: 'pool', weight: 3 }, { name: 'a', port: 80 }] }] }));
    expect(r.status).toBe('accepted');
    if (r.status !== 'accepted') return;
    expect((r.resource as HttpRouteResource).rules[0]!.backendRefs[0]).toEqual({
      group: '',
      kind: 'Unsupported',
      namespace: 'demo',
      name: 'pool',
      port: undefined,
      unsupported: { group: 'inference.networking.k8s.io', kind: 'InferencePool' },
      weight: 3,
      filters: [],
    });
    expect(r.problems.map((p) => p.field)).toEqual(['spec.rules[0].backendRefs[0]']);
  });

  it('Hostname backends and ServiceImport (read as the Service of that name)', () => {
    const r = accepted<HttpRouteResource>(
      parseResource(
        httpRoute({
          rules: [
            {
              backendRefs: [
                { group: 'networking.istio.io', kind: 'Hostname', name: 'api.example.com', port: 443 },
                { group: 'multicluster.x-k8s.io', kind: 'ServiceImport', name: 'echo', port: 80 },
              ],
            },
          ],
        }),
      ),
    );
    expect(r.rules[0]!.backendRefs.map((b) => [b.group, b.kind, b.namespace, b.name, b.port])).toEqual([
      ['networking.istio.io', 'Hostname', 'demo', 'api.example.com', 443],
      ['', 'Service', 'demo', 'echo', 80],
    ]);
  });

  it('an HTTPRoute mirror istiod cannot build is left out (noted); in a GRPCRoute it rejects the route', () => {
    const mirror = { type: 'RequestMirror', requestMirror: { backendRef: { group: 'example.com', kind: 'Thing', name: 'm' } } };
    const r = parseResource(httpRoute({ rules: [{ filters: [mirror], backendRefs: [{ name: 'a', port: 80 }] }] }));
    expect(r.status).toBe('accepted');
    if (r.status !== 'accepted') return;
    expect((r.resource as HttpRouteResource).rules[0]!.filters).toEqual([]);
    expect(r.problems.some((p) => p.field === 'spec.rules[0].filters[0].requestMirror.backendRef' && p.message.includes('mirror is left out'))).toBe(true);

    const g = parseResource({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: meta, spec: { rules: [{ filters: [mirror] }] } });
    expect(rejected(g).some((l) => l.startsWith('spec.rules[0].filters[0].requestMirror.backendRef: '))).toBe(true);
  });
});

describe('parseResource: GRPCRoute and TCPRoute', () => {
  const grpc = (spec: unknown) => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: meta, spec });

  it('GRPCRoute: method type defaults to Exact, header names lower-cased, matches may be empty', () => {
    const r = accepted<GrpcRouteResource>(
      parseResource(
        grpc({
          parentRefs: [echoParent],
          rules: [
            { matches: [{ method: { service: 'grpc.health.v1.Health', method: 'Check' }, headers: [{ name: 'X-Tenant', value: 'a' }] }], backendRefs: [{ name: 'echo', port: 7070 }] },
            { backendRefs: [{ name: 'echo-v2', port: 7070, weight: 2 }] },
          ],
        }),
      ),
    );
    expect(r.rules[0]!.matches).toEqual([{ method: { type: 'Exact', service: 'grpc.health.v1.Health', method: 'Check' }, headers: [{ type: 'Exact', name: 'x-tenant', value: 'a' }] }]);
    expect(r.rules[1]!.matches).toEqual([]);
    expect(r.rules[1]!.backendRefs[0]!.weight).toBe(2);
  });

  it('GRPCRoute CEL: a method match names a service or a method, with valid characters for Exact', () => {
    expect(rejected(parseResource(grpc({ rules: [{ matches: [{ method: { type: 'Exact' } }] }] })))).toContain("spec.rules[0].matches[0].method: One or both of 'service' or 'method' must be specified");
    expect(rejected(parseResource(grpc({ rules: [{ matches: [{ method: { service: 'a/b' } }] }] })))[0]).toMatch(/^spec\.rules\[0\]\.matches\[0\]\.method\.service: service must only contain valid characters/);
    expect(parseResource(grpc({ rules: [{ matches: [{ method: { type: 'RegularExpression', service: 'a.*' } }] }] })).status).toBe('accepted');
  });

  it('GRPCRoute filters istiod does not convert reject the route', () => {
    expect(rejected(parseResource(grpc({ rules: [{ filters: [{ type: 'ExtensionRef', extensionRef: { group: 'x', kind: 'y', name: 'z' } }] }] })))).toEqual([
      'spec.rules[0].filters[0].type: unsupported filter type "ExtensionRef"',
    ]);
  });

  it('TCPRoute v1alpha2', () => {
    const r = accepted<TcpRouteResource>(
      parseResource({
        apiVersion: 'gateway.networking.k8s.io/v1alpha2',
        kind: 'TCPRoute',
        metadata: meta,
        spec: { parentRefs: [{ ...echoParent, port: 9090 }], rules: [{ backendRefs: [{ name: 'echo-v1', port: 9090, weight: 9 }, { name: 'echo-v2', port: 9090 }] }] },
      }),
    );
    expect(r.parentRefs[0]!.port).toBe(9090);
    expect(r.rules[0]!.backendRefs.map((b) => [b.name, b.weight, b.filters])).toEqual([
      ['echo-v1', 9, []],
      ['echo-v2', 1, []],
    ]);
    expect(rejected(parseResource({ apiVersion: 'gateway.networking.k8s.io/v1alpha2', kind: 'TCPRoute', metadata: meta, spec: { rules: [] } }))[0]).toMatch(/^spec\.rules: must have at least 1 items/);
  });
});

describe('parseResource: Service', () => {
  const svc = (spec: unknown) => ({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo', namespace: 'demo', labels: { app: 'echo' } }, spec });

  it('reads ports (protocol TCP by default, numeric targetPort strings as numbers) and cluster IPs', () => {
    const r = accepted<ServiceResource>(
      parseResource(
        svc({
          clusterIP: '10.96.0.10',
          clusterIPs: ['10.96.0.10', 'fd00::10'],
          ports: [
            { name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' },
            { name: 'grpc', port: 7070, targetPort: 'grpc-port', protocol: 'TCP' },
            { name: 'dns', port: 53, protocol: 'UDP' },
          ],
        }),
      ),
    );
    expect(r.meta.labels).toEqual({ app: 'echo' });
    expect(r.clusterIps).toEqual(['10.96.0.10', 'fd00::10']);
    expect(r.ports).toEqual([
      { name: 'http', port: 80, targetPort: 8080, protocol: 'TCP', appProtocol: 'http' },
      { name: 'grpc', port: 7070, targetPort: 'grpc-port', protocol: 'TCP', appProtocol: undefined },
      { name: 'dns', port: 53, targetPort: undefined, protocol: 'UDP', appProtocol: undefined },
    ]);
  });

  it('a headless Service has no cluster IPs', () => {
    expect(accepted<ServiceResource>(parseResource(svc({ clusterIP: 'None', ports: [{ port: 80 }] }))).clusterIps).toEqual([]);
  });

  it('rejects what the API server refuses', () => {
    expect(rejected(parseResource(svc({ ports: [{ port: 0 }] })))).toEqual(['spec.ports[0].port: must be between 1 and 65535, got 0']);
    expect(rejected(parseResource(svc({ ports: [{ port: 80 }, { port: 80 }] })))).toEqual(['spec.ports[1]: duplicate port 80/TCP']);
    expect(rejected(parseResource(svc({ ports: [{ port: 80, targetPort: 'Not_A_Name' }] })))[0]).toMatch(/^spec\.ports\[0\]\.targetPort: must be a port number or an IANA service name/);
    expect(rejected(parseResource(svc({ clusterIP: '10.0.0.300' })))).toEqual(['spec.clusterIP: must be an IP address or "None", got "10.0.0.300"']);
    expect(rejected(parseResource(svc({ ports: [{ port: '80' }] })))).toEqual(['spec.ports[0].port: must be an integer, got the string "80"']);
  });
});

describe('parseResource never throws', () => {
  const kinds = fc.constantFrom(
    ['gateway.networking.k8s.io/v1', 'HTTPRoute'],
    ['gateway.networking.k8s.io/v1beta1', 'HTTPRoute'],
    ['gateway.networking.k8s.io/v1', 'GRPCRoute'],
    ['gateway.networking.k8s.io/v1alpha2', 'TCPRoute'],
    ['v1', 'Service'],
  );

  it('on arbitrary values', () => {
    fc.assert(
      fc.property(fc.anything(), (v) => {
        const r = parseResource(v);
        expect(['accepted', 'rejected', 'ignored']).toContain(r.status);
      }),
      { numRuns: 500 },
    );
  });

  it('on objects of our kinds with arbitrary JSON in the spec and metadata', () => {
    fc.assert(
      fc.property(kinds, fc.jsonValue(), fc.jsonValue(), ([apiVersion, kind], spec, metadata) => {
        parseResource({ apiVersion, kind, metadata, spec });
      }),
      { numRuns: 500 },
    );
  });

  it('on route-shaped specs with arbitrary leaves (reaches the CEL and conversion steps)', () => {
    const leaf = fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.constantFrom('/', '/a', 'Exact', 'PathPrefix', 'RegularExpression', 'Service', '', 'ExtensionRef', 'RequestRedirect', 'URLRewrite', 'RequestMirror', 80, 0, 302));
    const filter = fc.record(
      {
        type: fc.constantFrom('RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror', 'CORS', 'ExtensionRef'),
        requestHeaderModifier: fc.record({ set: fc.array(fc.record({ name: fc.constantFrom('a', 'b', 'A'), value: fc.string() })), remove: fc.array(fc.constantFrom('x', 'y')) }, { requiredKeys: [] }),
        requestRedirect: fc.record({ statusCode: fc.constantFrom(301, 302), path: fc.record({ type: fc.constantFrom('ReplaceFullPath', 'ReplacePrefixMatch'), replacePrefixMatch: fc.constantFrom('/', '/x') }, { requiredKeys: [] }) }, { requiredKeys: [] }),
        urlRewrite: fc.record({ path: fc.record({ type: fc.constantFrom('ReplaceFullPath', 'ReplacePrefixMatch'), replaceFullPath: fc.constantFrom('/', '/y') }, { requiredKeys: [] }) }, { requiredKeys: [] }),
        requestMirror: fc.record({ backendRef: fc.record({ name: fc.constantFrom('m', 'm.x'), port: fc.constantFrom(80, 1), kind: fc.constantFrom('Service', 'Other') }, { requiredKeys: ['name'] }), percent: fc.integer({ min: 0, max: 100 }), fraction: fc.record({ numerator: fc.nat(10), denominator: fc.integer({ min: 1, max: 10 }) }) }, { requiredKeys: ['backendRef'] }),
        cors: fc.record({ allowOrigins: fc.array(fc.constantFrom('*', 'https://a.example')) }, { requiredKeys: [] }),
      },
      { requiredKeys: ['type'] },
    );
    const backend = fc.record({ name: fc.constantFrom('a', 'b.c'), port: fc.constantFrom(80, 8080), weight: fc.nat(5), group: fc.constantFrom('', 'networking.istio.io', 'x'), kind: fc.constantFrom('Service', 'Hostname', 'Y'), namespace: fc.constantFrom('n'), filters: fc.array(filter, { maxLength: 2 }) }, { requiredKeys: ['name'] });
    const match = fc.record({ path: fc.record({ type: fc.constantFrom('Exact', 'PathPrefix', 'RegularExpression'), value: fc.oneof(fc.string(), fc.constantFrom('/', '/a', '/a/')) }, { requiredKeys: [] }), headers: fc.array(fc.record({ name: fc.constantFrom('a', 'b'), value: fc.string() }), { maxLength: 2 }) }, { requiredKeys: [] });
    const rule = fc.record({ name: fc.constantFrom('r1', 'r2'), matches: fc.array(match, { maxLength: 3 }), filters: fc.array(filter, { maxLength: 3 }), backendRefs: fc.array(backend, { maxLength: 3 }), timeouts: fc.record({ request: fc.constantFrom('1s', '0s', '10ms'), backendRequest: fc.constantFrom('2s', '5ms') }, { requiredKeys: [] }), retry: fc.record({ codes: fc.array(fc.constantFrom(500, 503, 200), { maxLength: 3 }), attempts: fc.nat(3), backoff: fc.constantFrom('100ms', 'x') }, { requiredKeys: [] }), extra: leaf }, { requiredKeys: [] });
    const spec = fc.record({ parentRefs: fc.array(fc.record({ group: fc.constantFrom('', 'gateway.networking.k8s.io'), kind: fc.constantFrom('Service', 'Gateway'), name: fc.constantFrom('echo', 'w'), port: fc.constantFrom(80, 8080) }, { requiredKeys: ['name'] }), { maxLength: 3 }), rules: fc.array(rule, { maxLength: 4 }) }, { requiredKeys: [] });
    let accepted = 0;
    fc.assert(
      fc.property(kinds, spec, ([apiVersion, kind], s) => {
        const r = parseResource({ apiVersion, kind, metadata: meta, spec: s });
        if (r.status === 'accepted') accepted++;
        if (r.status === 'rejected') for (const p of r.problems) expect(p.message.length).toBeGreaterThan(0);
      }),
      { numRuns: 400 },
    );
    expect(accepted).toBeGreaterThan(0);
  });
});
