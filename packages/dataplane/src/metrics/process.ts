/**
 * Process and runtime figures computed at scrape time.
 *
 * `process_open_fds` and `process_max_fds` are ztunnel's (src/metrics/process.rs):
 * open descriptors counted in /proc/self/fd (or /dev/fd), the soft
 * RLIMIT_NOFILE read from /proc/self/limits.
 *
 * In place of ztunnel's `tokio_*` runtime gauges (which describe tokio's
 * worker threads and task queues and have no Node counterpart) we expose the
 * Node event loop under `nodejs_*` names, all marked unstable:
 * - `nodejs_eventloop_lag_p99_seconds`, `nodejs_eventloop_lag_max_seconds`:
 *   event-loop delay since the previous scrape (like tokio's queue depth, it
 *   shows a saturated loop);
 * - `nodejs_eventloop_busy_seconds_total`: time the loop spent running code
 *   (the single-loop equivalent of `tokio_worker_total_busy_duration_seconds`);
 * - `nodejs_active_resources`: handles, requests and timers keeping the loop
 *   alive (closest to `tokio_num_alive_tasks`);
 * - `process_resident_memory_bytes`, `nodejs_heap_used_bytes`: memory, for
 *   runs outside Kubernetes where cAdvisor is not there to report it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { MetricsRegistry } from './registry.js';

/** Where descriptor counts come from (injected in tests). */
export interface ProcessProbe {
  openFds(): number | undefined;
  maxFds(): number | undefined;
}

/** Linux /proc (and /dev/fd elsewhere); undefined where the figure cannot be read. */
export const systemProcessProbe: ProcessProbe = {
  openFds() {
    for (const dir of ['/proc/self/fd', '/dev/fd']) {
      try {
        // The listing itself holds one descriptor while it runs.
        return Math.max(0, readdirSync(dir).length - 1);
      } catch {
        // try the next
      }
    }
    return undefined;
  },
  maxFds() {
    try {
      return parseMaxOpenFiles(readFileSync('/proc/self/limits', 'utf8'));
    } catch {
      return undefined;
    }
  },
};

/** The soft "Max open files" limit from /proc/self/limits text. */
export function parseMaxOpenFiles(limits: string): number | undefined {
  const m = /^Max open files\s+(\S+)\s+/m.exec(limits);
  if (!m?.[1]) return undefined;
  if (m[1] === 'unlimited') return Number.MAX_SAFE_INTEGER;
  const n = Number(m[1]);
  return Number.isFinite(n) ? n : undefined;
}

/** Registers `process_open_fds` and `process_max_fds` on the root registry. */
export function registerProcessMetrics(root: MetricsRegistry, probe: ProcessProbe = systemProcessProbe): void {
  root.collector({ name: 'process_open_fds', type: 'gauge', help: 'Number of open file descriptors.', collect: () => probe.openFds() });
  root.collector({ name: 'process_max_fds', type: 'gauge', help: 'Maximum number of file descriptors.', collect: () => probe.maxFds() });
}

/** Registers the `nodejs_*` runtime figures; `close()` stops the event-loop delay monitor. */
export function registerRuntimeMetrics(root: MetricsRegistry): { close(): void } {
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  let p99 = 0;
  let max = 0;
  // Both lag gauges come from one read of the histogram, reset per scrape.
  root.beforeCollect(() => {
    if (delay.count > 0) {
      p99 = delay.percentile(99) / 1e9;
      max = delay.max / 1e9;
    } else {
      p99 = 0;
      max = 0;
    }
    delay.reset();
  });
  root.collector({
    name: 'nodejs_eventloop_lag_p99_seconds',
    type: 'gauge',
    unit: 'seconds',
    help: '99th percentile of the event loop delay since the previous scrape (unstable).',
    collect: () => p99,
  });
  root.collector({
    name: 'nodejs_eventloop_lag_max_seconds',
    type: 'gauge',
    unit: 'seconds',
    help: 'Largest event loop delay since the previous scrape (unstable).',
    collect: () => max,
  });
  root.collector({
    name: 'nodejs_eventloop_busy_seconds',
    type: 'counter',
    unit: 'seconds',
    help: 'Time the event loop has spent running callbacks rather than waiting for I/O (unstable).',
    collect: () => performance.eventLoopUtilization().active / 1000,
  });
  root.collector({
    name: 'nodejs_active_resources',
    type: 'gauge',
    help: 'Handles, requests and timers currently keeping the event loop alive (unstable).',
    collect: () => process.getActiveResourcesInfo().length,
  });
  root.collector({
    name: 'process_resident_memory_bytes',
    type: 'gauge',
    unit: 'bytes',
    help: 'Resident set size of the process (unstable).',
    collect: () => process.memoryUsage.rss(),
  });
  root.collector({
    name: 'nodejs_heap_used_bytes',
    type: 'gauge',
    unit: 'bytes',
    help: 'V8 heap in use (unstable).',
    collect: () => process.memoryUsage().heapUsed,
  });
  return { close: () => delay.disable() };
}
