import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { fnv1aHash, PersistentMap, type StringHash } from './persistent-map.js';

type Op = { readonly kind: 'set'; readonly key: string; readonly value: number } | { readonly kind: 'delete'; readonly key: string };

// Few distinct keys so sets and deletes hit the same entries often.
const keyArb = fc.integer({ min: 0, max: 300 }).map((i) => `k${i}`);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), key: keyArb, value: fc.integer() }),
  fc.record({ kind: fc.constant('delete' as const), key: keyArb }),
);

const hashes: Array<[string, StringHash]> = [
  ['the default hash', fnv1aHash],
  // 3 distinct hashes: deep chains of single-child nodes and collision nodes.
  ['a hash with 3 values', (k) => (fnv1aHash(k) % 3) * 0x4210_8421],
  ['a constant hash (all keys collide)', () => 0xdeadbeef],
  // Equal low bits, differing only in the top bits: splits at the last level.
  ['a hash differing only in bits 30-31', (k) => ((fnv1aHash(k) & 3) << 30) >>> 0],
];

function contents<V>(m: PersistentMap<V>): Array<[string, V]> {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

function sortedEntries<V>(m: Map<string, V>): Array<[string, V]> {
  return [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

describe.each(hashes)('PersistentMap with %s', (_name, hash) => {
  it('behaves like a native Map under persistent set/delete', () => {
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 400 }), (ops) => {
        let m = PersistentMap.empty<number>(hash);
        const model = new Map<string, number>();
        for (const op of ops) {
          if (op.kind === 'set') {
            m = m.set(op.key, op.value);
            model.set(op.key, op.value);
          } else {
            m = m.delete(op.key);
            model.delete(op.key);
          }
        }
        expect(m.size).toBe(model.size);
        expect(contents(m)).toEqual(sortedEntries(model));
        for (let i = 0; i <= 300; i++) {
          expect(m.get(`k${i}`)).toBe(model.get(`k${i}`));
          expect(m.has(`k${i}`)).toBe(model.has(`k${i}`));
        }
      }),
      { numRuns: 60 },
    );
  });

  it('transient batches match the model and never change the version they started from', () => {
    fc.assert(
      fc.property(fc.array(fc.array(opArb, { maxLength: 150 }), { maxLength: 6 }), (batches) => {
        let m = PersistentMap.empty<number>(hash);
        const model = new Map<string, number>();
        const versions: Array<[PersistentMap<number>, Array<[string, number]>]> = [];
        for (const batch of batches) {
          const t = m.asMutable();
          for (const op of batch) {
            if (op.kind === 'set') {
              t.set(op.key, op.value);
              model.set(op.key, op.value);
            } else {
              expect(t.delete(op.key)).toBe(model.delete(op.key));
            }
            expect(t.size).toBe(model.size);
          }
          versions.push([m, contents(m)]);
          m = t.freeze();
          expect(contents(m)).toEqual(sortedEntries(model));
        }
        for (const [version, snapshot] of versions) expect(contents(version)).toEqual(snapshot);
      }),
      { numRuns: 60 },
    );
  });

  it('deleting everything returns to an empty map', () => {
    let m = PersistentMap.empty<number>(hash);
    for (let i = 0; i < 200; i++) m = m.set(`k${i}`, i);
    const t = m.asMutable();
    for (let i = 0; i < 200; i++) t.delete(`k${i}`);
    const empty = t.freeze();
    expect(empty.size).toBe(0);
    expect([...empty.entries()]).toEqual([]);
    expect(m.size).toBe(200);
  });
});

describe('PersistentMap', () => {
  it('returns the same version when nothing changes', () => {
    const m = PersistentMap.empty<number>().set('a', 1);
    expect(m.set('a', 1)).toBe(m);
    expect(m.delete('missing')).toBe(m);
  });

  it('iterates keys, values, forEach and find consistently', () => {
    let m = PersistentMap.empty<number>();
    for (let i = 0; i < 100; i++) m = m.set(`k${i}`, i);
    const keys = [...m.keys()];
    const values = [...m.values()];
    const seen: Array<[string, number]> = [];
    m.forEach((v, k) => seen.push([k, v]));
    expect(seen).toEqual([...m.entries()]);
    expect(keys).toEqual(seen.map(([k]) => k));
    expect(values).toEqual(seen.map(([, v]) => v));
    expect(m.find((v) => v === 42)).toBe(42);
    expect(m.find(() => false)).toBeUndefined();
  });

  it('refuses edits after freeze', () => {
    const t = PersistentMap.empty<number>().asMutable();
    t.set('a', 1);
    const frozen = t.freeze();
    expect(() => t.set('b', 2)).toThrow(/after freeze/);
    expect(frozen.has('b')).toBe(false);
  });
});
