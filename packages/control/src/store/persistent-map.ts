/**
 * A persistent hash map from strings: every version is immutable and a new
 * version shares all unchanged structure with the old one, so a writer can
 * prepare the next store state while readers keep using the current one.
 *
 * Layout: a compressed hash-array-mapped trie in the CHAMP style (Steindorfer
 * & Vinju, 2015). Each node has two 32-bit bitmaps (inline entries, child
 * nodes) and ONE array holding `key, value` pairs followed by child nodes, so
 * an entry costs two array slots plus a share of its node: about 20-30 bytes,
 * against ~37 for a native Map entry and ~150 for immutable.js's Map. Below
 * 32 bits of hash, keys that collide fully go into a flat collision node.
 *
 * Batches go through a TransientMap: nodes it created are edited in place
 * (tagged with its owner token); nodes shared with a published version are
 * copied on first write. `freeze()` publishes the result, after which the
 * transient refuses further edits.
 *
 * Invariants: a child node holds at least two entries (one left after a
 * delete is pulled up into its parent), so equal contents have one shape;
 * arrays are allocated at their exact size; `undefined` is never stored.
 */

type Owner = object;
export type StringHash = (key: string) => number;

const BITS = 5;
const MASK = 31;
// Levels use hash bits 0-4, 5-9, ..., 30-31; past that, keys collide fully.
const MAX_SHIFT = 30;

class BitmapNode<V> {
  constructor(
    public dataMap: number,
    public nodeMap: number,
    /** `k0, v0, k1, v1, ...` for set bits of dataMap, then one child per set bit of nodeMap. */
    public arr: unknown[],
    public owner: Owner | undefined,
  ) {}
}

class CollisionNode<V> {
  constructor(
    /** `k0, v0, k1, v1, ...`, keys with identical 32-bit hashes. */
    public arr: unknown[],
    public owner: Owner | undefined,
  ) {}
}

type Node<V> = BitmapNode<V> | CollisionNode<V>;

/** FNV-1a over UTF-16 code units, finished with murmur3's mixer so every level sees well-spread bits. */
export const fnv1aHash: StringHash = (key) => {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
};

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  x = (x + (x >>> 4)) & 0x0f0f0f0f;
  return Math.imul(x, 0x01010101) >>> 24;
}

const ABSENT: unique symbol = Symbol('absent');

function lookup<V>(root: Node<V>, key: string, hash: number): V | typeof ABSENT {
  let node: Node<V> = root;
  let shift = 0;
  for (;;) {
    if (node instanceof CollisionNode) {
      const arr = node.arr;
      for (let i = 0; i < arr.length; i += 2) if (arr[i] === key) return arr[i + 1] as V;
      return ABSENT;
    }
    const bit = 1 << ((hash >>> shift) & MASK);
    if ((node.dataMap & bit) !== 0) {
      const i = 2 * popcount(node.dataMap & (bit - 1));
      return node.arr[i] === key ? (node.arr[i + 1] as V) : ABSENT;
    }
    if ((node.nodeMap & bit) === 0) return ABSENT;
    node = node.arr[2 * popcount(node.dataMap) + popcount(node.nodeMap & (bit - 1))] as Node<V>;
    shift += BITS;
  }
}

/** Mutable state of one set/delete walk. */
interface Edit {
  readonly owner: Owner | undefined;
  readonly hashOf: StringHash;
  sizeDelta: number;
}

function editable(node: Node<unknown>, edit: Edit): boolean {
  return edit.owner !== undefined && node.owner === edit.owner;
}

function withArr<V>(node: Node<V>, arr: unknown[], dataMap: number, nodeMap: number, edit: Edit): Node<V> {
  if (editable(node, edit)) {
    node.arr = arr;
    if (node instanceof BitmapNode) {
      node.dataMap = dataMap;
      node.nodeMap = nodeMap;
    }
    return node;
  }
  return node instanceof CollisionNode ? new CollisionNode(arr, edit.owner) : new BitmapNode(dataMap, nodeMap, arr, edit.owner);
}

function setSlot<V>(node: Node<V>, index: number, value: unknown, edit: Edit): Node<V> {
  if (editable(node, edit)) {
    node.arr[index] = value;
    return node;
  }
  const arr = node.arr.slice();
  arr[index] = value;
  return node instanceof CollisionNode
    ? new CollisionNode(arr, edit.owner)
    : new BitmapNode(node.dataMap, node.nodeMap, arr, edit.owner);
}

function insert<V>(node: Node<V>, key: string, value: V, hash: number, shift: number, edit: Edit): Node<V> {
  if (node instanceof CollisionNode) {
    const arr = node.arr;
    for (let i = 0; i < arr.length; i += 2) {
      if (arr[i] === key) return arr[i + 1] === value ? node : setSlot(node, i + 1, value, edit);
    }
    edit.sizeDelta = 1;
    return withArr(node, [...arr, key, value], 0, 0, edit);
  }
  const bit = 1 << ((hash >>> shift) & MASK);
  const { dataMap, nodeMap, arr } = node;
  if ((dataMap & bit) !== 0) {
    const i = 2 * popcount(dataMap & (bit - 1));
    const existing = arr[i] as string;
    if (existing === key) return arr[i + 1] === value ? node : setSlot(node, i + 1, value, edit);
    // Two keys share this slot: push both down into a new child.
    const child = mergeTwo<V>(existing, arr[i + 1] as V, edit.hashOf(existing), key, value, hash, shift + BITS, edit.owner);
    edit.sizeDelta = 1;
    const dataEnd = 2 * popcount(dataMap);
    const childAt = dataEnd + popcount(nodeMap & (bit - 1));
    // Drop the pair at i, then place the child among the children in bit order.
    const next = new Array<unknown>(arr.length - 1);
    let w = 0;
    for (let r = 0; r < arr.length; r++) {
      if (r === i || r === i + 1) continue;
      if (r === childAt) next[w++] = child;
      next[w++] = arr[r];
    }
    if (childAt === arr.length) next[w++] = child;
    return withArr(node, next, dataMap ^ bit, nodeMap | bit, edit);
  }
  if ((nodeMap & bit) !== 0) {
    const j = 2 * popcount(dataMap) + popcount(nodeMap & (bit - 1));
    const child = arr[j] as Node<V>;
    const updated = insert(child, key, value, hash, shift + BITS, edit);
    return updated === child ? node : setSlot(node, j, updated, edit);
  }
  edit.sizeDelta = 1;
  const i = 2 * popcount(dataMap & (bit - 1));
  const next = new Array<unknown>(arr.length + 2);
  for (let r = 0; r < i; r++) next[r] = arr[r];
  next[i] = key;
  next[i + 1] = value;
  for (let r = i; r < arr.length; r++) next[r + 2] = arr[r];
  return withArr(node, next, dataMap | bit, nodeMap, edit);
}

function mergeTwo<V>(
  k1: string,
  v1: V,
  h1: number,
  k2: string,
  v2: V,
  h2: number,
  shift: number,
  owner: Owner | undefined,
): Node<V> {
  if (shift > MAX_SHIFT) return new CollisionNode([k1, v1, k2, v2], owner);
  const b1 = (h1 >>> shift) & MASK;
  const b2 = (h2 >>> shift) & MASK;
  if (b1 === b2) return new BitmapNode(0, 1 << b1, [mergeTwo(k1, v1, h1, k2, v2, h2, shift + BITS, owner)], owner);
  return new BitmapNode((1 << b1) | (1 << b2), 0, b1 < b2 ? [k1, v1, k2, v2] : [k2, v2, k1, v1], owner);
}

/** A node left with exactly one entry and no children, which its parent should inline. */
function singleEntry(node: Node<unknown>): boolean {
  return node instanceof CollisionNode ? node.arr.length === 2 : node.nodeMap === 0 && node.arr.length === 2;
}

function remove<V>(node: Node<V>, key: string, hash: number, shift: number, edit: Edit): Node<V> {
  if (node instanceof CollisionNode) {
    const arr = node.arr;
    for (let i = 0; i < arr.length; i += 2) {
      if (arr[i] !== key) continue;
      edit.sizeDelta = -1;
      return withArr(node, [...arr.slice(0, i), ...arr.slice(i + 2)], 0, 0, edit);
    }
    return node;
  }
  const bit = 1 << ((hash >>> shift) & MASK);
  const { dataMap, nodeMap, arr } = node;
  if ((dataMap & bit) !== 0) {
    const i = 2 * popcount(dataMap & (bit - 1));
    if (arr[i] !== key) return node;
    edit.sizeDelta = -1;
    return withArr(node, [...arr.slice(0, i), ...arr.slice(i + 2)], dataMap ^ bit, nodeMap, edit);
  }
  if ((nodeMap & bit) === 0) return node;
  const j = 2 * popcount(dataMap) + popcount(nodeMap & (bit - 1));
  const child = arr[j] as Node<V>;
  const updated = remove(child, key, hash, shift + BITS, edit);
  if (updated === child) return node;
  if (!singleEntry(updated)) return setSlot(node, j, updated, edit);
  // Pull the child's last entry up into this node, in bit order.
  const k = updated.arr[0];
  const v = updated.arr[1];
  const i = 2 * popcount(dataMap & (bit - 1));
  const next = new Array<unknown>(arr.length + 1);
  let w = 0;
  for (let r = 0; r < arr.length; r++) {
    if (r === i) {
      next[w++] = k;
      next[w++] = v;
    }
    if (r !== j) next[w++] = arr[r];
  }
  if (i === arr.length) {
    next[w++] = k;
    next[w++] = v;
  }
  return withArr(node, next, dataMap | bit, nodeMap ^ bit, edit);
}

function forEachIn<V>(node: Node<V>, fn: (value: V, key: string) => void): void {
  const arr = node.arr;
  const dataEnd = node instanceof CollisionNode ? arr.length : 2 * popcount(node.dataMap);
  for (let i = 0; i < dataEnd; i += 2) fn(arr[i + 1] as V, arr[i] as string);
  for (let j = dataEnd; j < arr.length; j++) forEachIn(arr[j] as Node<V>, fn);
}

function* entriesIn<V>(node: Node<V>): Generator<[string, V]> {
  const arr = node.arr;
  const dataEnd = node instanceof CollisionNode ? arr.length : 2 * popcount(node.dataMap);
  for (let i = 0; i < dataEnd; i += 2) yield [arr[i] as string, arr[i + 1] as V];
  for (let j = dataEnd; j < arr.length; j++) yield* entriesIn(arr[j] as Node<V>);
}

const EMPTY_ROOT = new BitmapNode<never>(0, 0, [], undefined);

/** An immutable string-keyed map. `set` and `delete` return new versions; use `asMutable()` for batches. */
export class PersistentMap<V> {
  static #empty = new PersistentMap<never>(EMPTY_ROOT, 0, fnv1aHash);

  /** The empty map; `hash` is replaceable for tests that need collisions. */
  static empty<V>(hash?: StringHash): PersistentMap<V> {
    return hash === undefined ? (PersistentMap.#empty as PersistentMap<V>) : new PersistentMap<V>(EMPTY_ROOT, 0, hash);
  }

  /** @internal */
  readonly root: Node<V>;
  readonly size: number;
  /** @internal */
  readonly hash: StringHash;

  private constructor(root: Node<V>, size: number, hash: StringHash) {
    this.root = root;
    this.size = size;
    this.hash = hash;
  }

  /** @internal */
  static of<V>(root: Node<V>, size: number, hash: StringHash): PersistentMap<V> {
    return size === 0 && hash === fnv1aHash ? PersistentMap.empty<V>() : new PersistentMap(root, size, hash);
  }

  get(key: string): V | undefined {
    const v = lookup(this.root, key, this.hash(key));
    return v === ABSENT ? undefined : v;
  }

  has(key: string): boolean {
    return lookup(this.root, key, this.hash(key)) !== ABSENT;
  }

  set(key: string, value: V): PersistentMap<V> {
    const edit: Edit = { owner: undefined, hashOf: this.hash, sizeDelta: 0 };
    const root = insert(this.root, key, value, this.hash(key), 0, edit);
    return root === this.root ? this : PersistentMap.of(root, this.size + edit.sizeDelta, this.hash);
  }

  delete(key: string): PersistentMap<V> {
    const edit: Edit = { owner: undefined, hashOf: this.hash, sizeDelta: 0 };
    const root = remove(this.root, key, this.hash(key), 0, edit);
    return root === this.root ? this : PersistentMap.of(root, this.size + edit.sizeDelta, this.hash);
  }

  /** A private, editable copy for a batch of changes; this version is never modified. */
  asMutable(): TransientMap<V> {
    return new TransientMap(this);
  }

  forEach(fn: (value: V, key: string) => void): void {
    forEachIn(this.root, fn);
  }

  /** The first value satisfying `predicate`, in iteration order. */
  find(predicate: (value: V, key: string) => boolean): V | undefined {
    for (const [k, v] of entriesIn(this.root)) if (predicate(v, k)) return v;
    return undefined;
  }

  entries(): IterableIterator<[string, V]> {
    return entriesIn(this.root);
  }

  *keys(): IterableIterator<string> {
    for (const [k] of entriesIn(this.root)) yield k;
  }

  *values(): IterableIterator<V> {
    for (const [, v] of entriesIn(this.root)) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return entriesIn(this.root);
  }
}

/** A batch editor over a PersistentMap. Reads see the batch's own edits. */
export class TransientMap<V> {
  #owner: Owner | undefined = {};
  #root: Node<V>;
  #size: number;
  readonly #hash: StringHash;

  constructor(base: PersistentMap<V>) {
    this.#root = base.root;
    this.#size = base.size;
    this.#hash = base.hash;
  }

  get size(): number {
    return this.#size;
  }

  get(key: string): V | undefined {
    const v = lookup(this.#root, key, this.#hash(key));
    return v === ABSENT ? undefined : v;
  }

  has(key: string): boolean {
    return lookup(this.#root, key, this.#hash(key)) !== ABSENT;
  }

  set(key: string, value: V): void {
    const edit = this.#edit();
    this.#root = insert(this.#root, key, value, this.#hash(key), 0, edit);
    this.#size += edit.sizeDelta;
  }

  /** Returns whether the key was present. */
  delete(key: string): boolean {
    const edit = this.#edit();
    this.#root = remove(this.#root, key, this.#hash(key), 0, edit);
    this.#size += edit.sizeDelta;
    return edit.sizeDelta !== 0;
  }

  /** Publishes the batch as an immutable version; the transient cannot be edited afterwards. */
  freeze(): PersistentMap<V> {
    this.#owner = undefined;
    return PersistentMap.of(this.#root, this.#size, this.#hash);
  }

  #edit(): Edit {
    if (this.#owner === undefined) throw new Error('TransientMap edited after freeze()');
    return { owner: this.#owner, hashOf: this.#hash, sizeDelta: 0 };
  }
}
