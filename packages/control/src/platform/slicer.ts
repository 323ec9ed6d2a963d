/**
 * Cooperative time slicing for long synchronous loops (applying or decoding a
 * full WDS push of 100k resources): count units of work, and once a slice has
 * run for `budgetMs` (or `maxPerSlice` units), yield to the event loop so the
 * data path is never blocked for long.
 */
import type { Clock } from './clock.js';

// Reading the clock per unit would cost more than some units do.
const CLOCK_CHECK_EVERY = 64;

export const DEFAULT_SLICE_BUDGET_MS = 8;

/** Yields with setImmediate, so pending I/O callbacks run before the next slice. */
export const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class Slicer {
  readonly #clock: Clock;
  readonly #budgetMs: number;
  readonly #maxPerSlice: number;
  readonly #yieldFn: () => Promise<void>;
  #count = 0;
  #start: number;

  constructor(clock: Clock, budgetMs = DEFAULT_SLICE_BUDGET_MS, maxPerSlice = Number.POSITIVE_INFINITY, yieldFn = yieldToEventLoop) {
    this.#clock = clock;
    this.#budgetMs = budgetMs;
    this.#maxPerSlice = maxPerSlice;
    this.#yieldFn = yieldFn;
    this.#start = clock.monotonic();
  }

  /** Counts one unit of work; true when the slice is over. */
  due(): boolean {
    this.#count++;
    if (this.#count >= this.#maxPerSlice) return true;
    return this.#count % CLOCK_CHECK_EVERY === 0 && this.#clock.monotonic() - this.#start >= this.#budgetMs;
  }

  async yield(): Promise<void> {
    await this.#yieldFn();
    this.#count = 0;
    this.#start = this.#clock.monotonic();
  }

  /** Counts one unit and yields when the slice is over. */
  async tick(): Promise<void> {
    if (this.due()) await this.yield();
  }
}
