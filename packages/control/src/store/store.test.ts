import { describe, expect, it, vi } from 'vitest';
import type { Workload } from '../model/workload.js';
import {
  aPolicy,
  aService,
  aServiceRef,
  addresses,
  aWorkload,
  cidrVip,
  policies,
  vip,
} from '../testing/model-builders.js';
import { Store, type StoreOptions } from './store.js';
import type { StoreChange } from './types.js';

const SVC = 'ns/svc.ns.svc.cluster.local';

function svc(over: Partial<Parameters<typeof aService>[0]> = {}) {
  return aService({ namespace: 'ns', hostname: 'svc.ns.svc.cluster.local', vips: [vip('10.96.0.1')], ...over });
}

function pod(name: string, over: Partial<Workload> = {}): Workload {
  return aWorkload({ uid: `Kubernetes//Pod/ns/${name}`, namespace: 'ns', ...over });
}

async function storeWith(items: Parameters<typeof addresses>[0], options: StoreOptions = {}): Promise<Store> {
  const store = new Store(options);
  await store.applyAddresses(addresses(items));
  return store;
}

const sorted = (s: ReadonlySet<string>) => [...s].sort();
const uids = (ws: Iterable<{ readonly uid: string } | { readonly workloadUid: string }>) =>
  [...ws].map((w) => ('uid' in w ? w.uid : w.workloadUid)).sort();

describe('workload indexes', () => {
  it('finds a workload by uid and by each of its IPs on its network', async () => {
    const w = pod('a', { addresses: ['10.0.0.1', 'fd00::1'], network: 'net1' });
    const snap = (await storeWith([w])).snapshot();
    expect(snap.workload(w.uid)).toBe(w);
    expect(snap.workloadByAddress('net1', '10.0.0.1')).toBe(w);
    expect(snap.workloadByAddress('net1', 'fd00::1')).toBe(w);
    expect(snap.workloadByAddress('', '10.0.0.1')).toBeUndefined();
  });

  it('does not index HostNetwork workloads by IP', async () => {
    const w = pod('host', { addresses: ['192.168.1.5'], networkMode: 'HostNetwork' });
    const snap = (await storeWith([w])).snapshot();
    expect(snap.workload(w.uid)).toBe(w);
    expect(snap.workloadByAddress('', '192.168.1.5')).toBeUndefined();
  });

  it('on an IP collision prefers the pod, and keeps both indexed', async () => {
    const entry = aWorkload({ uid: 'Kubernetes/networking.istio.io/WorkloadEntry/ns/e', addresses: ['10.0.0.9'] });
    const p = pod('p', { addresses: ['10.0.0.9'], protocol: 'TCP' });
    const snap = (await storeWith([p, entry])).snapshot();
    expect(snap.workloadByAddress('', '10.0.0.9')).toBe(p);
    expect(uids(snap.workloadsByAddress('', '10.0.0.9'))).toEqual(uids([p, entry]));
  });

  it('an updated workload moves to the end of a collision list, so it wins ties', async () => {
    const a = pod('a', { addresses: ['10.0.0.9'] });
    const b = pod('b', { addresses: ['10.0.0.9'] });
    const store = await storeWith([a, b]);
    expect(store.snapshot().workloadByAddress('', '10.0.0.9')).toBe(b);
    const a2 = { ...a, canonicalRevision: 'v2' };
    await store.applyAddresses(addresses([a2]));
    expect(store.snapshot().workloadByAddress('', '10.0.0.9')).toBe(a2);
  });

  it('removing one of two colliding workloads leaves the other', async () => {
    const a = pod('a', { addresses: ['10.0.0.9'] });
    const b = pod('b', { addresses: ['10.0.0.9'] });
    const store = await storeWith([a, b]);
    await store.applyAddresses(addresses([], [b.uid]));
    expect(store.snapshot().workloadByAddress('', '10.0.0.9')).toBe(a);
    expect(store.snapshot().workloadsByAddress('', '10.0.0.9')).toEqual([a]);
  });

  it('an update replaces the old IPs completely', async () => {
    const w = pod('a', { addresses: ['10.0.0.1', '10.0.0.2'] });
    const store = await storeWith([w]);
    const moved = { ...w, addresses: ['10.0.0.3'] };
    await store.applyAddresses(addresses([moved]));
    const snap = store.snapshot();
    expect(snap.workloadByAddress('', '10.0.0.1')).toBeUndefined();
    expect(snap.workloadByAddress('', '10.0.0.2')).toBeUndefined();
    expect(snap.workloadByAddress('', '10.0.0.3')).toBe(moved);
    expect(snap.counts().workloads).toBe(1);
  });

  it('becoming HostNetwork drops the IP index entry', async () => {
    const w = pod('a', { addresses: ['10.0.0.1'] });
    const store = await storeWith([w]);
    await store.applyAddresses(addresses([{ ...w, networkMode: 'HostNetwork' }]));
    expect(store.snapshot().workloadByAddress('', '10.0.0.1')).toBeUndefined();
  });

  it('indexes local-node workloads by namespace and service account', async () => {
    const local = pod('a', { node: 'n1', identity: { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'sa' } });
    const remote = pod('b', { node: 'n2', identity: { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'sa' } });
    const store = await storeWith([local, remote], { localNode: 'n1' });
    const snap = store.snapshot();
    expect(snap.localWorkloadsByIdentity('ns', 'sa')).toEqual([local]);
    expect(snap.findLocalWorkload({ name: 'a', namespace: 'ns', serviceAccount: 'sa' })).toBe(local);
    expect(snap.findLocalWorkload({ name: 'b', namespace: 'ns', serviceAccount: 'sa' })).toBeUndefined();
    await store.applyAddresses(addresses([], [local.uid]));
    expect(store.snapshot().localWorkloadsByIdentity('ns', 'sa')).toEqual([]);
  });

  it('without a local node every workload is in the identity index', async () => {
    const a = pod('a', { node: 'n1' });
    const b = pod('b', { node: 'n2' });
    const snap = (await storeWith([a, b])).snapshot();
    expect(uids(snap.localWorkloadsByIdentity('ns', 'default'))).toEqual(uids([a, b]));
  });
});

describe('Address removals', () => {
  it.each([
    ['a workload uid', 'Kubernetes//Pod/ns/a', { workload: false, service: true }],
    ['a namespace/hostname service key', SVC, { workload: true, service: false }],
    ['a name with two slashes is never a service', 'ns/svc.ns.svc.cluster.local/x', { workload: true, service: true }],
    ['a name with no slash', 'svc.ns.svc.cluster.local', { workload: true, service: true }],
    ['an unknown name', 'ns/unknown', { workload: true, service: true }],
  ])('%s', async (_name, removal, remaining) => {
    const w = pod('a');
    const store = await storeWith([w, svc()]);
    await store.applyAddresses(addresses([], [removal]));
    const snap = store.snapshot();
    expect(snap.workload(w.uid) !== undefined).toBe(remaining.workload);
    expect(snap.service(SVC) !== undefined).toBe(remaining.service);
  });

  it('a name that is both a workload uid and a service key removes only the workload', async () => {
    const w = aWorkload({ uid: SVC, namespace: 'ns' });
    const store = await storeWith([w, svc()]);
    await store.applyAddresses(addresses([], [SVC]));
    expect(store.snapshot().workload(SVC)).toBeUndefined();
    expect(store.snapshot().service(SVC)).toBeDefined();
  });

  it('upserts apply before removals in the same update', async () => {
    const w = pod('a');
    const store = new Store();
    await store.applyAddresses(addresses([w], [w.uid]));
    expect(store.snapshot().workload(w.uid)).toBeUndefined();
  });
});

describe('services by VIP', () => {
  const inNs = (namespace: string, over: Partial<Parameters<typeof aService>[0]> = {}) =>
    aService({ namespace, hostname: `shared.${namespace}`, vips: [vip('10.96.0.10')], ...over });

  it.each([
    ['the client namespace first', [inNs('a'), inNs('b', { canonical: true }), inNs('c')], 'c', 'c'],
    ['then canonical', [inNs('a'), inNs('b', { canonical: true })], 'x', 'b'],
    ['then the first', [inNs('a'), inNs('b')], 'x', 'a'],
    ['no client namespace: canonical', [inNs('a'), inNs('b', { canonical: true })], undefined, 'b'],
  ])('ranks %s', async (_name, services, client, expectedNs) => {
    const snap = (await storeWith(services)).snapshot();
    expect(snap.serviceByVip('', '10.96.0.10', client)?.namespace).toBe(expectedNs);
  });

  it('ignores PREFERED_SERVICE_NAMESPACE (ztunnel only applies it in DNS)', async () => {
    const snap = (await storeWith([inNs('a'), inNs('pref')], { preferredServiceNamespace: 'pref' })).snapshot();
    expect(snap.serviceByVip('', '10.96.0.10', 'x')?.namespace).toBe('a');
    expect(snap.preferredServiceNamespace).toBe('pref');
  });

  it('skips services not visible to the client namespace', async () => {
    const snap = (await storeWith([inNs('a', { visibility: 'Namespace' }), inNs('b')])).snapshot();
    expect(snap.serviceByVip('', '10.96.0.10', 'x')?.namespace).toBe('b');
    expect(snap.serviceByVip('', '10.96.0.10', 'a')?.namespace).toBe('a');
    expect(snap.serviceByVip('', '10.96.0.10')?.namespace).toBe('a');
  });

  it('matches on network and IP exactly', async () => {
    const snap = (await storeWith([inNs('a', { vips: [vip('10.96.0.10', 'net1')] })])).snapshot();
    expect(snap.serviceByVip('net1', '10.96.0.10')?.namespace).toBe('a');
    expect(snap.serviceByVip('', '10.96.0.10')).toBeUndefined();
  });

  it('keeps one slot per namespace: a second service of the namespace takes over the VIP', async () => {
    const first = inNs('a');
    const second = aService({ namespace: 'a', hostname: 'other.a', vips: [vip('10.96.0.10')] });
    const store = await storeWith([first, second]);
    expect(store.snapshot().servicesByVip('', '10.96.0.10')).toEqual([second]);
    // Removing the displaced service does not take the VIP from the one holding it.
    await store.applyAddresses(addresses([], ['a/shared.a']));
    expect(store.snapshot().serviceByVip('', '10.96.0.10')).toBe(second);
  });

  it('an update replaces the old VIPs and moves the service to the end', async () => {
    const a = inNs('a');
    const b = inNs('b');
    const store = await storeWith([a, b]);
    const a2 = { ...a, vips: [vip('10.96.0.10'), vip('10.96.0.11')] };
    await store.applyAddresses(addresses([a2]));
    expect(store.snapshot().servicesByVip('', '10.96.0.10')).toEqual([b, a2]);
    const a3 = { ...a, vips: [vip('10.96.0.12')] };
    await store.applyAddresses(addresses([a3]));
    const snap = store.snapshot();
    expect(snap.servicesByVip('', '10.96.0.10')).toEqual([b]);
    expect(snap.servicesByVip('', '10.96.0.11')).toEqual([]);
    expect(snap.serviceByVip('', '10.96.0.12')).toBe(a3);
  });

  it('a removed service leaves the VIP and hostname indexes', async () => {
    const store = await storeWith([svc()]);
    await store.applyAddresses(addresses([], [SVC]));
    const snap = store.snapshot();
    expect(snap.serviceByVip('', '10.96.0.1')).toBeUndefined();
    expect(snap.servicesByHostname('svc.ns.svc.cluster.local')).toEqual([]);
    expect(snap.counts().services).toBe(0);
  });
});

describe('services by CIDR VIP', () => {
  const cidrSvc = (namespace: string, name: string, prefix: number, over: Partial<Parameters<typeof aService>[0]> = {}) =>
    aService({ namespace, hostname: `${name}.${namespace}`, cidrVips: [cidrVip({ 8: '10.0.0.0', 16: '10.1.0.0', 24: '10.1.2.0' }[prefix] ?? '', prefix)], ...over });

  it.each([
    ['the longest prefix wins', [cidrSvc('a', 'wide', 8), cidrSvc('a', 'narrow', 24)], 'x', 'narrow.a'],
    ['the client namespace beats a longer prefix', [cidrSvc('a', 'wide', 8), cidrSvc('b', 'narrow', 24)], 'a', 'wide.a'],
    ['canonical breaks a prefix tie', [cidrSvc('a', 'one', 16), cidrSvc('b', 'two', 16, { canonical: true })], 'x', 'two.b'],
    ['the first wins a full tie', [cidrSvc('a', 'one', 16), cidrSvc('b', 'two', 16)], 'x', 'one.a'],
    ['invisible services are skipped', [cidrSvc('a', 'wide', 8), cidrSvc('b', 'narrow', 24, { visibility: 'Namespace' })], 'x', 'wide.a'],
  ])('%s', async (_name, services, client, expectedHost) => {
    const snap = (await storeWith(services)).snapshot();
    expect(snap.serviceByVip('', '10.1.2.3', client)?.hostname).toBe(expectedHost);
  });

  it('an exact VIP beats any CIDR, and misses fall through to CIDRs', async () => {
    const exact = aService({ namespace: 'a', hostname: 'exact.a', vips: [vip('10.1.2.3')] });
    const snap = (await storeWith([cidrSvc('a', 'narrow', 24), exact])).snapshot();
    expect(snap.serviceByVip('', '10.1.2.3')).toBe(exact);
    expect(snap.serviceByVip('', '10.1.2.4')?.hostname).toBe('narrow.a');
    expect(snap.serviceByVip('', '10.2.0.1')).toBeUndefined();
  });

  it('an exact VIP invisible to the client falls through to CIDRs', async () => {
    const hidden = aService({ namespace: 'a', hostname: 'exact.a', vips: [vip('10.1.2.3')], visibility: 'Namespace' });
    const snap = (await storeWith([cidrSvc('b', 'narrow', 24), hidden])).snapshot();
    expect(snap.serviceByVip('', '10.1.2.3', 'x')?.hostname).toBe('narrow.b');
  });

  it('matches only the CIDR network and address family', async () => {
    const s = aService({ namespace: 'a', hostname: 'v6.a', cidrVips: [cidrVip('fd00::', 64, 'net1')] });
    const snap = (await storeWith([s])).snapshot();
    expect(snap.serviceByVip('net1', 'fd00::5')).toBe(s);
    expect(snap.serviceByVip('', 'fd00::5')).toBeUndefined();
    expect(snap.serviceByVip('net1', '10.0.0.1')).toBeUndefined();
  });

  it('removing or updating a service drops its CIDR entries', async () => {
    const s = cidrSvc('a', 'narrow', 24);
    const store = await storeWith([s]);
    await store.applyAddresses(addresses([{ ...s, cidrVips: [] }]));
    expect(store.snapshot().serviceByVip('', '10.1.2.3')).toBeUndefined();
    await store.applyAddresses(addresses([s], ['a/narrow.a']));
    expect(store.snapshot().serviceByVip('', '10.1.2.3')).toBeUndefined();
  });
});

describe('services by hostname', () => {
  const h = 'www.example.com';
  it('lists the service of every namespace for a hostname in insertion order', async () => {
    const a = aService({ namespace: 'a', hostname: h });
    const b = aService({ namespace: 'b', hostname: h });
    const snap = (await storeWith([a, b])).snapshot();
    expect(snap.servicesByHostname(h)).toEqual([a, b]);
    expect(snap.service('b/www.example.com')).toBe(b);
  });

  it.each([
    ['client namespace first', ['a', 'b'], [], 'b', 'b'],
    ['then canonical', ['a', 'b'], ['b'], 'x', 'b'],
    ['then the first', ['a', 'b'], [], 'x', 'a'],
    ['no client: the first', ['a', 'b'], [], undefined, 'a'],
  ] as Array<[string, string[], string[], string | undefined, string]>)('ranks %s', async (_name, namespaces, canonical, client, expected) => {
    const services = namespaces.map((namespace) => aService({ namespace, hostname: h, canonical: canonical.includes(namespace) }));
    const snap = (await storeWith(services)).snapshot();
    expect(snap.serviceByHostname(h, client)?.namespace).toBe(expected);
  });

  it('skips services not visible to the client namespace', async () => {
    const a = aService({ namespace: 'a', hostname: h, visibility: 'Namespace' });
    const snap = (await storeWith([a])).snapshot();
    expect(snap.serviceByHostname(h, 'x')).toBeUndefined();
    expect(snap.serviceByHostname(h, 'a')).toBe(a);
  });
});

describe('endpoints and staged services', () => {
  it('builds endpoints from Workload.services with the port map', async () => {
    const w = pod('a', { services: [aServiceRef(SVC, [[80, 8080], [443, 0]])] });
    const snap = (await storeWith([svc(), w])).snapshot();
    const [ep, ...rest] = snap.endpoints(SVC);
    expect(rest).toEqual([]);
    expect(ep?.workloadUid).toBe(w.uid);
    expect(ep?.workload).toBe(w);
    expect(ep?.status).toBe('Healthy');
    expect([...(ep?.ports ?? [])]).toEqual([[80, 8080], [443, 0]]);
  });

  it.each([
    ['workload first, then service', 'workload-first'],
    ['service first, then workload', 'service-first'],
    ['both in one update, workload first', 'same-update'],
  ])('%s', async (_name, order) => {
    const w = pod('a', { services: [aServiceRef(SVC)] });
    const store = new Store();
    if (order === 'workload-first') {
      await store.applyAddresses(addresses([w]));
      expect(store.snapshot().endpoints(SVC)).toEqual([]);
      expect(uids(store.snapshot().stagedServices().get(SVC) ?? [])).toEqual([w.uid]);
      expect(store.snapshot().counts().stagedServices).toBe(1);
      await store.applyAddresses(addresses([svc()]));
    } else if (order === 'service-first') {
      await store.applyAddresses(addresses([svc()]));
      await store.applyAddresses(addresses([w]));
    } else {
      await store.applyAddresses(addresses([w, svc()]));
    }
    const snap = store.snapshot();
    expect(uids(snap.endpoints(SVC))).toEqual([w.uid]);
    expect(snap.stagedServices().size).toBe(0);
    expect(snap.counts().stagedServices).toBe(0);
  });

  it('removing a service stages its endpoints and re-adding restores them', async () => {
    const w = pod('a', { services: [aServiceRef(SVC)] });
    const store = await storeWith([svc(), w]);
    await store.applyAddresses(addresses([], [SVC]));
    expect(store.snapshot().endpoints(SVC)).toEqual([]);
    expect(uids(store.snapshot().stagedServices().get(SVC) ?? [])).toEqual([w.uid]);
    await store.applyAddresses(addresses([svc()]));
    expect(uids(store.snapshot().endpoints(SVC))).toEqual([w.uid]);
  });

  it('updating a service keeps its endpoints', async () => {
    const w = pod('a', { services: [aServiceRef(SVC)] });
    const store = await storeWith([svc(), w]);
    await store.applyAddresses(addresses([svc({ canonical: true })]));
    expect(uids(store.snapshot().endpoints(SVC))).toEqual([w.uid]);
  });

  it('follows workload updates and removals', async () => {
    const other = 'ns/other.ns.svc.cluster.local';
    const a = pod('a', { services: [aServiceRef(SVC)] });
    const b = pod('b', { services: [aServiceRef(SVC)] });
    const store = await storeWith([svc(), svc({ hostname: 'other.ns.svc.cluster.local', vips: [] }), a, b]);
    expect(uids(store.snapshot().endpoints(SVC))).toEqual(uids([a, b]));

    const movedA = { ...a, services: [aServiceRef(other, [[90, 9090]])] };
    await store.applyAddresses(addresses([movedA]));
    let snap = store.snapshot();
    expect(uids(snap.endpoints(SVC))).toEqual([b.uid]);
    expect(snap.endpoints(other).map((e) => [e.workload, [...e.ports]])).toEqual([[movedA, [[90, 9090]]]]);

    const newB = { ...b, canonicalRevision: 'v2' };
    await store.applyAddresses(addresses([newB]));
    expect(store.snapshot().endpoints(SVC)[0]?.workload).toBe(newB);

    await store.applyAddresses(addresses([], [newB.uid]));
    snap = store.snapshot();
    expect(snap.endpoints(SVC)).toEqual([]);
    expect(snap.stagedServices().size).toBe(0);
  });

  it('a workload dropping its last reference to a staged service unstages it', async () => {
    const w = pod('a', { services: [aServiceRef(SVC)] });
    const store = await storeWith([w]);
    await store.applyAddresses(addresses([{ ...w, services: [] }]));
    expect(store.snapshot().stagedServices().size).toBe(0);
  });

  it('leaves out unhealthy endpoints unless the service allows all', async () => {
    const healthy = pod('a', { services: [aServiceRef(SVC)] });
    const sick = pod('b', { services: [aServiceRef(SVC)], status: 'Unhealthy' });
    const store = await storeWith([svc(), healthy, sick]);
    expect(uids(store.snapshot().endpoints(SVC))).toEqual([healthy.uid]);
    const allowAll = svc({ loadBalancing: { routingPreference: [], mode: 'Standard', healthPolicy: 'AllowAll' } });
    await store.applyAddresses(addresses([allowAll]));
    expect(uids(store.snapshot().endpoints(SVC))).toEqual(uids([healthy, sick]));
    // Staged endpoints are listed unfiltered.
    await store.applyAddresses(addresses([], [SVC]));
    expect(uids(store.snapshot().stagedServices().get(SVC) ?? [])).toEqual(uids([healthy, sick]));
  });

  it('a status change from a spread copy is reflected (views are per workload object)', async () => {
    const w = pod('a', { services: [aServiceRef(SVC)] });
    const store = await storeWith([svc(), w]);
    expect(store.snapshot().endpoints(SVC)).toHaveLength(1);
    const allowAll = svc({ loadBalancing: { routingPreference: [], mode: 'Standard', healthPolicy: 'AllowAll' } });
    await store.applyAddresses(addresses([allowAll, { ...w, status: 'Unhealthy' }]));
    expect(store.snapshot().endpoints(SVC)[0]?.status).toBe('Unhealthy');
  });

  it('servicesForWorkload returns the present services a workload names', async () => {
    const w = pod('a', { services: [aServiceRef(SVC), aServiceRef('ns/absent')] });
    const s = svc();
    const snap = (await storeWith([s, w])).snapshot();
    expect(snap.servicesForWorkload(w)).toEqual([s]);
  });
});

describe('findAddress', () => {
  it('prefers a workload IP, then a service VIP', async () => {
    const w = pod('a', { addresses: ['10.96.0.1'] });
    const s = svc();
    const store = await storeWith([s]);
    expect(store.snapshot().findAddress('', '10.96.0.1')).toEqual({ kind: 'service', service: s });
    await store.applyAddresses(addresses([w]));
    expect(store.snapshot().findAddress('', '10.96.0.1')).toEqual({ kind: 'workload', workload: w });
    expect(store.snapshot().findAddress('', '10.96.0.2')).toBeUndefined();
  });
});

describe('policies', () => {
  const nsAllow = aPolicy({ namespace: 'ns', name: 'allow' });
  const otherNs = aPolicy({ namespace: 'other', name: 'allow' });
  const global = aPolicy({ namespace: 'istio-system', name: 'global-deny', scope: 'Global', action: 'Deny' });
  const selector = aPolicy({ namespace: 'ns', name: 'selected', scope: 'WorkloadSelector' });
  const unselected = aPolicy({ namespace: 'ns', name: 'unselected', scope: 'WorkloadSelector' });

  async function policyStore() {
    const store = new Store();
    await store.applyPolicies(policies([nsAllow, otherNs, global, selector, unselected]));
    return store;
  }

  it.each([
    ['namespace and global policies', [], ['ns/allow', 'istio-system/global-deny'], []],
    ['plus referenced selector policies', ['ns/selected'], ['ns/allow', 'istio-system/global-deny', 'ns/selected'], []],
    ['missing references are listed', ['ns/selected', 'ns/gone'], ['ns/allow', 'istio-system/global-deny', 'ns/selected'], ['ns/gone']],
    ['a namespace policy referenced explicitly appears once', ['ns/allow'], ['ns/allow', 'istio-system/global-deny'], []],
  ])('%s', async (_name, refs, expectedKeys, missing) => {
    const snap = (await policyStore()).snapshot();
    const result = snap.policiesFor(pod('a', { authorizationPolicies: refs }));
    expect(result.policies.map((p) => `${p.namespace}/${p.name}`)).toEqual(expectedKeys);
    expect(result.missing).toEqual(missing);
  });

  it('a workload in another namespace gets only that namespace and global', async () => {
    const snap = (await policyStore()).snapshot();
    const w = aWorkload({ uid: 'Kubernetes//Pod/other/x', namespace: 'other' });
    expect(snap.policiesFor(w).policies).toEqual([otherNs, global]);
  });

  it('re-indexes a policy whose scope changes, and forgets removed ones', async () => {
    const store = await policyStore();
    await store.applyPolicies(policies([{ ...nsAllow, scope: 'WorkloadSelector' }]));
    expect(store.snapshot().policiesFor(pod('a')).policies).toEqual([global]);
    await store.applyPolicies(policies([], ['istio-system/global-deny']));
    const snap = store.snapshot();
    expect(snap.policiesFor(pod('a')).policies).toEqual([]);
    expect(snap.policy('istio-system/global-deny')).toBeUndefined();
    expect(snap.policy('ns/selected')).toBe(selector);
    expect(snap.counts().policies).toBe(4);
  });

  it('keys policies by their xDS name', async () => {
    const store = new Store();
    await store.applyPolicies({ upserts: [{ name: 'custom-name', policy: nsAllow }], removals: [] });
    expect(store.snapshot().policy('custom-name')).toBe(nsAllow);
    expect([...store.snapshot().policyEntries()]).toEqual([['custom-name', nsAllow]]);
    expect([...store.snapshot().policies()]).toEqual([nsAllow]);
  });
});

describe('replaceAll (static config reload)', () => {
  it('replaces everything and reports old and new keys', async () => {
    const oldW = pod('old', { services: [aServiceRef('ns/staged')] });
    const store = await storeWith([oldW, svc()]);
    await store.applyPolicies(policies([aPolicy({ namespace: 'ns', name: 'old' })]));
    const newW = pod('new', { addresses: ['10.0.0.7'] });
    const change = await store.replaceAll(addresses([newW]), policies([aPolicy({ namespace: 'ns', name: 'new' })]));
    const snap = store.snapshot();
    expect([...snap.workloads()]).toEqual([newW]);
    expect([...snap.services()]).toEqual([]);
    expect(snap.stagedServices().size).toBe(0);
    expect([...snap.policyEntries()].map(([k]) => k)).toEqual(['ns/new']);
    expect(snap.workloadByAddress('', '10.0.0.7')).toBe(newW);
    expect(sorted(change.workloads)).toEqual(uids([oldW, newW]));
    expect(sorted(change.services)).toEqual(['ns/staged', SVC]);
    expect(sorted(change.policies)).toEqual(['ns/new', 'ns/old']);
  });
});

describe('atomic visibility', () => {
  it('a snapshot taken before an apply is unchanged after it', async () => {
    const a = pod('a', { addresses: ['10.0.0.1'], services: [aServiceRef(SVC)] });
    const store = await storeWith([svc(), a]);
    const before = store.snapshot();
    await store.applyAddresses(addresses([pod('b', { addresses: ['10.0.0.2'], services: [aServiceRef(SVC)] })], [a.uid, SVC]));
    expect(before.workload(a.uid)).toBe(a);
    expect(before.workloadByAddress('', '10.0.0.2')).toBeUndefined();
    expect(uids(before.endpoints(SVC))).toEqual([a.uid]);
    expect(before.service(SVC)).toBeDefined();
    expect(before.counts()).toEqual({ workloads: 1, services: 1, stagedServices: 0, policies: 0 });
    expect(store.snapshot().version).toBe(before.version + 1);
  });

  it('a reader during a large, sliced apply sees only the old state', async () => {
    const seen: Array<{ version: number; workloads: number; endpoints: number; byIp: boolean }> = [];
    const store: Store = new Store({
      maxResourcesPerSlice: 10,
      yieldToEventLoop: async () => {
        const snap = store.snapshot();
        seen.push({
          version: snap.version,
          workloads: snap.counts().workloads,
          endpoints: snap.endpoints(SVC).length,
          byIp: snap.workloadByAddress('', '10.0.0.5') !== undefined,
        });
      },
    });
    await store.applyAddresses(addresses([svc()]));
    const many = Array.from({ length: 100 }, (_, i) => pod(`p${i}`, { addresses: [`10.0.0.${i}`], services: [aServiceRef(SVC)] }));
    await store.applyAddresses(addresses(many));
    expect(seen.length).toBeGreaterThanOrEqual(9);
    expect(seen.every((s) => s.version === 1 && s.workloads === 0 && s.endpoints === 0 && !s.byIp)).toBe(true);
    expect(store.snapshot().counts().workloads).toBe(100);
    expect(store.snapshot().endpoints(SVC)).toHaveLength(100);
  });

  it('yields by elapsed time on the injected clock', async () => {
    let now = 0;
    const clock = { now: () => now, monotonic: () => now, setTimer: () => ({ cancel() {} }), sleep: async () => {} };
    let yields = 0;
    const store = new Store({
      clock,
      sliceBudgetMs: 5,
      yieldToEventLoop: async () => {
        yields++;
      },
    });
    // Each resource "takes" 1 ms: the builder checks the clock every 64 resources.
    const many = Array.from({ length: 640 }, (_, i) => pod(`p${i}`));
    const update = addresses(many);
    const timed = { upserts: update.upserts.map((u) => ({ ...u, get resource() { now += 1; return u.resource; } })), removals: [] };
    await store.applyAddresses(timed);
    expect(yields).toBe(10);
  });

  it('a write that throws publishes nothing and does not block the next one', async () => {
    const store = await storeWith([pod('a')]);
    const before = store.snapshot();
    const broken = { ...pod('b'), services: undefined } as unknown as Workload;
    await expect(store.applyAddresses(addresses([pod('c'), broken]))).rejects.toThrow();
    expect(store.snapshot()).toBe(before);
    await store.applyAddresses(addresses([pod('d')]));
    expect(uids(store.snapshot().workloads())).toEqual(uids([pod('a'), pod('d')]));
  });
});

describe('serialized writes', () => {
  it('a second apply waits for the first, even across slices', async () => {
    const events: string[] = [];
    const store: Store = new Store({
      maxResourcesPerSlice: 1,
      yieldToEventLoop: async () => {
        events.push(`yield v${store.snapshot().version}`);
      },
    });
    store.subscribe((_c, snap) => events.push(`applied v${snap.version} (${snap.counts().workloads})`));
    const first = store.applyAddresses(addresses([pod('a'), pod('b')]));
    const second = store.applyAddresses(addresses([pod('c')], [pod('a').uid]));
    const [c1, c2] = await Promise.all([first, second]);
    // The second write only starts (yields) once the first is published.
    const first1 = events.indexOf('applied v1 (2)');
    const first2 = events.indexOf('applied v2 (2)');
    expect(first1).toBeGreaterThanOrEqual(2);
    expect(first2).toBe(events.length - 1);
    expect(events.slice(0, first1).every((e) => e === 'yield v0')).toBe(true);
    expect(events.slice(first1 + 1, first2).every((e) => e === 'yield v1')).toBe(true);
    expect(first2 - first1).toBeGreaterThanOrEqual(3);
    expect(sorted(c1.workloads)).toEqual(uids([pod('a'), pod('b')]));
    expect(sorted(c2.workloads)).toEqual(uids([pod('a'), pod('c')]));
    expect(uids(store.snapshot().workloads())).toEqual(uids([pod('b'), pod('c')]));
  });
});

describe('subscribers', () => {
  it('are told once per update what changed, including endpoint changes', async () => {
    const store = new Store();
    const calls: StoreChange[] = [];
    store.subscribe((change) => calls.push(change));
    const w = pod('a', { services: [aServiceRef(SVC)] });
    await store.applyAddresses(addresses([svc(), w]));
    await store.applyAddresses(addresses([{ ...w, services: [aServiceRef('ns/b')] }]));
    await store.applyPolicies(policies([aPolicy({ namespace: 'ns', name: 'p' })], ['ns/none']));
    await store.applyAddresses(addresses([], [w.uid]));
    expect(calls.map((c) => [sorted(c.workloads), sorted(c.services), sorted(c.policies)])).toEqual([
      [[w.uid], [SVC], []],
      [[w.uid], ['ns/b', SVC], []],
      [[], [], ['ns/p']],
      [[w.uid], ['ns/b'], []],
    ]);
  });

  it('receive the new and the previous snapshot, and can unsubscribe', async () => {
    const store = new Store();
    const fn = vi.fn();
    const unsubscribe = store.subscribe(fn);
    const before = store.snapshot();
    await store.applyAddresses(addresses([pod('a')]));
    expect(fn).toHaveBeenCalledTimes(1);
    expect(fn.mock.calls[0]?.[1]).toBe(store.snapshot());
    expect(fn.mock.calls[0]?.[2]).toBe(before);
    unsubscribe();
    await store.applyAddresses(addresses([pod('b')]));
    expect(fn).toHaveBeenCalledTimes(1);
  });

  it('a throwing subscriber does not stop the others or the write', async () => {
    const errors: unknown[] = [];
    const store = new Store({ onSubscriberError: (e) => errors.push(e) });
    const after = vi.fn();
    store.subscribe(() => {
      throw new Error('boom');
    });
    store.subscribe(after);
    const change = await store.applyAddresses(addresses([pod('a')]));
    expect(change.workloads.size).toBe(1);
    expect(after).toHaveBeenCalledTimes(1);
    expect(errors).toEqual([new Error('boom')]);
    expect(store.snapshot().workload(pod('a').uid)).toBeDefined();
  });
});
