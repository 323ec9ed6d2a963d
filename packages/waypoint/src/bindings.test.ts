import { describe, expect, it } from 'vitest';
import type { GatewayAddress } from '@ambient/control';
import { aService, aWorkload, snapshotOf } from '@ambient/control/testing';
import { computeBindings, type WaypointSelf } from './bindings.js';

const SELF: WaypointSelf = { namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local', podIps: ['10.1.0.9'], network: '' };
const byHostname: GatewayAddress = { destination: { kind: 'hostname', namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local' }, hboneMtlsPort: 15008 };
const byAddress = (address: string): GatewayAddress => ({ destination: { kind: 'address', network: '', address }, hboneMtlsPort: 15008 });
const vip = (address: string) => ({ network: '', address });

describe('computeBindings', () => {
  it('serves the services and workloads whose waypoint names our hostname, our Service VIP or our pod IP', async () => {
    const snapshot = await snapshotOf([
      aService({ namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local', vips: [vip('10.96.0.9')] }, [[15008, 15008]]),
      aService({ namespace: 'demo', hostname: 'a.demo.svc.cluster.local', vips: [vip('10.96.0.1')], waypoint: byHostname }, [[80, 8080], [9090, 9090]]),
      aService({ namespace: 'demo', hostname: 'b.demo.svc.cluster.local', vips: [vip('10.96.0.2')], waypoint: byAddress('10.96.0.9') }),
      aService({ namespace: 'demo', hostname: 'c.demo.svc.cluster.local', vips: [vip('10.96.0.3')], waypoint: byAddress('10.1.0.9') }),
      aService({ namespace: 'demo', hostname: 'other.demo.svc.cluster.local', vips: [vip('10.96.0.4')], waypoint: byAddress('10.96.0.77') }),
      aService({ namespace: 'demo', hostname: 'plain.demo.svc.cluster.local', vips: [vip('10.96.0.5')] }),
      aWorkload({ uid: 'Kubernetes//Pod/demo/pod-0', namespace: 'demo', addresses: ['10.1.0.20'], waypoint: byHostname }),
      aWorkload({ uid: 'Kubernetes//Pod/demo/pod-1', namespace: 'demo', addresses: ['10.1.0.21'] }),
    ]);
    const b = computeBindings(snapshot, SELF);
    expect([...b.services.keys()].sort()).toEqual(['demo/a.demo.svc.cluster.local', 'demo/b.demo.svc.cluster.local', 'demo/c.demo.svc.cluster.local']);
    expect(b.serviceAt('10.96.0.1', 80)?.hostname).toBe('a.demo.svc.cluster.local');
    expect(b.serviceAt('10.96.0.1', 9090)?.hostname).toBe('a.demo.svc.cluster.local');
    expect(b.serviceAt('10.96.0.1', 8080)).toBeUndefined(); // a target port is not a service port
    expect(b.serviceAt('10.96.0.4', 80)).toBeUndefined(); // another waypoint's service
    expect(b.serviceAt('10.96.0.5', 80)).toBeUndefined(); // no waypoint
    expect([...b.workloadsByIp.keys()]).toEqual(['10.1.0.20']);
  });

  it('never serves its own Service, and a hostname in another namespace is not us', async () => {
    const snapshot = await snapshotOf([
      aService({ namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local', vips: [vip('10.96.0.9')], waypoint: byHostname }, [[15008, 15008]]),
      aService({
        namespace: 'prod',
        hostname: 'x.prod.svc.cluster.local',
        vips: [vip('10.96.1.1')],
        waypoint: { destination: { kind: 'hostname', namespace: 'prod', hostname: 'waypoint.demo.svc.cluster.local' }, hboneMtlsPort: 15008 },
      }),
    ]);
    const b = computeBindings(snapshot, SELF);
    expect(b.services.size).toBe(0);
    expect(b.serviceAt('10.96.0.9', 15008)).toBeUndefined();
  });

  it('serves a service that names us as its canary (weighted waypoints)', async () => {
    const snapshot = await snapshotOf([
      aService({
        namespace: 'demo',
        hostname: 'a.demo.svc.cluster.local',
        vips: [vip('10.96.0.1')],
        waypoint: byAddress('10.96.0.77'),
        weightedWaypoints: [{ destination: byHostname, weight: 10 }],
      }),
    ]);
    expect(computeBindings(snapshot, SELF).serviceAt('10.96.0.1', 80)?.hostname).toBe('a.demo.svc.cluster.local');
  });

  it('only answers for VIPs on its own network', async () => {
    const snapshot = await snapshotOf([
      aService({ namespace: 'demo', hostname: 'a.demo.svc.cluster.local', vips: [{ network: 'net-2', address: '10.96.0.1' }], waypoint: byHostname }),
    ]);
    const b = computeBindings(snapshot, SELF);
    expect(b.services.size).toBe(1);
    expect(b.serviceAt('10.96.0.1', 80)).toBeUndefined();
  });
});
