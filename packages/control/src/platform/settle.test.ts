import { ManualClock } from '../testing/index.js';
import { describe, expect, it } from 'vitest';
import { settleWithin, type SettleCleanup } from './settle.js';

describe('settleWithin', () => {
  it('resolves with the value and cleans up once, with the outcome', async () => {
    const clock = new ManualClock();
    const outcomes: string[] = [];
    const p = settleWithin<number>({ clock, timeoutMs: 100, onTimeout: () => ({ error: new Error('late') }) }, (s) => {
      queueMicrotask(() => {
        s.resolve(1);
        s.resolve(2);
        s.reject(new Error('ignored'));
      });
      return (o) => outcomes.push(o);
    });
    await expect(p).resolves.toBe(1);
    expect(outcomes).toEqual(['resolved']);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('the deadline settles as onTimeout says and cancels nothing twice', async () => {
    const clock = new ManualClock();
    const outcomes: string[] = [];
    const rejecting = settleWithin<number>({ clock, timeoutMs: 50, onTimeout: () => ({ error: new Error('timed out after 50 ms') }) }, () => (o) => outcomes.push(o));
    const resolving = settleWithin<string>({ clock, timeoutMs: 80, onTimeout: () => ({ value: 'timeout' }) }, () => undefined);
    // Observe the rejection before it happens, so it is never an unhandled one.
    const rejected = expect(rejecting).rejects.toThrow('timed out after 50 ms');
    await clock.advance(49);
    expect(outcomes).toEqual([]);
    await clock.advance(1);
    await rejected;
    expect(outcomes).toEqual(['rejected']);
    await clock.advance(30);
    await expect(resolving).resolves.toBe('timeout');
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('an abort settles at once, removes its listener and cancels the deadline', async () => {
    const clock = new ManualClock();
    const controller = new AbortController();
    const outcomes: string[] = [];
    const p = settleWithin<number>(
      { clock, timeoutMs: 1000, onTimeout: () => ({ value: 0 }), signal: controller.signal, onAbort: (r) => ({ error: new Error(`aborted: ${String(r)}`) }) },
      () => (o) => outcomes.push(o),
    );
    controller.abort('client left');
    await expect(p).rejects.toThrow('aborted: client left');
    expect(outcomes).toEqual(['rejected']);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('never starts the operation when the signal is already aborted', async () => {
    const controller = new AbortController();
    controller.abort(new Error('gone'));
    let started = false;
    const p = settleWithin<number>({ clock: new ManualClock(), signal: controller.signal }, () => {
      started = true;
    });
    await expect(p).rejects.toThrow('gone');
    expect(started).toBe(false);
  });

  it('a synchronous settlement still runs the cleanup; a throw rejects', async () => {
    const seen: Parameters<SettleCleanup>[0][] = [];
    await expect(settleWithin<number>({ clock: new ManualClock() }, (s) => {
      s.resolve(7);
      return (o) => seen.push(o);
    })).resolves.toBe(7);
    expect(seen).toEqual(['resolved']);
    await expect(settleWithin<number>({ clock: new ManualClock() }, () => {
      throw new Error('boom');
    })).rejects.toThrow('boom');
  });
});
