import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { MetricsRegistry, nodeSocketFactory } from '@ambient/dataplane';
import { httpRecord, recordingLogger } from '../../test/telemetry/records.js';
import { createWaypointTelemetry } from './index.js';
import { peerLabels } from './labels.js';
import {
  TRACE_PROPAGATION_HEADERS,
  ZipkinExporter,
  buildSpan,
  decideSampling,
  httpSpanTransport,
  parseTraceContext,
  type SpanTransport,
  type ZipkinSpan,
} from './tracing.js';

/** RandomBytes that hands out 0x01, 0x02, ... so every id is predictable. */
function countingBytes(): (n: number) => Uint8Array {
  let next = 1;
  return (n) => Uint8Array.from({ length: n }, () => next++ & 0xff);
}
const fixedBytes = (value: number) => (n: number) => new Uint8Array(n).fill(value);

const T32 = '4bf92f3577b34da6a3ce929d0e0e4736';
const S16 = '00f067aa0ba902b7';

describe('trace context', () => {
  it('forwards the headers Istio lists, unchanged (the list the data path copies)', () => {
    expect(TRACE_PROPAGATION_HEADERS).toEqual([
      'x-request-id', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags', 'b3', 'traceparent', 'tracestate',
      'x-ot-span-context', 'grpc-trace-bin', 'x-cloud-trace-context', 'x-datadog-trace-id', 'x-datadog-parent-id', 'x-datadog-sampling-priority',
    ]);
  });

  it.each([
    ['no headers', undefined, undefined],
    ['B3 multi', { 'x-b3-traceid': T32, 'x-b3-spanid': S16, 'x-b3-sampled': '1' }, { traceId: T32, spanId: S16, sampled: true }],
    ['B3 multi, 64-bit, upper case', { 'x-b3-traceid': 'A3CE929D0E0E4736', 'x-b3-spanid': S16.toUpperCase() }, { traceId: 'a3ce929d0e0e4736', spanId: S16, sampled: undefined }],
    ['B3 debug flag', { 'x-b3-traceid': T32, 'x-b3-spanid': S16, 'x-b3-flags': '1', 'x-b3-sampled': '0' }, { traceId: T32, spanId: S16, sampled: true }],
    ['B3 not sampled', { 'x-b3-traceid': T32, 'x-b3-spanid': S16, 'x-b3-sampled': '0' }, { traceId: T32, spanId: S16, sampled: false }],
    ['B3 sampling only', { 'x-b3-sampled': '0' }, { traceId: undefined, spanId: undefined, sampled: false }],
    ['B3 single', { b3: `${T32}-${S16}-1-${'b'.repeat(16)}` }, { traceId: T32, spanId: S16, sampled: true }],
    ['B3 single, deny only', { b3: '0' }, { traceId: undefined, spanId: undefined, sampled: false }],
    ['W3C sampled', { traceparent: `00-${T32}-${S16}-01` }, { traceId: T32, spanId: S16, sampled: true }],
    ['W3C not sampled', { traceparent: `00-${T32}-${S16}-00` }, { traceId: T32, spanId: S16, sampled: false }],
    ['B3 wins over W3C', { traceparent: `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`, 'x-b3-traceid': T32, 'x-b3-spanid': S16 }, { traceId: T32, spanId: S16, sampled: undefined }],
    ['malformed B3 falls back to W3C', { 'x-b3-traceid': 'xyz', 'x-b3-spanid': S16, traceparent: `00-${T32}-${S16}-01` }, { traceId: T32, spanId: S16, sampled: true }],
    ['all-zero trace id', { 'x-b3-traceid': '0'.repeat(32), 'x-b3-spanid': S16 }, undefined],
    ['W3C version ff', { traceparent: `ff-${T32}-${S16}-01` }, undefined],
    ['W3C version 00 with extra fields', { traceparent: `00-${T32}-${S16}-01-extra` }, undefined],
    ['W3C future version with extra fields', { traceparent: `01-${T32}-${S16}-01-extra` }, { traceId: T32, spanId: S16, sampled: true }],
    ['W3C zero span id', { traceparent: `00-${T32}-${'0'.repeat(16)}-01` }, undefined],
  ] as const)('%s', (_name, headers, expected) => {
    expect(parseTraceContext(headers)).toEqual(expected);
  });

  it('keeps an incoming decision and samples the rest at the configured percentage', () => {
    const none = undefined;
    expect(decideSampling({ traceId: T32, spanId: S16, sampled: false }, 100, fixedBytes(0))).toBe(false);
    expect(decideSampling({ traceId: T32, spanId: S16, sampled: true }, 0, fixedBytes(0xff))).toBe(true);
    expect(decideSampling(none, 0, fixedBytes(0))).toBe(false);
    expect(decideSampling(none, 100, fixedBytes(0xff))).toBe(true);
    // A draw of 0x00000000 or 0x02000000 (0.78 %) is below 1 %, 0x03000000 (1.17 %) is not.
    expect(decideSampling(none, 1, fixedBytes(0))).toBe(true);
    expect(decideSampling(none, 1, () => Uint8Array.of(3, 0, 0, 0))).toBe(false);
    expect(decideSampling(none, 1, () => Uint8Array.of(2, 0, 0, 0))).toBe(true);
  });
});

describe('the waypoint span', () => {
  const r = httpRecord({ method: 'POST', path: '/orders?id=1', responseCode: 503, flags: ['UF', 'URX'] });
  const peer = peerLabels(r.source, r.destination, r.destinationService);

  it('is a Zipkin v2 SERVER span parented on the caller, with ids from RandomBytes', () => {
    const span = buildSpan(r, { traceId: T32, spanId: S16, sampled: true }, peer, countingBytes(), {
      serviceName: 'waypoint.default',
      localIp: '10.244.0.9',
      staticTags: { 'istio.mesh_id': 'cluster.local' },
    });
    expect(span).toEqual({
      traceId: T32,
      id: '0102030405060708',
      parentId: S16,
      kind: 'SERVER',
      name: 'server.default.svc.cluster.local:8000/*',
      timestamp: Date.UTC(2024, 0, 1) * 1000,
      duration: 2400,
      localEndpoint: { serviceName: 'waypoint.default', ipv4: '10.244.0.9' },
      remoteEndpoint: { ipv4: '10.244.1.7', port: 43210 },
      tags: {
        'istio.mesh_id': 'cluster.local',
        component: 'proxy',
        'http.method': 'POST',
        'http.url': 'http://server.default:8000/orders?id=1',
        'http.protocol': 'HTTP/1.1',
        'http.status_code': '503',
        response_flags: 'UF,URX',
        upstream_cluster: 'inbound-vip|8000|http|server.default.svc.cluster.local',
        'upstream_cluster.name': 'inbound-vip|8000|http|server.default.svc.cluster.local',
        downstream_cluster: '-',
        request_size: '0',
        response_size: '300',
        user_agent: 'curl/8.5.0',
        'istio.downstream.workload': 'productpage-v1',
        'istio.downstream.namespace': 'default',
        'istio.upstream.workload': 'ratings-v1',
        'istio.upstream.namespace': 'default',
        'guid:x-request-id': '6c3c2f4e-0b4e-4bd0-9d7e-1f8b2a4c5d6e',
        'peer.address': '10.244.1.7',
        error: 'true',
      },
    });
  });

  it('starts a new 128-bit trace without a parent when the request carried none', () => {
    const span = buildSpan(httpRecord(), undefined, peer, countingBytes(), { serviceName: 'w.ns' });
    expect(span.traceId).toBe('0102030405060708090a0b0c0d0e0f10');
    expect(span.id).toBe('1112131415161718');
    expect(span).not.toHaveProperty('parentId');
    expect(span.tags).not.toHaveProperty('error');
  });
});

describe('ZipkinExporter (batching, bounds, failures)', () => {
  function harness(over: { answer?: () => Promise<number>; maxQueuedSpans?: number } = {}) {
    const clock = new ManualClock();
    const { logger, entries } = recordingLogger();
    const registry = new MetricsRegistry();
    const reports: ZipkinSpan[][] = [];
    // A scripted transport (the real one is tested against a real server below).
    const transport: SpanTransport = (body) => {
      reports.push(JSON.parse(body) as ZipkinSpan[]);
      return over.answer?.() ?? Promise.resolve(202);
    };
    const exporter = new ZipkinExporter({ transport, clock, log: logger, registry, maxQueuedSpans: over.maxQueuedSpans ?? 1024 });
    const span = (i: number) => buildSpan(httpRecord({ requestId: `r${i}` }), undefined, peerLabels(httpRecord().source, httpRecord().destination, undefined), countingBytes(), { serviceName: 'w.ns' });
    return { clock, entries, registry, reports, exporter, span };
  }

  it('sends a report at 5 queued spans (Envoy min_flush_spans)', async () => {
    const h = harness();
    for (let i = 0; i < 4; i++) h.exporter.add(h.span(i));
    expect(h.reports).toHaveLength(0);
    h.exporter.add(h.span(4));
    expect(h.reports.map((b) => b.map((s) => s.tags['guid:x-request-id']))).toEqual([['r0', 'r1', 'r2', 'r3', 'r4']]);
    await h.exporter.close();
  });

  it('flushes what is queued every 5 s (Envoy flush_interval_ms) and on close, leaving no timer', async () => {
    const h = harness();
    h.exporter.add(h.span(0));
    await h.clock.advance(4999);
    expect(h.reports).toHaveLength(0);
    await h.clock.advance(1);
    expect(h.reports).toHaveLength(1);
    h.exporter.add(h.span(1));
    await h.exporter.close();
    expect(h.reports).toHaveLength(2);
    expect(h.clock.pendingTimers()).toEqual([]);
    h.exporter.add(h.span(2));
    expect(h.exporter.queued).toBe(0);
  });

  it('keeps one report in flight; spans queued meanwhile go in the next one', async () => {
    let release: (status: number) => void = () => {};
    const h = harness({ answer: () => new Promise<number>((r) => (release = r)) });
    for (let i = 0; i < 5; i++) h.exporter.add(h.span(i));
    for (let i = 5; i < 12; i++) h.exporter.add(h.span(i));
    expect(h.reports).toHaveLength(1);
    expect(h.exporter.queued).toBe(7);
    release(202);
    await h.clock.flush();
    expect(h.reports.map((b) => b.length)).toEqual([5, 7]);
    release(202);
    await h.exporter.close();
  });

  it('drops spans beyond the queue bound, counted, without blocking', async () => {
    const h = harness({ answer: () => new Promise<number>(() => {}), maxQueuedSpans: 8 });
    for (let i = 0; i < 5; i++) h.exporter.add(h.span(i)); // in flight, never answered
    for (let i = 0; i < 20; i++) h.exporter.add(h.span(i));
    expect(h.exporter.queued).toBe(8);
    expect(await h.registry.encode('prometheus')).toContain('waypoint_tracing_spans_dropped_total{reason="queue_full"} 12');
  });

  it('a failed report drops its spans, counted, with one warning per outage', async () => {
    let status = 500;
    const h = harness({ answer: async () => status });
    for (let i = 0; i < 10; i++) h.exporter.add(h.span(i));
    await h.clock.flush();
    for (let i = 0; i < 5; i++) h.exporter.add(h.span(i));
    await h.clock.flush();
    status = 202;
    for (let i = 0; i < 5; i++) h.exporter.add(h.span(i));
    await h.clock.flush();
    const text = await h.registry.encode('prometheus');
    expect(text).toContain('waypoint_tracing_spans_dropped_total{reason="report_failed"} 15');
    expect(text).toContain('waypoint_tracing_spans_sent_total{reason="accepted"} 5');
    expect(h.entries.filter((e) => e.level === 'warn').map((e) => [e.msg, e.obj])).toEqual([
      ['zipkin report failed; spans dropped', { spans: 5, reason: 'collector answered HTTP 500' }],
    ]);
    expect(h.entries.filter((e) => e.level === 'info').map((e) => e.msg)).toEqual(['zipkin collector accepts spans again']);
    await h.exporter.close();
  });
});

describe('Zipkin export to a real collector over HTTP', () => {
  const servers: Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });

  async function collector(answer: (req: IncomingMessage, res: ServerResponse, body: string) => void) {
    const received: Array<{ method: string; url: string; type: string | undefined; host: string | undefined; spans: ZipkinSpan[] }> = [];
    const server = createServer((req, res) => {
      let body = '';
      req.setEncoding('utf8');
      req.on('data', (c: string) => (body += c));
      req.on('end', () => {
        received.push({ method: req.method ?? '', url: req.url ?? '', type: req.headers['content-type'], host: req.headers.host, spans: JSON.parse(body) as ZipkinSpan[] });
        answer(req, res, body);
      });
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    return { port: (server.address() as AddressInfo).port, received };
  }

  it('POSTs sampled requests as Zipkin v2 JSON to /api/v2/spans; unsampled ones send nothing', async () => {
    const c = await collector((_req, res) => res.writeHead(202).end());
    const registry = new MetricsRegistry();
    const telemetry = createWaypointTelemetry({
      registry,
      istioVersion: '1.28.0',
      clock: new ManualClock(),
      randomBytes: countingBytes(),
      log: recordingLogger().logger,
      tracing: {
        transport: httpSpanTransport({ address: `localhost:${c.port}`, sockets: nodeSocketFactory, lookup: async () => '127.0.0.1' }),
        samplingPercent: 0,
        span: { serviceName: 'waypoint.default' },
      },
    });
    telemetry.httpFinished(httpRecord({ trace: { 'x-b3-traceid': T32, 'x-b3-spanid': S16, 'x-b3-sampled': '1' } }));
    telemetry.httpFinished(httpRecord({ trace: { traceparent: `00-${T32}-${S16}-00` } }));
    telemetry.httpFinished(httpRecord({ trace: undefined })); // 0 % sampling
    await telemetry.close();

    expect(c.received).toHaveLength(1);
    const [report] = c.received;
    expect(report).toMatchObject({ method: 'POST', url: '/api/v2/spans', type: 'application/json', host: `localhost:${c.port}` });
    expect(report?.spans).toHaveLength(1);
    expect(report?.spans[0]).toMatchObject({
      traceId: T32,
      parentId: S16,
      kind: 'SERVER',
      localEndpoint: { serviceName: 'waypoint.default' },
      tags: {
        'istio.downstream.workload': 'productpage-v1',
        'istio.downstream.namespace': 'default',
        'istio.upstream.workload': 'ratings-v1',
        'istio.upstream.namespace': 'default',
        'http.method': 'GET',
        'http.url': 'http://server.default:8000/get',
        'http.status_code': '200',
        response_flags: '-',
        upstream_cluster: 'inbound-vip|8000|http|server.default.svc.cluster.local',
      },
    });
    expect(await registry.encode('prometheus')).toContain('waypoint_tracing_spans_sent_total{reason="accepted"} 1');
  });

  it('a collector that never answers is abandoned after the request timeout; requests are never held up', async () => {
    const c = await collector(() => {}); // never answers
    const clock = new ManualClock();
    const registry = new MetricsRegistry();
    const exporter = new ZipkinExporter({
      transport: httpSpanTransport({ address: `127.0.0.1:${c.port}`, sockets: nodeSocketFactory }),
      clock,
      log: recordingLogger().logger,
      registry,
      minFlushSpans: 1,
    });
    const r = httpRecord();
    const span = buildSpan(r, undefined, peerLabels(r.source, r.destination, r.destinationService), countingBytes(), { serviceName: 'w.ns' });
    exporter.add(span);
    const reports = async (n: number) => {
      const deadline = performance.now() + 5000;
      while (c.received.length < n && performance.now() < deadline) await new Promise((res) => setImmediate(res));
      expect(c.received).toHaveLength(n);
    };
    await reports(1);
    exporter.add(span); // queued behind the stuck report, add() returns at once
    expect(exporter.queued).toBe(1);
    await clock.advance(5000); // the first report times out; the queued span goes out next
    await reports(2);
    await clock.advance(5000);
    await exporter.close();
    expect(await registry.encode('prometheus')).toContain('waypoint_tracing_spans_dropped_total{reason="report_failed"} 2');
  });

  it('refuses a collector address that is not host:port, naming it', () => {
    expect(() => httpSpanTransport({ address: 'zipkin.istio-system', sockets: nodeSocketFactory })).toThrow(
      'zipkin address "zipkin.istio-system": expected host:port (e.g. zipkin.istio-system:9411)',
    );
  });
});
