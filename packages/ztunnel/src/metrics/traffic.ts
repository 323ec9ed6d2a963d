/**
 * ztunnel's traffic metrics (src/proxy/metrics.rs): the `istio_tcp_*` families
 * with the exact label set and order the Istio dashboards and Kiali read, the
 * pure function that fills those labels from what a proxy knows about a
 * connection, and a per-connection recorder.
 *
 * Facts kept from ztunnel:
 * - `opened`, `received_bytes` and `sent_bytes` are recorded under the labels
 *   the connection opened with (response_flags="-"); `closed` (and `failed`
 *   for a failure flag) under the final response flag.
 * - received = bytes read from the downstream (request direction), sent =
 *   bytes written to the downstream (response direction), for both reporters.
 * - source_principal comes only from a real mTLS identity (the derived
 *   source); destination_principal is the destination workload's identity.
 * - The locality labels are present only when some source or destination
 *   information was attached (in practice: always).
 *
 * Bytes are counted per connection in plain numbers and folded into the
 * counters at scrape time and at close, so the copy loop never hashes a
 * 27-label set per chunk.
 */
import { identityToString, type Identity, type Workload } from '@ambient/control';
import { FAILED_FLAGS, type ResponseFlag } from '@ambient/dataplane';
import type { CounterVec, GaugeVec, Labels, MetricsRegistry } from '@ambient/dataplane';

export type Reporter = 'source' | 'destination';
type SecurityPolicy = 'mutual_tls' | 'unknown';

/** The label names of the `istio_tcp_*` families, in exposition order. */
export const TRAFFIC_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_service',
  'destination_service_namespace',
  'destination_service_name',
  'destination_workload',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_cluster',
  'request_protocol',
  'response_flags',
  'connection_security_policy',
  'source_region',
  'source_zone',
  'destination_region',
  'destination_zone',
] as const;

export type TrafficLabelName = (typeof TRAFFIC_LABEL_NAMES)[number];
type LocalityLabelName = 'source_region' | 'source_zone' | 'destination_region' | 'destination_zone';

/**
 * Label values for one connection, keys in exposition order, never empty
 * ("unknown" instead). The locality labels are absent when nothing about
 * either peer was known.
 */
export type TrafficLabels = Readonly<Record<Exclude<TrafficLabelName, LocalityLabelName>, string>> &
  Partial<Readonly<Record<LocalityLabelName, string>>>;

/** What the metrics need of a WDS workload. */
export type WorkloadLabelSource = Pick<
  Workload,
  'name' | 'namespace' | 'workloadName' | 'canonicalName' | 'canonicalRevision' | 'identity' | 'clusterId' | 'locality'
>;

/**
 * A peer known only from the connection itself: the mTLS identity, plus what
 * the peer's `baggage` said (ztunnel `DerivedWorkload`).
 */
export interface DerivedWorkload {
  readonly workloadName?: string;
  /** baggage `service.name` */
  readonly app?: string;
  /** baggage `service.version` */
  readonly revision?: string;
  readonly namespace?: string;
  readonly identity?: Identity;
  readonly clusterId?: string;
  readonly region?: string;
  readonly zone?: string;
}

interface ServiceDescription {
  readonly hostname: string;
  readonly name: string;
  readonly namespace: string;
}

/** Everything a proxy knows about a connection when it is established (ztunnel `ConnectionOpen`). */
export interface TrafficContext {
  readonly reporter: Reporter;
  /** The source workload from WDS (outbound: the local workload; inbound: looked up by source IP). */
  readonly source?: WorkloadLabelSource | undefined;
  /** Source facts from the connection: mTLS peer identity (and baggage on gateway traffic). */
  readonly derivedSource?: DerivedWorkload | undefined;
  /** The next hop's workload (a waypoint when going through one). */
  readonly destination?: WorkloadLabelSource | undefined;
  /** Destination facts from the connection (double HBONE: response baggage + peer identity). */
  readonly derivedDestination?: DerivedWorkload | undefined;
  /** The intended service (through a waypoint: the service, not the waypoint). */
  readonly destinationService?: ServiceDescription | undefined;
  readonly securityPolicy: SecurityPolicy;
}

const UNKNOWN = 'unknown';
const u = (v: string | undefined): string => (v === undefined || v === '' ? UNKNOWN : v);

/**
 * The `istio_tcp_*` label values for a connection, with response_flags "-".
 * Pure; follows ztunnel's order of precedence (derived source first, then the
 * WDS source overrides everything but the principal).
 */
/** One peer's label values, before the `source_` / `destination_` prefix. */
interface PeerFacts {
  readonly workload: string | undefined;
  readonly canonicalService: string | undefined;
  readonly canonicalRevision: string | undefined;
  readonly namespace: string | undefined;
  readonly app: string | undefined;
  readonly version: string | undefined;
  readonly cluster: string | undefined;
  /** undefined: leave the principal label as it is. */
  readonly principal: string | undefined;
  readonly region: string | undefined;
  readonly zone: string | undefined;
}

/** A peer known from WDS: app/version from the canonical labels (ztunnel). */
function wdsFacts(w: WorkloadLabelSource, withPrincipal: boolean): PeerFacts {
  return {
    workload: w.workloadName,
    canonicalService: w.canonicalName,
    canonicalRevision: w.canonicalRevision,
    namespace: w.namespace,
    app: w.canonicalName,
    version: w.canonicalRevision,
    cluster: w.clusterId,
    principal: withPrincipal ? identityToString(w.identity) : undefined,
    region: w.locality?.region,
    zone: w.locality?.zone,
  };
}

/** A peer known only from the connection (mTLS identity, baggage): app is the workload name (ztunnel). */
function derivedFacts(d: DerivedWorkload): PeerFacts {
  return {
    workload: d.workloadName,
    canonicalService: d.app,
    canonicalRevision: d.revision,
    namespace: d.namespace,
    app: d.workloadName,
    version: d.revision,
    cluster: d.clusterId,
    principal: d.identity ? identityToString(d.identity) : UNKNOWN,
    region: d.region,
    zone: d.zone,
  };
}

/** Writes one peer's labels; returns true (locality labels are then emitted). */
function fillPeer(l: Record<string, string>, side: 'source' | 'destination', f: PeerFacts): true {
  l[`${side}_workload`] = u(f.workload);
  l[`${side}_canonical_service`] = u(f.canonicalService);
  l[`${side}_canonical_revision`] = u(f.canonicalRevision);
  l[`${side}_workload_namespace`] = u(f.namespace);
  l[`${side}_app`] = u(f.app);
  l[`${side}_version`] = u(f.version);
  l[`${side}_cluster`] = u(f.cluster);
  if (f.principal !== undefined) l[`${side}_principal`] = f.principal;
  l[`${side}_region`] = u(f.region);
  l[`${side}_zone`] = u(f.zone);
  return true;
}

export function trafficLabels(ctx: TrafficContext, responseFlag: ResponseFlag = '-'): TrafficLabels {
  const l: Record<string, string> = {};
  for (const name of TRAFFIC_LABEL_NAMES) l[name] = UNKNOWN;
  let locality = false;

  l['reporter'] = ctx.reporter;

  // Derived (connection) facts first; WDS facts override them, except the principal,
  // which only a real mTLS identity may set.
  if (ctx.derivedSource) locality = fillPeer(l, 'source', derivedFacts(ctx.derivedSource));
  if (ctx.source) locality = fillPeer(l, 'source', wdsFacts(ctx.source, false));
  if (ctx.destination) locality = fillPeer(l, 'destination', wdsFacts(ctx.destination, true));
  const svc = ctx.destinationService;
  if (svc) {
    l['destination_service'] = u(svc.hostname);
    l['destination_service_name'] = u(svc.name);
    l['destination_service_namespace'] = u(svc.namespace);
  }
  if (ctx.derivedDestination) locality = fillPeer(l, 'destination', derivedFacts(ctx.derivedDestination));

  l['request_protocol'] = 'tcp';
  l['response_flags'] = responseFlag;
  l['connection_security_policy'] = ctx.securityPolicy;

  if (!locality) {
    delete l['source_region'];
    delete l['source_zone'];
    delete l['destination_region'];
    delete l['destination_zone'];
  }
  return l as TrafficLabels;
}

/** Bytes and end of one proxied connection; recorded exactly once. */
export interface ConnectionRecorder {
  /** The labels the connection opened with (response_flags "-"). */
  readonly labels: TrafficLabels;
  /** Bytes read from the downstream and sent upstream (istio_tcp_received_bytes_total). */
  addReceived(n: number): void;
  /** Bytes read from the upstream and written to the downstream (istio_tcp_sent_bytes_total). */
  addSent(n: number): void;
  readonly receivedBytes: number;
  readonly sentBytes: number;
  readonly closed: boolean;
  /**
   * Counts the close (and a failure for a failure flag) and folds the last
   * bytes in. Returns false if the connection was already recorded.
   */
  close(flag: ResponseFlag): boolean;
}

/** On-demand DNS lookups for WDS workloads with a hostname (ztunnel `OnDemandDnsLabels`). */
export const ON_DEMAND_DNS_LABEL_NAMES = [
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'hostname',
] as const;

/**
 * The `istio_tcp_*` families, `istio_tcp_sockets_open` and
 * `istio_on_demand_dns_total`, registered on the `istio_` sub-registry.
 *
 * Invariants:
 * - Every live recorder is in `#live` until it is closed; bytes not yet
 *   folded into the counters are `received - foldedReceived` (same for sent).
 * - A recorder folds its bytes under its opening labels only.
 */
export class TrafficMetrics {
  readonly #opened: CounterVec<TrafficLabelName>;
  readonly #closed: CounterVec<TrafficLabelName>;
  readonly #failed: CounterVec<TrafficLabelName>;
  readonly #received: CounterVec<TrafficLabelName>;
  readonly #sent: CounterVec<TrafficLabelName>;
  readonly #sockets: GaugeVec<'reporter'>;
  readonly #onDemandDns: CounterVec<(typeof ON_DEMAND_DNS_LABEL_NAMES)[number]>;
  readonly #live = new Set<Recorder>();

  /** `istio` is the `istio_` sub-registry. */
  constructor(istio: MetricsRegistry) {
    const labelNames = TRAFFIC_LABEL_NAMES;
    this.#opened = istio.counterVec({ name: 'tcp_connections_opened', help: 'The total number of TCP connections opened.', labelNames });
    this.#closed = istio.counterVec({ name: 'tcp_connections_closed', help: 'The total number of TCP connections closed.', labelNames });
    this.#received = istio.counterVec({
      name: 'tcp_received_bytes',
      help: 'The size of total bytes received during request in case of a TCP connection.',
      labelNames,
    });
    this.#sent = istio.counterVec({
      name: 'tcp_sent_bytes',
      help: 'The size of total bytes sent during response in case of a TCP connection.',
      labelNames,
    });
    this.#failed = istio.counterVec({
      name: 'tcp_connections_failed',
      help: 'The total number of TCP connections that failed to establish (unstable).',
      labelNames,
    });
    this.#sockets = istio.gaugeVec({ name: 'tcp_sockets_open', help: 'The current number of open TCP sockets (unstable).', labelNames: ['reporter'] });
    this.#onDemandDns = istio.counterVec({
      name: 'on_demand_dns',
      help: 'The total number of requests that used on-demand DNS (unstable).',
      labelNames: ON_DEMAND_DNS_LABEL_NAMES,
    });
    // Scrapes see live byte counts, as ztunnel's per-chunk increments would show.
    istio.beforeCollect(() => {
      for (const r of this.#live) r.flush();
    });
  }

  /** Counts an established connection and returns its recorder. */
  open(ctx: TrafficContext): ConnectionRecorder {
    const r = new Recorder(this, trafficLabels(ctx));
    this.#opened.inc(asLabels(r.labels));
    this.#live.add(r);
    return r;
  }

  /** Counts an accepted or dialled socket; call the result when it closes (exactly once is enforced). */
  socketOpened(reporter: Reporter): () => void {
    this.#sockets.inc({ reporter });
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.#sockets.dec({ reporter });
    };
  }

  /** An on-demand DNS lookup of `hostname` on behalf of `source`. */
  onDemandDns(source: WorkloadLabelSource, hostname: string): void {
    this.#onDemandDns.inc({
      source_workload: source.workloadName,
      source_canonical_service: source.canonicalName,
      source_canonical_revision: source.canonicalRevision,
      source_workload_namespace: source.namespace,
      source_principal: identityToString(source.identity),
      source_app: source.canonicalName,
      source_version: source.canonicalRevision,
      source_cluster: source.clusterId,
      hostname,
    });
  }

  /** @internal called by a recorder */
  fold(r: Recorder, received: number, sent: number): void {
    if (received > 0) this.#received.inc(asLabels(r.labels), received);
    if (sent > 0) this.#sent.inc(asLabels(r.labels), sent);
  }

  /** @internal called by a recorder */
  finish(r: Recorder, flag: ResponseFlag): void {
    this.#live.delete(r);
    const labels = asLabels(flag === '-' ? r.labels : { ...r.labels, response_flags: flag });
    this.#closed.inc(labels);
    if (FAILED_FLAGS.has(flag)) this.#failed.inc(labels);
  }
}

/** The locality labels may be absent; the registry writes only the labels present. */
function asLabels(l: TrafficLabels): Labels<TrafficLabelName> {
  return l as Labels<TrafficLabelName>;
}

class Recorder implements ConnectionRecorder {
  #received = 0;
  #sent = 0;
  #foldedReceived = 0;
  #foldedSent = 0;
  #closed = false;

  constructor(
    private readonly metrics: TrafficMetrics,
    readonly labels: TrafficLabels,
  ) {}

  get receivedBytes(): number {
    return this.#received;
  }

  get sentBytes(): number {
    return this.#sent;
  }

  get closed(): boolean {
    return this.#closed;
  }

  addReceived(n: number): void {
    if (n > 0) this.#received += n;
  }

  addSent(n: number): void {
    if (n > 0) this.#sent += n;
  }

  flush(): void {
    const r = this.#received - this.#foldedReceived;
    const s = this.#sent - this.#foldedSent;
    this.#foldedReceived = this.#received;
    this.#foldedSent = this.#sent;
    this.metrics.fold(this, r, s);
  }

  close(flag: ResponseFlag): boolean {
    if (this.#closed) return false;
    this.#closed = true;
    this.flush();
    this.metrics.finish(this, flag);
    return true;
  }
}
