/**
 * ztunnel waits up to 5 s for the local workload of an inbound connection to
 * appear in workload discovery (a pod can receive traffic a moment before its
 * WDS entry arrives). This resolves with the workload as soon as a store
 * update brings it, or undefined at the deadline; it leaves no subscription
 * or timer behind either way.
 */
import { settleWithin, type Clock, type Snapshot, type Store, type Workload } from '@ambient/control';

export const LOCAL_WORKLOAD_WAIT_MS = 5_000;

export function awaitWorkload(
  store: Pick<Store, 'snapshot' | 'subscribe'>,
  find: (snapshot: Snapshot) => Workload | undefined,
  clock: Clock,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ workload: Workload; snapshot: Snapshot } | undefined> {
  const now = store.snapshot();
  const found = find(now);
  if (found !== undefined) return Promise.resolve({ workload: found, snapshot: now });
  if (timeoutMs <= 0 || signal?.aborted) return Promise.resolve(undefined);
  type Found = { workload: Workload; snapshot: Snapshot } | undefined;
  return settleWithin<Found>(
    { clock, timeoutMs, onTimeout: () => ({ value: undefined }), signal, onAbort: () => ({ value: undefined }) },
    (settle) => {
      const unsubscribe = store.subscribe((_change, snapshot) => {
        const w = find(snapshot);
        if (w !== undefined) settle.resolve({ workload: w, snapshot });
      });
      return () => unsubscribe();
    },
  );
}
