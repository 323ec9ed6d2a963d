/**
 * FakeApiServer answers like the API server for what it implements and
 * refuses everything else (recorded, 501). Plain HTTP requests, no client library.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FakeApiServer } from './fake-apiserver.js';

let fake: FakeApiServer;

beforeEach(async () => {
  fake = await FakeApiServer.start({ historyLimit: 3 });
});

afterEach(async () => {
  await fake.close();
});

const route = (name: string, extra: Record<string, unknown> = {}) => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: 'demo' },
  spec: { rules: [] },
  ...extra,
});
const base = '/apis/gateway.networking.k8s.io/v1';

async function json(path: string, init: RequestInit = {}): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${fake.url}${path}`, init);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Opens a watch and collects its events until `n` arrived (or the stream ends). */
async function watchEvents(path: string, n: number, whileOpen: () => void = () => undefined): Promise<{ status: number; events: Record<string, unknown>[] }> {
  const ctl = new AbortController();
  const res = await fetch(`${fake.url}${path}`, { signal: ctl.signal });
  const events: Record<string, unknown>[] = [];
  if (res.body === null) return { status: res.status, events };
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let opened = false;
  try {
    while (events.length < n) {
      if (!opened) {
        opened = true;
        whileOpen();
      }
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        events.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        buf = buf.slice(i + 1);
      }
    }
  } finally {
    ctl.abort();
  }
  return { status: res.status, events };
}

describe('FakeApiServer', () => {
  it('lists with the collection resourceVersion; core list items carry no apiVersion/kind', async () => {
    fake.apply(route('a'));
    fake.apply({ apiVersion: 'v1', kind: 'Service', metadata: { name: 's', namespace: 'demo' }, spec: {} });
    const l = await json(`${base}/httproutes`);
    expect(l.status).toBe(200);
    expect(l.body['kind']).toBe('HTTPRouteList');
    expect((l.body['metadata'] as Record<string, unknown>)['resourceVersion']).toBe(fake.resourceVersion);
    expect((l.body['items'] as Record<string, unknown>[])[0]!['kind']).toBe('HTTPRoute');
    const core = await json('/api/v1/namespaces/demo/services');
    const item = (core.body['items'] as Record<string, unknown>[])[0]!;
    expect(item['kind']).toBeUndefined();
    expect((item['metadata'] as Record<string, unknown>)['name']).toBe('s');
  });

  it('watches replay history after a resourceVersion, then stream live events', async () => {
    const a = fake.apply(route('a'));
    const rv = String(a.metadata['resourceVersion']);
    fake.apply(route('b'));
    const w = await watchEvents(`${base}/httproutes?watch=true&resourceVersion=${rv}`, 3, () => {
      fake.apply(route('b', { spec: { rules: [{}] } }));
      fake.delete('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a');
    });
    expect(w.status).toBe(200);
    expect(w.events.map((e) => [e['type'], ((e['object'] as Record<string, unknown>)['metadata'] as Record<string, unknown>)['name']])).toEqual([
      ['ADDED', 'b'],
      ['MODIFIED', 'b'],
      ['DELETED', 'a'],
    ]);
  });

  it('a resourceVersion older than the history is 410 Gone, as an ERROR event or as HTTP 410', async () => {
    const first = fake.apply(route('a'));
    for (let i = 0; i < 5; i++) fake.apply(route(`x${i}`));
    const w = await watchEvents(`${base}/httproutes?watch=true&resourceVersion=${String(first.metadata['resourceVersion'])}`, 1);
    expect(w.events[0]).toMatchObject({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } });
    fake.goneAs = 'status';
    const r = await json(`${base}/httproutes?watch=true&resourceVersion=1`);
    expect(r.status).toBe(410);
  });

  it('sends bookmarks only to watches that asked for them', async () => {
    const w = await watchEvents(`${base}/httproutes?watch=true&resourceVersion=${fake.resourceVersion}&allowWatchBookmarks=true`, 1, () => {
      void fake.waitForWatches(1).then(() => fake.bookmark());
    });
    expect(w.events[0]).toEqual({ type: 'BOOKMARK', object: { kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', metadata: { resourceVersion: fake.resourceVersion } } });
  });

  it('status PUT: optimistic concurrency (409), only status changes, 404 for unknown objects', async () => {
    const a = fake.apply(route('a'));
    const put = (body: unknown) => json(`${base}/namespaces/demo/httproutes/a/status`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const stale = await put({ ...a, metadata: { ...a.metadata, resourceVersion: '1' }, status: { parents: [] } });
    expect(stale.status).toBe(409);
    expect(stale.body['reason']).toBe('Conflict');
    const ok = await put({ ...a, spec: { changed: true }, status: { parents: [{ controllerName: 'x' }] } });
    expect(ok.status).toBe(200);
    const stored = fake.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a')!;
    expect(stored['spec']).toEqual({ rules: [] });
    expect(stored['status']).toEqual({ parents: [{ controllerName: 'x' }] });
    expect(Number(stored.metadata['resourceVersion'])).toBeGreaterThan(Number(a.metadata['resourceVersion']));
    expect((await json(`${base}/namespaces/demo/httproutes/nope/status`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{"metadata":{"name":"nope"}}' })).status).toBe(404);
  });

  it('status PATCH: merge patch and JSON patch (a failed test is 422); other patch types 415', async () => {
    fake.apply(route('a', { status: { parents: [{ controllerName: 'x' }] } }));
    const patch = (ct: string, body: unknown) => json(`${base}/namespaces/demo/httproutes/a/status`, { method: 'PATCH', headers: { 'content-type': ct }, body: JSON.stringify(body) });
    expect((await patch('application/merge-patch+json', { status: { parents: [{ controllerName: 'y' }] } })).status).toBe(200);
    expect(fake.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a')!['status']).toEqual({ parents: [{ controllerName: 'y' }] });
    expect((await patch('application/json-patch+json', [{ op: 'add', path: '/status/parents/-', value: { controllerName: 'z' } }])).status).toBe(200);
    expect(fake.get('gateway.networking.k8s.io/v1', 'HTTPRoute', 'demo', 'a')!['status']).toEqual({ parents: [{ controllerName: 'y' }, { controllerName: 'z' }] });
    expect((await patch('application/json-patch+json', [{ op: 'test', path: '/status/parents/0/controllerName', value: 'nope' }])).status).toBe(422);
    expect((await patch('application/strategic-merge-patch+json', {})).status).toBe(415);
    expect(fake.statusWrites.map((w) => w.outcome)).toEqual([200, 200, 422, 415]);
  });

  it('anything it does not implement is answered 501 and recorded', async () => {
    const r1 = await json(`${base}/httproutes?labelSelector=app%3Dx`);
    const r2 = await json(`${base}/namespaces/demo/httproutes`, { method: 'POST', body: '{}' });
    const r3 = await json('/version');
    expect([r1.status, r2.status, r3.status]).toEqual([501, 501, 501]);
    expect(fake.unexpected.map((u) => `${u.method} ${u.url}`)).toEqual([`GET ${base}/httproutes?labelSelector=app%3Dx`, `POST ${base}/namespaces/demo/httproutes`, 'GET /version']);
    fake.unexpected.length = 0; // these were on purpose
  });

  it('a resource type it does not serve is 404, like a CRD that is not installed', async () => {
    const r = await json('/apis/gateway.networking.k8s.io/v1/tlsroutes');
    expect(r.status).toBe(404);
    expect(fake.unexpected).toEqual([]);
  });
});
