/**
 * Hands memory that malloc kept after a burst back to the kernel, on a fixed
 * interval (ZTUNNEL_MALLOC_TRIM_INTERVAL). glibc keeps freed TLS and HTTP/2
 * buffers in its arenas, so without this a ztunnel's RSS stays at its
 * high-water mark after a bulk transfer (ARCHITECTURE.md, ztunnel benchmark).
 * One trim walks the heap once, well under a millisecond at our heap sizes.
 */
import type { Clock, Timer } from '@ambient/control';

export function startMemoryTrim(clock: Clock, trim: () => unknown, intervalMs: number): { stop(): void } {
  let timer: Timer | undefined;
  let stopped = false;
  const tick = () => {
    trim();
    if (!stopped) timer = clock.setTimer(intervalMs, tick);
  };
  if (intervalMs > 0) timer = clock.setTimer(intervalMs, tick);
  return {
    stop: () => {
      stopped = true;
      timer?.cancel();
    },
  };
}
