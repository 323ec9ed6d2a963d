import { describe, expect, it } from 'vitest';
import { ManualClock, aWorkload } from '@ambient/control/testing';
import { MetricsRegistry } from '@ambient/dataplane';
import { parseExposition, select, sumBy, type Series } from '../../test/telemetry/exposition.js';
import { httpRecord, productpage, ratings, recordingLogger, tcpRecord } from '../../test/telemetry/records.js';
import { createWaypointTelemetry } from './index.js';
import { HTTP_LABEL_NAMES, TCP_LABEL_NAMES } from './labels.js';
import { ENVOY_DEFAULT_BUCKETS } from './metrics.js';

function setup() {
  const registry = new MetricsRegistry();
  const telemetry = createWaypointTelemetry({
    registry,
    istioVersion: '1.28.0',
    clock: new ManualClock(),
    randomBytes: (n) => new Uint8Array(n).fill(7),
    log: recordingLogger().logger,
  });
  const scrape = async (): Promise<{ text: string; series: Series[] }> => {
    const text = await registry.encode('prometheus');
    return { text, series: parseExposition(text) };
  };
  return { registry, telemetry, scrape };
}

const PEER =
  'reporter="waypoint",source_workload="productpage-v1",source_canonical_service="unknown",source_canonical_revision="latest",' +
  'source_workload_namespace="default",source_principal="spiffe://cluster.local/ns/default/sa/client",source_app="unknown",' +
  'source_version="unknown",source_cluster="unknown",destination_workload="ratings-v1",destination_workload_namespace="default",' +
  'destination_principal="spiffe://cluster.global/ns/default/sa/ratings",destination_app="ratings",destination_version="version-1",' +
  'destination_service="server.default.svc.cluster.local",destination_canonical_service="ratings",' +
  'destination_canonical_revision="version-1",destination_service_name="server",destination_service_namespace="default",' +
  'destination_cluster="ratings-cluster"';

describe('waypoint metrics exposition', () => {
  it('before any traffic exposes only istio_build{component="proxy",tag}', async () => {
    const { scrape } = setup();
    const { text } = await scrape();
    expect(text).toBe('# HELP istio_build Istio component build info.\n# TYPE istio_build gauge\nistio_build{component="proxy",tag="1.28.0"} 1\n');
  });

  it('an empty version is tagged "unknown"', async () => {
    const registry = new MetricsRegistry();
    createWaypointTelemetry({ registry, istioVersion: '', clock: new ManualClock(), randomBytes: (n) => new Uint8Array(n), log: recordingLogger().logger });
    expect(await registry.encode('prometheus')).toContain('istio_build{component="proxy",tag="unknown"} 1');
  });

  it('writes istio_requests_total with every label in istio_stats order and grpc_response_status=""', async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord());
    telemetry.httpFinished(httpRecord());
    const { text } = await scrape();
    expect(text).toContain('# TYPE istio_requests_total counter\n');
    expect(text).toContain(
      `istio_requests_total{${PEER},request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"} 2\n`,
    );
  });

  it("writes the three histograms with Envoy's 19 default bounds, le last, spelled as Envoy does", async () => {
    const { telemetry, scrape } = setup();
    // 2.4 ms is recorded as 2 (Envoy truncates to whole milliseconds).
    telemetry.httpFinished(httpRecord({ durationMs: 2.4, requestBytes: 120, responseBytes: 480 }));
    telemetry.httpFinished(httpRecord({ durationMs: 0.3, requestBytes: 5000, responseBytes: 3_600_001 }));
    const { text, series } = await scrape();
    const les = ['0.5', '1', '5', '10', '25', '50', '100', '250', '500', '1000', '2500', '5000', '10000', '30000', '60000', '300000', '600000', '1800000', '3600000', '+Inf'];
    expect(ENVOY_DEFAULT_BUCKETS.map(String)).toEqual(les.slice(0, -1));
    for (const name of ['istio_request_duration_milliseconds', 'istio_request_bytes', 'istio_response_bytes']) {
      expect(text).toContain(`# TYPE ${name} histogram\n`);
      const buckets = select(series, `${name}_bucket`);
      expect(buckets.map((b) => b.labels['le'])).toEqual(les);
      for (const b of buckets) expect(b.order).toEqual([...HTTP_LABEL_NAMES, 'le']);
      expect(select(series, `${name}_count`).map((s) => s.value)).toEqual([2]);
    }
    const at = (name: string, le: string) => select(series, `${name}_bucket{le="${le}"}`)[0]?.value;
    expect([at('istio_request_duration_milliseconds', '0.5'), at('istio_request_duration_milliseconds', '1'), at('istio_request_duration_milliseconds', '5')]).toEqual([1, 1, 2]);
    expect(select(series, 'istio_request_duration_milliseconds_sum')[0]?.value).toBe(2);
    expect([at('istio_request_bytes', '100'), at('istio_request_bytes', '250'), at('istio_request_bytes', '5000')]).toEqual([0, 1, 2]);
    expect([at('istio_response_bytes', '3600000'), at('istio_response_bytes', '+Inf')]).toEqual([1, 2]);
    expect(select(series, 'istio_response_bytes_sum')[0]?.value).toBe(3_600_481);
    expect(text).toContain(`istio_request_duration_milliseconds_bucket{${PEER},request_protocol="http",response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls",le="0.5"} 1\n`);
  });

  it('counts gRPC messages only for gRPC requests, with grpc_response_status set', async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord());
    telemetry.httpFinished(httpRecord({ requestProtocol: 'grpc', httpVersion: 'HTTP/2', grpcStatus: 0, requestMessages: 3, responseMessages: 5 }));
    telemetry.httpFinished(httpRecord({ requestProtocol: 'grpc', httpVersion: 'HTTP/2', grpcStatus: 0, requestMessages: 1, responseMessages: 1 }));
    const { series } = await scrape();
    const req = select(series, 'istio_request_messages_total');
    const res = select(series, 'istio_response_messages_total');
    expect(req.map((s) => [s.labels['request_protocol'], s.labels['grpc_response_status'], s.value])).toEqual([['grpc', '0', 4]]);
    expect(res.map((s) => s.value)).toEqual([6]);
    expect(sumBy(series, ['request_protocol', 'grpc_response_status'], 'istio_requests_total')).toEqual(
      new Map([
        ['http,', 1],
        ['grpc,0', 2],
      ]),
    );
  });

  it('keeps one series per outcome: status, flags', async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord({ responseCode: 503, flags: ['URX', 'UF'], responseCodeDetails: 'upstream_reset_before_response_started{connection_failure}' }));
    telemetry.httpFinished(httpRecord({ responseCode: 404, flags: ['NR'], destinationService: undefined, destination: { identity: undefined, workload: undefined } }));
    telemetry.httpFinished(httpRecord({ responseCode: 0, flags: ['DC'] }));
    const { series } = await scrape();
    expect(sumBy(series, ['response_code', 'response_flags', 'destination_service'], 'istio_requests_total')).toEqual(
      new Map([
        ['503,UF,URX,server.default.svc.cluster.local', 1],
        ['404,NR,unknown', 1],
        ['0,DC,server.default.svc.cluster.local', 1],
      ]),
    );
  });

  it('TCP: opened under "-", closed and bytes at the end under the final flags, received = downstream → upstream', async () => {
    const { telemetry, scrape } = setup();
    const r = tcpRecord({ bytesReceived: 5, bytesSent: 11 });
    telemetry.tcpOpened(r.source, r.destination, r.destinationService);
    telemetry.tcpFinished(r);
    telemetry.tcpOpened(r.source, r.destination, r.destinationService);
    telemetry.tcpFinished(tcpRecord({ bytesReceived: 7, bytesSent: 0, flags: ['UF'] }));
    const { text, series } = await scrape();
    const tail = 'request_protocol="tcp",response_flags="-",connection_security_policy="mutual_tls"';
    expect(text).toContain(`# TYPE istio_tcp_connections_opened_total counter\nistio_tcp_connections_opened_total{${PEER},${tail}} 2\n`);
    expect(text).toContain(`istio_tcp_connections_closed_total{${PEER},${tail}} 1\n`);
    expect(text).toContain(`istio_tcp_received_bytes_total{${PEER},${tail}} 5\n`);
    expect(text).toContain(`istio_tcp_sent_bytes_total{${PEER},${tail}} 11\n`);
    expect(text).toContain(`istio_tcp_connections_closed_total{${PEER},request_protocol="tcp",response_flags="UF",connection_security_policy="mutual_tls"} 1\n`);
    expect(text).toContain(`istio_tcp_received_bytes_total{${PEER},request_protocol="tcp",response_flags="UF",connection_security_policy="mutual_tls"} 7\n`);
    for (const s of select(series, 'istio_tcp_connections_closed_total')) expect(s.order).toEqual([...TCP_LABEL_NAMES]);
    // TCP traffic makes no HTTP series.
    expect(select(series, 'istio_requests_total')).toEqual([]);
  });

  it('a workload that changes (new object in the store) is reported with its new labels', async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord());
    const v2 = aWorkload({ ...ratings, canonicalRevision: 'version-2' });
    telemetry.httpFinished(httpRecord({ destination: { identity: ratings.identity, workload: v2 } }));
    const { series } = await scrape();
    expect(sumBy(series, ['destination_canonical_revision', 'destination_version'], 'istio_requests_total')).toEqual(
      new Map([
        ['version-1,version-1', 1],
        ['version-2,version-2', 1],
      ]),
    );
  });

  it('identities are keyed by content: equal identities in new objects share the series', async () => {
    const { telemetry, scrape } = setup();
    for (let i = 0; i < 3; i++) {
      telemetry.httpFinished(httpRecord({ source: { identity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client' }, workload: productpage } }));
    }
    telemetry.httpFinished(httpRecord({ source: { identity: { trustDomain: 'cluster.local', namespace: 'other', serviceAccount: 'client' }, workload: productpage } }));
    const { series } = await scrape();
    expect(sumBy(series, ['source_principal', 'source_workload_namespace'], 'istio_requests_total')).toEqual(
      new Map([
        ['spiffe://cluster.local/ns/default/sa/client,default', 3],
        ['spiffe://cluster.local/ns/other/sa/client,other', 1],
      ]),
    );
  });

  it('stays exact past the cache bounds (many peers, many outcomes per peer)', async () => {
    const { telemetry, scrape } = setup();
    const peers = Array.from({ length: 4100 }, (_, i) => aWorkload({ uid: `Kubernetes//Pod/default/c-${i}`, workloadName: `c-${i}` }));
    for (const w of peers) telemetry.httpFinished(httpRecord({ source: { identity: undefined, workload: w } }));
    telemetry.httpFinished(httpRecord({ source: { identity: undefined, workload: peers[0] } }));
    for (let code = 200; code < 300; code++) telemetry.httpFinished(httpRecord({ responseCode: code }));
    telemetry.httpFinished(httpRecord({ responseCode: 200 }));
    const { series } = await scrape();
    const bySource = sumBy(series, ['source_workload'], 'istio_requests_total');
    expect(bySource.size).toBe(4101);
    expect(bySource.get('c-0')).toBe(2);
    expect(bySource.get('c-4099')).toBe(1);
    const byCode = sumBy(series, ['response_code'], 'istio_requests_total{source_workload="productpage-v1"}');
    expect(byCode.size).toBe(100);
    expect(byCode.get('200')).toBe(2);
    expect(byCode.get('299')).toBe(1);
  });

  it('never emits the labels Prometheus attaches at scrape time (pod, namespace, app, node, instance, job)', async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord());
    const r = tcpRecord();
    telemetry.tcpOpened(r.source, r.destination, r.destinationService);
    telemetry.tcpFinished(r);
    const { series } = await scrape();
    for (const s of series) for (const banned of ['pod', 'namespace', 'app', 'node', 'instance', 'job']) expect(s.order).not.toContain(banned);
  });
});

/**
 * The waypoint panels of Istio's dashboards (observability.md §3) and Kiali's
 * per-series checks (§9), run on one scrape: every query selects data and
 * groups by labels that carry real values.
 */
describe('the dashboards find waypoint data', () => {
  async function traffic() {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord({ durationMs: 40 }));
    telemetry.httpFinished(httpRecord({ durationMs: 60, responseCode: 503, flags: ['UF'] }));
    telemetry.httpFinished(httpRecord({ durationMs: 3, responseCode: 404 }));
    const r = tcpRecord({ bytesReceived: 100, bytesSent: 900 });
    telemetry.tcpOpened(r.source, r.destination, r.destinationService);
    telemetry.tcpFinished(r);
    return (await scrape()).series;
  }
  const MESH = 'reporter=~"source|waypoint"';

  it('Mesh dashboard: traffic volume, success rate, 4xxs, 5xxs', async () => {
    const s = await traffic();
    const total = sumBy(s, [], `istio_requests_total{${MESH}}`).get('') ?? 0;
    const ok = sumBy(s, [], `istio_requests_total{${MESH},response_code!~"5.."}`).get('') ?? 0;
    expect(total).toBe(3);
    expect(ok / total).toBeCloseTo(2 / 3);
    expect(sumBy(s, [], `istio_requests_total{${MESH},response_code=~"4.."}`).get('')).toBe(1);
    expect(sumBy(s, [], `istio_requests_total{${MESH},response_code=~"5.."}`).get('')).toBe(1);
  });

  it('Mesh dashboard: HTTP/gRPC Workloads grouped by destination workload, namespace and service; latency buckets by le', async () => {
    const s = await traffic();
    expect(sumBy(s, ['destination_workload', 'destination_workload_namespace', 'destination_service'], `istio_requests_total{${MESH}}`)).toEqual(
      new Map([['ratings-v1,default,server.default.svc.cluster.local', 3]]),
    );
    const p50 = sumBy(s, ['le', 'destination_workload', 'destination_workload_namespace'], `istio_request_duration_milliseconds_bucket{${MESH}}`);
    expect(p50.get('5,ratings-v1,default')).toBe(1);
    expect(p50.get('50,ratings-v1,default')).toBe(2);
    expect(p50.get('+Inf,ratings-v1,default')).toBe(3);
  });

  it('Mesh dashboard: TCP Workloads (received and sent bytes) by destination workload, namespace and service', async () => {
    const s = await traffic();
    const by = ['destination_workload', 'destination_workload_namespace', 'destination_service'];
    expect(sumBy(s, by, `istio_tcp_received_bytes_total{${MESH}}`)).toEqual(new Map([['ratings-v1,default,server.default.svc.cluster.local', 100]]));
    expect(sumBy(s, by, `istio_tcp_sent_bytes_total{${MESH}}`)).toEqual(new Map([['ratings-v1,default,server.default.svc.cluster.local', 900]]));
  });

  it('Mesh dashboard: Istio Component Versions by component and tag', async () => {
    const s = await traffic();
    expect(sumBy(s, ['component', 'tag'], 'istio_build')).toEqual(new Map([['proxy,1.28.0', 1]]));
  });

  it("Kiali's graph queries with reporter=~\"waypoint|destination\" find series that pass its label checks", async () => {
    const s = await traffic();
    const httpGroupBy = [
      'source_cluster', 'source_workload_namespace', 'source_workload', 'source_canonical_service', 'source_canonical_revision',
      'destination_cluster', 'destination_service_namespace', 'destination_service', 'destination_service_name',
      'destination_workload_namespace', 'destination_workload', 'destination_canonical_service', 'destination_canonical_revision',
      'request_protocol', 'response_code', 'grpc_response_status', 'response_flags',
    ];
    const q2 = select(s, 'istio_requests_total{reporter=~"waypoint|destination",destination_workload_namespace="default"}');
    expect(q2.length).toBe(3);
    for (const series of q2) {
      for (const label of [...httpGroupBy, 'source_principal', 'destination_principal', 'connection_security_policy']) expect(series.labels).toHaveProperty(label);
      // Kiali skips a series whose destination cluster is unknown while its service namespace is known.
      expect(series.labels['destination_cluster']).not.toBe('unknown');
    }
    expect(select(s, 'istio_tcp_sent_bytes_total{reporter=~"waypoint|source",source_workload_namespace="default"}').length).toBe(1);
  });

  it("an unrouted request (no service) still counts on the mesh dashboard's totals", async () => {
    const { telemetry, scrape } = setup();
    telemetry.httpFinished(httpRecord({ responseCode: 404, flags: ['NR'], destinationService: undefined, destination: { identity: undefined, workload: undefined } }));
    const { series } = await scrape();
    expect(sumBy(series, ['destination_service'], `istio_requests_total{${MESH},response_code=~"4.."}`)).toEqual(new Map([['unknown', 1]]));
  });
});
