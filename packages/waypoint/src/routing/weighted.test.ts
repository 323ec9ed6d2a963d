import { describe, expect, it } from 'vitest';
import type { WeightedBackend } from './types.js';
import { pickWeighted } from './weighted.js';

/** mulberry32: a small deterministic PRNG in [0, 1). */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const backend = (name: string, weight: number): WeightedBackend => ({
  target: { group: '', kind: 'Service', namespace: 'ns', name, port: 8080 },
  port: 8080,
  weight,
  filters: [],
});

describe('pickWeighted', () => {
  it('maps the random point onto cumulative weights (Envoy: random % total)', () => {
    const bs = [backend('a', 70), backend('b', 30)];
    expect(pickWeighted(bs, () => 0)?.target.name).toBe('a');
    expect(pickWeighted(bs, () => 0.699)?.target.name).toBe('a');
    expect(pickWeighted(bs, () => 0.7)?.target.name).toBe('b');
    expect(pickWeighted(bs, () => 0.9999999)?.target.name).toBe('b');
    expect(pickWeighted(bs, () => 1)?.target.name).toBe('b');
  });

  it('never picks a weight-0 backend among others; a single backend is always picked', () => {
    const bs = [backend('zero', 0), backend('one', 1)];
    for (const r of [0, 0.3, 0.99]) expect(pickWeighted(bs, () => r)?.target.name).toBe('one');
    expect(pickWeighted([backend('only', 0)], () => 0.5)?.target.name).toBe('only');
  });

  it('answers undefined when there is nothing to pick', () => {
    expect(pickWeighted([], () => 0.5)).toBeUndefined();
    expect(pickWeighted([backend('a', 0), backend('b', 0)], () => 0.5)).toBeUndefined();
  });

  it('MeshHTTPRouteWeight / MeshGRPCRouteWeight (70/30, a weight-0 echo-v3): batches of 500 pass the ±5% check as an honest sampler does', () => {
    const bs = [backend('echo-v1', 70), backend('echo-v2', 30), backend('echo-v3', 0)];
    const random = seeded(7);
    let failedBatches = 0;
    let total = 0;
    let v1 = 0;
    for (let batch = 0; batch < 200; batch++) {
      const counts = new Map<string, number>();
      for (let i = 0; i < 500; i++) {
        const name = pickWeighted(bs, random)?.target.name ?? 'none';
        counts.set(name, (counts.get(name) ?? 0) + 1);
      }
      expect(counts.get('echo-v3')).toBeUndefined();
      const share1 = (counts.get('echo-v1') ?? 0) / 500;
      if (Math.abs(share1 - 0.7) > 0.05 || Math.abs((counts.get('echo-v2') ?? 0) / 500 - 0.3) > 0.05) failedBatches++;
      total += 500;
      v1 += counts.get('echo-v1') ?? 0;
    }
    // σ ≈ 0.0205 per batch, so ±0.05 fails ~1.5% of honest batches; the suite allows 10 attempts.
    expect(failedBatches).toBeLessThanOrEqual(10);
    expect(Math.abs(v1 / total - 0.7)).toBeLessThan(0.005);
  });

  it('splits exactly by weight over an even sweep of the random space', () => {
    const bs = [backend('a', 1), backend('b', 2), backend('c', 3)];
    const counts = { a: 0, b: 0, c: 0 } as Record<string, number>;
    const n = 6000;
    for (let i = 0; i < n; i++) {
      const name = pickWeighted(bs, () => i / n)?.target.name as string;
      counts[name] = (counts[name] ?? 0) + 1;
    }
    expect(counts).toEqual({ a: 1000, b: 2000, c: 3000 });
  });
});
