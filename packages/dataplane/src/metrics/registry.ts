/**
 * The metrics registry and its exposition. Counters and gauges are prom-client's
 * (never registered globally); the text is written here so that it matches
 * ztunnel's `prometheus-client` output where dashboards and tests can tell:
 * families with no samples are omitted, label order is the order labels are
 * declared, counters' samples end in `_total`, OpenMetrics gets `# UNIT`
 * lines, `_total`-less family names and `# EOF`. Sub-registries add a prefix
 * (`istio_`, `workload_manager_`) like ztunnel's `sub_registry_with_prefix`.
 *
 * Histograms are kept here (not in prom-client) and written in prom-client's
 * layout; `bind(labels)` resolves one series of a counter or histogram family
 * once, so a hot path pays an addition per update instead of hashing its label
 * set (bound counter increments are folded in at collection).
 *
 * Content negotiation (metrics server): Prometheus text 0.0.4 by default,
 * OpenMetrics 1.0.0 when the scraper's Accept asks for
 * `application/openmetrics-text`.
 */
import { Counter as PromCounter, Gauge as PromGauge } from 'prom-client';

export type MetricType = 'counter' | 'gauge' | 'histogram';
export type MetricUnit = 'bytes' | 'seconds';
export type ExpositionFormat = 'prometheus' | 'openmetrics';

export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';
export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** One metric family as exposed: its full name (counters without `_total`), type, HELP text and unit. */
export interface FamilyInfo {
  readonly name: string;
  readonly type: MetricType;
  readonly help: string;
  readonly unit: MetricUnit | undefined;
}

/** Label values keyed by label name; empty values are exposed as "unknown". */
export type Labels<L extends string> = Readonly<Record<L, string>>;

interface Sample {
  /** Suffix after the family's sample base name, e.g. `_bucket`. */
  readonly suffix: string;
  readonly labels: Readonly<Record<string, string | number>>;
  readonly value: number;
}

interface Family extends FamilyInfo {
  collect(): Promise<readonly Sample[]> | readonly Sample[];
}

/** @internal shared by a registry and its sub-registries */
export interface Store {
  readonly families: Family[];
  readonly beforeCollect: Array<() => void>;
}

interface FamilyOptions {
  /** Name without the registry prefix; counters without `_total`. */
  readonly name: string;
  /** HELP text as exposed (ztunnel's text plus a final "."). */
  readonly help: string;
  readonly unit?: MetricUnit;
}

export interface VecOptions<L extends string> extends FamilyOptions {
  readonly labelNames: readonly L[];
  /**
   * Labels whose empty value is exposed as `""` instead of "unknown" (Envoy's
   * istio_stats writes `grpc_response_status=""` for non-gRPC requests).
   */
  readonly keepEmpty?: readonly L[];
}

export interface HistogramOptions<L extends string> extends VecOptions<L> {
  readonly buckets: readonly number[];
}

/** A counter without labels (always exposed, starting at 0). */
export interface Counter {
  inc(value?: number): void;
}

/** A counter family; a series appears on first use. */
export interface CounterVec<L extends string> {
  inc(labels: Labels<L>, value?: number): void;
  /**
   * One series of the family, resolved once: its increments are plain
   * additions, folded into the family at the next collection (for hot paths
   * that would otherwise hash the label set on every increment).
   */
  bind(labels: Labels<L>): Counter;
}

export interface Gauge {
  set(value: number): void;
  inc(value?: number): void;
  dec(value?: number): void;
}

export interface GaugeVec<L extends string> {
  set(labels: Labels<L>, value: number): void;
  inc(labels: Labels<L>, value?: number): void;
  dec(labels: Labels<L>, value?: number): void;
}

export interface HistogramVec<L extends string> {
  observe(labels: Labels<L>, value: number): void;
  /** One series of the family, resolved once (observations are a bucket search and three additions). */
  bind(labels: Labels<L>): Histogram;
}

export interface Histogram {
  observe(value: number): void;
}

const UNKNOWN = 'unknown';

/** Fills empty label values with "unknown" (except those in `keep`), keeping the caller's key order. */
function defaulted<L extends string>(labels: Labels<L>, keep?: readonly string[]): Record<string, string> {
  let out: Record<string, string> | undefined;
  for (const k in labels) {
    if (labels[k] === '' && (keep === undefined || !keep.includes(k))) {
      out ??= { ...labels };
      out[k] = UNKNOWN;
    }
  }
  return out ?? (labels as Record<string, string>);
}

/** The exact key order a series is exposed with: the declared label order. */
function ordered(labelNames: readonly string[], labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of labelNames) {
    const v = labels[n];
    if (v !== undefined) out[n] = v;
  }
  return out;
}

interface PromValue {
  readonly labels: Record<string, string | number>;
  /** Histograms keep the series labels here and only `le` in `labels`. */
  readonly sharedLabels?: Record<string, string | number>;
  readonly value: number;
  readonly metricName?: string;
}

async function promSamples(metric: { get(): Promise<object> }, base: string): Promise<Sample[]> {
  const data = (await metric.get()) as { values: readonly PromValue[] };
  return data.values.map((v) => {
    let labels = v.sharedLabels === undefined ? v.labels : { ...v.sharedLabels, ...v.labels };
    if ('le' in labels) {
      // Series labels first, `le` last (as ztunnel's encoder writes buckets).
      const { le, ...rest } = labels;
      labels = { ...rest, le: le === undefined ? '' : le };
    }
    return {
      suffix: v.metricName !== undefined && v.metricName.startsWith(base) ? v.metricName.slice(base.length) : '',
      labels,
      value: v.value,
    };
  });
}

/** One histogram series: per-bucket (not cumulative) counts, the +Inf bucket last. */
class HistogramSeries implements Histogram {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(
    private readonly bounds: readonly number[],
    readonly labels: Readonly<Record<string, string>>,
  ) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    if (typeof value !== 'number' || Number.isNaN(value)) throw new Error(`histogram observation must be a number, got ${String(value)}`);
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > (b[i] as number)) i++;
    this.counts[i] = (this.counts[i] as number) + 1;
    this.sum += value;
    this.count++;
  }
}

/**
 * A histogram family written the way prom-client writes one (series in first-use
 * order; per series the cumulative `_bucket`s with `le` last, `+Inf`, then
 * `_sum` and `_count`), but kept here so a bound series costs no hashing.
 */
class HistogramFamily {
  readonly #bounds: readonly number[];
  readonly #series = new Map<string, HistogramSeries>();

  constructor(buckets: readonly number[]) {
    const bounds = [...buckets].sort((a, b) => a - b);
    if (bounds.some((b) => !Number.isFinite(b))) throw new Error('histogram buckets must be finite numbers (+Inf is implied)');
    this.#bounds = bounds;
  }

  series(labels: Record<string, string>): HistogramSeries {
    let key = '';
    for (const k in labels) key += `${k}\u0001${labels[k]}\u0000`;
    let s = this.#series.get(key);
    if (s === undefined) {
      s = new HistogramSeries(this.#bounds, labels);
      this.#series.set(key, s);
    }
    return s;
  }

  samples(): Sample[] {
    const out: Sample[] = [];
    for (const s of this.#series.values()) {
      // A bound series appears with its first observation, like an unbound one.
      if (s.count === 0) continue;
      let cumulative = 0;
      for (let i = 0; i <= this.#bounds.length; i++) {
        cumulative += s.counts[i] as number;
        out.push({ suffix: '_bucket', labels: { ...s.labels, le: i < this.#bounds.length ? (this.#bounds[i] as number) : '+Inf' }, value: cumulative });
      }
      out.push({ suffix: '_sum', labels: s.labels, value: s.sum });
      out.push({ suffix: '_count', labels: s.labels, value: s.count });
    }
    return out;
  }
}

/**
 * Holds metric families (shared with its sub-registries) and writes them out.
 *
 * Invariants:
 * - Family names are unique across the root and all sub-registries.
 * - A family with no samples at collection time is not written at all.
 */
export class MetricsRegistry {
  readonly #store: Store;
  readonly #prefix: string;

  constructor();
  /** @internal */
  constructor(store: Store, prefix: string);
  constructor(store?: Store, prefix?: string) {
    this.#store = store ?? { families: [], beforeCollect: [] };
    this.#prefix = prefix ?? '';
  }

  /** A view that registers families under `<prefix>_` in the same exposition. */
  sub(prefix: string): MetricsRegistry {
    return new MetricsRegistry(this.#store, `${this.#prefix}${prefix}_`);
  }

  /** Runs `fn` at the start of every collection (to fold buffered counts in). */
  beforeCollect(fn: () => void): void {
    this.#store.beforeCollect.push(fn);
  }

  counter(o: FamilyOptions): Counter {
    const name = this.#register(o, 'counter');
    const c = new PromCounter({ name: `${name}_total`, help: o.help, registers: [] });
    this.#add({ name, type: 'counter', help: o.help, unit: o.unit, collect: () => promSamples(c, `${name}_total`) });
    return { inc: (v = 1) => c.inc(v) };
  }

  counterVec<L extends string>(o: VecOptions<L>): CounterVec<L> {
    const name = this.#register(o, 'counter');
    const c = new PromCounter<string>({ name: `${name}_total`, help: o.help, labelNames: [...o.labelNames], registers: [] });
    // Bound series with increments not yet folded into `c`; each is in here at most once.
    const pending = new Set<() => void>();
    const collect = () => {
      for (const fold of pending) fold();
      pending.clear();
      return promSamples(c, `${name}_total`);
    };
    this.#add({ name, type: 'counter', help: o.help, unit: o.unit, collect });
    const key = (labels: Labels<L>) => ordered(o.labelNames, defaulted(labels, o.keepEmpty));
    return {
      inc: (labels, v = 1) => c.inc(key(labels), v),
      bind: (labels) => {
        const resolved = key(labels);
        let value = 0;
        let queued = false;
        const fold = () => {
          c.inc(resolved, value);
          value = 0;
          queued = false;
        };
        return {
          inc: (v = 1) => {
            if (!(v >= 0)) throw new Error(`counter ${name}: increments must be non-negative numbers, got ${v}`);
            value += v;
            if (!queued) {
              queued = true;
              pending.add(fold);
            }
          },
        };
      },
    };
  }

  gauge(o: FamilyOptions & { readonly collect?: () => number | undefined }): Gauge {
    const name = this.#register(o, 'gauge');
    const g = new PromGauge({ name, help: o.help, registers: [] });
    const collect = o.collect;
    this.#add({
      name,
      type: 'gauge',
      help: o.help,
      unit: o.unit,
      collect: async () => {
        if (collect) {
          const v = collect();
          if (v === undefined) return [];
          g.set(v);
        }
        return promSamples(g, name);
      },
    });
    return {
      set: (v) => g.set(v),
      inc: (v = 1) => g.inc(v),
      dec: (v = 1) => g.dec(v),
    };
  }

  gaugeVec<L extends string>(o: VecOptions<L>): GaugeVec<L> {
    const name = this.#register(o, 'gauge');
    const g = new PromGauge<string>({ name, help: o.help, labelNames: [...o.labelNames], registers: [] });
    this.#add({ name, type: 'gauge', help: o.help, unit: o.unit, collect: () => promSamples(g, name) });
    const key = (labels: Labels<L>) => ordered(o.labelNames, defaulted(labels, o.keepEmpty));
    return {
      set: (labels, v) => g.set(key(labels), v),
      inc: (labels, v = 1) => g.inc(key(labels), v),
      dec: (labels, v = 1) => g.dec(key(labels), v),
    };
  }

  histogramVec<L extends string>(o: HistogramOptions<L>): HistogramVec<L> {
    const name = this.#register(o, 'histogram');
    const h = new HistogramFamily(o.buckets);
    this.#add({ name, type: 'histogram', help: o.help, unit: o.unit, collect: () => h.samples() });
    const key = (labels: Labels<L>) => ordered(o.labelNames, defaulted(labels, o.keepEmpty));
    return {
      observe: (labels, v) => h.series(key(labels)).observe(v),
      bind: (labels) => h.series(key(labels)),
    };
  }

  /**
   * A family whose samples are computed at scrape time (process and runtime
   * figures). Returning no samples omits the family.
   */
  collector(o: FamilyOptions & { readonly type: 'gauge' | 'counter'; readonly collect: () => number | undefined }): void {
    const name = this.#register(o, o.type);
    this.#add({
      name,
      type: o.type,
      help: o.help,
      unit: o.unit,
      collect: () => {
        const v = o.collect();
        return v === undefined || !Number.isFinite(v) ? [] : [{ suffix: '', labels: {}, value: v }];
      },
    });
  }

  /** Every registered family (for the HELP stability contract and docs). */
  families(): readonly FamilyInfo[] {
    return this.#store.families.map(({ name, type, help, unit }) => ({ name, type, help, unit }));
  }

  /** The exposition text in the given format. */
  async encode(format: ExpositionFormat): Promise<string> {
    const om = format === 'openmetrics';
    const blocks: string[] = [];
    for (const fn of this.#store.beforeCollect) fn();
    for (const f of this.#store.families) {
      const samples = await f.collect();
      if (samples.length === 0) continue;
      const base = f.type === 'counter' ? `${f.name}_total` : f.name;
      const described = om ? f.name : base;
      const lines = [`# HELP ${described} ${escapeHelp(f.help)}`, `# TYPE ${described} ${f.type}`];
      if (om && f.unit !== undefined) lines.push(`# UNIT ${described} ${f.unit}`);
      for (const s of samples) lines.push(`${base}${s.suffix}${formatLabels(s.labels)} ${formatValue(s.value)}`);
      blocks.push(lines.join('\n'));
    }
    if (om) return `${blocks.map((b) => `${b}\n`).join('')}# EOF\n`;
    return blocks.length === 0 ? '' : `${blocks.join('\n')}\n`;
  }

  #register(o: FamilyOptions, type: MetricType): string {
    const name = `${this.#prefix}${o.name}`;
    if (type === 'counter' && name.endsWith('_total')) throw new Error(`counter ${name}: give the name without "_total"`);
    if (o.unit !== undefined && !name.endsWith(`_${o.unit}`)) throw new Error(`metric ${name}: a ${o.unit} metric's name must end in _${o.unit}`);
    if (this.#store.families.some((f) => f.name === name)) throw new Error(`metric ${name} is already registered`);
    return name;
  }

  #add(f: Family): void {
    this.#store.families.push(f);
  }
}

/** The format and Content-Type for a scraper's Accept header (ztunnel `content_type`). */
export function negotiateExposition(accept: string | undefined): { format: ExpositionFormat; contentType: string } {
  const wantsOpenMetrics = (accept ?? '')
    .split(',')
    .some((entry) => (entry.split(';')[0] ?? '').trim().toLowerCase() === 'application/openmetrics-text');
  return wantsOpenMetrics
    ? { format: 'openmetrics', contentType: OPENMETRICS_CONTENT_TYPE }
    : { format: 'prometheus', contentType: PROMETHEUS_CONTENT_TYPE };
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function formatLabels(labels: Readonly<Record<string, string | number>>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(labels)) {
    const text = typeof v === 'number' ? formatValue(v) : v;
    parts.push(`${k}="${escapeLabelValue(text)}"`);
  }
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}
