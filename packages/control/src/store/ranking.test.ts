import { describe, expect, it } from 'vitest';
import { aService, aWorkload } from '../testing/model-builders.js';
import { pickBestService, pickWorkloadForAddress, serviceVisibleTo } from './ranking.js';

describe('pickWorkloadForAddress (ztunnel WorkloadByAddr::get)', () => {
  const podHbone = aWorkload({ uid: 'Kubernetes//Pod/ns/a', protocol: 'HBONE' });
  const podTcp = aWorkload({ uid: 'Kubernetes//Pod/ns/b', protocol: 'TCP' });
  const entryHbone = aWorkload({ uid: 'Kubernetes/networking.istio.io/WorkloadEntry/ns/c', protocol: 'HBONE' });
  const entryTcp = aWorkload({ uid: 'Kubernetes/networking.istio.io/WorkloadEntry/ns/d', protocol: 'TCP' });
  const podTcp2 = aWorkload({ uid: 'Kubernetes//Pod/ns/e', protocol: 'TCP' });

  it.each([
    ['a pod beats a non-pod even when the non-pod is HBONE', [entryHbone, podTcp], podTcp],
    ['among pods, HBONE beats TCP', [podHbone, podTcp], podHbone],
    ['among pods, HBONE beats TCP whatever the order', [podTcp, podHbone], podHbone],
    ['among non-pods, HBONE beats TCP', [entryTcp, entryHbone], entryHbone],
    ['equal rank: the last one wins', [podTcp, podTcp2], podTcp2],
    ['equal rank: the last one wins (reversed)', [podTcp2, podTcp], podTcp],
    ['a single candidate', [entryTcp], entryTcp],
  ])('%s', (_name, candidates, expected) => {
    expect(pickWorkloadForAddress(candidates)?.uid).toBe(expected.uid);
  });

  it('returns undefined for no candidates', () => {
    expect(pickWorkloadForAddress([])).toBeUndefined();
  });
});

describe('pickBestService (ztunnel ServiceMatch::find_best_match)', () => {
  const s = (namespace: string, canonical = false) => aService({ namespace, hostname: `h.${namespace}`, canonical });
  const a = s('a');
  const b = s('b');
  const cCanon = s('c', true);
  const dCanon = s('d', true);
  const pref = s('pref');

  it.each([
    ['client namespace wins over canonical', [cCanon, a, b], 'a', undefined, a],
    ['the first in the client namespace wins immediately', [b, a], 'a', 'b', a],
    ['canonical wins over first', [a, cCanon, b], 'x', undefined, cCanon],
    ['the last canonical wins', [cCanon, a, dCanon], 'x', undefined, dCanon],
    ['preferred namespace wins over first', [a, pref, b], 'x', 'pref', pref],
    ['canonical wins over preferred seen later', [cCanon, pref], 'x', 'pref', cCanon],
    ['canonical wins over preferred seen earlier', [pref, cCanon], 'x', 'pref', cCanon],
    ['otherwise the first', [b, a], 'x', 'pref', b],
    ['no client namespace: canonical, then first', [a, b], undefined, undefined, a],
  ])('%s', (_name, candidates, clientNs, preferredNs, expected) => {
    expect(pickBestService(candidates, clientNs, preferredNs)).toBe(expected);
  });

  it('returns undefined for no candidates', () => {
    expect(pickBestService([], 'a', 'b')).toBeUndefined();
  });
});

describe('serviceVisibleTo', () => {
  it.each([
    ['Public', 'other', true],
    ['Namespace', 'own', true],
    ['Namespace', 'other', false],
  ] as const)('%s visibility, client in %s namespace: %s', (visibility, client, expected) => {
    const svc = aService({ namespace: 'own', hostname: 'h', visibility });
    expect(serviceVisibleTo(svc, client)).toBe(expected);
  });
});
