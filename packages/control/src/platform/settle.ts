/**
 * One pending operation that ends exactly once — with a value, with an
 * error, at a deadline, or when a signal aborts, whichever comes first — and
 * leaves nothing behind: the deadline timer is cancelled, the abort listener
 * removed and the operation's own cleanup run, on every path.
 *
 * `run` starts the operation and may return a cleanup; the cleanup learns
 * whether the operation succeeded, so a half-made resource (a socket that
 * never connected) is destroyed only on failure. When the signal is already
 * aborted, `run` is never called.
 *
 * Invariants: the promise settles once; the cleanup runs once, after the
 * first settlement and before the promise's callbacks; no timer or listener
 * survives the settlement.
 */
import type { Clock } from './clock.js';

/** How the deadline or an abort ends the operation: `{ value }` resolves, `{ error }` rejects. */
export type Settlement<T> = { readonly value: T } | { readonly error: unknown };

export interface Settler<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
  /** True once the operation ended (later calls are ignored). */
  readonly settled: boolean;
}

export type SettleCleanup = (outcome: 'resolved' | 'rejected') => void;

export interface SettleWithinOptions<T> {
  readonly clock: Pick<Clock, 'setTimer'>;
  /** No deadline when undefined. */
  readonly timeoutMs?: number | undefined;
  readonly signal?: AbortSignal | undefined;
  /** Required with `timeoutMs`. */
  readonly onTimeout?: () => Settlement<T>;
  /** Default: reject with the signal's reason. */
  readonly onAbort?: (reason: unknown) => Settlement<T>;
}

export function settleWithin<T>(options: SettleWithinOptions<T>, run: (settle: Settler<T>) => SettleCleanup | void): Promise<T> {
  return new Promise<T>((resolvePromise, rejectPromise) => {
    const { signal } = options;
    const onAbort = options.onAbort ?? ((reason: unknown): Settlement<T> => ({ error: reason }));
    if (signal?.aborted) {
      settleWith(onAbort(signal.reason), resolvePromise, rejectPromise);
      return;
    }
    let outcome: 'resolved' | 'rejected' | undefined;
    let cleanup: SettleCleanup | void = undefined;
    let timer: { cancel(): void } | undefined;
    const finish = (how: 'resolved' | 'rejected', deliver: () => void) => {
      if (outcome !== undefined) return;
      outcome = how;
      timer?.cancel();
      signal?.removeEventListener('abort', abortListener);
      cleanup?.(how);
      deliver();
    };
    const settler: Settler<T> = {
      resolve: (value) => finish('resolved', () => resolvePromise(value)),
      reject: (error) => finish('rejected', () => rejectPromise(error)),
      get settled() {
        return outcome !== undefined;
      },
    };
    const apply = (s: Settlement<T>) => ('error' in s ? settler.reject(s.error) : settler.resolve(s.value));
    const abortListener = () => apply(onAbort(signal?.reason));
    if (options.timeoutMs !== undefined) {
      const onTimeout = options.onTimeout;
      if (onTimeout === undefined) throw new TypeError('settleWithin: timeoutMs needs onTimeout');
      timer = options.clock.setTimer(options.timeoutMs, () => apply(onTimeout()));
    }
    signal?.addEventListener('abort', abortListener, { once: true });
    try {
      cleanup = run(settler);
    } catch (err) {
      settler.reject(err);
      return;
    }
    // `run` may have settled synchronously, before its cleanup was known.
    if (outcome !== undefined) cleanup?.(outcome);
  });
}

function settleWith<T>(s: Settlement<T>, resolve: (v: T) => void, reject: (e: unknown) => void): void {
  if ('error' in s) reject(s.error);
  else resolve(s.value);
}
