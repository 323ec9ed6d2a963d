/**
 * The metric families an Istio waypoint (Envoy with the `istio_stats` filter,
 * `reporter: SERVER_GATEWAY`) exposes, on the dataplane registry's `istio_`
 * sub-registry: the HTTP request counter and histograms, the gRPC message
 * counters, the four TCP counters and `istio_build{component="proxy"}`.
 *
 * Facts kept from Envoy / istio_stats (observability.md §5):
 * - Labels in istio_stats' emission order (labels.ts), `le` last on buckets.
 * - Histograms use Envoy's default bounds 0.5 … 3600000 (no custom buckets in
 *   Istio); `le` is written as Envoy's `%.32g` writes them ("0.5", "1",
 *   "3600000", "+Inf"), which is also how JavaScript prints these numbers.
 * - Durations are whole milliseconds (Envoy truncates the request duration to
 *   milliseconds before recording it), sizes are wire bytes.
 * - `grpc_response_status=""` is a value, not "unknown" (keepEmpty).
 * - TCP: `opened` when a connection is established (response_flags "-"),
 *   `closed` and the byte counters at the end under the final flags;
 *   received = downstream → upstream, sent = upstream → downstream.
 *
 * Invariant: callers pass label objects built by labels.ts (complete, in
 * order); this module adds no labels and never emits pod/namespace/app/...
 * (Prometheus attaches those at scrape time). Recording goes through series
 * bound once per label set (the registry's `bind`), so a request costs
 * additions, not label hashing.
 */
import type { Counter, CounterVec, Histogram, HistogramVec, MetricsRegistry } from '@ambient/dataplane';
import { HTTP_LABEL_NAMES, TCP_LABEL_NAMES, type HttpLabelName, type HttpLabels, type TcpLabelName, type TcpLabels } from './labels.js';

/** Envoy's `HistogramSettingsImpl::defaultBuckets` (ms for durations, bytes for sizes). */
export const ENVOY_DEFAULT_BUCKETS: readonly number[] = [
  0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000,
];

/** What one finished HTTP request adds to the families. */
export interface RequestObservation {
  readonly durationMs: number;
  readonly requestBytes: number;
  readonly responseBytes: number;
  /** Messages each way (istio_request_messages_total / istio_response_messages_total; gRPC only). */
  readonly requestMessages: number;
  readonly responseMessages: number;
}

export class WaypointMetrics {
  readonly #requests: CounterVec<HttpLabelName>;
  readonly #duration: HistogramVec<HttpLabelName>;
  readonly #requestBytes: HistogramVec<HttpLabelName>;
  readonly #responseBytes: HistogramVec<HttpLabelName>;
  readonly #requestMessages: CounterVec<HttpLabelName>;
  readonly #responseMessages: CounterVec<HttpLabelName>;
  readonly #tcpOpened: CounterVec<TcpLabelName>;
  readonly #tcpClosed: CounterVec<TcpLabelName>;
  readonly #tcpSent: CounterVec<TcpLabelName>;
  readonly #tcpReceived: CounterVec<TcpLabelName>;

  /** `istio` is the `istio_` sub-registry; `istioVersion` is istio_build's tag ("unknown" when empty). */
  constructor(istio: MetricsRegistry, istioVersion: string) {
    istio
      .gaugeVec({ name: 'build', help: 'Istio component build info.', labelNames: ['component', 'tag'] })
      .set({ component: 'proxy', tag: istioVersion === '' ? 'unknown' : istioVersion }, 1);

    const http = { labelNames: HTTP_LABEL_NAMES, keepEmpty: ['grpc_response_status'] as const };
    const buckets = ENVOY_DEFAULT_BUCKETS;
    this.#requests = istio.counterVec({ name: 'requests', help: 'The total number of requests.', ...http });
    this.#duration = istio.histogramVec({ name: 'request_duration_milliseconds', help: 'The duration of requests.', buckets, ...http });
    this.#requestBytes = istio.histogramVec({ name: 'request_bytes', help: 'The size of request bodies and headers.', unit: 'bytes', buckets, ...http });
    this.#responseBytes = istio.histogramVec({ name: 'response_bytes', help: 'The size of response bodies and headers.', unit: 'bytes', buckets, ...http });
    this.#requestMessages = istio.counterVec({ name: 'request_messages', help: 'The total number of gRPC messages sent by clients.', ...http });
    this.#responseMessages = istio.counterVec({ name: 'response_messages', help: 'The total number of gRPC messages sent by servers.', ...http });

    const labelNames = TCP_LABEL_NAMES;
    this.#tcpOpened = istio.counterVec({ name: 'tcp_connections_opened', help: 'The total number of TCP connections opened.', labelNames });
    this.#tcpClosed = istio.counterVec({ name: 'tcp_connections_closed', help: 'The total number of TCP connections closed.', labelNames });
    this.#tcpReceived = istio.counterVec({
      name: 'tcp_received_bytes',
      help: 'The size of total bytes received during request in case of a TCP connection.',
      unit: 'bytes',
      labelNames,
    });
    this.#tcpSent = istio.counterVec({
      name: 'tcp_sent_bytes',
      help: 'The size of total bytes sent during response in case of a TCP connection.',
      unit: 'bytes',
      labelNames,
    });
  }

  /** The bound series of one HTTP label set (cache it: recording through it costs no hashing). */
  httpSeries(labels: HttpLabels): HttpSeries {
    return new HttpSeries(
      this.#requests.bind(labels),
      this.#duration.bind(labels),
      this.#requestBytes.bind(labels),
      this.#responseBytes.bind(labels),
      this.#requestMessages.bind(labels),
      this.#responseMessages.bind(labels),
    );
  }

  /** The bound series of one TCP label set. */
  tcpSeries(labels: TcpLabels): TcpSeries {
    return new TcpSeries(this.#tcpOpened.bind(labels), this.#tcpClosed.bind(labels), this.#tcpReceived.bind(labels), this.#tcpSent.bind(labels));
  }
}

/** The families' series for one HTTP label set. */
export class HttpSeries {
  constructor(
    private readonly requests: Counter,
    private readonly duration: Histogram,
    private readonly requestBytes: Histogram,
    private readonly responseBytes: Histogram,
    private readonly requestMessages: Counter,
    private readonly responseMessages: Counter,
  ) {}

  /** One finished request; the message counters only for gRPC. */
  record(o: RequestObservation, grpc: boolean): void {
    this.requests.inc();
    this.duration.observe(wholeMs(o.durationMs));
    this.requestBytes.observe(nonNegative(o.requestBytes));
    this.responseBytes.observe(nonNegative(o.responseBytes));
    if (grpc) {
      this.requestMessages.inc(nonNegative(o.requestMessages));
      this.responseMessages.inc(nonNegative(o.responseMessages));
    }
  }
}

/** The families' series for one TCP label set. */
export class TcpSeries {
  constructor(
    private readonly opened: Counter,
    private readonly closed: Counter,
    private readonly received: Counter,
    private readonly sent: Counter,
  ) {}

  /** A connection established (labels with response_flags "-"). */
  open(): void {
    this.opened.inc();
  }

  /** A connection closed under its final labels, with its byte counts. */
  close(receivedBytes: number, sentBytes: number): void {
    this.closed.inc();
    this.received.inc(nonNegative(receivedBytes));
    this.sent.inc(nonNegative(sentBytes));
  }
}

function wholeMs(ms: number): number {
  return ms > 0 && Number.isFinite(ms) ? Math.trunc(ms) : 0;
}

function nonNegative(n: number): number {
  return n > 0 && Number.isFinite(n) ? n : 0;
}
