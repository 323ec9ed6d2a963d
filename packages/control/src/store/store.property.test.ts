/**
 * Model-based check of the store's indexes: random batches of workload and
 * service upserts and removals (small pools, so IPs collide and services are
 * staged, removed and re-added), applied in random slice sizes, must always
 * answer lookups like a naive model recomputed from scratch; and a snapshot
 * must keep answering the same after later batches.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { serviceKey, type Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import { aService, aServiceRef, aWorkload, vip } from '../testing/model-builders.js';
import type { Snapshot } from './snapshot.js';
import { Store } from './store.js';
import type { AddressUpdate } from './types.js';

const UIDS = ['Kubernetes//Pod/a/w0', 'Kubernetes//Pod/a/w1', 'Kubernetes//Pod/b/w2', 'Kubernetes/x/WorkloadEntry/b/w3', 'Kubernetes//Pod/a/w4'];
const IPS = ['10.0.0.1', '10.0.0.2', '10.0.0.3'];
const NETWORKS = ['', 'n1'];
const SERVICE_KEYS = ['a/s0.a', 'b/s0.b', 'a/s1.a', 'b/s2.b'];
const VIPS = ['10.96.0.1', '10.96.0.2'];

const workloadArb: fc.Arbitrary<Workload> = fc
  .record({
    uid: fc.constantFrom(...UIDS),
    addresses: fc.uniqueArray(fc.constantFrom(...IPS), { maxLength: 2 }),
    network: fc.constantFrom(...NETWORKS),
    hostNetwork: fc.boolean(),
    protocol: fc.constantFrom('HBONE' as const, 'TCP' as const),
    status: fc.constantFrom('Healthy' as const, 'Unhealthy' as const),
    services: fc.uniqueArray(fc.constantFrom(...SERVICE_KEYS), { maxLength: 2 }),
    rev: fc.nat(3),
  })
  .map((r) =>
    aWorkload({
      uid: r.uid,
      namespace: r.uid.split('/')[3] ?? 'a',
      addresses: r.addresses,
      network: r.network,
      networkMode: r.hostNetwork ? 'HostNetwork' : 'Standard',
      protocol: r.protocol,
      status: r.status,
      services: r.services.map((k) => aServiceRef(k)),
      canonicalRevision: `v${r.rev}`,
    }),
  );

const serviceArb: fc.Arbitrary<Service> = fc
  .record({
    key: fc.constantFrom(...SERVICE_KEYS),
    vips: fc.uniqueArray(fc.constantFrom(...VIPS), { maxLength: 2 }),
    allowAll: fc.boolean(),
  })
  .map((r) => {
    const [namespace = '', hostname = ''] = r.key.split('/');
    return aService({
      namespace,
      hostname,
      vips: r.vips.map((v) => vip(v)),
      loadBalancing: r.allowAll ? { routingPreference: [], mode: 'Standard', healthPolicy: 'AllowAll' } : undefined,
    });
  });

type Item = { readonly kind: 'workload'; readonly w: Workload } | { readonly kind: 'service'; readonly s: Service };
const batchArb = fc.record({
  upserts: fc.array(
    fc.oneof(
      workloadArb.map((w): Item => ({ kind: 'workload', w })),
      serviceArb.map((s): Item => ({ kind: 'service', s })),
    ),
    { maxLength: 8 },
  ),
  removals: fc.array(fc.constantFrom(...UIDS, ...SERVICE_KEYS, 'a/unknown', 'no-slash'), { maxLength: 3 }),
});

/** The naive model: primary tables only, in last-upsert order; every index recomputed on demand. */
class Model {
  workloads = new Map<string, Workload>();
  services = new Map<string, Service>();

  apply(batch: { upserts: readonly Item[]; removals: readonly string[] }): void {
    for (const item of batch.upserts) {
      if (item.kind === 'workload') {
        this.workloads.delete(item.w.uid);
        this.workloads.set(item.w.uid, item.w);
      } else {
        const key = serviceKey(item.s);
        this.services.delete(key);
        this.services.set(key, item.s);
      }
    }
    for (const name of batch.removals) {
      if (this.workloads.delete(name)) continue;
      if (name.split('/').length === 2) this.services.delete(name);
    }
  }

  clone(): Model {
    const m = new Model();
    m.workloads = new Map(this.workloads);
    m.services = new Map(this.services);
    return m;
  }
}

function check(snap: Snapshot, model: Model): void {
  expect(snap.counts().workloads).toBe(model.workloads.size);
  expect(snap.counts().services).toBe(model.services.size);
  for (const uid of UIDS) expect(snap.workload(uid)).toBe(model.workloads.get(uid));
  for (const network of NETWORKS) {
    for (const ip of IPS) {
      const expected = [...model.workloads.values()].filter(
        (w) => w.network === network && w.networkMode !== 'HostNetwork' && w.addresses.includes(ip),
      );
      expect(snap.workloadsByAddress(network, ip).map((w) => w.uid)).toEqual(expected.map((w) => w.uid));
    }
  }
  const referenced = new Set([...model.workloads.values()].flatMap((w) => w.services.map((r) => r.key)));
  for (const key of SERVICE_KEYS) {
    const service = model.services.get(key);
    expect(snap.service(key)).toBe(service);
    const allowAll = service?.loadBalancing?.healthPolicy === 'AllowAll';
    const expected =
      service === undefined
        ? []
        : [...model.workloads.values()]
            .filter((w) => w.services.some((r) => r.key === key) && (allowAll || w.status === 'Healthy'))
            .map((w) => w.uid)
            .sort();
    expect(snap.endpoints(key).map((e) => e.workloadUid).sort()).toEqual(expected);
    for (const e of snap.endpoints(key)) expect(e.workload).toBe(model.workloads.get(e.workloadUid));
  }
  const staged = [...referenced].filter((k) => !model.services.has(k)).sort();
  expect([...snap.stagedServices().keys()].sort()).toEqual(staged);
  expect(snap.counts().stagedServices).toBe(staged.length);
  for (const host of ['s0.a', 's0.b', 's1.a', 's2.b']) {
    const expected = [...model.services.values()].filter((s) => s.hostname === host);
    expect(snap.servicesByHostname(host)).toEqual(expected);
  }
  for (const v of VIPS) {
    const onVip = snap.servicesByVip('', v);
    // Never a removed or outdated service, and one slot per namespace.
    for (const s of onVip) {
      expect(model.services.get(serviceKey(s))).toBe(s);
      expect(s.vips.some((x) => x.address === v)).toBe(true);
    }
    expect(new Set(onVip.map((s) => s.namespace)).size).toBe(onVip.length);
    // A namespace with services on this VIP has one of them indexed.
    const namespaces = new Set([...model.services.values()].filter((s) => s.vips.some((x) => x.address === v)).map((s) => s.namespace));
    expect(new Set(onVip.map((s) => s.namespace)).size).toBeLessThanOrEqual(namespaces.size);
  }
}

describe('store indexes against a naive model', () => {
  it('agree after every batch, and old snapshots never change', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 6 }), fc.array(batchArb, { minLength: 1, maxLength: 12 }), async (slice, batches) => {
        // Writes yield every `slice` resources, so builders are exercised across turns.
        const store = new Store({ maxResourcesPerSlice: slice, yieldToEventLoop: async () => {} });
        const model = new Model();
        const history: Array<[Snapshot, Model]> = [];
        for (const batch of batches) {
          const update: AddressUpdate = {
            upserts: batch.upserts.map((item) =>
              item.kind === 'workload'
                ? { name: item.w.uid, resource: { kind: 'workload', workload: item.w } }
                : { name: serviceKey(item.s), resource: { kind: 'service', service: item.s } },
            ),
            removals: batch.removals,
          };
          await store.applyAddresses(update);
          model.apply(batch);
          check(store.snapshot(), model);
          history.push([store.snapshot(), model.clone()]);
        }
        for (const [snap, m] of history) check(snap, m);
      }),
      { numRuns: 150 },
    );
  });
});
