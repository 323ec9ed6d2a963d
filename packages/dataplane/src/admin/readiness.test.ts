import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { Readiness } from './readiness.js';

describe('Readiness', () => {
  it('is ready only when every registered task is released', () => {
    const r = new Readiness();
    expect(r.isReady()).toBe(true);
    const state = r.register('state manager');
    const proxy = r.register('proxy');
    expect(r.pending()).toEqual(['proxy', 'state manager']);
    state();
    expect(r.pending()).toEqual(['proxy']);
    proxy();
    expect(r.isReady()).toBe(true);
  });

  it('keeps a name pending while any registration of it is held; double release is harmless', () => {
    const r = new Readiness();
    const a = r.register('workload proxy manager');
    const b = r.register('workload proxy manager');
    a();
    a();
    expect(r.pending()).toEqual(['workload proxy manager']);
    b();
    expect(r.isReady()).toBe(true);
    // Registered again (e.g. the CNI connection dropped).
    const c = r.register('workload proxy manager');
    expect(r.isReady()).toBe(false);
    c();
    expect(r.isReady()).toBe(true);
  });

  it('logs each completion with the time since start', async () => {
    const clock = new ManualClock();
    const logged: Array<[object, string | undefined]> = [];
    const log = {
      child: () => log,
      debug: () => undefined,
      info: (o: object, m?: string) => logged.push([o, m]),
      warn: () => undefined,
      error: () => undefined,
    };
    const r = new Readiness({ log, clock });
    const a = r.register('state manager');
    const b = r.register('proxy');
    await clock.advance(250);
    a();
    b();
    expect(logged.map(([, m]) => m)).toEqual(["task 'state manager' complete, still awaiting 1 tasks", "task 'proxy' complete, marking server ready"]);
    expect(logged[1]?.[0]).toMatchObject({ elapsed: '250ms' });
  });
});
