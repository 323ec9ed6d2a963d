/**
 * The control plane's mesh state: the Address and Authorization resource sets
 * it serves, the lookups derived from them (aliases, service members, what runs
 * on which node), and change notification for the ADS streams.
 *
 * Invariants:
 * - Resource sets are replaced, never mutated; listeners receive the diff
 *   between the previous and the new set, and only when it is non-empty.
 * - An Address resource that does not decode (injected on purpose to test
 *   NACKs) is still served; it simply contributes nothing to the lookups.
 * - Names follow istiod: a workload by its uid, a service by
 *   `namespace/hostname`, a policy by `namespace/name`
 *   (`istio/istio:pilot/pkg/model/service.go` `ResourceName()`); aliases are
 *   `network/ip` for each workload address or service VIP (`Aliases()`).
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import { anyPack, type Any } from '@bufbuild/protobuf/wkt';
import { AuthorizationSchema, type Authorization } from '../gen/istio/security/authorization_pb.js';
import { AddressSchema, type Address, type Service, type Workload } from '../gen/istio/workload/workload_pb.js';
import { DEFAULT_SERVICE_ACCOUNT } from '../model/identity.js';
import { ipFromBytes, networkAddressKey } from '../model/ip.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, type WdsTypeUrl } from '../xds/type-urls.js';
import { diffResourceSets, ResourceSet, type ResourceSetDiff } from './resource-set.js';

/** A whole mesh, as the static-config parser produces it. */
export interface MeshContent {
  readonly addresses: ReadonlyArray<{ readonly name: string; readonly address: Address }>;
  readonly authorizations: ReadonlyArray<{ readonly name: string; readonly authorization: Authorization }>;
}

/** One type's change, delivered to listeners after the state has been updated. */
export interface MeshChange {
  readonly typeUrl: WdsTypeUrl;
  readonly diff: ResourceSetDiff;
}

export type MeshChangeListener = (changes: readonly MeshChange[]) => void;

export function isWdsTypeUrl(typeUrl: string): typeUrl is WdsTypeUrl {
  return typeUrl === ADDRESS_TYPE_URL || typeUrl === AUTHORIZATION_TYPE_URL;
}

/** istiod's resource name for an Address (`ResourceName()`): uid, or `namespace/hostname`. */
function addressResourceName(address: Address): string | undefined {
  switch (address.type.case) {
    case 'workload':
      return address.type.value.uid;
    case 'service':
      return `${address.type.value.namespace}/${address.type.value.hostname}`;
    default:
      return undefined;
  }
}

/** istiod's resource name for a policy: `namespace/name`. */
function authorizationResourceName(policy: Authorization): string {
  return `${policy.namespace}/${policy.name}`;
}

/** `network/ip` for each workload address or service VIP (istiod `AddressInfo.Aliases()`). */
function addressAliases(address: Address): string[] {
  const out: string[] = [];
  if (address.type.case === 'workload') {
    const w = address.type.value;
    for (const raw of w.addresses) {
      const ip = ipFromBytes(raw);
      if (ip !== undefined) out.push(networkAddressKey(w.network, ip));
    }
  } else if (address.type.case === 'service') {
    for (const vip of address.type.value.addresses) {
      const ip = ipFromBytes(vip.address);
      if (ip !== undefined) out.push(networkAddressKey(vip.network, ip));
    }
  }
  return out;
}

/** Lookups over the current Address set. */
export interface AddressIndex {
  /**
   * What an Address subscription name means: itself when it is a resource
   * name (uid or `namespace/hostname`), else the resources having it as an
   * alias (`network/ip`). Empty when nothing matches.
   */
  resolve(name: string): readonly string[];
  /** Workload resource names that list `serviceName` (`namespace/hostname`) in their services. */
  serviceMembers(serviceName: string): readonly string[];
  /** Workload resource names whose `node` is `node`. */
  workloadsOnNode(node: string): readonly string[];
  /** Whether a workload with this namespace and service account runs on `node`. */
  hasServiceAccountOnNode(node: string, namespace: string, serviceAccount: string): boolean;
  /** The decoded workload for a resource name, if it is one that decodes. */
  workload(name: string): Workload | undefined;
  service(name: string): Service | undefined;
}

export class MeshState {
  private addresses = ResourceSet.EMPTY;
  private authorizations = ResourceSet.EMPTY;
  private cachedIndex: AddressIndex | undefined;
  private readonly listeners = new Set<MeshChangeListener>();

  /** The current set for a type. */
  resources(typeUrl: WdsTypeUrl): ResourceSet {
    return typeUrl === ADDRESS_TYPE_URL ? this.addresses : this.authorizations;
  }

  /** Lookups over the current Address set (built on first use after a change). */
  index(): AddressIndex {
    this.cachedIndex ??= buildIndex(this.addresses);
    return this.cachedIndex;
  }

  /** Registers a listener; returns the function that removes it. */
  onChange(listener: MeshChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Replaces the whole state (a mesh-file load), notifying one batch of changes. */
  replace(content: MeshContent): void {
    const addresses = ResourceSet.of(
      content.addresses.map((a) => ({ name: a.name, resource: packAddress(a.address), aliases: addressAliases(a.address) })),
    );
    const authorizations = ResourceSet.of(
      content.authorizations.map((p) => ({ name: p.name, resource: anyPack(AuthorizationSchema, p.authorization) })),
    );
    this.commit(addresses, authorizations);
  }

  /** Inserts or replaces an Address under `name` (default: istiod's resource name). */
  setAddress(address: Address, name = addressResourceName(address) ?? ''): void {
    this.commit(this.addresses.with(name, packAddress(address), addressAliases(address)), this.authorizations);
  }

  setWorkload(workload: Workload): void {
    this.setAddress(create(AddressSchema, { type: { case: 'workload', value: workload } }));
  }

  setService(service: Service): void {
    this.setAddress(create(AddressSchema, { type: { case: 'service', value: service } }));
  }

  setAuthorization(policy: Authorization, name = authorizationResourceName(policy)): void {
    this.commit(this.addresses, this.authorizations.with(name, anyPack(AuthorizationSchema, policy)));
  }

  /**
   * Serves `resource` as-is under `name` (its bytes need not decode: this is
   * how tests inject a malformed resource). Aliases are derived when it decodes.
   */
  setRaw(typeUrl: WdsTypeUrl, name: string, resource: Any): void {
    if (typeUrl === ADDRESS_TYPE_URL) {
      const decoded = tryDecodeAddress(resource);
      this.commit(this.addresses.with(name, resource, decoded ? addressAliases(decoded) : []), this.authorizations);
    } else {
      this.commit(this.addresses, this.authorizations.with(name, resource));
    }
  }

  remove(typeUrl: WdsTypeUrl, name: string): void {
    if (typeUrl === ADDRESS_TYPE_URL) this.commit(this.addresses.without(name), this.authorizations);
    else this.commit(this.addresses, this.authorizations.without(name));
  }

  private commit(addresses: ResourceSet, authorizations: ResourceSet): void {
    const changes: MeshChange[] = [];
    if (addresses !== this.addresses) {
      const diff = diffResourceSets(this.addresses, addresses);
      this.addresses = addresses;
      this.cachedIndex = undefined;
      if (diff.upserted.length > 0 || diff.removed.length > 0) changes.push({ typeUrl: ADDRESS_TYPE_URL, diff });
    }
    if (authorizations !== this.authorizations) {
      const diff = diffResourceSets(this.authorizations, authorizations);
      this.authorizations = authorizations;
      if (diff.upserted.length > 0 || diff.removed.length > 0) changes.push({ typeUrl: AUTHORIZATION_TYPE_URL, diff });
    }
    if (changes.length === 0) return;
    for (const listener of [...this.listeners]) listener(changes);
  }
}

function packAddress(address: Address): Any {
  return anyPack(AddressSchema, address);
}

function tryDecodeAddress(resource: Any): Address | undefined {
  if (resource.typeUrl !== ADDRESS_TYPE_URL) return undefined;
  try {
    return fromBinary(AddressSchema, resource.value);
  } catch {
    return undefined;
  }
}

function buildIndex(addresses: ResourceSet): AddressIndex {
  const aliasToNames = new Map<string, string[]>();
  const members = new Map<string, string[]>();
  const onNode = new Map<string, string[]>();
  const accountsOnNode = new Map<string, Set<string>>();
  const workloads = new Map<string, Workload>();
  const services = new Map<string, Service>();
  const push = (map: Map<string, string[]>, key: string, value: string) => {
    const list = map.get(key);
    if (list) list.push(value);
    else map.set(key, [value]);
  };

  for (const r of addresses.values()) {
    for (const alias of r.aliases) push(aliasToNames, alias, r.name);
    const decoded = tryDecodeAddress(r.resource);
    if (decoded?.type.case === 'workload') {
      const w = decoded.type.value;
      workloads.set(r.name, w);
      for (const serviceName of Object.keys(w.services)) push(members, serviceName, r.name);
      if (w.node !== '') {
        push(onNode, w.node, r.name);
        // An empty service account means "default", as when ztunnel converts the proto.
        const account = `${w.namespace}/${w.serviceAccount || DEFAULT_SERVICE_ACCOUNT}`;
        const set = accountsOnNode.get(w.node) ?? new Set<string>();
        set.add(account);
        accountsOnNode.set(w.node, set);
      }
    } else if (decoded?.type.case === 'service') {
      services.set(r.name, decoded.type.value);
    }
  }

  return {
    resolve: (name) => (addresses.has(name) ? [name] : (aliasToNames.get(name) ?? [])),
    serviceMembers: (serviceName) => members.get(serviceName) ?? [],
    workloadsOnNode: (node) => onNode.get(node) ?? [],
    hasServiceAccountOnNode: (node, namespace, serviceAccount) =>
      accountsOnNode.get(node)?.has(`${namespace}/${serviceAccount}`) ?? false,
    workload: (name) => workloads.get(name),
    service: (name) => services.get(name),
  };
}
