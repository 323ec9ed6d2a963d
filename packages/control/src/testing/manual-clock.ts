/**
 * A Clock that only moves when a test says so. Timers fire in due order during
 * `advance(ms)`, and promise jobs are flushed before and after each timer, so
 * code that awaits between timers (a fetch that resolves, then schedules the
 * next refresh) behaves as it would under real time, deterministically.
 *
 * Invariants:
 * - `monotonic()` never goes backwards; `now()` moves with it unless a test
 *   jumps the wall clock with `jumpWallClock` (NTP steps, F-19).
 * - Timers with the same due time fire in the order they were scheduled.
 * - A timer scheduled by a firing callback with a due time inside the advanced
 *   window fires within the same `advance` call.
 */
import type { Clock, Timer } from '../platform/clock.js';

interface PendingTimer {
  readonly seq: number;
  readonly due: number;
  readonly fn: () => void;
}

export interface ManualClockOptions {
  /** Initial wall-clock time in epoch milliseconds (default 2025-01-01T00:00:00Z). */
  readonly now?: number;
  /** Initial monotonic time in milliseconds (default 0). */
  readonly monotonic?: number;
}

/** Rounds of macrotask turns used to let promise chains settle. */
const FLUSH_TURNS = 5;

export class ManualClock implements Clock {
  #wall: number;
  #mono: number;
  #seq = 0;
  #timers: PendingTimer[] = [];

  constructor(options: ManualClockOptions = {}) {
    this.#wall = options.now ?? Date.UTC(2025, 0, 1);
    this.#mono = options.monotonic ?? 0;
  }

  now(): number {
    return this.#wall;
  }

  monotonic(): number {
    return this.#mono;
  }

  setTimer(ms: number, fn: () => void): Timer {
    const timer: PendingTimer = { seq: this.#seq++, due: this.#mono + Math.max(0, ms), fn };
    this.#timers.push(timer);
    return {
      cancel: () => {
        const i = this.#timers.indexOf(timer);
        if (i >= 0) this.#timers.splice(i, 1);
      },
    };
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const onAbort = () => {
        timer.cancel();
        reject(signal?.reason);
      };
      const timer = this.setTimer(ms, () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /**
   * Moves both clocks forward by `ms`, firing every timer that becomes due, in
   * order, with promise jobs flushed between timers.
   */
  async advance(ms: number): Promise<void> {
    if (ms < 0) throw new RangeError(`ManualClock.advance: ms must be >= 0, got ${ms}`);
    const target = this.#mono + ms;
    await flushPromises();
    for (;;) {
      const next = this.#nextTimer();
      if (next === undefined || next.due > target) break;
      this.#timers.splice(this.#timers.indexOf(next), 1);
      this.#moveTo(next.due);
      next.fn();
      await flushPromises();
    }
    this.#moveTo(target);
    await flushPromises();
  }

  /** Advances exactly to the next pending timer and fires it (and any due at the same instant). */
  async advanceToNextTimer(): Promise<boolean> {
    await flushPromises();
    const next = this.#nextTimer();
    if (next === undefined) return false;
    await this.advance(next.due - this.#mono);
    return true;
  }

  /** Lets pending promise jobs run without moving time. */
  async flush(): Promise<void> {
    await flushPromises();
  }

  /** Steps the wall clock only (timers and monotonic time are unaffected), like an NTP step. */
  jumpWallClock(deltaMs: number): void {
    this.#wall += deltaMs;
  }

  /** Milliseconds until each pending timer fires, soonest first. */
  pendingTimers(): number[] {
    return [...this.#timers].sort(byDue).map((t) => t.due - this.#mono);
  }

  #nextTimer(): PendingTimer | undefined {
    let best: PendingTimer | undefined;
    for (const t of this.#timers) if (best === undefined || byDue(t, best) < 0) best = t;
    return best;
  }

  #moveTo(mono: number): void {
    if (mono <= this.#mono) return;
    this.#wall += mono - this.#mono;
    this.#mono = mono;
  }
}

function byDue(a: PendingTimer, b: PendingTimer): number {
  return a.due - b.due || a.seq - b.seq;
}

/** Each macrotask turn drains the whole microtask queue; a few turns cover chained awaits. */
async function flushPromises(): Promise<void> {
  for (let i = 0; i < FLUSH_TURNS; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}
