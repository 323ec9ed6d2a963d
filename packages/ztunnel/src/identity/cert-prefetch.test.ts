import { createStore, identityToString, type Identity, type Workload } from '@ambient/control';
import { aWorkload } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { CertPrefetcher } from './cert-prefetch.js';

const wl = (uid: string, over: Partial<Workload> = {}): Workload =>
  aWorkload({ uid, namespace: 'shop', identity: { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'cart' }, ...over });

function recorder() {
  const calls: string[] = [];
  return {
    calls,
    prefetch: (id: Identity) => calls.push(`prefetch ${identityToString(id)}`),
    forget: (id: Identity) => calls.push(`forget ${identityToString(id)}`),
  };
}

const upsert = (...ws: Workload[]) => ({ upserts: ws.map((w) => ({ name: w.uid, resource: { kind: 'workload' as const, workload: w } })), removals: [] });
const remove = (...uids: string[]) => ({ upserts: [], removals: uids });

describe('CertPrefetcher', () => {
  it('prefetches once per local HBONE identity and forgets when the last workload with it goes', async () => {
    const store = createStore();
    const certs = recorder();
    const p = new CertPrefetcher(store, 'node-a', certs);
    await store.applyAddresses(upsert(wl('a'), wl('b')));
    expect(certs.calls).toEqual(['prefetch spiffe://cluster.local/ns/shop/sa/cart']);
    await store.applyAddresses(remove('a'));
    expect(certs.calls).toHaveLength(1);
    await store.applyAddresses(remove('b'));
    expect(certs.calls).toEqual(['prefetch spiffe://cluster.local/ns/shop/sa/cart', 'forget spiffe://cluster.local/ns/shop/sa/cart']);
    expect(p.identities()).toEqual([]);
    p.close();
  });

  it('ignores other nodes, plain TCP workloads, and an unset NODE_NAME', async () => {
    const store = createStore();
    const certs = recorder();
    new CertPrefetcher(store, 'node-a', certs);
    await store.applyAddresses(upsert(wl('x', { node: 'node-b' }), wl('y', { protocol: 'TCP' })));
    expect(certs.calls).toEqual([]);
    await store.applyAddresses(upsert(wl('z', { protocol: 'TCP', nativeTunnel: true })));
    expect(certs.calls).toHaveLength(1);

    const none = recorder();
    new CertPrefetcher(store, '', none);
    expect(none.calls).toEqual([]);
  });

  it('follows a workload whose identity changes without flapping the one that stays', async () => {
    const store = createStore();
    const certs = recorder();
    new CertPrefetcher(store, 'node-a', certs);
    await store.applyAddresses(upsert(wl('a')));
    await store.applyAddresses(upsert(wl('a')));
    expect(certs.calls).toHaveLength(1);
    const other = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'pay' };
    await store.applyAddresses(upsert(wl('a', { identity: other })));
    expect(certs.calls).toEqual([
      'prefetch spiffe://cluster.local/ns/shop/sa/cart',
      'prefetch spiffe://cluster.local/ns/shop/sa/pay',
      'forget spiffe://cluster.local/ns/shop/sa/cart',
    ]);
    await store.applyAddresses(upsert(wl('a', { identity: other, node: 'node-b' })));
    expect(certs.calls.at(-1)).toBe('forget spiffe://cluster.local/ns/shop/sa/pay');
  });

  it('picks up workloads already in the store when it starts', async () => {
    const store = createStore();
    await store.applyAddresses(upsert(wl('a')));
    const certs = recorder();
    new CertPrefetcher(store, 'node-a', certs);
    expect(certs.calls).toEqual(['prefetch spiffe://cluster.local/ns/shop/sa/cart']);
  });
});
