/**
 * The non-traffic metrics ztunnel exposes, with its names and HELP texts:
 * `istio_build` (src/metrics/meta.rs), `istio_xds_*` (src/xds/metrics.rs),
 * the un-prefixed `workload_manager_*` in-pod gauges (src/inpod/metrics.rs),
 * and our own `ztunnel_connections_refused_total` for the limits and
 * protocol checks ztunnel lacks.
 */
import type { TerminationReason, XdsClientEvents } from '@ambient/control';
import type { Counter, CounterVec, Gauge, MetricsRegistry } from '@ambient/dataplane';

/** `istio_build{component="ztunnel",tag}` = 1; `tag` is the Istio version (or "unknown"). */
export function registerBuildInfo(istio: MetricsRegistry, tag: string): void {
  istio.gaugeVec({ name: 'build', help: 'Istio component build info.', labelNames: ['component', 'tag'] }).set({ component: 'ztunnel', tag }, 1);
}

/** xDS stream metrics; pass as the control package's `XdsClientEvents`. */
export class XdsMetrics implements XdsClientEvents {
  readonly #terminations: CounterVec<'reason'>;
  readonly #messages: CounterVec<'url'>;
  readonly #bytes: CounterVec<'url'>;

  constructor(istio: MetricsRegistry) {
    this.#terminations = istio.counterVec({
      name: 'xds_connection_terminations',
      help: 'The total number of completed connections to xds server (unstable).',
      labelNames: ['reason'],
    });
    this.#messages = istio.counterVec({ name: 'xds_message', help: 'Total number of messages received (unstable).', labelNames: ['url'] });
    this.#bytes = istio.counterVec({
      name: 'xds_message_bytes',
      help: 'Total number of bytes received (unstable).',
      unit: 'bytes',
      labelNames: ['url'],
    });
  }

  onMessage(typeUrl: string, bytes: number): void {
    this.#messages.inc({ url: typeUrl });
    this.#bytes.inc({ url: typeUrl }, bytes);
  }

  onTermination(reason: TerminationReason): void {
    this.#terminations.inc({ reason });
  }
}

/**
 * In-pod workload manager gauges, on the `workload_manager_` sub-registry
 * (no `istio_` prefix: the ztunnel dashboard queries these exact names).
 */
export class WorkloadManagerMetrics {
  readonly activeProxies: Gauge;
  readonly pendingProxies: Gauge;
  readonly proxiesStarted: Counter;
  readonly proxiesStopped: Counter;

  /** `workloadManager` is the `workload_manager_` sub-registry. */
  constructor(workloadManager: MetricsRegistry) {
    this.activeProxies = workloadManager.gauge({
      name: 'active_proxy_count',
      help: 'The total number current workloads with active proxies (unstable).',
    });
    this.pendingProxies = workloadManager.gauge({
      name: 'pending_proxy_count',
      help: 'The total number current workloads with pending proxies (unstable).',
    });
    this.proxiesStarted = workloadManager.counter({ name: 'proxies_started', help: 'The total number of proxies that were started (unstable).' });
    this.proxiesStopped = workloadManager.counter({ name: 'proxies_stopped', help: 'The total number of proxies that were stopped (unstable).' });
  }
}

/**
 * Why ztunnel itself dropped a connection outside the istio_tcp_* accounting:
 * the limits we add to ztunnel, and protocol refusals on listeners that have
 * no Istio metric for them.
 */
export type RefusalReason =
  | 'tls_handshake_timeout'
  | 'h2_preface_timeout'
  | 'connection_limit'
  | 'h2_rapid_reset'
  | 'h2_flood'
  | 'h2_header_list_size'
  | 'socks5_handshake_timeout'
  | 'socks5_protocol_error';

/** The listener a refusal happened on. */
export type ListenerName = 'inbound' | 'inbound_plaintext' | 'outbound' | 'socks5';

/** Receives refusals (the listeners take this, not the registry). */
export interface RefusalRecorder {
  refused(reason: RefusalReason, listener: ListenerName): void;
}

/** `ztunnel_connections_refused_total{reason,listener}`: ours, not Istio's; on the root registry. */
export class RefusalMetrics implements RefusalRecorder {
  readonly #refused: CounterVec<'reason' | 'listener'>;

  constructor(root: MetricsRegistry) {
    this.#refused = root.counterVec({
      name: 'ztunnel_connections_refused',
      help: 'Connections ztunnel closed or refused because of one of its own limits or protocol checks, by reason and listener (unstable).',
      labelNames: ['reason', 'listener'],
    });
  }

  refused(reason: RefusalReason, listener: ListenerName): void {
    this.#refused.inc({ reason, listener });
  }
}
