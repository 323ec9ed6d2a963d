import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { allowPolicy, service, workload } from '../testing/builders.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../xds/type-urls.js';
import { MeshState } from './mesh-state.js';
import { TypeSubscription, type ResponsePlan, type SubscriptionRequest } from './subscription.js';

const req = (r: Partial<SubscriptionRequest>): SubscriptionRequest => ({
  resourceNamesSubscribe: [],
  resourceNamesUnsubscribe: [],
  initialResourceVersions: {},
  ...r,
});
const names = (p: ResponsePlan) => p.resources.map((r) => r.name);

function stateWith(...uids: string[]): MeshState {
  const state = new MeshState();
  uids.forEach((name, i) => state.setWorkload(workload({ name, ips: [`10.0.0.${i + 1}`] })));
  return state;
}
const uid = (name: string) => `Kubernetes//Pod/default/${name}`;

describe('wildcard detection (istiod deltaWatchedResources)', () => {
  it.each([
    ['empty subscribe list', req({}), true],
    ['explicit "*"', req({ resourceNamesSubscribe: ['*'] }), true],
    ['ztunnel on-demand: subscribe and unsubscribe "*"', req({ resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] }), false],
    ['named resources', req({ resourceNamesSubscribe: ['a'] }), false],
  ])('%s', (_name, first, wildcard) => {
    expect(new TypeSubscription(ADDRESS_TYPE_URL, first).isWildcard).toBe(wildcard);
  });

  it('counts names from initial_resource_versions as subscribed for a non-wildcard stream', () => {
    const state = stateWith('a-0', 'b-0');
    const sub = new TypeSubscription(
      ADDRESS_TYPE_URL,
      req({ resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'], initialResourceVersions: { [uid('a-0')]: '' } }),
    );
    expect(sub.subscribedNames()).toEqual([uid('a-0')]);
    expect(names(sub.plan(state, {}))).toEqual([uid('a-0')]);
  });
});

describe('versions', () => {
  it('sends only what the client lacks, and removes what it holds that is gone', () => {
    const state = stateWith('a-0', 'b-0');
    const first = new TypeSubscription(ADDRESS_TYPE_URL, req({}));
    const plan = first.plan(state, {});
    first.commit(plan, state);
    const held = Object.fromEntries(plan.resources.map((r) => [r.name, r.version]));

    state.remove(ADDRESS_TYPE_URL, uid('b-0'));
    state.setWorkload(workload({ name: 'c-0', ips: ['10.0.0.9'] }));
    const again = new TypeSubscription(ADDRESS_TYPE_URL, req({ initialResourceVersions: held }));
    const p = again.plan(state, {});
    expect(names(p)).toEqual([uid('c-0')]);
    expect(p.removed).toEqual([uid('b-0')]);
  });

  it('does not resend a version once sent (a NACK does not cause a resend)', () => {
    const state = stateWith('a-0');
    const sub = new TypeSubscription(ADDRESS_TYPE_URL, req({}));
    sub.commit(sub.plan(state, {}), state);
    expect(sub.plan(state, {})).toEqual({ resources: [], removed: [] });
  });

  it('names policies by namespace/name', () => {
    const state = new MeshState();
    state.setAuthorization(allowPolicy({ name: 'p', namespace: 'ns' }));
    const sub = new TypeSubscription(AUTHORIZATION_TYPE_URL, req({}));
    expect(names(sub.plan(state, {}))).toEqual(['ns/p']);
  });
});

describe('on-demand', () => {
  it('reports an unknown name as removed once, and again when re-subscribed', () => {
    const state = stateWith('a-0');
    const sub = new TypeSubscription(ADDRESS_TYPE_URL, req({ resourceNamesSubscribe: ['*'], resourceNamesUnsubscribe: ['*'] }));
    sub.commit(sub.plan(state, {}), state);
    sub.update(req({ resourceNamesSubscribe: ['/10.9.9.9'] }), state, {});
    const p = sub.plan(state, {});
    expect(p.removed).toEqual(['/10.9.9.9']);
    sub.commit(p, state);
    expect(sub.plan(state, {})).toEqual({ resources: [], removed: [] });
    sub.update(req({ resourceNamesSubscribe: ['/10.9.9.9'] }), state, {});
    expect(sub.plan(state, {}).removed).toEqual(['/10.9.9.9']);
  });

  it('resends a resource the client explicitly subscribes to again', () => {
    const state = stateWith('a-0');
    const sub = new TypeSubscription(ADDRESS_TYPE_URL, req({ resourceNamesSubscribe: [uid('a-0')] }));
    sub.commit(sub.plan(state, {}), state);
    sub.update(req({ resourceNamesSubscribe: [uid('a-0')] }), state, {});
    expect(names(sub.plan(state, {}))).toEqual([uid('a-0')]);
  });

  it('includes the endpoints of a subscribed service', () => {
    const state = new MeshState();
    state.setService(service({ name: 'app', vips: ['10.96.0.1'] }));
    state.setWorkload(workload({ name: 'app-0', ips: ['10.0.0.1'], services: { 'default/app.default.svc.cluster.local': { 80: 8080 } } }));
    state.setWorkload(workload({ name: 'other-0', ips: ['10.0.0.2'] }));
    const sub = new TypeSubscription(ADDRESS_TYPE_URL, req({ resourceNamesSubscribe: ['/10.96.0.1'] }));
    expect(names(sub.plan(state, {}))).toEqual([uid('app-0'), 'default/app.default.svc.cluster.local']);
  });
});

describe('convergence (property)', () => {
  type Op = { kind: 'set'; n: number; ip: number } | { kind: 'remove'; n: number } | { kind: 'reconnect' };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('set' as const), n: fc.integer({ min: 0, max: 5 }), ip: fc.integer({ min: 1, max: 3 }) }),
    fc.record({ kind: fc.constant('remove' as const), n: fc.integer({ min: 0, max: 5 }) }),
    fc.constant({ kind: 'reconnect' as const }),
  );

  it('a wildcard client applying every response always holds exactly the served set, across reconnects', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const state = new MeshState();
        const client = new Map<string, string>();
        let sub = new TypeSubscription(ADDRESS_TYPE_URL, req({}));
        const sync = () => {
          const p = sub.plan(state, {});
          sub.commit(p, state);
          for (const r of p.resources) client.set(r.name, r.version);
          for (const n of p.removed) client.delete(n);
        };
        sync();
        for (const o of ops) {
          if (o.kind === 'set') state.setWorkload(workload({ name: `w-${o.n}`, ips: [`10.0.${o.n}.${o.ip}`] }));
          else if (o.kind === 'remove') state.remove(ADDRESS_TYPE_URL, uid(`w-${o.n}`));
          else sub = new TypeSubscription(ADDRESS_TYPE_URL, req({ initialResourceVersions: Object.fromEntries(client) }));
          sync();
          const served = new Map([...state.resources(ADDRESS_TYPE_URL).values()].map((r) => [r.name, r.version]));
          expect(client).toEqual(served);
        }
      }),
    );
  });
});
