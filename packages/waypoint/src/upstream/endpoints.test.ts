/** Endpoint candidates from a real store snapshot, and Envoy's LEAST_REQUEST pick with previous_hosts. */
import { describe, expect, it } from 'vitest';
import type { LoadBalancing, Service, Workload } from '@ambient/control';
import { aService, aServiceRef, aWorkload, snapshotOf } from '@ambient/control/testing';
import { EndpointPicker, resolveCandidates, type CandidateSet, type LocalInfo } from './endpoints.js';

const HOST = 'api.apps.svc.cluster.local';
const KEY = `apps/${HOST}`;
const NO_LOCAL: LocalInfo = { network: '', workload: undefined };

function pod(name: string, ip: string, over: Partial<Workload> = {}, ports: ReadonlyArray<readonly [number, number]> = [[80, 0]]): Workload {
  return aWorkload({ uid: `Kubernetes//Pod/apps/${name}`, name, namespace: 'apps', addresses: [ip], services: [aServiceRef(KEY, ports)], ...over });
}

function svc(over: Partial<Service> = {}, ports: ReadonlyArray<readonly [number, number]> = [[80, 8080]]): Service {
  return aService({ namespace: 'apps', hostname: HOST, ...over }, ports);
}

async function candidates(service: Service, workloads: readonly Workload[], port = 80, local: LocalInfo = NO_LOCAL): Promise<CandidateSet> {
  const snapshot = await snapshotOf([service, ...workloads]);
  return resolveCandidates(snapshot, { service: snapshot.service(KEY) ?? service, servicePort: port }, local);
}

function names(set: CandidateSet): string[] {
  if (set.kind === 'none') throw new Error(`no candidates: ${set.reason}`);
  return set.candidates.map((c) => c.endpoint.workload.name).sort();
}

describe('resolveCandidates', () => {
  it('needs the service port, and says so', async () => {
    const set = await candidates(svc(), [pod('a', '10.0.0.1')], 81);
    expect(set).toEqual({ kind: 'none', reason: `service apps/${HOST} has no port 81` });
  });

  it('keeps healthy endpoints with an address on our network and capacity, unless the health policy is AllowAll', async () => {
    const workloads = [
      pod('ok', '10.0.0.1'),
      pod('sick', '10.0.0.2', { status: 'Unhealthy' }),
      pod('zero', '10.0.0.3', { capacity: 0 }),
      pod('remote', '10.0.0.4', { network: 'other' }),
      pod('noip', '10.0.0.5', { addresses: [], hostname: 'vm.example' }),
    ];
    expect(names(await candidates(svc(), workloads))).toEqual(['ok']);
    const allowAll: LoadBalancing = { routingPreference: [], mode: 'Standard', healthPolicy: 'AllowAll' };
    expect(names(await candidates(svc({ loadBalancing: allowAll }), workloads))).toEqual(['ok', 'sick']);
    const none = await candidates(svc(), [workloads[1] as Workload]);
    expect(none).toEqual({ kind: 'none', reason: `service apps/${HOST} has no healthy endpoint for port 80` });
  });

  it('targets the endpoint port map, else the service targetPort; neither means no candidate', async () => {
    const set = await candidates(svc(), [pod('own', '10.0.0.1', {}, [[80, 9090]]), pod('svc', '10.0.0.2', {}, [[80, 0]])]);
    if (set.kind === 'none') throw new Error(set.reason);
    const byName = Object.fromEntries(set.candidates.map((c) => [c.endpoint.workload.name, c.endpoint.address]));
    expect(byName).toEqual({ own: '10.0.0.1:9090', svc: '10.0.0.2:8080' });
    const named = await candidates(svc({}, [[80, 0]]), [pod('x', '10.0.0.3', {}, [[80, 0]])]);
    expect(named.kind).toBe('none');
  });

  it('expects the workload identity and the service SANs over HBONE, none for a workload outside the mesh; IPv6 addresses bracketed', async () => {
    const service = svc({ subjectAltNames: ['spiffe://cluster.local/ns/apps/sa/shared', 'not-a-spiffe-id'] });
    const set = await candidates(service, [pod('mesh', '10.0.0.1'), pod('plain', 'fd00::7', { protocol: 'TCP' })]);
    if (set.kind === 'none') throw new Error(set.reason);
    const mesh = set.candidates.find((c) => c.endpoint.workload.name === 'mesh');
    const plain = set.candidates.find((c) => c.endpoint.workload.name === 'plain');
    expect(mesh?.transport).toBe('hbone');
    expect(mesh?.expectedIdentities.map((i) => i.serviceAccount)).toEqual(['default', 'shared']);
    expect(plain).toMatchObject({ transport: 'plaintext', expectedIdentities: [], ip: 'fd00::7' });
    expect(plain?.endpoint.address).toBe('[fd00::7]:8080');
  });

  it('ranks by locality like ztunnel when the service prefers close endpoints', async () => {
    const here = { region: 'r1', zone: 'z1', subzone: '' };
    const local = pod('waypoint', '10.0.9.9', { locality: here, node: 'n1' });
    const workloads = [
      pod('same-zone', '10.0.0.1', { locality: here, node: 'n2' }),
      pod('same-region', '10.0.0.2', { locality: { ...here, zone: 'z2' } }),
      pod('elsewhere', '10.0.0.3', { locality: { region: 'r2', zone: 'z9', subzone: '' } }),
    ];
    const failover = svc({ loadBalancing: { routingPreference: ['Region', 'Zone'], mode: 'Failover', healthPolicy: 'OnlyHealthy' } });
    expect(names(await candidates(failover, workloads, 80, { network: '', workload: local }))).toEqual(['same-zone']);
    expect(names(await candidates(failover, workloads.slice(1), 80, { network: '', workload: local }))).toEqual(['same-region']);
    // Without knowing our own workload there is nothing to rank by.
    expect(names(await candidates(failover, workloads))).toEqual(['elsewhere', 'same-region', 'same-zone']);
    const strict = svc({ loadBalancing: { routingPreference: ['Region', 'Zone', 'Node'], mode: 'Strict', healthPolicy: 'OnlyHealthy' } });
    const none = await candidates(strict, workloads, 80, { network: '', workload: local });
    expect(none).toEqual({ kind: 'none', reason: `service apps/${HOST} has no endpoint matching its strict routing preference (Region, Zone, Node)` });
  });

  it('pins workload-addressed traffic to the workload, whatever its health', async () => {
    const sick = pod('sick', '10.0.0.2', { status: 'Unhealthy' });
    const service = svc();
    const snapshot = await snapshotOf([service, pod('ok', '10.0.0.1'), sick]);
    const set = resolveCandidates(snapshot, { service, servicePort: 80, workload: sick }, NO_LOCAL);
    expect(names(set)).toEqual(['sick']);
  });

  it('is cached per snapshot endpoint list', async () => {
    const service = svc();
    const snapshot = await snapshotOf([service, pod('a', '10.0.0.1')]);
    const target = { service: snapshot.service(KEY) as Service, servicePort: 80 };
    expect(resolveCandidates(snapshot, target, NO_LOCAL)).toBe(resolveCandidates(snapshot, target, NO_LOCAL));
  });
});

describe('EndpointPicker', () => {
  async function set(workloads: readonly Workload[]): Promise<Extract<CandidateSet, { kind: 'candidates' }>> {
    const s = await candidates(svc(), workloads);
    if (s.kind === 'none') throw new Error(s.reason);
    return s;
  }
  const scripted = (values: readonly number[]) => {
    let i = 0;
    return () => values[i++ % values.length] as number;
  };

  it('takes the less loaded of two random picks; the first on a tie', async () => {
    const s = await set([pod('a', '10.0.0.1'), pod('b', '10.0.0.2'), pod('c', '10.0.0.3')]);
    const key = (n: string) => s.candidates.find((c) => c.endpoint.workload.name === n)?.key ?? '';
    const active = new Map([[key('a'), 5], [key('b'), 1], [key('c'), 1]]);
    // The list is in store order; pick indexes from random * 3.
    const order = s.candidates.map((c) => c.endpoint.workload.name);
    const at = (n: string) => (order.indexOf(n) + 0.5) / 3;
    const picker = (r: number[]) => new EndpointPicker({ random: scripted(r), activeRequests: (k) => active.get(k) ?? 0 });
    expect(picker([at('a'), at('b')]).pick(s).endpoint.workload.name).toBe('b');
    expect(picker([at('b'), at('a')]).pick(s).endpoint.workload.name).toBe('b');
    expect(picker([at('b'), at('c')]).pick(s).endpoint.workload.name).toBe('b');
    expect(picker([at('a'), at('a')]).pick(s).endpoint.workload.name).toBe('a');
  });

  it('with unequal capacities picks by capacity / (active + 1)', async () => {
    const s = await set([pod('big', '10.0.0.1', { capacity: 3 }), pod('small', '10.0.0.2', { capacity: 1 })]);
    expect(s.equalWeights).toBe(false);
    const counts = new Map<string, number>();
    let state = 12345;
    const random = () => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state / 2147483648;
    };
    const picker = new EndpointPicker({ random, activeRequests: () => 0 });
    for (let i = 0; i < 4000; i++) {
      const n = picker.pick(s).endpoint.workload.name;
      counts.set(n, (counts.get(n) ?? 0) + 1);
    }
    const share = (counts.get('big') ?? 0) / 4000;
    expect(share).toBeGreaterThan(0.7);
    expect(share).toBeLessThan(0.8);
  });

  it('previous_hosts: re-picks up to 5 times to avoid attempted endpoints, then takes the last pick', async () => {
    const s = await set([pod('a', '10.0.0.1'), pod('b', '10.0.0.2')]);
    const order = s.candidates.map((c) => c.endpoint.workload.name);
    const at = (n: string) => (order.indexOf(n) + 0.5) / 2;
    const aKey = s.candidates.find((c) => c.endpoint.workload.name === 'a')?.key ?? '';
    let calls = 0;
    const onlyA = new EndpointPicker({ random: () => (calls++, at('a')), activeRequests: () => 0 });
    expect(onlyA.pick(s, new Set([aKey])).endpoint.workload.name).toBe('a');
    expect(calls).toBe(12);
    const thenB = new EndpointPicker({ random: scripted([at('a'), at('a'), at('a'), at('a'), at('b'), at('b')]), activeRequests: () => 0 });
    expect(thenB.pick(s, new Set([aKey])).endpoint.workload.name).toBe('b');
  });
});
