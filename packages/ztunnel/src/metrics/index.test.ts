/**
 * The metrics contract with Istio's dashboards, Kiali and ztunnel's own
 * `test_stats_exist`: names, types, HELP stability words, and labels a proxy
 * must never emit.
 */
import { describe, expect, it } from 'vitest';
import { createZtunnelMetrics } from './index.js';

const fixedProbe = { openFds: () => 12, maxFds: () => 1024 };

/** HELP of these must not say "unstable"; every other family's must say "(unstable)" (tests/direct.rs). */
const STABLE = new Set([
  'istio_build',
  'istio_tcp_connections_opened',
  'istio_tcp_connections_closed',
  'istio_tcp_received_bytes',
  'istio_tcp_sent_bytes',
  'process_max_fds',
  'process_open_fds',
]);

function exercise() {
  const m = createZtunnelMetrics({ istioVersion: '1.29.0', processProbe: fixedProbe });
  const identity = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'a' };
  const wl = { name: 'a-0', namespace: 'default', workloadName: 'a', canonicalName: 'a', canonicalRevision: 'v1', identity, clusterId: 'Kubernetes', locality: undefined };
  const r = m.traffic.open({ reporter: 'source', source: wl, destination: wl, securityPolicy: 'mutual_tls' });
  r.addReceived(1);
  r.close('CONNECT');
  m.traffic.socketOpened('source');
  m.traffic.onDemandDns(wl, 'example.com');
  m.xds.onMessage('type.googleapis.com/istio.workload.Address', 100);
  m.xds.onTermination('Reconnect');
  m.refusals.refused('tls_handshake_timeout', 'inbound');
  m.workloadManager?.proxiesStarted.inc();
  return m;
}

describe('ztunnel metrics contract', () => {
  it('exposes exactly the expected families with ztunnel types', () => {
    const m = exercise();
    try {
      const families = Object.fromEntries(m.registry.families().map((f) => [f.name, f.type]));
      expect(families).toEqual({
        process_open_fds: 'gauge',
        process_max_fds: 'gauge',
        nodejs_eventloop_lag_p99_seconds: 'gauge',
        nodejs_eventloop_lag_max_seconds: 'gauge',
        nodejs_eventloop_busy_seconds: 'counter',
        nodejs_active_resources: 'gauge',
        process_resident_memory_bytes: 'gauge',
        nodejs_heap_used_bytes: 'gauge',
        ztunnel_connections_refused: 'counter',
        istio_build: 'gauge',
        istio_xds_connection_terminations: 'counter',
        istio_xds_message: 'counter',
        istio_xds_message_bytes: 'counter',
        istio_tcp_connections_opened: 'counter',
        istio_tcp_connections_closed: 'counter',
        istio_tcp_received_bytes: 'counter',
        istio_tcp_sent_bytes: 'counter',
        istio_tcp_connections_failed: 'counter',
        istio_tcp_sockets_open: 'gauge',
        istio_on_demand_dns: 'counter',
        workload_manager_active_proxy_count: 'gauge',
        workload_manager_pending_proxy_count: 'gauge',
        workload_manager_proxies_started: 'counter',
        workload_manager_proxies_stopped: 'counter',
      });
    } finally {
      m.close();
    }
  });

  it('keeps the HELP stability contract of test_stats_exist, and every HELP ends with "."', () => {
    const m = exercise();
    try {
      for (const f of m.registry.families()) {
        if (STABLE.has(f.name)) expect(f.help, f.name).not.toContain('unstable');
        else expect(f.help, f.name).toContain('(unstable)');
        expect(f.help.endsWith('.'), f.name).toBe(true);
      }
    } finally {
      m.close();
    }
  });

  it('never emits pod, namespace, app, node, job or instance labels, and no tokio_* names', async () => {
    const m = exercise();
    try {
      for (const format of ['prometheus', 'openmetrics'] as const) {
        const text = await m.registry.encode(format);
        for (const line of text.split('\n').filter((l) => l !== '' && !l.startsWith('#'))) {
          const names = [...(line.match(/[{,]([a-z_]+)="/g) ?? [])].map((s) => s.slice(1, -2));
          for (const forbidden of ['pod', 'namespace', 'app', 'node', 'job', 'instance']) expect(names, line).not.toContain(forbidden);
        }
        expect(text).not.toMatch(/^tokio_/m);
      }
    } finally {
      m.close();
    }
  });

  it('shows istio_build, gauges and process figures before any traffic, and no traffic families', async () => {
    const m = createZtunnelMetrics({ istioVersion: '', processProbe: fixedProbe, runtime: false });
    const text = await m.registry.encode('prometheus');
    expect(text).toContain('istio_build{component="ztunnel",tag="unknown"} 1');
    expect(text).toContain('process_open_fds 12');
    expect(text).toContain('process_max_fds 1024');
    expect(text).toContain('workload_manager_active_proxy_count 0');
    expect(text).toContain('workload_manager_proxies_started_total 0');
    expect(text).not.toContain('istio_tcp_');
    expect(text).not.toContain('istio_xds_');
    expect(text).not.toContain('ztunnel_connections_refused');
  });

  it('writes the xDS and limit samples the dashboards and docs name', async () => {
    const m = exercise();
    try {
      const text = await m.registry.encode('openmetrics');
      expect(text).toContain('istio_xds_message_total{url="type.googleapis.com/istio.workload.Address"} 1');
      expect(text).toContain('istio_xds_message_bytes_total{url="type.googleapis.com/istio.workload.Address"} 100');
      expect(text).toContain('istio_xds_connection_terminations_total{reason="Reconnect"} 1');
      expect(text).toContain('ztunnel_connections_refused_total{reason="tls_handshake_timeout",listener="inbound"} 1');
      expect(text).toMatch(/^nodejs_eventloop_busy_seconds_total \d/m);
      expect(text.endsWith('# EOF\n')).toBe(true);
    } finally {
      m.close();
    }
  });

  it('leaves out workload_manager_* when asked (dedicated mode, as ztunnel)', () => {
    const m = createZtunnelMetrics({ istioVersion: 'x', processProbe: fixedProbe, runtime: false, workloadManager: false });
    expect(m.workloadManager).toBeUndefined();
    expect(m.registry.families().some((f) => f.name.startsWith('workload_manager_'))).toBe(false);
  });
});
