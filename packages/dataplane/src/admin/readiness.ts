/**
 * Readiness as ztunnel tracks it (src/readiness.rs): named tasks that must
 * finish before the process reports ready, e.g. "state manager" (first xDS
 * sync), "proxy" and "dns proxy" (dedicated mode), "workload proxy manager"
 * (in-pod mode, set again while disconnected from the CNI).
 *
 * Invariants:
 * - A name is pending while at least one of its registrations is unreleased;
 *   releasing twice is harmless.
 * - `pending()` is sorted, so the /healthz/ready body is deterministic.
 */
import type { Clock, Logger } from '@ambient/control';

export class Readiness {
  readonly #pending = new Map<string, number>();
  readonly #startedAt: number;

  constructor(
    private readonly deps: { readonly log?: Logger; readonly clock?: Pick<Clock, 'monotonic'> } = {},
  ) {
    this.#startedAt = deps.clock?.monotonic() ?? 0;
  }

  /** Marks `name` pending until the returned release function is called. */
  register(name: string): () => void {
    this.#pending.set(name, (this.#pending.get(name) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.#pending.get(name) ?? 1) - 1;
      if (n > 0) {
        this.#pending.set(name, n);
        return;
      }
      this.#pending.delete(name);
      const elapsed = this.deps.clock ? `${Math.round(this.deps.clock.monotonic() - this.#startedAt)}ms` : undefined;
      const left = this.#pending.size;
      if (left === 0) this.deps.log?.info({ task: name, elapsed }, `task '${name}' complete, marking server ready`);
      else this.deps.log?.info({ task: name, elapsed, pending: this.pending() }, `task '${name}' complete, still awaiting ${left} tasks`);
    };
  }

  /** Pending task names, sorted. */
  pending(): string[] {
    return [...this.#pending.keys()].sort();
  }

  isReady(): boolean {
    return this.#pending.size === 0;
  }
}
