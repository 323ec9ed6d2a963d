/**
 * Weighted backend choice, as Envoy's weighted_clusters picks per request: a random integer in
 * [0, total weight), then the first backend whose cumulative weight exceeds it. Weight-0 backends
 * are never chosen (the compiler already drops them when others exist; a single backend is always
 * chosen, whatever its weight, as Istio then configures a plain cluster). Chosen per request, so a
 * multiplexed gRPC connection is balanced per stream. Pure: the randomness is injected.
 */
import type { Random } from '@ambient/control';
import type { WeightedBackend } from './types.js';

/** The backend for one request, or undefined when there is none to choose (empty, or all weights 0). */
export function pickWeighted(backends: readonly WeightedBackend[], random: Random): WeightedBackend | undefined {
  const n = backends.length;
  if (n === 0) return undefined;
  if (n === 1) return backends[0];
  let total = 0;
  for (let i = 0; i < n; i++) total += (backends[i] as WeightedBackend).weight;
  if (total <= 0) return undefined;
  // Math.min guards a Random that returns exactly 1.
  const point = Math.min(Math.floor(random() * total), total - 1);
  let cumulative = 0;
  for (let i = 0; i < n; i++) {
    const b = backends[i] as WeightedBackend;
    cumulative += b.weight;
    if (point < cumulative) return b;
  }
  return backends[n - 1];
}
