import type { LoadBalancing, Service, ServiceEndpoint, Workload } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { aService, aWorkload, gwAddress, randomSequence } from '../../test/model-fixtures.js';
import { loadBalance, pickServiceWaypoint, weightedPick } from './load-balance.js';

describe('weightedPick', () => {
  const items = ['a', 'b', 'c'] as const;
  it.each<[string, number[], number, string | undefined]>([
    ['equal weights, low random', [1, 1, 1], 0, 'a'],
    ['equal weights, middle random', [1, 1, 1], 0.5, 'b'],
    ['equal weights, high random', [1, 1, 1], 0.999, 'c'],
    ['zero weight skipped at the start', [0, 1, 1], 0, 'b'],
    ['zero weight skipped in the middle', [1, 0, 1], 0.5, 'c'],
    ['all zero: nothing', [0, 0, 0], 0.5, undefined],
    ['negative and NaN weights are never chosen', [-5, Number.NaN, 2], 0.1, 'c'],
    ['random of exactly 1 still picks a positive element', [1, 1, 0], 1, 'b'],
    ['random out of range is clamped', [1, 1, 1], -3, 'a'],
  ])('%s', (_name, weights, r, want) => {
    expect(weightedPick(items, (i) => weights[items.indexOf(i)] ?? 0, () => r)).toBe(want);
  });
});

describe('pickServiceWaypoint', () => {
  const a = gwAddress('10.0.0.1');
  const b = gwAddress('10.0.0.2');
  const c = gwAddress('10.0.0.3');
  const svc = (over: Partial<Service>) => aService({ namespace: 'ns', hostname: 'h', ...over });
  it.each<[string, Partial<Service>, number, unknown]>([
    ['no waypoint at all', {}, 0, undefined],
    ['the single waypoint field', { waypoint: a }, 0, a],
    ['weighted set wins over the single field', { waypoint: c, weightedWaypoints: [{ destination: b, weight: 1 }] }, 0, b],
    ['all-zero weighted set falls back to the single field', { waypoint: c, weightedWaypoints: [{ destination: b, weight: 0 }] }, 0, c],
  ])('%s', (_name, over, r, want) => {
    expect(pickServiceWaypoint(svc(over), () => r)).toBe(want);
  });
});

describe('loadBalance locality ranking', () => {
  const src = aWorkload({ uid: 'src', network: 'n1', locality: { region: 'r1', zone: 'z1', subzone: 's1' }, node: 'node-a', clusterId: 'c1' });
  const ep = (name: string, over: Partial<Workload>): ServiceEndpoint => {
    const workload = aWorkload({ uid: name, addresses: ['10.0.0.9'], network: 'n1', networkGateway: gwAddress('10.9.9.9'), ...over });
    return { workloadUid: name, ports: new Map([[80, 8080]]), status: workload.status, workload };
  };
  const lb = (mode: LoadBalancing['mode'], routingPreference: LoadBalancing['routingPreference']): Service =>
    aService({ namespace: 'ns', hostname: 'h', loadBalancing: { mode, routingPreference, healthPolicy: 'OnlyHealthy' } });
  const pickAll = (service: Service, endpoints: ServiceEndpoint[]) => {
    // Sweep random over [0, 1) to collect every endpoint that can be chosen.
    const seen = new Set<string>();
    for (let i = 0; i < 20; i++) {
      const r = loadBalance({ source: src, service, servicePort: 80, mode: 'standard', endpoints, random: randomSequence(i / 20) });
      if (r.kind === 'picked') seen.add(r.workload.uid);
    }
    return [...seen].sort();
  };

  it.each<[string, Service, ServiceEndpoint[], string[]]>([
    [
      'Network first: a same-network endpoint outranks a same-region one on another network',
      lb('Failover', ['Network', 'Region']),
      [ep('same-net-other-region', { locality: { region: 'r9', zone: '', subzone: '' } }), ep('other-net-same-region', { network: 'n2', locality: { region: 'r1', zone: '', subzone: '' } })],
      ['same-net-other-region'],
    ],
    [
      'Network first: on other networks, the rest of the preferences still rank',
      lb('Failover', ['Network', 'Region']),
      [ep('a', { network: 'n2', locality: { region: 'r1', zone: '', subzone: '' } }), ep('b', { network: 'n3', locality: { region: 'r2', zone: '', subzone: '' } })],
      ['a'],
    ],
    [
      'Strict with Network first: another network never qualifies',
      lb('Strict', ['Network', 'Region']),
      [ep('a', { network: 'n2', locality: { region: 'r1', zone: '', subzone: '' } })],
      [],
    ],
    [
      'Subzone counts only after region and zone match',
      lb('Failover', ['Region', 'Zone', 'Subzone']),
      [ep('full', { locality: { region: 'r1', zone: 'z1', subzone: 's1' } }), ep('zone', { locality: { region: 'r1', zone: 'z1', subzone: 's2' } }), ep('subzone-only', { locality: { region: 'r2', zone: 'z2', subzone: 's1' } })],
      ['full'],
    ],
    [
      'ranking stops at the first mismatch',
      lb('Failover', ['Region', 'Node']),
      [ep('node-only', { node: 'node-a', locality: { region: 'r9', zone: '', subzone: '' } }), ep('region-only', { node: 'node-z', locality: { region: 'r1', zone: '', subzone: '' } })],
      ['region-only'],
    ],
    [
      'equal ranks share the traffic',
      lb('Failover', ['Region']),
      [ep('a', { locality: { region: 'r1', zone: 'x', subzone: '' } }), ep('b', { locality: { region: 'r1', zone: 'y', subzone: '' } })],
      ['a', 'b'],
    ],
    ['no load balancing: everything qualifies', aService({ namespace: 'ns', hostname: 'h' }), [ep('a', { network: 'n2' }), ep('b', {})], ['a', 'b']],
  ])('%s', (_name, service, endpoints, want) => {
    expect(pickAll(service, endpoints)).toEqual(want);
  });
});
