/**
 * The in-memory workload, service and policy store every component reads.
 *
 * Invariants:
 * - readers only ever see whole updates: each write builds a new immutable
 *   state off to the side and publishes it with one assignment, so a
 *   Snapshot taken before or during a write is never changed by it;
 * - writes are serialized in call order; a write that fails publishes
 *   nothing and does not block the ones queued after it;
 * - a large write is built in slices of at most `sliceBudgetMs`, yielding to
 *   the event loop between slices, so applying istiod's full push does not
 *   stall the data path (ztunnel instead holds a write lock for the batch);
 * - subscribers are called once per applied write, after it is visible.
 */
import { systemClock, type Clock } from '../platform/clock.js';
import { DEFAULT_SLICE_BUDGET_MS, Slicer, yieldToEventLoop } from '../platform/slicer.js';
import { Snapshot } from './snapshot.js';
import { StateBuilder } from './state-builder.js';
import { EMPTY_STATE, type StoreState } from './state.js';
import type { AddressUpdate, PolicyUpdate, StoreChange } from './types.js';

export type StoreSubscriber = (change: StoreChange, snapshot: Snapshot, previous: Snapshot) => void;

export interface StoreOptions {
  /** Monotonic time for slicing large writes. Default: the system clock. */
  readonly clock?: Clock;
  /** Longest stretch a write runs before yielding to the event loop. Default 8 ms. */
  readonly sliceBudgetMs?: number;
  /** Also yield after this many resources, whatever the clock says (tests). Default: no limit. */
  readonly maxResourcesPerSlice?: number;
  /** How a slice yields. Default: `setImmediate`, so pending I/O runs first. */
  readonly yieldToEventLoop?: () => Promise<void>;
  /** PREFERED_SERVICE_NAMESPACE, handed to snapshots for DNS ranking. */
  readonly preferredServiceNamespace?: string;
  /** NODE_NAME: limits the identity index to this node's workloads. Unset: every workload (ztunnel's behaviour too). */
  readonly localNode?: string;
  /** Where an exception thrown by a subscriber goes. Default: rethrown from a microtask (an uncaught exception). */
  readonly onSubscriberError?: (error: unknown) => void;
}

export class Store {
  readonly #clock: Clock;
  readonly #sliceBudgetMs: number;
  readonly #maxPerSlice: number;
  readonly #yield: () => Promise<void>;
  readonly #preferredServiceNamespace: string | undefined;
  readonly #localNode: string | undefined;
  readonly #onSubscriberError: (error: unknown) => void;
  readonly #subscribers = new Set<StoreSubscriber>();
  #current: { readonly state: StoreState; readonly snapshot: Snapshot };
  #tail: Promise<unknown> = Promise.resolve();

  constructor(options: StoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#sliceBudgetMs = options.sliceBudgetMs ?? DEFAULT_SLICE_BUDGET_MS;
    this.#maxPerSlice = options.maxResourcesPerSlice ?? Number.POSITIVE_INFINITY;
    this.#yield = options.yieldToEventLoop ?? yieldToEventLoop;
    this.#preferredServiceNamespace = options.preferredServiceNamespace;
    this.#localNode = options.localNode;
    this.#onSubscriberError =
      options.onSubscriberError ??
      ((error) =>
        queueMicrotask(() => {
          throw error;
        }));
    this.#current = { state: EMPTY_STATE, snapshot: this.#newSnapshot(EMPTY_STATE, 0) };
  }

  /** The latest published state. Cheap; take one per connection or request and keep it. */
  snapshot(): Snapshot {
    return this.#current.snapshot;
  }

  /** Calls `fn` after every applied write. Returns the unsubscribe function. */
  subscribe(fn: StoreSubscriber): () => void {
    // Wrap so the same function subscribed twice is called twice and unsubscribes independently.
    const entry: StoreSubscriber = (c, s, p) => fn(c, s, p);
    this.#subscribers.add(entry);
    return () => {
      this.#subscribers.delete(entry);
    };
  }

  /** One Address response: upserts in order, then removals, visible all at once. */
  applyAddresses(update: AddressUpdate): Promise<StoreChange> {
    return this.#write('current', async (b, slice) => {
      await applyAddressUpdate(b, update, slice);
    });
  }

  /** One Authorization response: upserts in order, then removals, visible all at once. */
  applyPolicies(update: PolicyUpdate): Promise<StoreChange> {
    return this.#write('current', async (b, slice) => {
      await applyPolicyUpdate(b, update, slice);
    });
  }

  /**
   * Static config (re)load, ztunnel `LocalClient`: workloads, services and
   * policies are all replaced by the given ones, in one visible step. Every
   * previous key is reported as changed, as is every new one.
   */
  replaceAll(addresses: AddressUpdate, policies: PolicyUpdate): Promise<StoreChange> {
    return this.#write('empty', async (b, slice, previous) => {
      for (const uid of previous.workloads.keys()) {
        b.noteWorkloadChanged(uid);
        if (slice.due()) await slice.yield();
      }
      for (const key of previous.services.keys()) {
        b.noteServiceChanged(key);
        if (slice.due()) await slice.yield();
      }
      for (const key of previous.endpoints.keys()) {
        b.noteServiceChanged(key);
        if (slice.due()) await slice.yield();
      }
      for (const name of previous.policies.keys()) {
        b.notePolicyChanged(name);
        if (slice.due()) await slice.yield();
      }
      await applyAddressUpdate(b, addresses, slice);
      await applyPolicyUpdate(b, policies, slice);
    });
  }

  #write(
    base: 'current' | 'empty',
    build: (builder: StateBuilder, slice: Slicer, previous: StoreState) => Promise<void>,
  ): Promise<StoreChange> {
    const run = this.#tail.then(async () => {
      const previous = this.#current;
      const builder = new StateBuilder(base === 'empty' ? EMPTY_STATE : previous.state, { localNode: this.#localNode });
      const slicer = new Slicer(this.#clock, this.#sliceBudgetMs, this.#maxPerSlice, this.#yield);
      await build(builder, slicer, previous.state);
      const { state, change } = await builder.finish(async () => {
        if (slicer.due()) await slicer.yield();
      });
      const snapshot = this.#newSnapshot(state, previous.snapshot.version + 1);
      this.#current = { state, snapshot };
      this.#notify(change, snapshot, previous.snapshot);
      return change;
    });
    // Settle to undefined so the queue does not keep the last change alive.
    this.#tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #newSnapshot(state: StoreState, version: number): Snapshot {
    return new Snapshot(state, version, { preferredServiceNamespace: this.#preferredServiceNamespace });
  }

  #notify(change: StoreChange, snapshot: Snapshot, previous: Snapshot): void {
    for (const fn of [...this.#subscribers]) {
      try {
        fn(change, snapshot, previous);
      } catch (error) {
        this.#onSubscriberError(error);
      }
    }
  }
}

export function createStore(options: StoreOptions = {}): Store {
  return new Store(options);
}

async function applyAddressUpdate(b: StateBuilder, update: AddressUpdate, slice: Slicer): Promise<void> {
  for (const { resource } of update.upserts) {
    if (resource.kind === 'workload') b.upsertWorkload(resource.workload);
    else b.upsertService(resource.service);
    if (slice.due()) await slice.yield();
  }
  for (const name of update.removals) {
    b.removeAddress(name);
    if (slice.due()) await slice.yield();
  }
}

async function applyPolicyUpdate(b: StateBuilder, update: PolicyUpdate, slice: Slicer): Promise<void> {
  for (const { name, policy } of update.upserts) {
    b.upsertPolicy(name, policy);
    if (slice.due()) await slice.yield();
  }
  for (const name of update.removals) {
    b.removePolicy(name);
    if (slice.due()) await slice.yield();
  }
}
