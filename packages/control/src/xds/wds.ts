/**
 * Wires the two workload-discovery (WDS) types to the store: each handler
 * decodes every resource of a response through its translator, collects the
 * rejections, and hands the accepted resources plus the removals to the store
 * in a single call, so one xDS response is one atomic store update.
 *
 * Follows ztunnel `xds.rs` (`ProxyStateUpdater` handlers for Address and
 * Authorization): a resource that fails to decode or translate rejects only
 * itself; the rest of the batch is applied; removals are applied as names
 * (the store resolves Address names as workload uid, then `namespace/hostname`).
 *
 * The translators and the store are injected as the narrow interfaces below,
 * declared here so this module depends only on what it uses.
 */
import type { Authorization } from '../model/authorization.js';
import type { Clock } from '../platform/clock.js';
import { Slicer } from '../platform/slicer.js';
import { formatRejections } from '../result.js';
import type { Result } from '../result.js';
import type { AddressResource, AddressUpdate, PolicyUpdate } from '../store/types.js';
import type { XdsHandler, XdsRejection, XdsResource } from './delta-client.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, type PackedResource } from './type-urls.js';

/** The store operations WDS needs. The return value (e.g. a StoreChange) is ignored; a promise is awaited. */
export interface WdsStore {
  applyAddresses(update: AddressUpdate): unknown;
  applyPolicies(update: PolicyUpdate): unknown;
}

export interface WdsDeps {
  readonly store: WdsStore;
  /** translate/address.ts `decodeAddressResource`. */
  readonly decodeAddress: (resource: PackedResource) => Result<AddressResource>;
  /** translate/authorization.ts `decodeAuthorizationResource`. */
  readonly decodeAuthorization: (resource: PackedResource) => Result<Authorization>;
  /** Fetch Address resources on demand instead of by wildcard (XDS_ON_DEMAND). Authorization is never on demand. */
  readonly onDemandAddresses?: boolean;
  /** When set, decoding a large batch yields to the event loop every few milliseconds. */
  readonly clock?: Clock;
}

export interface WdsHandlers {
  readonly address: XdsHandler;
  readonly authorization: XdsHandler;
}

/** Decodes every resource; returns the accepted values and the rejections, in input order. */
async function decodeBatch<T>(
  resources: readonly XdsResource[],
  decode: (resource: PackedResource) => Result<T>,
  slicer?: Slicer,
): Promise<{ accepted: Array<{ name: string; value: T }>; rejected: XdsRejection[] }> {
  const accepted: Array<{ name: string; value: T }> = [];
  const rejected: XdsRejection[] = [];
  for (const r of resources) {
    if (r.resource === undefined) {
      // ztunnel: "XDS payload without resource".
      rejected.push({ name: r.name, reason: 'resource: missing, expected a packed resource' });
      continue;
    }
    let result: Result<T>;
    try {
      result = decode(r.resource);
    } catch (e) {
      // Translators return Results; a throw is a bug, but it must reject only this resource.
      result = { ok: false, errors: [{ field: '', reason: `translator failed: ${e instanceof Error ? e.message : String(e)}` }] };
    }
    if (result.ok) accepted.push({ name: r.name, value: result.value });
    else rejected.push({ name: r.name, reason: formatRejections(result.errors) });
    // A full push decodes ~100k resources: never hold the event loop for all of them.
    if (slicer?.due()) await slicer.yield();
  }
  return { accepted, rejected };
}

export function createWdsHandlers(deps: WdsDeps): WdsHandlers {
  const slicer = () => (deps.clock ? new Slicer(deps.clock) : undefined);
  const address: XdsHandler = {
    typeUrl: ADDRESS_TYPE_URL,
    onDemand: deps.onDemandAddresses === true,
    async handle(resources, removed) {
      const { accepted, rejected } = await decodeBatch(resources, deps.decodeAddress, slicer());
      await deps.store.applyAddresses({
        upserts: accepted.map((a) => ({ name: a.name, resource: a.value })),
        removals: removed,
      });
      return { rejected };
    },
  };
  const authorization: XdsHandler = {
    typeUrl: AUTHORIZATION_TYPE_URL,
    onDemand: false,
    async handle(resources, removed) {
      const { accepted, rejected } = await decodeBatch(resources, deps.decodeAuthorization, slicer());
      await deps.store.applyPolicies({
        upserts: accepted.map((a) => ({ name: a.name, policy: a.value })),
        removals: removed,
      });
      return { rejected };
    },
  };
  return { address, authorization };
}
