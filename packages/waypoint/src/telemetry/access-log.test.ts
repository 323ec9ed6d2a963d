import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ManualClock, aService, aWorkload } from '@ambient/control/testing';
import { MetricsRegistry } from '@ambient/dataplane';
import { httpRecord, ratings, recordingLogger, tcpRecord } from '../../test/telemetry/records.js';
import {
  AccessLog,
  accessLogFromMeshConfig,
  formatJsonLine,
  formatStartTime,
  formatTextLine,
  httpAccessLogEntry,
  streamAccessLogWriter,
  tcpAccessLogEntry,
} from './access-log.js';
import { createWaypointTelemetry } from './index.js';

const httpbin = aService({ namespace: 'test', hostname: 'httpbin.test.svc.cluster.local', name: 'httpbin' }, [[8000, 80]]);

/** The waypoint line of istio#43476 (waypoint.md §5.3), as a record. */
const exampleRecord = httpRecord({
  startMs: Date.UTC(2024, 0, 1, 0, 0, 0, 0),
  durationMs: 2.9,
  method: 'GET',
  path: '/get',
  httpVersion: 'HTTP/1.1',
  responseCode: 200,
  responseCodeDetails: 'via_upstream',
  requestBodyBytes: 0,
  responseBodyBytes: 0,
  upstreamServiceTimeMs: 2,
  forwardedFor: undefined,
  userAgent: 'curl/8.5.0',
  requestId: '0b2ce6a8-42d1-4bbc-9d43-5a3c0f0b5b1e',
  authority: 'httpbin.test:8000',
  destination: { identity: ratings.identity, workload: aWorkload({ uid: 'Kubernetes//Pod/test/httpbin', namespace: 'test', protocol: 'HBONE' }) },
  destinationService: httpbin,
  upstreamHost: '10.244.2.4:80',
  upstreamCluster: 'inbound-vip|8000|http|httpbin.test.svc.cluster.local',
  downstreamLocal: '10.96.34.189:8000',
  // Envoy's waypoint logs from its internal listener, whose downstream is the internal address.
  downstreamRemote: 'envoy://internal_client_address/',
  routeName: 'default',
});

describe('text format (Istio EnvoyTextLogFormat)', () => {
  it('reproduces the reference waypoint line field for field', () => {
    expect(formatTextLine(httpAccessLogEntry(exampleRecord))).toBe(
      '[2024-01-01T00:00:00.000Z] "GET /get HTTP/1.1" 200 - via_upstream - "-" 0 0 2 2 "-" "curl/8.5.0" ' +
        '"0b2ce6a8-42d1-4bbc-9d43-5a3c0f0b5b1e" "httpbin.test:8000" "envoy://connect_originate/10.244.2.4:80" ' +
        'inbound-vip|8000|http|httpbin.test.svc.cluster.local envoy://internal_client_address/ 10.96.34.189:8000 ' +
        'envoy://internal_client_address/ - default\n',
    );
  });

  it('has 22 fields in order, single-space separated, one line ending in a newline', () => {
    const line = formatTextLine(httpAccessLogEntry(httpRecord()));
    expect(line.endsWith('\n')).toBe(true);
    expect(line.slice(0, -1)).not.toContain('\n');
    // Split on spaces outside quotes/brackets: the request line is one field.
    const fields = line.trimEnd().match(/\[[^\]]*\]|"[^"]*"|\S+/g) ?? [];
    expect(fields).toEqual([
      '[2024-01-01T00:00:00.000Z]',
      '"GET /get HTTP/1.1"',
      '200',
      '-',
      'via_upstream',
      '-',
      '"-"',
      '0',
      '300',
      '2',
      '2',
      '"-"',
      '"curl/8.5.0"',
      '"6c3c2f4e-0b4e-4bd0-9d7e-1f8b2a4c5d6e"',
      '"server.default:8000"',
      '"envoy://connect_originate/10.244.2.4:80"',
      'inbound-vip|8000|http|server.default.svc.cluster.local',
      'envoy://internal_client_address/',
      '10.96.34.189:8000',
      '10.244.1.7:43210',
      '-',
      'default',
    ]);
  });

  it('writes a failed request: status 0 without response, flags in Envoy order, failure reason quoted', () => {
    const line = formatTextLine(
      httpAccessLogEntry(
        httpRecord({
          responseCode: 0,
          flags: ['URX', 'UF'],
          responseCodeDetails: 'upstream_reset_before_response_started{connection_failure}',
          upstreamTransportFailureReason: 'delayed_connect_error:_Connection_refused',
          upstreamServiceTimeMs: undefined,
          forwardedFor: '10.0.0.1, 10.0.0.2',
          responseBodyBytes: 0,
        }),
      ),
    );
    expect(line).toContain(
      '"GET /get HTTP/1.1" 0 UF,URX upstream_reset_before_response_started{connection_failure} - "delayed_connect_error:_Connection_refused" 0 0 2 - "10.0.0.1, 10.0.0.2"',
    );
  });

  it('writes "-" for every missing value, quoted ones too', () => {
    const line = formatTextLine(
      httpAccessLogEntry(
        httpRecord({
          userAgent: undefined,
          requestId: undefined,
          authority: undefined,
          upstreamHost: undefined,
          upstreamCluster: undefined,
          routeName: undefined,
          responseCodeDetails: '',
          upstreamServiceTimeMs: undefined,
        }),
      ),
    );
    expect(line).toMatch(/ 200 - - - "-" 0 300 2 - "-" "-" "-" "-" "-" - - 10\.96\.34\.189:8000 10\.244\.1\.7:43210 - -\n$/);
  });

  it('an endpoint reached over plain TCP is its own address and the upstream local address is unknown', () => {
    const plain = aWorkload({ uid: 'Kubernetes//Pod/legacy/vm', protocol: 'TCP' });
    const line = formatTextLine(httpAccessLogEntry(httpRecord({ destination: { identity: undefined, workload: plain } })));
    expect(line).toContain('"10.244.2.4:80" inbound-vip|8000|http|server.default.svc.cluster.local - 10.96.34.189:8000');
  });

  it('writes a TCP connection as Envoy does ("- - -", code 0, connection bytes)', () => {
    expect(formatTextLine(tcpAccessLogEntry(tcpRecord({ connectionTerminationDetails: undefined, flags: ['UF'] })))).toBe(
      '[2024-01-01T00:00:00.000Z] "- - -" 0 UF - - "-" 5 11 1500 - "-" "-" "-" "-" "envoy://connect_originate/10.244.2.4:80" ' +
        'inbound-vip|8000|tcp|server.default.svc.cluster.local envoy://internal_client_address/ 10.96.34.189:8000 10.244.1.7:43210 - -\n',
    );
  });

  it("START_TIME is Envoy's default format, UTC with milliseconds", () => {
    expect(formatStartTime(Date.UTC(2025, 10, 9, 8, 7, 6, 5))).toBe('2025-11-09T08:07:06.005Z');
    expect(formatStartTime(Date.UTC(2025, 10, 9, 8, 7, 6, 5) + 0.9)).toBe('2025-11-09T08:07:06.005Z');
  });
});

describe('JSON format (Istio EnvoyJSONLogFormatIstio)', () => {
  it('has the snake_case keys, sorted; numbers for code, bytes and duration; null for missing', () => {
    const line = formatJsonLine(httpAccessLogEntry(exampleRecord));
    expect(line.endsWith('}\n')).toBe(true);
    const o = JSON.parse(line) as Record<string, unknown>;
    expect(Object.keys(o)).toEqual([...Object.keys(o)].sort());
    expect(o).toEqual({
      authority: 'httpbin.test:8000',
      bytes_received: 0,
      bytes_sent: 0,
      connection_termination_details: null,
      downstream_local_address: '10.96.34.189:8000',
      downstream_remote_address: 'envoy://internal_client_address/',
      duration: 2,
      method: 'GET',
      path: '/get',
      protocol: 'HTTP/1.1',
      request_id: '0b2ce6a8-42d1-4bbc-9d43-5a3c0f0b5b1e',
      requested_server_name: null,
      response_code: 200,
      response_code_details: 'via_upstream',
      response_flags: '-',
      route_name: 'default',
      start_time: '2024-01-01T00:00:00.000Z',
      upstream_cluster: 'inbound-vip|8000|http|httpbin.test.svc.cluster.local',
      upstream_host: 'envoy://connect_originate/10.244.2.4:80',
      upstream_local_address: 'envoy://internal_client_address/',
      upstream_service_time: '2',
      upstream_transport_failure_reason: null,
      user_agent: 'curl/8.5.0',
      x_forwarded_for: null,
    });
  });

  it('keeps values with quotes and backslashes intact (JSON escaping)', () => {
    const o = JSON.parse(formatJsonLine(httpAccessLogEntry(httpRecord({ userAgent: 'a "quoted" \\ agent' })))) as Record<string, unknown>;
    expect(o['user_agent']).toBe('a "quoted" \\ agent');
  });

  it('a TCP connection has nulls for the HTTP fields', () => {
    const o = JSON.parse(formatJsonLine(tcpAccessLogEntry(tcpRecord()))) as Record<string, unknown>;
    expect(o).toMatchObject({ method: null, path: null, protocol: null, response_code: 0, bytes_received: 5, bytes_sent: 11, duration: 1500, user_agent: null });
  });
});

describe('configuration and writing', () => {
  it('is off for accessLogFile "" (the default) and opens the file otherwise', () => {
    const opened: string[] = [];
    const open = (file: string) => {
      opened.push(file);
      return () => {};
    };
    expect(accessLogFromMeshConfig({ file: '', encoding: 'TEXT' }, open)).toBeUndefined();
    expect(opened).toEqual([]);
    expect(accessLogFromMeshConfig({ file: '/dev/stdout', encoding: 'JSON' }, open)?.encoding).toBe('JSON');
    expect(opened).toEqual(['/dev/stdout']);
  });

  it('writes one line per request and per TCP connection through the injected writer, nothing when off', () => {
    const lines: string[] = [];
    const on = createWaypointTelemetry({
      registry: new MetricsRegistry(),
      istioVersion: '1.28.0',
      clock: new ManualClock(),
      randomBytes: (n) => new Uint8Array(n),
      log: recordingLogger().logger,
      accessLog: { encoding: 'TEXT', writer: (l) => lines.push(l) },
    });
    on.httpFinished(httpRecord());
    on.tcpFinished(tcpRecord());
    expect(lines).toEqual([formatTextLine(httpAccessLogEntry(httpRecord())), formatTextLine(tcpAccessLogEntry(tcpRecord()))]);
    expect(lines[1]?.startsWith('[2024-01-01T00:00:00.000Z] "- - -" 0 - - - "-" 5 11 1500 ')).toBe(true);

    const off = createWaypointTelemetry({
      registry: new MetricsRegistry(),
      istioVersion: '1.28.0',
      clock: new ManualClock(),
      randomBytes: (n) => new Uint8Array(n),
      log: recordingLogger().logger,
    });
    off.httpFinished(httpRecord());
    expect(lines).toHaveLength(2);
  });

  it('a writer that throws is logged once and never reaches the request', () => {
    const { logger, entries } = recordingLogger();
    const registry = new MetricsRegistry();
    const t = createWaypointTelemetry({
      registry,
      istioVersion: '1',
      clock: new ManualClock(),
      randomBytes: (n) => new Uint8Array(n),
      log: logger,
      accessLog: {
        encoding: 'TEXT',
        writer: () => {
          throw new Error('EPIPE');
        },
      },
    });
    expect(() => {
      t.httpFinished(httpRecord());
      t.httpFinished(httpRecord());
    }).not.toThrow();
    expect(entries.filter((e) => e.level === 'error').map((e) => [e.msg, e.obj])).toEqual([['access log failed (further failures are not logged)', { err: 'EPIPE' }]]);
  });

  it('the stream writer drops (and counts) lines while the stream is backed up, and writes again once drained', async () => {
    const stream = new PassThrough({ highWaterMark: 16 });
    let dropped = 0;
    const write = streamAccessLogWriter(stream, { maxBufferedBytes: 100, onDrop: () => dropped++ });
    const log = new AccessLog('TEXT', write);
    for (let i = 0; i < 10; i++) log.http(httpRecord());
    // Nothing reads the stream: the first line goes in, the rest wait for room and are dropped.
    expect(stream.writableLength).toBeGreaterThan(100);
    expect(dropped).toBe(9);
    const first = String(stream.read());
    expect(first.startsWith('[2024-01-01T00:00:00.000Z] "GET /get HTTP/1.1" 200')).toBe(true);
    await new Promise((r) => setImmediate(r));
    log.http(httpRecord());
    expect(dropped).toBe(9);
    stream.destroy();
  });
});
