/**
 * Trace context and Zipkin spans.
 *
 * Propagation: the waypoint forwards every trace header (W3C `traceparent` /
 * `tracestate`, B3 multi and single header, and the others Istio lists) to the
 * upstream unchanged; this module only reads them to parent the waypoint's own
 * span. B3 wins over W3C (Envoy's Zipkin tracer reads B3); malformed values
 * are ignored, never repaired or forwarded differently.
 *
 * Sampling: an incoming decision (x-b3-sampled, x-b3-flags=1, the single b3
 * header's flag, traceparent's sampled bit) is kept; otherwise the request is
 * sampled with the configured percentage (Istio's default 1 %), drawn from
 * the injected RandomBytes.
 *
 * Export (only when a Zipkin collector is configured): Zipkin v2 JSON, POSTed
 * to `/api/v2/spans`, one SERVER span per sampled request, with Envoy's
 * standard tags plus the waypoint's `istio.downstream.*` / `istio.upstream.*`.
 * Span ids are 64-bit and new trace ids 128-bit (Istio sets
 * `trace_id_128bit`), from RandomBytes. The exporter batches like Envoy's
 * (a report at 5 queued spans or every 5 s), keeps at most
 * `maxQueuedSpans`, sends one report at a time with a 5 s timeout, and never
 * blocks or fails a request: a span that does not fit is dropped and counted,
 * a failed report is dropped and counted.
 *
 * Invariants: `add` is synchronous and O(1); at most one report is in flight;
 * after `close()` nothing is queued and no timer is left.
 */
import { request as httpRequest } from 'node:http';
import { lookup as dnsLookup } from 'node:dns/promises';
import { canonicalIp, type Clock, type Logger, type RandomBytes, type Timer } from '@ambient/control';
import type { CounterVec, MetricsRegistry, SocketFactory } from '@ambient/dataplane';
import { responseFlagsText, type PeerLabels } from './labels.js';
import type { HttpRequestRecord, TraceHeaders } from './types.js';

/** Request headers that carry trace context; all are forwarded as received (waypoint.md §5.2). */
export const TRACE_PROPAGATION_HEADERS: readonly string[] = [
  'x-request-id',
  'x-b3-traceid',
  'x-b3-spanid',
  'x-b3-parentspanid',
  'x-b3-sampled',
  'x-b3-flags',
  'b3',
  'traceparent',
  'tracestate',
  'x-ot-span-context',
  'grpc-trace-bin',
  'x-cloud-trace-context',
  'x-datadog-trace-id',
  'x-datadog-parent-id',
  'x-datadog-sampling-priority',
];

/** The parent of the waypoint's span, as the request carried it. */
export interface TraceContext {
  /** 16 or 32 lower-case hex digits; undefined when only a sampling decision was sent. */
  readonly traceId: string | undefined;
  /** The caller's span id (our span's parent). */
  readonly spanId: string | undefined;
  /** The caller's sampling decision, undefined when it made none. */
  readonly sampled: boolean | undefined;
}

const HEX16 = /^[0-9a-f]{16}$/;
const HEX16_OR_32 = /^(?:[0-9a-f]{16}|[0-9a-f]{32})$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?$/;
const ZEROS = /^0+$/;

const validTraceId = (v: string | undefined): v is string => v !== undefined && HEX16_OR_32.test(v) && !ZEROS.test(v);
const validSpanId = (v: string | undefined): v is string => v !== undefined && HEX16.test(v) && !ZEROS.test(v);

function b3Sampled(sampled: string | undefined, flags: string | undefined): boolean | undefined {
  if (flags === '1') return true;
  if (sampled === '1' || sampled === 'true' || sampled === 'd') return true;
  if (sampled === '0' || sampled === 'false') return false;
  return undefined;
}

/** The trace context of a request's headers; undefined when none is usable. */
export function parseTraceContext(h: TraceHeaders | undefined): TraceContext | undefined {
  if (h === undefined) return undefined;
  const multiTrace = h['x-b3-traceid']?.toLowerCase();
  const multiSpan = h['x-b3-spanid']?.toLowerCase();
  const multiSampled = b3Sampled(h['x-b3-sampled']?.toLowerCase(), h['x-b3-flags']);
  if (validTraceId(multiTrace) && validSpanId(multiSpan)) return { traceId: multiTrace, spanId: multiSpan, sampled: multiSampled };

  const single = h.b3?.trim().toLowerCase();
  if (single !== undefined && single !== '') {
    const parts = single.split('-');
    if (parts.length === 1) {
      const s = b3Sampled(parts[0], undefined);
      if (s !== undefined) return { traceId: undefined, spanId: undefined, sampled: s };
    } else if (parts.length >= 2 && parts.length <= 4 && validTraceId(parts[0]) && validSpanId(parts[1])) {
      return { traceId: parts[0], spanId: parts[1], sampled: b3Sampled(parts[2], undefined) };
    }
  }

  const tp = TRACEPARENT.exec(h.traceparent?.trim().toLowerCase() ?? '');
  if (tp !== null) {
    const [, version = '', traceId = '', spanId = '', flags = ''] = tp;
    // Version ff is invalid; version 00 has exactly four fields.
    if (version !== 'ff' && !(version === '00' && tp[0].length !== 55) && !ZEROS.test(traceId) && !ZEROS.test(spanId)) {
      return { traceId, spanId, sampled: (Number.parseInt(flags, 16) & 1) === 1 };
    }
  }
  if (multiSampled !== undefined) return { traceId: undefined, spanId: undefined, sampled: multiSampled };
  return undefined;
}

function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += (b < 16 ? '0' : '') + b.toString(16);
  return s;
}

/** A non-zero id of `bytes` random bytes in hex. */
function randomId(random: RandomBytes, bytes: number): string {
  for (;;) {
    const id = hex(random(bytes));
    if (!ZEROS.test(id)) return id;
  }
}

/** Keeps the caller's decision, else samples `percent` % of requests. */
export function decideSampling(ctx: TraceContext | undefined, percent: number, random: RandomBytes): boolean {
  if (ctx?.sampled !== undefined) return ctx.sampled;
  if (percent <= 0) return false;
  if (percent >= 100) return true;
  const b = random(4);
  const draw = (((b[0] ?? 0) << 24) | ((b[1] ?? 0) << 16) | ((b[2] ?? 0) << 8) | (b[3] ?? 0)) >>> 0;
  return draw / 0x1_0000_0000 < percent / 100;
}

/** A Zipkin v2 span (https://zipkin.io/zipkin-api/#/default/post_spans). */
export interface ZipkinSpan {
  readonly traceId: string;
  readonly id: string;
  readonly parentId?: string;
  readonly kind: 'SERVER';
  readonly name: string;
  /** Microseconds since the epoch. */
  readonly timestamp: number;
  /** Microseconds, at least 1. */
  readonly duration: number;
  readonly localEndpoint: { readonly serviceName: string; readonly ipv4?: string; readonly ipv6?: string };
  readonly remoteEndpoint?: { readonly ipv4?: string; readonly ipv6?: string; readonly port?: number };
  readonly tags: Readonly<Record<string, string>>;
}

export interface SpanOptions {
  /** Envoy's service cluster: `<canonical name>.<namespace>` of the waypoint. */
  readonly serviceName: string;
  /** The waypoint's own IP (localEndpoint), when known. */
  readonly localIp?: string | undefined;
  /** Tags on every span (istio.mesh_id, istio.canonical_service, ...). */
  readonly staticTags?: Readonly<Record<string, string>>;
}

/** `ip:port` / `[ip]:port` → its parts, undefined when not an address. */
function splitAddress(text: string): { ip: string; port: number } | undefined {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(text);
  if (m === null) return undefined;
  const ip = canonicalIp(m[1] ?? '');
  return ip === undefined ? undefined : { ip, port: Number(m[2]) };
}

const endpointIp = (ip: string): { ipv4: string } | { ipv6: string } => (ip.includes(':') ? { ipv6: ip } : { ipv4: ip });

/**
 * The waypoint's span for one request. `peer` are the request's metric peer
 * labels (the downstream and upstream workload and namespace tags).
 */
export function buildSpan(r: HttpRequestRecord, ctx: TraceContext | undefined, peer: PeerLabels, random: RandomBytes, o: SpanOptions): ZipkinSpan {
  const traceId = ctx?.traceId ?? randomId(random, 16);
  const parentId = ctx?.traceId !== undefined ? ctx.spanId : undefined;
  const port = splitAddress(r.downstreamLocal)?.port;
  const svc = r.destinationService;
  const name = svc !== undefined && port !== undefined ? `${svc.hostname}:${port}/*` : `${r.authority ?? '-'}/*`;
  const status = r.responseCode;
  const tags: Record<string, string> = {
    ...o.staticTags,
    component: 'proxy',
    'http.method': r.method,
    'http.url': `http://${r.authority ?? '-'}${r.path}`,
    'http.protocol': r.httpVersion,
    'http.status_code': String(status),
    response_flags: responseFlagsText(r.flags),
    upstream_cluster: r.upstreamCluster ?? '-',
    'upstream_cluster.name': r.upstreamCluster ?? '-',
    downstream_cluster: '-',
    request_size: String(r.requestBodyBytes),
    response_size: String(r.responseBodyBytes),
    user_agent: r.userAgent ?? '-',
    'istio.downstream.workload': peer.source_workload,
    'istio.downstream.namespace': peer.source_workload_namespace,
    'istio.upstream.workload': peer.destination_workload,
    'istio.upstream.namespace': peer.destination_workload_namespace,
  };
  if (r.requestId !== undefined) tags['guid:x-request-id'] = r.requestId;
  const remote = splitAddress(r.downstreamRemote);
  if (remote !== undefined) tags['peer.address'] = remote.ip;
  if (status === 0 || status >= 500) tags['error'] = 'true';
  const timestamp = Math.trunc(r.startMs * 1000);
  return {
    traceId,
    id: randomId(random, 8),
    ...(parentId === undefined ? {} : { parentId }),
    kind: 'SERVER',
    name: name.toLowerCase(),
    timestamp,
    duration: Math.max(1, Math.round(r.durationMs * 1000)),
    localEndpoint: { serviceName: o.serviceName, ...(o.localIp === undefined ? {} : endpointIp(o.localIp)) },
    ...(remote === undefined ? {} : { remoteEndpoint: { ...endpointIp(remote.ip), port: remote.port } }),
    tags,
  };
}

// === Export ===

/** Sends one report (a JSON array of spans); resolves with the HTTP status, rejects on a transport error. */
export type SpanTransport = (body: string, signal: AbortSignal) => Promise<number>;

export interface ZipkinExporterOptions {
  readonly transport: SpanTransport;
  readonly clock: Clock;
  readonly log: Logger;
  /** The root registry; the exporter's counters go under `waypoint_tracing_`. */
  readonly registry?: MetricsRegistry;
  /** Envoy `min_flush_spans` default 5. */
  readonly minFlushSpans?: number;
  /** Envoy `flush_interval_ms` default 5000. */
  readonly flushIntervalMs?: number;
  /** Envoy's Zipkin request timeout default 5000 ms. */
  readonly requestTimeoutMs?: number;
  /** Spans kept while a report is in flight or the collector is slow; more are dropped. Default 1024. */
  readonly maxQueuedSpans?: number;
}

type DropReason = 'queue_full' | 'report_failed';

export class ZipkinExporter {
  readonly #o: Required<Omit<ZipkinExporterOptions, 'registry'>>;
  readonly #log: Logger;
  #queue: ZipkinSpan[] = [];
  #inFlight: Promise<void> | undefined;
  #timer: Timer | undefined;
  #closed = false;
  #failing = false;
  readonly #sent: CounterVec<'reason'> | undefined;
  readonly #dropped: CounterVec<'reason'> | undefined;

  constructor(o: ZipkinExporterOptions) {
    this.#o = {
      transport: o.transport,
      clock: o.clock,
      log: o.log,
      minFlushSpans: o.minFlushSpans ?? 5,
      flushIntervalMs: o.flushIntervalMs ?? 5000,
      requestTimeoutMs: o.requestTimeoutMs ?? 5000,
      maxQueuedSpans: o.maxQueuedSpans ?? 1024,
    };
    this.#log = o.log.child({ scope: 'tracing' });
    const sub = o.registry?.sub('waypoint_tracing');
    this.#sent = sub?.counterVec({ name: 'spans_sent', help: 'Spans accepted by the Zipkin collector.', labelNames: ['reason'] });
    this.#dropped = sub?.counterVec({ name: 'spans_dropped', help: 'Spans dropped: the queue was full or the report failed.', labelNames: ['reason'] });
    this.#arm();
  }

  /** Queues a span; drops it (counted) when the queue is full. Never blocks. */
  add(span: ZipkinSpan): void {
    if (this.#closed) return;
    if (this.#queue.length >= this.#o.maxQueuedSpans) {
      this.#drop('queue_full', 1);
      return;
    }
    this.#queue.push(span);
    if (this.#queue.length >= this.#o.minFlushSpans) this.#send();
  }

  /** Spans waiting to be sent. */
  get queued(): number {
    return this.#queue.length;
  }

  /** Sends what is queued (one report at a time), as the flush timer does. */
  flush(): void {
    this.#send();
  }

  /** Sends what is queued, waits for the reports in flight and stops the timer. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    this.#timer = undefined;
    while (this.#inFlight !== undefined || this.#queue.length > 0) {
      if (this.#inFlight === undefined) this.#send(true);
      await this.#inFlight;
    }
  }

  #arm(): void {
    this.#timer = this.#o.clock.setTimer(this.#o.flushIntervalMs, () => {
      this.#timer = undefined;
      if (this.#closed) return;
      this.#send();
      this.#arm();
    });
  }

  #drop(reason: DropReason, n: number): void {
    this.#dropped?.inc({ reason }, n);
  }

  #send(force = false): void {
    if (this.#inFlight !== undefined || this.#queue.length === 0 || (this.#closed && !force)) return;
    const batch = this.#queue;
    this.#queue = [];
    const body = JSON.stringify(batch);
    const abort = new AbortController();
    const timeout = this.#o.clock.setTimer(this.#o.requestTimeoutMs, () => abort.abort(new Error(`no answer within ${this.#o.requestTimeoutMs} ms`)));
    this.#inFlight = this.#o
      .transport(body, abort.signal)
      .then(
        (status) => {
          if (status >= 200 && status < 300) {
            this.#sent?.inc({ reason: 'accepted' }, batch.length);
            if (this.#failing) this.#log.info({ spans: batch.length }, 'zipkin collector accepts spans again');
            this.#failing = false;
          } else {
            this.#failed(batch.length, `collector answered HTTP ${status}`);
          }
        },
        (err: unknown) => this.#failed(batch.length, err instanceof Error ? err.message : String(err)),
      )
      .finally(() => {
        timeout.cancel();
        this.#inFlight = undefined;
        // Spans queued meanwhile go out at once when enough are waiting (or on close).
        if (this.#queue.length >= this.#o.minFlushSpans && !this.#closed) this.#send();
      });
  }

  #failed(spans: number, reason: string): void {
    this.#drop('report_failed', spans);
    // One warning per outage, not one per report.
    if (!this.#failing) this.#log.warn({ spans, reason }, 'zipkin report failed; spans dropped');
    this.#failing = true;
  }
}

export interface HttpSpanTransportOptions {
  /** The collector, `host:port` (ProxyConfig.tracing.zipkin.address). */
  readonly address: string;
  readonly sockets: SocketFactory;
  /** Name resolution for a host name; default node's resolver (getaddrinfo). */
  readonly lookup?: (host: string) => Promise<string>;
}

/**
 * POSTs reports to `http://<address>/api/v2/spans` over a socket from the
 * socket factory. Throws at construction on an address that is not host:port.
 */
export function httpSpanTransport(o: HttpSpanTransportOptions): SpanTransport {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(o.address);
  const port = Number(m?.[3]);
  if (m === null || port < 1 || port > 65535) throw new Error(`zipkin address "${o.address}": expected host:port (e.g. zipkin.istio-system:9411)`);
  const host = m[1] ?? m[2] ?? '';
  const lookup = o.lookup ?? (async (h: string) => (await dnsLookup(h)).address);
  const literal = canonicalIp(host);
  const hostHeader = m[1] !== undefined ? `[${host}]:${port}` : `${host}:${port}`;
  return async (body, signal) => {
    const ip = literal ?? (await lookup(host));
    signal.throwIfAborted();
    return new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        {
          method: 'POST',
          path: '/api/v2/spans',
          headers: { host: hostHeader, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
          createConnection: () => o.sockets.connect({ ip, port }),
          signal,
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  };
}
