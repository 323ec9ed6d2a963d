/**
 * ztunnel's metrics, assembled as ztunnel lays out its registry: the root
 * (process_*, our nodejs_* runtime figures, our ztunnel_connections_refused), the `istio_`
 * sub-registry (build, xDS, traffic) and, for the in-pod mode, the
 * `workload_manager_` sub-registry.
 *
 * None of these ever carries a `pod`, `namespace`, `app`, `node`, `job` or
 * `instance` label: Prometheus attaches those at scrape time (with
 * honor_labels) and the dashboards select on them.
 */
import { RefusalMetrics, WorkloadManagerMetrics, XdsMetrics, registerBuildInfo } from './components.js';
import { registerProcessMetrics, registerRuntimeMetrics, type ProcessProbe } from '@ambient/dataplane';
import { MetricsRegistry } from '@ambient/dataplane';
import { TrafficMetrics } from './traffic.js';

export interface ZtunnelMetricsOptions {
  /** `istio_build` tag (config.istioVersion). */
  readonly istioVersion: string;
  /** Register `workload_manager_*` (ztunnel does in shared/in-pod mode only). Default true. */
  readonly workloadManager?: boolean;
  /** Descriptor counts; default /proc. */
  readonly processProbe?: ProcessProbe;
  /** Register the nodejs_* runtime figures (starts an event-loop delay monitor). Default true. */
  readonly runtime?: boolean;
}

export interface ZtunnelMetrics {
  readonly registry: MetricsRegistry;
  readonly traffic: TrafficMetrics;
  readonly xds: XdsMetrics;
  readonly refusals: RefusalMetrics;
  readonly workloadManager: WorkloadManagerMetrics | undefined;
  /** Stops the runtime monitor. */
  close(): void;
}

export function createZtunnelMetrics(o: ZtunnelMetricsOptions): ZtunnelMetrics {
  const registry = new MetricsRegistry();
  registerProcessMetrics(registry, o.processProbe);
  const runtime = o.runtime === false ? undefined : registerRuntimeMetrics(registry);
  const refusals = new RefusalMetrics(registry);
  const istio = registry.sub('istio');
  registerBuildInfo(istio, o.istioVersion === '' ? 'unknown' : o.istioVersion);
  const xds = new XdsMetrics(istio);
  const traffic = new TrafficMetrics(istio);
  const workloadManager = o.workloadManager === false ? undefined : new WorkloadManagerMetrics(registry.sub('workload_manager'));
  return { registry, traffic, xds, refusals, workloadManager, close: () => runtime?.close() };
}

export * from './components.js';
export * from './connection-result.js';
export * from '@ambient/dataplane';
export * from '@ambient/dataplane';
export * from './traffic.js';
