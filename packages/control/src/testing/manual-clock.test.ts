import { describe, expect, it } from 'vitest';
import { ManualClock } from './manual-clock.js';

describe('ManualClock', () => {
  it('starts at the given wall and monotonic times and moves both on advance', async () => {
    const clock = new ManualClock({ now: 1_000_000, monotonic: 50 });
    expect(clock.now()).toBe(1_000_000);
    expect(clock.monotonic()).toBe(50);
    await clock.advance(250);
    expect(clock.now()).toBe(1_000_250);
    expect(clock.monotonic()).toBe(300);
  });

  it('fires due timers in due order, ties in scheduling order, and leaves later ones pending', async () => {
    const clock = new ManualClock();
    const fired: string[] = [];
    clock.setTimer(30, () => fired.push('c'));
    clock.setTimer(10, () => fired.push('a'));
    clock.setTimer(10, () => fired.push('b'));
    clock.setTimer(100, () => fired.push('late'));
    await clock.advance(30);
    expect(fired).toEqual(['a', 'b', 'c']);
    expect(clock.pendingTimers()).toEqual([70]);
  });

  it('runs each timer at its own due time', async () => {
    const clock = new ManualClock({ monotonic: 0 });
    const seen: number[] = [];
    clock.setTimer(5, () => seen.push(clock.monotonic()));
    clock.setTimer(12, () => seen.push(clock.monotonic()));
    await clock.advance(20);
    expect(seen).toEqual([5, 12]);
    expect(clock.monotonic()).toBe(20);
  });

  it('fires timers scheduled by fired callbacks within the same advance', async () => {
    const clock = new ManualClock();
    const fired: number[] = [];
    clock.setTimer(10, () => {
      fired.push(clock.monotonic());
      clock.setTimer(10, () => fired.push(clock.monotonic()));
    });
    await clock.advance(25);
    expect(fired).toEqual([10, 20]);
  });

  it('lets awaited promise chains run between timers', async () => {
    const clock = new ManualClock();
    const log: string[] = [];
    const loop = async () => {
      for (let i = 0; i < 3; i++) {
        await clock.sleep(100);
        await Promise.resolve();
        log.push(`tick ${i} at ${clock.monotonic()}`);
      }
    };
    const done = loop();
    await clock.advance(300);
    await done;
    expect(log).toEqual(['tick 0 at 100', 'tick 1 at 200', 'tick 2 at 300']);
  });

  it('cancelled timers never fire', async () => {
    const clock = new ManualClock();
    let fired = false;
    const t = clock.setTimer(10, () => (fired = true));
    t.cancel();
    await clock.advance(100);
    expect(fired).toBe(false);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('sleep rejects with the abort reason and removes its timer', async () => {
    const clock = new ManualClock();
    const ac = new AbortController();
    const p = clock.sleep(1000, ac.signal);
    expect(clock.pendingTimers()).toEqual([1000]);
    ac.abort(new Error('stop'));
    await expect(p).rejects.toThrow('stop');
    expect(clock.pendingTimers()).toEqual([]);
    await expect(clock.sleep(5, ac.signal)).rejects.toThrow('stop');
  });

  it('advanceToNextTimer jumps exactly to the next timer', async () => {
    const clock = new ManualClock({ monotonic: 0 });
    let at = -1;
    clock.setTimer(42, () => (at = clock.monotonic()));
    expect(await clock.advanceToNextTimer()).toBe(true);
    expect(at).toBe(42);
    expect(await clock.advanceToNextTimer()).toBe(false);
  });

  it('jumpWallClock moves only the wall clock', async () => {
    const clock = new ManualClock({ now: 0, monotonic: 0 });
    let fired = false;
    clock.setTimer(10, () => (fired = true));
    clock.jumpWallClock(600_000);
    expect(clock.now()).toBe(600_000);
    expect(clock.monotonic()).toBe(0);
    await clock.flush();
    expect(fired).toBe(false);
  });
});
