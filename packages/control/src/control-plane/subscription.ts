/**
 * One stream's subscription to one type URL, and what to send it.
 *
 * Follows the Envoy delta xDS protocol (api-docs/xds_protocol "Incremental xDS")
 * and istiod's reading of it (`pilot/pkg/xds/delta.go` `deltaWatchedResources`,
 * `pilot/pkg/xds/workload.go` `WorkloadGenerator.GenerateDeltas`):
 *
 * - The first request is a wildcard subscription when its subscribe list is
 *   empty or contains `*`. ztunnel's on-demand mode sends subscribe `["*"]`
 *   plus unsubscribe `["*"]`: that is "nothing until asked by name".
 * - Names in `initial_resource_versions` are what the client already holds.
 *   istiod also counts them as subscribed (they matter for on-demand clients,
 *   which echo the names they hold after a reconnect), and so do we.
 * - We send a resource only when the client does not hold its current version,
 *   and report in `removed_resources` every name the client holds that is no
 *   longer served, and every explicitly subscribed name that matches nothing.
 * - After a NACK nothing is resent: the client is taken to hold what we sent
 *   (istiod records the error and does not respond, `shouldRespondDelta`). A
 *   changed resource gets a new version and is sent again.
 * - For an on-demand (non-wildcard) Address subscription, like istiod
 *   (`AdditionalPodSubscriptions`) we also send the workloads backing a
 *   subscribed service and every workload on the client's own node.
 *
 * Invariant: `known` is exactly the set of names the client holds, with the
 * version we last sent (or it declared); '' means "holds an unknown version".
 */
import { ADDRESS_TYPE_URL, type WdsTypeUrl } from '../xds/type-urls.js';
import type { MeshState } from './mesh-state.js';
import type { VersionedResource } from './resource-set.js';

/** The subscription-related fields of a DeltaDiscoveryRequest. */
export interface SubscriptionRequest {
  readonly resourceNamesSubscribe: readonly string[];
  readonly resourceNamesUnsubscribe: readonly string[];
  readonly initialResourceVersions: Readonly<Record<string, string>>;
}

/** Who the stream belongs to, for the node-local part of on-demand responses. */
export interface SubscriberContext {
  /** The client's node (Node.metadata NODE_NAME), when it sent one. */
  readonly nodeName?: string | undefined;
}

/** What one response for this type should carry. */
export interface ResponsePlan {
  readonly resources: readonly VersionedResource[];
  readonly removed: readonly string[];
}

const WILDCARD = '*';

export class TypeSubscription {
  private wildcard: boolean;
  /** Names the client subscribed to explicitly (as it spelled them: uid, ns/host, network/ip). */
  private readonly explicit = new Set<string>();
  /** Resource name -> version the client holds. */
  private readonly known = new Map<string, string>();
  /** Explicit names already reported as removed because nothing matched them. */
  private readonly reportedAbsent = new Set<string>();
  /** Names to answer for in the next plan even when nothing changed (fresh subscriptions). */
  private readonly forced = new Set<string>();

  /** Applies the first request for this type on a stream. */
  constructor(
    readonly typeUrl: WdsTypeUrl,
    first: SubscriptionRequest,
  ) {
    const names = new Set<string>(first.resourceNamesSubscribe);
    for (const name of Object.keys(first.initialResourceVersions)) names.add(name);
    for (const name of first.resourceNamesUnsubscribe) names.delete(name);
    this.wildcard = names.has(WILDCARD) || first.resourceNamesSubscribe.length === 0;
    names.delete(WILDCARD);
    for (const [name, version] of Object.entries(first.initialResourceVersions)) {
      if (name !== WILDCARD) this.known.set(name, version);
    }
    if (!this.wildcard) for (const name of names) this.explicit.add(name);
    for (const name of first.resourceNamesSubscribe) if (name !== WILDCARD) this.forced.add(name);
  }

  get isWildcard(): boolean {
    return this.wildcard;
  }

  /** Explicitly subscribed names (sorted). */
  subscribedNames(): string[] {
    return [...this.explicit].sort();
  }

  /**
   * Applies a later request's subscription changes. Returns whether the
   * subscription changed (istiod responds only then).
   */
  update(request: SubscriptionRequest, state: MeshState, ctx: SubscriberContext): boolean {
    let changed = false;
    for (const name of request.resourceNamesSubscribe) {
      if (name === WILDCARD) {
        if (!this.wildcard) changed = true;
        this.wildcard = true;
        continue;
      }
      if (!this.explicit.has(name)) changed = true;
      this.explicit.add(name);
      // A client that (re)subscribes gets an answer for that name, whatever it held.
      this.forced.add(name);
    }
    if (request.resourceNamesUnsubscribe.length > 0) {
      const before = this.desired(state, ctx);
      for (const name of request.resourceNamesUnsubscribe) {
        if (name === WILDCARD) {
          if (this.wildcard) changed = true;
          this.wildcard = false;
          continue;
        }
        if (this.explicit.delete(name)) changed = true;
        this.reportedAbsent.delete(name);
        this.forced.delete(name);
      }
      // The client drops what it unsubscribed from; no removal is sent for it
      // (Envoy: "the server need not send removed_resources for unsubscribed names").
      const after = this.desired(state, ctx);
      for (const name of before) if (!after.has(name)) this.known.delete(name);
      for (const name of request.resourceNamesUnsubscribe) if (!after.has(name)) this.known.delete(name);
    }
    return changed;
  }

  /** What to send now so the client converges on the current state. */
  plan(state: MeshState, ctx: SubscriberContext): ResponsePlan {
    const set = state.resources(this.typeUrl);
    const desired = this.desired(state, ctx);
    const forcedResources = new Set<string>();
    for (const name of this.forced) for (const r of this.resolve(name, state)) forcedResources.add(r);

    const resources: VersionedResource[] = [];
    for (const name of [...desired].sort()) {
      const r = set.get(name);
      if (r && (forcedResources.has(name) || this.known.get(name) !== r.version)) resources.push(r);
    }

    const removed = new Set<string>();
    for (const name of this.known.keys()) if (!desired.has(name)) removed.add(name);
    for (const name of this.explicit) {
      if (this.resolve(name, state).length > 0) continue;
      if (this.forced.has(name) || !this.reportedAbsent.has(name) || this.known.has(name)) removed.add(name);
    }
    return { resources, removed: [...removed].sort() };
  }

  /** Records that `plan` was sent: the client now holds exactly that. */
  commit(plan: ResponsePlan, state: MeshState): void {
    for (const r of plan.resources) this.known.set(r.name, r.version);
    for (const name of plan.removed) {
      this.known.delete(name);
      if (this.explicit.has(name)) this.reportedAbsent.add(name);
    }
    for (const name of this.explicit) if (this.resolve(name, state).length > 0) this.reportedAbsent.delete(name);
    this.forced.clear();
  }

  /** Names the client holds, with versions (for observability). */
  knownVersions(): ReadonlyMap<string, string> {
    return this.known;
  }

  private resolve(name: string, state: MeshState): readonly string[] {
    if (this.typeUrl === ADDRESS_TYPE_URL) return state.index().resolve(name);
    return state.resources(this.typeUrl).has(name) ? [name] : [];
  }

  /** Resource names this subscription should hold right now. */
  private desired(state: MeshState, ctx: SubscriberContext): Set<string> {
    const set = state.resources(this.typeUrl);
    if (this.wildcard) return new Set(set.names());
    const out = new Set<string>();
    for (const name of this.explicit) for (const r of this.resolve(name, state)) out.add(r);
    if (this.typeUrl === ADDRESS_TYPE_URL) {
      const index = state.index();
      // Workloads behind a subscribed service (istiod AdditionalPodSubscriptions).
      for (const name of [...out]) if (index.service(name)) for (const w of index.serviceMembers(name)) out.add(w);
      // Node-local workloads, as istiod does for on-demand clients that send NODE_NAME.
      if (ctx.nodeName) for (const w of index.workloadsOnNode(ctx.nodeName)) out.add(w);
    }
    return out;
  }
}
