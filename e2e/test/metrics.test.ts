// After traffic, each node's ztunnel exposes Istio's TCP metrics on :15020
// with the labels the dashboards use, filled from the workload state: the
// client's ztunnel reports as "source", the server's as "destination", with
// workload, namespace, canonical service/revision, principals, the service
// and mutual_tls; and the workload manager gauges count the node's pods.
import { describe, expect, it } from 'vitest';
import { EchoServer, exchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { find, parseMetrics, sum, type Sample } from '../lib/prometheus.js';
import { APP_PORT, backs, service } from '../lib/scenario.js';
import { waitFor } from '../lib/wait.js';

const echo = service('echo', 'demo', '10.96.1.10');
const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client-0', node: 'node-a', namespace: 'demo', serviceAccount: 'client', app: 'client', version: 'v7' },
    { name: 'server-0', node: 'node-b', namespace: 'demo', serviceAccount: 'server', app: 'echo', version: 'v2', services: backs(echo) },
  ],
  services: [echo],
});

const CONNECTIONS = 5;
const PAYLOAD = 'x'.repeat(1000);

const peerLabels = {
  source_workload: 'client',
  source_workload_namespace: 'demo',
  source_canonical_service: 'client',
  source_canonical_revision: 'v7',
  source_app: 'client',
  source_version: 'v7',
  source_principal: 'spiffe://cluster.local/ns/demo/sa/client',
  source_cluster: 'Kubernetes',
  destination_workload: 'echo',
  destination_workload_namespace: 'demo',
  destination_canonical_service: 'echo',
  destination_canonical_revision: 'v2',
  destination_app: 'echo',
  destination_version: 'v2',
  destination_principal: 'spiffe://cluster.local/ns/demo/sa/server',
  destination_cluster: 'Kubernetes',
  destination_service: 'echo.demo.svc.cluster.local',
  destination_service_namespace: 'demo',
  destination_service_name: 'echo',
  request_protocol: 'tcp',
  response_flags: '-',
  connection_security_policy: 'mutual_tls',
};

describe('traffic metrics', () => {
  it('reports the connections on both ztunnels with source and destination labels from the workload state', async () => {
    const c = cluster();
    await EchoServer.start('server-0', c.pod('server-0').net.netns, APP_PORT);
    for (let i = 0; i < CONNECTIONS; i++) expect((await exchange(c.pod('client-0').net.netns, echo.vip, 80, PAYLOAD)).echoed).toBe(PAYLOAD);

    // Connections are reported closed a moment after the client saw its echo.
    const closedOn = async (node: string, reporter: string): Promise<Sample[]> =>
      waitFor(`${node}: ${CONNECTIONS} closed connections reported`, async () => {
        const samples = parseMetrics(await c.ztunnel(node).metrics());
        return sum(find(samples, 'istio_tcp_connections_closed_total', { reporter })) >= CONNECTIONS ? samples : undefined;
      });
    const source = await closedOn('node-a', 'source');
    const destination = await closedOn('node-b', 'destination');

    for (const [samples, reporter] of [[source, 'source'], [destination, 'destination']] as const) {
      const where = { reporter, ...peerLabels };
      // One series per reporter for this traffic, with every label as expected.
      const series = find(samples, 'istio_tcp_connections_opened_total', { reporter });
      expect(series.map((s) => s.labels), `${reporter} series`).toEqual([expect.objectContaining(where)]);
      expect(sum(find(samples, 'istio_tcp_connections_opened_total', where))).toBe(CONNECTIONS);
      expect(sum(find(samples, 'istio_tcp_connections_closed_total', where))).toBe(CONNECTIONS);
      // Request direction: the client's bytes; response: the greeting plus the echo.
      expect(sum(find(samples, 'istio_tcp_received_bytes_total', where))).toBeGreaterThanOrEqual(CONNECTIONS * PAYLOAD.length);
      expect(sum(find(samples, 'istio_tcp_sent_bytes_total', where))).toBeGreaterThanOrEqual(CONNECTIONS * PAYLOAD.length);
    }
  });

  it('counts the node\'s in-pod proxies in the workload manager gauges', async () => {
    const c = cluster();
    for (const node of ['node-a', 'node-b']) {
      const samples = parseMetrics(await c.ztunnel(node).metrics());
      expect(sum(find(samples, 'workload_manager_active_proxy_count'))).toBe(1);
      expect(sum(find(samples, 'workload_manager_pending_proxy_count'))).toBe(0);
      expect(sum(find(samples, 'workload_manager_proxies_started_total'))).toBeGreaterThanOrEqual(1);
    }
  });
});
