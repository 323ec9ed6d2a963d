/** What a writer hands the store, and what subscribers are told. */
import type { Authorization } from '../model/authorization.js';
import type { Endpoint, Service } from '../model/service.js';
import type { Workload, WorkloadStatus } from '../model/workload.js';

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

/**
 * One endpoint of a present service, derived from a workload's `services` entry
 * (ztunnel `Endpoint`: workload uid, service port → target port map, health).
 * `workload` is the same object the store holds, so load balancing needs no
 * second lookup.
 */
export interface ServiceEndpoint extends Endpoint {
  readonly workload: Workload;
  readonly status: WorkloadStatus;
}

/** The answer to "which policies apply to this destination workload" (ztunnel `assert_rbac`). */
export interface ApplicablePolicies {
  /** NAMESPACE-scoped policies of the workload's namespace, then GLOBAL ones, then the workload's own keys; each once. */
  readonly policies: readonly Authorization[];
  /** Keys in `Workload.authorizationPolicies` that the store has not received. */
  readonly missing: readonly string[];
}

/** Sizes of the store's primary tables, for metrics and config_dump. */
export interface StoreCounts {
  readonly workloads: number;
  readonly services: number;
  /** Services named by some workload but not (yet) received. */
  readonly stagedServices: number;
  readonly policies: number;
}
