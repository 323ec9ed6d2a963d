import { createStore } from '@ambient/control';
import { aWorkload, ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { awaitWorkload } from './await-workload.js';

const upsert = (uid: string) => ({ upserts: [{ name: uid, resource: { kind: 'workload' as const, workload: aWorkload({ uid }) } }], removals: [] });

describe('awaitWorkload', () => {
  it('answers at once when the workload is known, and when it arrives later, without leaving a timer', async () => {
    const store = createStore();
    const clock = new ManualClock();
    await store.applyAddresses(upsert('a'));
    expect((await awaitWorkload(store, (s) => s.workload('a'), clock, 5000))?.workload.uid).toBe('a');
    const later = awaitWorkload(store, (s) => s.workload('b'), clock, 5000);
    await clock.advance(1000);
    await store.applyAddresses(upsert('b'));
    expect((await later)?.workload.uid).toBe('b');
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('gives up at the deadline or on abort', async () => {
    const store = createStore();
    const clock = new ManualClock();
    const waiting = awaitWorkload(store, (s) => s.workload('x'), clock, 5000);
    await clock.advance(5000);
    expect(await waiting).toBeUndefined();
    const ac = new AbortController();
    const aborted = awaitWorkload(store, (s) => s.workload('x'), clock, 5000, ac.signal);
    ac.abort();
    expect(await aborted).toBeUndefined();
    expect(clock.pendingTimers()).toEqual([]);
  });
});
