import { describe, expect, it } from 'vitest';
import { MetricsRegistry } from '@ambient/dataplane';
import { TRAFFIC_LABEL_NAMES, TrafficMetrics, trafficLabels, type WorkloadLabelSource } from './traffic.js';

function wl(over: Partial<WorkloadLabelSource> & { sa?: string } = {}): WorkloadLabelSource {
  return {
    name: over.name ?? 'pod-0',
    namespace: over.namespace ?? 'default',
    workloadName: over.workloadName ?? 'app',
    canonicalName: over.canonicalName ?? 'app',
    canonicalRevision: over.canonicalRevision ?? 'v1',
    identity: over.identity ?? { trustDomain: 'cluster.local', namespace: over.namespace ?? 'default', serviceAccount: over.sa ?? 'default' },
    clusterId: over.clusterId ?? 'Kubernetes',
    locality: over.locality,
  };
}

const sleep = wl({ name: 'sleep-7656cf8794-9v2gv', workloadName: 'sleep', canonicalName: 'sleep', canonicalRevision: 'latest', sa: 'sleep' });
const helloworld = wl({
  name: 'helloworld-v1-abc',
  workloadName: 'helloworld-v1',
  canonicalName: 'helloworld',
  canonicalRevision: 'v1',
  sa: 'helloworld',
  locality: { region: 'eu-west1', zone: 'eu-west1-b', subzone: '' },
});

describe('trafficLabels', () => {
  it('keys the labels in ztunnel order, locality last', () => {
    const l = trafficLabels({ reporter: 'source', source: sleep, securityPolicy: 'unknown' });
    expect(Object.keys(l)).toEqual([...TRAFFIC_LABEL_NAMES]);
  });

  it('fills an outbound HBONE connection to a service (the raw sample from istio/ztunnel#404)', () => {
    const l = trafficLabels({
      reporter: 'source',
      source: sleep,
      // Outbound HBONE reports our own identity as the (mTLS) source principal.
      derivedSource: { identity: sleep.identity },
      destination: helloworld,
      destinationService: { hostname: 'helloworld.default.svc.cluster.local', name: 'helloworld', namespace: 'default' },
      securityPolicy: 'mutual_tls',
    });
    expect(l).toEqual({
      reporter: 'source',
      source_workload: 'sleep',
      source_canonical_service: 'sleep',
      source_canonical_revision: 'latest',
      source_workload_namespace: 'default',
      source_principal: 'spiffe://cluster.local/ns/default/sa/sleep',
      source_app: 'sleep',
      source_version: 'latest',
      source_cluster: 'Kubernetes',
      destination_service: 'helloworld.default.svc.cluster.local',
      destination_service_namespace: 'default',
      destination_service_name: 'helloworld',
      destination_workload: 'helloworld-v1',
      destination_canonical_service: 'helloworld',
      destination_canonical_revision: 'v1',
      destination_workload_namespace: 'default',
      destination_principal: 'spiffe://cluster.local/ns/default/sa/helloworld',
      destination_app: 'helloworld',
      destination_version: 'v1',
      destination_cluster: 'Kubernetes',
      request_protocol: 'tcp',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
      source_region: 'unknown',
      source_zone: 'unknown',
      destination_region: 'eu-west1',
      destination_zone: 'eu-west1-b',
    });
  });

  it('never sets source_principal from the WDS source alone (plain TCP outbound)', () => {
    const l = trafficLabels({ reporter: 'source', source: sleep, destination: helloworld, securityPolicy: 'unknown' });
    expect(l.source_principal).toBe('unknown');
    expect(l.connection_security_policy).toBe('unknown');
    // The destination principal is the destination workload's identity, mTLS or not.
    expect(l.destination_principal).toBe('spiffe://cluster.local/ns/default/sa/helloworld');
  });

  it('fills an inbound connection: destination reporter, peer identity as source principal', () => {
    const l = trafficLabels({
      reporter: 'destination',
      source: sleep,
      derivedSource: { identity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' } },
      destination: helloworld,
      securityPolicy: 'mutual_tls',
    });
    expect(l.reporter).toBe('destination');
    expect(l.source_workload).toBe('sleep');
    expect(l.source_principal).toBe('spiffe://cluster.local/ns/default/sa/sleep');
    expect(l.destination_service).toBe('unknown');
  });

  it('takes the source from baggage when the source workload is unknown (gateway traffic), app from the workload name', () => {
    const l = trafficLabels({
      reporter: 'destination',
      derivedSource: {
        workloadName: 'client-v2',
        app: 'client',
        revision: 'v2',
        namespace: 'remote',
        clusterId: 'cluster-2',
        region: 'us-east1',
        zone: 'us-east1-a',
        identity: { trustDomain: 'cluster.local', namespace: 'remote', serviceAccount: 'client' },
      },
      destination: helloworld,
      securityPolicy: 'mutual_tls',
    });
    expect(l).toMatchObject({
      source_workload: 'client-v2',
      source_canonical_service: 'client',
      source_canonical_revision: 'v2',
      source_workload_namespace: 'remote',
      source_principal: 'spiffe://cluster.local/ns/remote/sa/client',
      source_app: 'client-v2',
      source_version: 'v2',
      source_cluster: 'cluster-2',
      source_region: 'us-east1',
      source_zone: 'us-east1-a',
    });
  });

  it('lets the WDS source win over baggage for everything but the principal', () => {
    const l = trafficLabels({
      reporter: 'destination',
      source: sleep,
      derivedSource: { workloadName: 'spoofed', app: 'spoofed', namespace: 'evil', identity: sleep.identity },
      destination: helloworld,
      securityPolicy: 'mutual_tls',
    });
    expect(l.source_workload).toBe('sleep');
    expect(l.source_workload_namespace).toBe('default');
    expect(l.source_principal).toBe('spiffe://cluster.local/ns/default/sa/sleep');
  });

  it('reports the waypoint as destination workload and the intended service as destination service', () => {
    const waypoint = wl({ name: 'waypoint-abc', workloadName: 'waypoint', canonicalName: 'waypoint', canonicalRevision: 'latest', sa: 'waypoint' });
    const l = trafficLabels({
      reporter: 'source',
      source: sleep,
      derivedSource: { identity: sleep.identity },
      destination: waypoint,
      destinationService: { hostname: 'helloworld.default.svc.cluster.local', name: 'helloworld', namespace: 'default' },
      securityPolicy: 'mutual_tls',
    });
    expect(l.destination_workload).toBe('waypoint');
    expect(l.destination_principal).toBe('spiffe://cluster.local/ns/default/sa/waypoint');
    expect(l.destination_service).toBe('helloworld.default.svc.cluster.local');
    expect(l.destination_service_name).toBe('helloworld');
  });

  it('uses the double-HBONE response baggage for the destination', () => {
    const l = trafficLabels({
      reporter: 'source',
      source: sleep,
      derivedDestination: { workloadName: 'remote-v1', app: 'remote', revision: 'v1', namespace: 'far', identity: { trustDomain: 'cluster.local', namespace: 'far', serviceAccount: 'remote' } },
      securityPolicy: 'mutual_tls',
    });
    expect(l).toMatchObject({ destination_workload: 'remote-v1', destination_app: 'remote-v1', destination_canonical_service: 'remote', destination_principal: 'spiffe://cluster.local/ns/far/sa/remote' });
  });

  it('writes "unknown" for every empty value', () => {
    const l = trafficLabels({
      reporter: 'source',
      source: wl({ workloadName: '', canonicalName: '', canonicalRevision: '', clusterId: '' }),
      destinationService: { hostname: 'x.ns.svc.cluster.local', name: '', namespace: '' },
      securityPolicy: 'unknown',
    });
    expect(l.source_workload).toBe('unknown');
    expect(l.source_app).toBe('unknown');
    expect(l.source_cluster).toBe('unknown');
    expect(l.destination_service_name).toBe('unknown');
    for (const v of Object.values(l)) expect(v).not.toBe('');
  });

  it('omits the locality labels only when nothing about either peer is known', () => {
    const l = trafficLabels({ reporter: 'source', securityPolicy: 'unknown' });
    expect(Object.keys(l)).toHaveLength(23);
    expect(l.source_region).toBeUndefined();
  });

  it('carries the response flag it is given', () => {
    expect(trafficLabels({ reporter: 'source', securityPolicy: 'unknown' }, 'DENY').response_flags).toBe('DENY');
  });
});

describe('TrafficMetrics', () => {
  const sample = (text: string, metric: string, flags = '-') =>
    text.split('\n').find((line) => line.startsWith(`${metric}{`) && line.includes(`response_flags="${flags}"`))?.split(' ').at(-1);

  it('counts opens, bytes (live at scrape time) and closes under the right labels', async () => {
    const registry = new MetricsRegistry();
    const t = new TrafficMetrics(registry.sub('istio'));
    const before = await registry.encode('prometheus');
    expect(before).not.toContain('istio_tcp_');

    const r = t.open({ reporter: 'source', source: sleep, destination: helloworld, securityPolicy: 'mutual_tls' });
    r.addReceived(100);
    r.addSent(7);
    let text = await registry.encode('prometheus');
    expect(sample(text, 'istio_tcp_connections_opened_total')).toBe('1');
    expect(sample(text, 'istio_tcp_received_bytes_total')).toBe('100');
    expect(sample(text, 'istio_tcp_sent_bytes_total')).toBe('7');
    expect(text).not.toContain('istio_tcp_connections_closed_total');

    r.addReceived(1);
    expect(r.close('-')).toBe(true);
    expect(r.close('CONNECT')).toBe(false);
    r.addReceived(1000); // after close: never counted
    text = await registry.encode('prometheus');
    expect(sample(text, 'istio_tcp_received_bytes_total')).toBe('101');
    expect(sample(text, 'istio_tcp_connections_closed_total')).toBe('1');
    expect(text).not.toContain('istio_tcp_connections_failed_total');
  });

  it('records closes and failures under the final flag, bytes under the opening labels', async () => {
    const registry = new MetricsRegistry();
    const t = new TrafficMetrics(registry.sub('istio'));
    const r = t.open({ reporter: 'destination', destination: helloworld, securityPolicy: 'mutual_tls' });
    r.addSent(5);
    r.close('DENY');
    const text = await registry.encode('prometheus');
    expect(sample(text, 'istio_tcp_connections_opened_total')).toBe('1');
    expect(sample(text, 'istio_tcp_sent_bytes_total')).toBe('5');
    expect(sample(text, 'istio_tcp_connections_closed_total', 'DENY')).toBe('1');
    expect(sample(text, 'istio_tcp_connections_failed_total', 'DENY')).toBe('1');
    expect(sample(text, 'istio_tcp_connections_closed_total')).toBeUndefined();
  });

  it('tracks open sockets per reporter; a release counts once', async () => {
    const registry = new MetricsRegistry();
    const t = new TrafficMetrics(registry.sub('istio'));
    const a = t.socketOpened('source');
    t.socketOpened('source');
    const c = t.socketOpened('destination');
    a();
    a();
    c();
    const text = await registry.encode('prometheus');
    expect(text).toContain('istio_tcp_sockets_open{reporter="source"} 1');
    expect(text).toContain('istio_tcp_sockets_open{reporter="destination"} 0');
  });

  it('counts on-demand DNS lookups by source and hostname', async () => {
    const registry = new MetricsRegistry();
    const t = new TrafficMetrics(registry.sub('istio'));
    t.onDemandDns(sleep, 'api.example.com');
    expect(await registry.encode('prometheus')).toContain(
      'istio_on_demand_dns_total{source_workload="sleep",source_canonical_service="sleep",source_canonical_revision="latest",source_workload_namespace="default",source_principal="spiffe://cluster.local/ns/default/sa/sleep",source_app="sleep",source_version="latest",source_cluster="Kubernetes",hostname="api.example.com"} 1',
    );
  });
});
