/**
 * The waypoint's telemetry: `createWaypointTelemetry` turns each record the
 * data path hands over (RequestTelemetry) into Istio's metrics, the access-log
 * line (when configured) and a Zipkin span (when a collector is configured
 * and the request is sampled).
 *
 * Per request the work is: one cache lookup for the label set, the metric
 * updates, and only what is switched on. Label sets are cached per (downstream
 * workload, downstream identity, endpoint workload, endpoint identity, routed
 * service) and, inside that, per outcome (protocol, status, gRPC status,
 * flags). Workloads and services are the store's immutable objects, so a
 * changed workload is a new object and gets fresh labels; identities are
 * keyed by content.
 *
 * Invariants:
 * - Telemetry never throws into the data path: a failing writer or exporter
 *   is logged, the request is unaffected.
 * - Both caches are bounded (a full cache is emptied and refilled).
 */
import type { Clock, Identity, Logger, RandomBytes, Service, Workload } from '@ambient/control';
import type { MetricsRegistry } from '@ambient/dataplane';
import { AccessLog, type AccessLogEncoding, type AccessLogWriter } from './access-log.js';
import { grpcStatusText, httpLabels, peerLabels, responseFlagsText, tcpLabels, type PeerLabels } from './labels.js';
import { WaypointMetrics, type HttpSeries, type TcpSeries } from './metrics.js';
import { buildSpan, decideSampling, parseTraceContext, ZipkinExporter, type SpanOptions, type SpanTransport, type ZipkinExporterOptions } from './tracing.js';
import type { EnvoyResponseFlag, HttpRequestRecord, PeerInfo, RequestTelemetry } from './types.js';

interface WaypointTracingSettings {
  /** Where reports go (httpSpanTransport for ProxyConfig.tracing.zipkin.address). */
  readonly transport: SpanTransport;
  /** Percentage of requests without a sampling decision that are traced (Istio default 1). */
  readonly samplingPercent?: number;
  readonly span: SpanOptions;
  /** Batching and queue limits (Envoy's defaults when absent). */
  readonly exporter?: Pick<ZipkinExporterOptions, 'minFlushSpans' | 'flushIntervalMs' | 'requestTimeoutMs' | 'maxQueuedSpans'>;
}

export interface WaypointTelemetryDeps {
  /** The root registry (the metrics server exposes it); families go under `istio_`. */
  readonly registry: MetricsRegistry;
  /** istio_build's tag. */
  readonly istioVersion: string;
  readonly clock: Clock;
  readonly randomBytes: RandomBytes;
  readonly log: Logger;
  /** meshConfig.accessLogFile set: the encoding and the file's writer. Undefined: no access log (Istio's default). */
  readonly accessLog?: { readonly encoding: AccessLogEncoding; readonly writer: AccessLogWriter } | undefined;
  /** A Zipkin collector is configured. Undefined: no spans (headers are still forwarded unchanged). */
  readonly tracing?: WaypointTracingSettings | undefined;
}

export interface WaypointTelemetry extends RequestTelemetry {
  /** Sends the spans still queued and stops the exporter's timer. */
  close(): Promise<void>;
}

const MAX_PEER_ENTRIES = 4096;
const MAX_OUTCOMES_PER_PEER = 64;

/** The series of one (downstream, endpoint, service), per outcome seen with it. */
class PeerEntry {
  readonly #http = new Map<string, HttpSeries>();
  readonly #tcp = new Map<string, TcpSeries>();
  constructor(
    readonly peer: PeerLabels,
    private readonly source: PeerInfo,
    private readonly metrics: WaypointMetrics,
  ) {}

  http(r: HttpRequestRecord): HttpSeries {
    const key = `${r.requestProtocol}|${r.responseCode}|${grpcStatusText(r)}|${responseFlagsText(r.flags)}`;
    let series = this.#http.get(key);
    if (series === undefined) {
      if (this.#http.size >= MAX_OUTCOMES_PER_PEER) this.#http.clear();
      series = this.metrics.httpSeries(httpLabels(this.peer, r));
      this.#http.set(key, series);
    }
    return series;
  }

  tcp(flags: readonly EnvoyResponseFlag[]): TcpSeries {
    const key = responseFlagsText(flags);
    let series = this.#tcp.get(key);
    if (series === undefined) {
      if (this.#tcp.size >= MAX_OUTCOMES_PER_PEER) this.#tcp.clear();
      series = this.metrics.tcpSeries(tcpLabels(this.peer, this.source, flags));
      this.#tcp.set(key, series);
    }
    return series;
  }
}

class LabelCache {
  constructor(private readonly metrics: WaypointMetrics) {}
  readonly #ids = new WeakMap<Workload | Service, number>();
  #nextId = 1;
  readonly #entries = new Map<string, PeerEntry>();

  #id(o: Workload | Service | undefined): number {
    if (o === undefined) return 0;
    let id = this.#ids.get(o);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(o, id);
    }
    return id;
  }

  entry(source: PeerInfo, destination: PeerInfo, service: Service | undefined): PeerEntry {
    const key = `${this.#id(source.workload)} ${identityKey(source.identity)} ${this.#id(destination.workload)} ${identityKey(destination.identity)} ${this.#id(service)}`;
    let e = this.#entries.get(key);
    if (e === undefined) {
      if (this.#entries.size >= MAX_PEER_ENTRIES) this.#entries.clear();
      e = new PeerEntry(peerLabels(source, destination, service), source, this.metrics);
      this.#entries.set(key, e);
    }
    return e;
  }
}

const identityKey = (id: Identity | undefined): string => (id === undefined ? '-' : `${id.trustDomain}/${id.namespace}/${id.serviceAccount}`);

export function createWaypointTelemetry(deps: WaypointTelemetryDeps): WaypointTelemetry {
  const log = deps.log.child({ scope: 'telemetry' });
  const metrics = new WaypointMetrics(deps.registry.sub('istio'), deps.istioVersion);
  const cache = new LabelCache(metrics);
  const accessLog = deps.accessLog === undefined ? undefined : new AccessLog(deps.accessLog.encoding, deps.accessLog.writer);
  const tracing = deps.tracing;
  const exporter =
    tracing === undefined
      ? undefined
      : new ZipkinExporter({ ...tracing.exporter, transport: tracing.transport, clock: deps.clock, log: deps.log, registry: deps.registry });
  const samplingPercent = tracing?.samplingPercent ?? 1;

  let loggedFailure = false;
  const guard = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (err) {
      if (!loggedFailure) log.error({ err: err instanceof Error ? err.message : String(err) }, `${what} failed (further failures are not logged)`);
      loggedFailure = true;
    }
  };

  return {
    tcpOpened(source, destination, service) {
      guard('metrics', () => cache.entry(source, destination, service).tcp([]).open());
    },

    httpFinished(r) {
      const entry = cache.entry(r.source, r.destination, r.destinationService);
      guard('metrics', () => entry.http(r).record(r, r.requestProtocol === 'grpc'));
      if (accessLog !== undefined) guard('access log', () => accessLog.http(r));
      if (exporter !== undefined && tracing !== undefined) {
        guard('tracing', () => {
          const ctx = parseTraceContext(r.trace);
          if (decideSampling(ctx, samplingPercent, deps.randomBytes)) exporter.add(buildSpan(r, ctx, entry.peer, deps.randomBytes, tracing.span));
        });
      }
    },

    tcpFinished(r) {
      guard('metrics', () => cache.entry(r.source, r.destination, r.destinationService).tcp(r.flags).close(r.bytesReceived, r.bytesSent));
      if (accessLog !== undefined) guard('access log', () => accessLog.tcp(r));
    },

    close: async () => {
      await exporter?.close();
    },
  };
}

export { httpSpanTransport } from './tracing.js';
export { accessLogFromMeshConfig, streamAccessLogWriter, type AccessLogWriter } from './access-log.js';
