/** Measurement helpers shared by the benchmarks (heap after GC, event-loop blocking, percentiles). */
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';

export const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) {
  console.error('run with node --expose-gc');
  process.exit(1);
}

export function heap(): number {
  gc?.();
  gc?.();
  return process.memoryUsage().heapUsed;
}

/** Longest gap between setImmediate ticks, and the delay histogram's max, while `fn` runs. */
export async function watchEventLoop(fn: () => Promise<unknown>): Promise<{ tickerMaxMs: number; histogramMaxMs: number; ms: number }> {
  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  let running = true;
  let last = performance.now();
  let maxGap = 0;
  const tick = () => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  const start = performance.now();
  await fn();
  const ms = performance.now() - start;
  running = false;
  histogram.disable();
  // The ticker's last gap ends when fn resolves.
  maxGap = Math.max(maxGap, performance.now() - last);
  return { tickerMaxMs: maxGap, histogramMaxMs: histogram.max / 1e6, ms };
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
export const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;
export const f = (n: number, d = 1) => n.toFixed(d);
