import { createStore, type Authorization } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { ConnectionManager, type TrackedConnectionInfo } from './connection-manager.js';
import type { ProxyError } from '@ambient/dataplane';

const info = (uid: string | undefined): TrackedConnectionInfo => ({
  direction: 'inbound',
  src: { ip: '10.0.0.1', port: 40000 },
  originalDst: { ip: '10.0.0.2', port: 8080 },
  actualDst: { ip: '10.0.0.2', port: 8080 },
  protocol: 'HBONE',
  srcIdentity: undefined,
  policyWorkloadUid: uid,
});

const deny: Authorization = { name: 'deny', namespace: 'shop', scope: 'Namespace', action: 'Deny', dryRun: false, rules: [] };
const silent = { info: () => {} };

describe('ConnectionManager', () => {
  it('closes live connections that a policy change now denies, with POLICY_CHANGED, and leaves allowed ones alone', async () => {
    const store = createStore();
    const cm = new ConnectionManager(store, (snap, i) => ({ allow: snap.policy('shop/deny') === undefined || i.src.port !== 40000, reason: 'explicitly denied' }), silent);
    const closed: ProxyError[] = [];
    const a = cm.track(info('w1'), (e) => closed.push(e));
    cm.track({ ...info('w1'), src: { ip: '10.0.0.1', port: 40001 } }, () => closed.push(new Error('wrong') as ProxyError));
    await store.applyPolicies({ upserts: [{ name: 'shop/deny', policy: deny }], removals: [] });
    expect(closed.map((e) => e.code)).toEqual(['POLICY_CHANGED']);
    expect(closed[0]?.disposition.responseFlag).toBe('DENY');
    expect(cm.size).toBe(1);
    a.release(); // the owner releases after the close: harmless
    expect(cm.size).toBe(1);
  });

  it('re-checks only on policy changes or changes of the connection\'s own workload', async () => {
    const store = createStore();
    let checks = 0;
    const cm = new ConnectionManager(store, () => (checks++, { allow: true, reason: '' }), silent);
    cm.track(info('w1'), () => {});
    cm.track(info(undefined), () => {});
    await store.applyAddresses({ upserts: [], removals: ['unrelated'] });
    expect(checks).toBe(0);
    await store.applyPolicies({ upserts: [{ name: 'shop/deny', policy: deny }], removals: [] });
    expect(checks).toBe(1);
  });

  it('lists, force-closes and stops listening', async () => {
    const store = createStore();
    const cm = new ConnectionManager(store, () => ({ allow: false, reason: 'no' }), silent);
    const closed: string[] = [];
    cm.track(info('w1'), (e) => closed.push(e.code));
    expect(cm.list()).toHaveLength(1);
    cm.close();
    await store.applyPolicies({ upserts: [{ name: 'shop/deny', policy: deny }], removals: [] });
    expect(closed).toEqual([]);
    cm.closeAll(new (await import('@ambient/dataplane')).ProxyError('DRAINING', 'drain deadline reached'));
    expect(closed).toEqual(['DRAINING']);
    expect(cm.size).toBe(0);
  });
});
