/**
 * Versioned resource sets: for one type URL, the map from resource name to its
 * packed `Any` and a version, plus the diff between two sets.
 *
 * A version is a content hash of the serialized bytes (type URL + `Any.value`),
 * so the same resource always has the same version, across restarts of the
 * control plane too. That is what makes `initial_resource_versions` useful on
 * reconnect: a client that echoes a version we would compute again is sent
 * nothing for that name (Envoy delta xDS protocol, "resource versions").
 *
 * Sets are immutable; every mutation returns a new set and leaves the old one
 * (which streams may still be diffing against) untouched.
 */
import { createHash } from 'node:crypto';
import type { Any } from '@bufbuild/protobuf/wkt';

/** One resource as served: its xDS name, aliases, version and packed value. */
export interface VersionedResource {
  readonly name: string;
  /** Content hash of the serialized bytes; never empty. */
  readonly version: string;
  /** Other names that resolve to this resource (e.g. `network/ip` for an Address). */
  readonly aliases: readonly string[];
  readonly resource: Any;
}

/** The difference from one set to another. Names are sorted. */
export interface ResourceSetDiff {
  /** Names that are new, or whose version changed. */
  readonly upserted: readonly string[];
  /** Names present before and absent now. */
  readonly removed: readonly string[];
}

/** Hex prefix length of the SHA-256 used as a version (64 bits: collisions are not a practical concern here). */
const VERSION_HEX_CHARS = 16;

/** The version of a packed resource: a hash of its type URL and bytes. */
export function resourceVersion(resource: Any): string {
  return createHash('sha256')
    .update(resource.typeUrl)
    .update('\0')
    .update(resource.value)
    .digest('hex')
    .slice(0, VERSION_HEX_CHARS);
}

export class ResourceSet {
  static readonly EMPTY = new ResourceSet(new Map());

  private constructor(private readonly byName: ReadonlyMap<string, VersionedResource>) {}

  /** Builds a set from entries; a later entry with the same name replaces an earlier one. */
  static of(entries: Iterable<{ name: string; resource: Any; aliases?: readonly string[] }>): ResourceSet {
    const map = new Map<string, VersionedResource>();
    for (const e of entries) map.set(e.name, versioned(e.name, e.resource, e.aliases ?? []));
    return new ResourceSet(map);
  }

  get size(): number {
    return this.byName.size;
  }

  get(name: string): VersionedResource | undefined {
    return this.byName.get(name);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  names(): IterableIterator<string> {
    return this.byName.keys();
  }

  values(): IterableIterator<VersionedResource> {
    return this.byName.values();
  }

  /** A new set with `name` set to `resource` (the same set when nothing changed). */
  with(name: string, resource: Any, aliases: readonly string[] = []): ResourceSet {
    const next = versioned(name, resource, aliases);
    const current = this.byName.get(name);
    if (current && current.version === next.version && sameStrings(current.aliases, next.aliases)) return this;
    const map = new Map(this.byName);
    map.set(name, next);
    return new ResourceSet(map);
  }

  /** A new set without `name` (the same set when it was absent). */
  without(name: string): ResourceSet {
    if (!this.byName.has(name)) return this;
    const map = new Map(this.byName);
    map.delete(name);
    return new ResourceSet(map);
  }
}

/** What changed from `before` to `after`. Alias-only changes count as upserts. */
export function diffResourceSets(before: ResourceSet, after: ResourceSet): ResourceSetDiff {
  const upserted: string[] = [];
  const removed: string[] = [];
  for (const r of after.values()) {
    const old = before.get(r.name);
    if (!old || old.version !== r.version || !sameStrings(old.aliases, r.aliases)) upserted.push(r.name);
  }
  for (const name of before.names()) if (!after.has(name)) removed.push(name);
  return { upserted: upserted.sort(), removed: removed.sort() };
}

function versioned(name: string, resource: Any, aliases: readonly string[]): VersionedResource {
  return { name, version: resourceVersion(resource), aliases: [...aliases], resource };
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
