/**
 * The DNS proxy's metrics, with ztunnel's names, labels and HELP texts
 * (`src/dns/metrics.rs`), registered on the `istio_` sub-registry:
 * `istio_dns_requests_total`, `istio_dns_upstream_requests_total`,
 * `istio_dns_upstream_failures_total` and the histogram
 * `istio_dns_upstream_request_duration_seconds` (buckets 0.0005 ... 5).
 * All four share the labels request_query_type (lower-case type name),
 * request_protocol (udp|tcp), source_canonical_service and
 * source_canonical_revision (the client pod's; "unknown" when not known).
 * Register once per ztunnel and share it between every pod's DNS proxy.
 */
import type { Workload } from '@ambient/control';
import type { CounterVec, HistogramVec, MetricsRegistry } from '@ambient/dataplane';
import type { Protocol } from './wire.js';

const DNS_DURATION_BUCKETS: readonly number[] = [0.0005, 0.001, 0.01, 0.1, 1, 5];

/** What a DNS metric sample describes. */
export interface DnsMetricLabels {
  /** `queryTypeLabel` of the question's type (e.g. `a`, `aaaa`, `srv`, `unknown`). */
  readonly queryType: string;
  readonly protocol: Protocol;
  /** The client pod's workload; undefined when it is not known. */
  readonly source: Workload | undefined;
}

/** What the proxy records; `createDnsMetrics` gives the real one, tests may pass their own. */
export interface DnsMetricsRecorder {
  /** Every query that got past the header checks (answered locally, forwarded, or SERVFAIL for an unknown client). */
  request(l: DnsMetricLabels): void;
  upstreamRequest(l: DnsMetricLabels): void;
  upstreamFailure(l: DnsMetricLabels): void;
  upstreamDuration(l: DnsMetricLabels, seconds: number): void;
}

type DnsLabelName = 'request_query_type' | 'request_protocol' | 'source_canonical_service' | 'source_canonical_revision';
const LABEL_NAMES: readonly DnsLabelName[] = ['request_query_type', 'request_protocol', 'source_canonical_service', 'source_canonical_revision'];

function labels(l: DnsMetricLabels): Record<DnsLabelName, string> {
  // Empty values are exposed as "unknown" by the registry (ztunnel's DefaultedUnknown).
  return {
    request_query_type: l.queryType,
    request_protocol: l.protocol,
    source_canonical_service: l.source?.canonicalName ?? '',
    source_canonical_revision: l.source?.canonicalRevision ?? '',
  };
}

/** Registers the four families on `istio` (the registry's `istio` sub-registry). */
export function createDnsMetrics(istio: MetricsRegistry): DnsMetricsRecorder {
  const requests: CounterVec<DnsLabelName> = istio.counterVec({
    name: 'dns_requests',
    help: 'Total number of DNS requests (unstable).',
    labelNames: LABEL_NAMES,
  });
  const upstreamRequests: CounterVec<DnsLabelName> = istio.counterVec({
    name: 'dns_upstream_requests',
    help: 'Total number of DNS requests forwarded to upstream (unstable).',
    labelNames: LABEL_NAMES,
  });
  const upstreamFailures: CounterVec<DnsLabelName> = istio.counterVec({
    name: 'dns_upstream_failures',
    help: 'Total number of DNS requests that failed to forward upstream (unstable).',
    labelNames: LABEL_NAMES,
  });
  const duration: HistogramVec<DnsLabelName> = istio.histogramVec({
    name: 'dns_upstream_request_duration_seconds',
    help: 'Total time in seconds Istio takes to get DNS response from upstream (unstable).',
    unit: 'seconds',
    labelNames: LABEL_NAMES,
    buckets: DNS_DURATION_BUCKETS,
  });
  return {
    request: (l) => requests.inc(labels(l)),
    upstreamRequest: (l) => upstreamRequests.inc(labels(l)),
    upstreamFailure: (l) => upstreamFailures.inc(labels(l)),
    upstreamDuration: (l, seconds) => duration.observe(labels(l), seconds),
  };
}
