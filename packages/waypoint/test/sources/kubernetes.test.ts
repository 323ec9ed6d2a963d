/**
 * The Kubernetes config source against FakeApiServer (a strict in-process
 * FAKE of the API server over HTTP on loopback): the initial list and synced,
 * changes through the watch, a dropped watch resumed, 410 Gone relisted,
 * bookmarks, invalid routes reported and left out, a kind whose CRD is missing,
 * and route status written without clobbering other controllers, with 409
 * conflicts retried. Every test ends with no request the fake did not expect.
 */
import { systemClock } from '@ambient/control';
import { KubeConfig } from '@kubernetes/client-node';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ISTIO_CONTROLLER_NAME, loadKubeConfig, mergeRouteParents, startKubernetesSource, type KubernetesSource, type KubernetesSourceOptions } from '../../src/sources/kubernetes.js';
import type { SourceLogger } from '../../src/sources/snapshot.js';
import type { RouteParentStatus } from '../../src/sources/source.js';
import type { ConfigResources, HttpRouteResource } from '../../src/resources/types.js';
import { FakeApiServer, GATEWAY_API_TYPES } from '../support/fake-apiserver.js';

interface Line {
  readonly level: string;
  readonly msg: string;
  readonly obj: Record<string, unknown>;
}

function recordingLogger(): SourceLogger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: string) => (obj: object, msg: string) => lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

function kubeConfigFor(fake: FakeApiServer): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'fake', server: fake.url, skipTLSVerify: true }],
    users: [{ name: 'waypoint', token: 'test-token' }],
    contexts: [{ name: 'fake', cluster: 'fake', user: 'waypoint' }],
    currentContext: 'fake',
  });
  return kc;
}

const WAIT = { timeout: 5000, interval: 10 };

function httpRoute(name: string, path = '/', ns = 'demo'): Record<string, unknown> {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: ns },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'echo' }],
      rules: [{ matches: [{ path: { type: 'PathPrefix', value: path } }], backendRefs: [{ name: 'echo-v1', port: 8080 }] }],
    },
  };
}

const service = (name: string, ns = 'demo') => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns }, spec: { clusterIP: '10.96.0.10', ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });

let fake: FakeApiServer | undefined;
const sources: KubernetesSource[] = [];
let logger: ReturnType<typeof recordingLogger>;

async function setup(fakeOptions: Parameters<typeof FakeApiServer.start>[0] = {}): Promise<FakeApiServer> {
  fake = await FakeApiServer.start(fakeOptions);
  logger = recordingLogger();
  return fake;
}

function start(f: FakeApiServer, options: Partial<KubernetesSourceOptions> = {}): KubernetesSource {
  const s = startKubernetesSource({ kubeConfig: kubeConfigFor(f), clock: systemClock, logger, retryInitialMs: 20, retryMaxMs: 100, missingKindRetryMs: 100, ...options });
  sources.push(s);
  return s;
}

afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.close()));
  const f = fake;
  fake = undefined;
  if (f !== undefined) {
    await f.close();
    expect(f.unexpected).toEqual([]);
  }
});

const routeNames = (r: ConfigResources) => r.routes.map((x) => `${x.meta.kind} ${x.meta.namespace}/${x.meta.name}`);

async function until(s: KubernetesSource, pred: (r: ConfigResources) => boolean): Promise<ConfigResources> {
  await vi.waitFor(() => {
    if (!pred(s.current())) throw new Error(`not yet: ${JSON.stringify(routeNames(s.current()))}`);
  }, WAIT);
  return s.current();
}

const lists = (f: FakeApiServer, plural: string) => f.requests.filter((r) => r.method === 'GET' && r.url.split('?')[0]!.endsWith(`/${plural}`) && !r.url.includes('watch=true')).length;
const watches = (f: FakeApiServer, plural: string) => f.requests.filter((r) => r.url.split('?')[0]!.endsWith(`/${plural}`) && r.url.includes('watch=true'));

describe('KubernetesSource: list and watch', () => {
  it('the initial list of every kind resolves synced; watches start from the list with bookmarks', async () => {
    const f = await setup();
    f.apply(httpRoute('a'));
    f.apply({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'GRPCRoute', metadata: { name: 'g', namespace: 'demo' }, spec: { rules: [{ backendRefs: [{ name: 'echo', port: 7070 }] }] } });
    f.apply({ apiVersion: 'gateway.networking.k8s.io/v1alpha2', kind: 'TCPRoute', metadata: { name: 't', namespace: 'demo' }, spec: { rules: [{ backendRefs: [{ name: 'echo', port: 9090 }] }] } });
    f.apply(service('echo'));
    const s = start(f);
    await s.synced;
    await until(s, (r) => r.routes.length === 3 && r.services.length === 1);
    expect(routeNames(s.current())).toEqual(['GRPCRoute demo/g', 'HTTPRoute demo/a', 'TCPRoute demo/t']);
    const svc = s.current().services[0]!;
    expect(svc.meta.name).toBe('echo');
    expect(svc.ports[0]).toMatchObject({ port: 80, targetPort: 8080, protocol: 'TCP' });
    expect(svc.meta.creationTimestampMs).toBe(Date.parse('2024-01-01T00:00:04Z'));
    await f.waitForWatches(4);
    const w = new URL(watches(f, 'httproutes')[0]!.url, 'http://x').searchParams;
    expect(w.get('allowWatchBookmarks')).toBe('true');
    expect(w.get('timeoutSeconds')).toBe('300');
    expect(Number(w.get('resourceVersion'))).toBeGreaterThan(0);
  });

  it('adds, modifies and deletes through the watch', async () => {
    const f = await setup();
    const s = start(f);
    await s.synced;
    await f.waitForWatches(4);
    f.apply(httpRoute('a', '/one'));
    await until(s, (r) => routeNames(r).join() === 'HTTPRoute demo/a');
    f.apply(httpRoute('a', '/two'));
    await until(s, (r) => (r.routes[0] as HttpRouteResource | undefined)?.rules[0]?.matches[0]?.path.value === '/two');
    expect(s.current().routes[0]!.meta.generation).toBe(2);
    f.delete('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a');
    await until(s, (r) => r.routes.length === 0);
    expect(lists(f, 'httproutes')).toBe(1);
  });

  it('an invalid route is reported, logged once and left out; valid ones stay', async () => {
    const f = await setup();
    f.apply(httpRoute('good'));
    f.apply(httpRoute('bad', 'no-slash'));
    const s = start(f);
    await s.synced;
    const r = await until(s, (x) => x.problems.length === 1);
    expect(routeNames(r)).toEqual(['HTTPRoute demo/good']);
    expect(r.problems[0]).toMatchObject({ resource: { kind: 'HTTPRoute', namespace: 'demo', name: 'bad' }, field: 'spec.rules[0].matches[0].path.value' });
    const warned = logger.lines.filter((l) => l.msg === 'invalid resource left out');
    expect(warned).toHaveLength(1);
    expect(warned[0]!.obj).toMatchObject({ resource: 'HTTPRoute demo/bad', field: 'spec.rules[0].matches[0].path.value' });
    // Fixed, it comes in.
    f.apply(httpRoute('bad', '/fixed'));
    await until(s, (x) => x.routes.length === 2 && x.problems.length === 0);
  });

  it('a dropped watch is resumed from the last resourceVersion: no relist, nothing missed', async () => {
    const f = await setup();
    f.apply(httpRoute('a'));
    const s = start(f);
    await s.synced;
    await f.waitForWatches(4);
    f.dropWatches();
    f.apply(httpRoute('b'));
    f.delete('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a');
    await until(s, (r) => routeNames(r).join() === 'HTTPRoute demo/b');
    expect(lists(f, 'httproutes')).toBe(1);
    expect(watches(f, 'httproutes').length).toBeGreaterThanOrEqual(2);
  });

  for (const goneAs of ['event', 'status'] as const) {
    it(`410 Gone (${goneAs === 'event' ? 'an ERROR event' : 'HTTP 410'}) relists and converges, deletions included`, async () => {
      const f = await setup({ goneAs });
      f.apply(httpRoute('a'));
      f.apply(httpRoute('b'));
      const s = start(f);
      await s.synced;
      await until(s, (r) => r.routes.length === 2);
      await f.waitForWatches(4);
      // While no watch is open, b is deleted, c created, and the history that would replay it is compacted away.
      const listsBefore = lists(f, 'httproutes');
      f.dropWatches();
      f.delete('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'b');
      f.apply(httpRoute('c'));
      f.compact();
      f.apply(service('unrelated'));
      await until(s, (r) => routeNames(r).join() === 'HTTPRoute demo/a,HTTPRoute demo/c');
      expect(lists(f, 'httproutes')).toBe(listsBefore + 1);
    });
  }

  it('a bookmark moves the resume point, so a compaction after it needs no relist', async () => {
    const f = await setup();
    f.apply(httpRoute('a'));
    const s = start(f);
    await s.synced;
    await f.waitForWatches(4);
    // Other kinds' writes move the store's resourceVersion; the HTTPRoute watch sees none of them...
    for (let i = 0; i < 5; i++) f.apply(service(`s${i}`));
    await until(s, (r) => r.services.length === 5);
    // ...until a bookmark tells it where the store is.
    expect(f.bookmark()).toBe(4);
    await vi.waitFor(() => {
      // the bookmark is read asynchronously; poll through a harmless round trip
      if (f.openWatches < 4) throw new Error('watches not open');
    }, WAIT);
    await systemClock.sleep(50);
    f.dropWatches();
    f.compact();
    await f.waitForWatches(4);
    f.apply(httpRoute('b'));
    await until(s, (r) => r.routes.length === 2);
    expect(lists(f, 'httproutes')).toBe(1);
  });

  it('resync relists periodically without reparsing unchanged objects or duplicating watches', async () => {
    const f = await setup();
    f.apply(httpRoute('a'));
    f.apply(httpRoute('bad', 'x'));
    const s = start(f, { resyncMs: 60 });
    await s.synced;
    await vi.waitFor(() => {
      if (lists(f, 'httproutes') < 3) throw new Error('not resynced yet');
    }, WAIT);
    expect(routeNames(s.current())).toEqual(['HTTPRoute demo/a']);
    expect(logger.lines.filter((l) => l.msg === 'invalid resource left out')).toHaveLength(1);
    // One open watch per kind, not one per resync.
    await systemClock.sleep(20);
    expect(f.openWatches).toBeLessThanOrEqual(4);
  });

  it('a kind whose CRD is not installed counts as empty and synced, and is picked up when it appears', async () => {
    const f = await setup({ types: GATEWAY_API_TYPES.filter((t) => t.plural !== 'tcproutes') });
    f.apply(httpRoute('a'));
    const s = start(f);
    await s.synced;
    expect(routeNames(s.current())).toEqual(['HTTPRoute demo/a']);
    expect(logger.lines.some((l) => l.level === 'warn' && String(l.obj['path']).endsWith('/tcproutes') && l.msg.includes('not served'))).toBe(true);
  });

  it('restricted to namespaces, it lists and watches only those', async () => {
    const f = await setup();
    f.apply(httpRoute('a', '/', 'demo'));
    f.apply(httpRoute('b', '/', 'other'));
    f.apply(httpRoute('c', '/', 'third'));
    const s = start(f, { namespaces: ['demo', 'other'] });
    await s.synced;
    await until(s, (r) => r.routes.length === 2);
    expect(routeNames(s.current())).toEqual(['HTTPRoute demo/a', 'HTTPRoute other/b']);
    expect(f.requests.every((r) => r.url.includes('/namespaces/demo/') || r.url.includes('/namespaces/other/'))).toBe(true);
  });

  it('an API server that is down at first is retried until it answers', async () => {
    const f = await setup();
    const url = f.url;
    await f.close();
    const kc = new KubeConfig();
    kc.loadFromOptions({ clusters: [{ name: 'x', server: url, skipTLSVerify: true }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'x', user: 'u' }], currentContext: 'x' });
    const s = startKubernetesSource({ kubeConfig: kc, clock: systemClock, logger, retryInitialMs: 20, retryMaxMs: 50 });
    sources.push(s);
    await vi.waitFor(() => {
      if (logger.lines.filter((l) => l.msg === 'informer failed; restarting').length < 8) throw new Error('not retried yet');
    }, WAIT);
    let synced = false;
    void s.synced.then(() => (synced = true));
    await systemClock.sleep(20);
    expect(synced).toBe(false);
    fake = undefined; // already closed, nothing unexpected recorded
  });

  it('sends the kubeconfig credentials', async () => {
    const f = await setup();
    const s = start(f);
    await s.synced;
    expect(f.requests.length).toBeGreaterThan(0);
    expect(f.requests.every((r) => r.authorization === 'Bearer test-token')).toBe(true);
  });
});

describe('KubernetesSource: route status', () => {
  const ours = (conditions: RouteParentStatus['conditions']): RouteParentStatus[] => [
    { parentRef: { group: '', kind: 'Service', namespace: 'demo', name: 'echo' }, controllerName: ISTIO_CONTROLLER_NAME, conditions },
  ];
  const accepted = [
    { type: 'Accepted' as const, status: 'True' as const, reason: 'Accepted', message: 'Route was valid' },
    { type: 'ResolvedRefs' as const, status: 'True' as const, reason: 'ResolvedRefs', message: 'All references resolved' },
  ];
  const other = { parentRef: { group: 'gateway.networking.k8s.io', kind: 'Gateway', name: 'ingress' }, controllerName: 'example.com/ingress', conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'ok', lastTransitionTime: '2024-01-01T00:00:00Z' }] };

  it('writes our parent entry and keeps another controller’s', async () => {
    const f = await setup();
    f.apply({ ...httpRoute('r'), status: { parents: [other] } });
    const s = start(f);
    await s.synced;
    s.reportRouteStatus({ kind: 'HTTPRoute', namespace: 'demo', name: 'r' }, ours(accepted));
    await vi.waitFor(() => {
      if (f.statusWrites.length === 0) throw new Error('no write yet');
    }, WAIT);
    const stored = f.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'r')!;
    const parents = (stored['status'] as { parents: Record<string, unknown>[] }).parents;
    expect(parents[0]).toEqual(other);
    expect(parents[1]).toMatchObject({ parentRef: { group: '', kind: 'Service', namespace: 'demo', name: 'echo' }, controllerName: ISTIO_CONTROLLER_NAME });
    const conds = parents[1]!['conditions'] as Record<string, unknown>[];
    expect(conds.map((c) => [c['type'], c['status'], c['reason'], c['observedGeneration']])).toEqual([
      ['Accepted', 'True', 'Accepted', 1],
      ['ResolvedRefs', 'True', 'ResolvedRefs', 1],
    ]);
    expect(typeof conds[0]!['lastTransitionTime']).toBe('string');
    expect(f.statusWrites).toEqual([{ method: 'PUT', path: '/apis/gateway.networking.k8s.io/v1/namespaces/demo/httproutes/r/status', contentType: 'application/json', outcome: 200 }]);
    // The same report again writes nothing.
    s.reportRouteStatus({ kind: 'HTTPRoute', namespace: 'demo', name: 'r' }, ours(accepted));
    await systemClock.sleep(50);
    expect(f.statusWrites).toHaveLength(1);
    // The spec was not touched by the status write.
    expect(stored['spec']).toEqual(httpRoute('r')['spec']);
  });

  it('a 409 conflict re-reads and merges again, keeping what the other writer added', async () => {
    const f = await setup();
    f.apply(httpRoute('r'));
    const s = start(f);
    await s.synced;
    f.beforeNextStatusWrite(() => {
      // Another controller writes its entry between our read and our write.
      f.apply({ ...httpRoute('r'), status: { parents: [other] } });
    });
    s.reportRouteStatus({ kind: 'HTTPRoute', namespace: 'demo', name: 'r' }, ours(accepted));
    await vi.waitFor(() => {
      if (!f.statusWrites.some((w) => w.outcome === 200)) throw new Error('no successful write yet');
    }, WAIT);
    expect(f.statusWrites.map((w) => w.outcome)).toEqual([409, 200]);
    const parents = (f.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'r')!['status'] as { parents: Record<string, unknown>[] }).parents;
    expect(parents.map((p) => p['controllerName'])).toEqual(['example.com/ingress', ISTIO_CONTROLLER_NAME]);
  });

  it('a status change keeps lastTransitionTime of conditions whose status did not change', async () => {
    const f = await setup();
    f.apply(httpRoute('r'));
    const s = start(f);
    await s.synced;
    const id = { kind: 'HTTPRoute' as const, namespace: 'demo', name: 'r' };
    s.reportRouteStatus(id, ours(accepted));
    await vi.waitFor(() => {
      if (f.statusWrites.length < 1) throw new Error('no write');
    }, WAIT);
    const first = ((f.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'r')!['status'] as { parents: Record<string, unknown>[] }).parents[0]!['conditions'] as Record<string, unknown>[])[0]!['lastTransitionTime'];
    await systemClock.sleep(1100); // the next second, so a new transition time would differ
    s.reportRouteStatus(id, ours([accepted[0]!, { type: 'ResolvedRefs', status: 'False', reason: 'BackendNotFound', message: 'backend(x) not found' }]));
    await vi.waitFor(() => {
      if (f.statusWrites.length < 2) throw new Error('no second write');
    }, WAIT);
    const conds = (f.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'r')!['status'] as { parents: Record<string, unknown>[] }).parents[0]!['conditions'] as Record<string, unknown>[];
    expect(conds[0]!['lastTransitionTime']).toBe(first);
    expect(conds[1]!['lastTransitionTime']).not.toBe(first);
  });

  it('a route that is gone is not written and not retried', async () => {
    const f = await setup();
    const s = start(f);
    await s.synced;
    s.reportRouteStatus({ kind: 'HTTPRoute', namespace: 'demo', name: 'missing' }, ours(accepted));
    await vi.waitFor(() => {
      if (!f.requests.some((r) => r.url.endsWith('/httproutes/missing'))) throw new Error('not read yet');
    }, WAIT);
    await systemClock.sleep(100);
    expect(f.statusWrites).toEqual([]);
    expect(f.requests.filter((r) => r.url.endsWith('/httproutes/missing'))).toHaveLength(1);
  });
});

describe('mergeRouteParents', () => {
  const mine = (name: string): RouteParentStatus => ({
    parentRef: { group: '', kind: 'Service', namespace: 'demo', name },
    controllerName: ISTIO_CONTROLLER_NAME,
    conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Route was valid' }],
  });

  it('replaces ours in place, appends new ones, removes ours no longer reported, keeps others', () => {
    const current = [
      { parentRef: { group: '', kind: 'Service', name: 'old' }, controllerName: ISTIO_CONTROLLER_NAME, conditions: [] },
      { parentRef: { name: 'gw' }, controllerName: 'other/controller', conditions: [] },
      { parentRef: { group: '', kind: 'Service', name: 'keep' }, controllerName: ISTIO_CONTROLLER_NAME, conditions: [] },
    ];
    const merged = mergeRouteParents(current, [mine('new'), mine('keep')], 'demo', 4, '2025-01-01T00:00:00Z');
    expect(merged.map((p) => [(p['parentRef'] as { name: string }).name, p['controllerName']])).toEqual([
      ['gw', 'other/controller'],
      ['keep', ISTIO_CONTROLLER_NAME],
      ['new', ISTIO_CONTROLLER_NAME],
    ]);
    expect((merged[1]!['conditions'] as Record<string, unknown>[])[0]).toEqual({
      type: 'Accepted',
      status: 'True',
      reason: 'Accepted',
      message: 'Route was valid',
      lastTransitionTime: '2025-01-01T00:00:00Z',
      observedGeneration: 4,
    });
  });
});

describe('loadKubeConfig', () => {
  it('takes the kubeconfig named by KUBECONFIG, as client-node does', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'waypoint-kubeconfig-'));
    try {
      const file = join(dir, 'config');
      await writeFile(
        file,
        ['apiVersion: v1', 'kind: Config', 'clusters:', '- name: c', '  cluster:', '    server: https://10.0.0.1:6443', 'users:', '- name: u', '  user:', '    token: t', 'contexts:', '- name: x', '  context:', '    cluster: c', '    user: u', 'current-context: x', ''].join('\n'),
      );
      vi.stubEnv('KUBECONFIG', file);
      const kc = loadKubeConfig();
      expect(kc.getCurrentCluster()?.server).toBe('https://10.0.0.1:6443');
      expect(kc.getCurrentUser()?.token).toBe('t');
    } finally {
      vi.unstubAllEnvs();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
