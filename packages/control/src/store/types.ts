/** What a writer hands the store, and what subscribers are told. */
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';

export type AddressResource =
  | { readonly kind: 'workload'; readonly workload: Workload }
  | { readonly kind: 'service'; readonly service: Service };

/** One xDS response's worth of Address changes, applied atomically. */
export interface AddressUpdate {
  /** Resource name (workload uid, or `namespace/hostname` for a service) to value. */
  readonly upserts: ReadonlyArray<{ readonly name: string; readonly resource: AddressResource }>;
  /** Removed resource names: tried as a workload uid first, then as `namespace/hostname`. */
  readonly removals: readonly string[];
}

/** One xDS response's worth of Authorization changes, applied atomically. */
export interface PolicyUpdate {
  readonly upserts: ReadonlyArray<{ readonly name: string; readonly policy: Authorization }>;
  readonly removals: readonly string[];
}

/** What changed in one applied update; subscribers re-check what depends on it. */
export interface StoreChange {
  /** Workload uids inserted, updated or removed. */
  readonly workloads: ReadonlySet<string>;
  /** Service keys (`namespace/hostname`) inserted, updated, removed, or whose endpoints changed. */
  readonly services: ReadonlySet<string>;
  /** Policy keys (`namespace/name`) inserted, updated or removed. */
  readonly policies: ReadonlySet<string>;
}
