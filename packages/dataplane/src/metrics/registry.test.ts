import { describe, expect, it } from 'vitest';
import { MetricsRegistry, negotiateExposition, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE } from './registry.js';

describe('MetricsRegistry exposition', () => {
  it('omits labelled families until first use and keeps unlabelled ones from the start', async () => {
    const r = new MetricsRegistry();
    const vec = r.counterVec({ name: 'hits', help: 'Hits.', labelNames: ['path'] });
    r.counter({ name: 'starts', help: 'Starts.' });
    expect(await r.encode('prometheus')).toBe('# HELP starts_total Starts.\n# TYPE starts_total counter\nstarts_total 0\n');
    vec.inc({ path: '/a' });
    expect(await r.encode('prometheus')).toContain('hits_total{path="/a"} 1');
  });

  it('writes Prometheus 0.0.4 text: counters named with _total in HELP/TYPE', async () => {
    const r = new MetricsRegistry();
    const istio = r.sub('istio');
    istio.counterVec({ name: 'xds_message_bytes', help: 'Bytes (unstable).', unit: 'bytes', labelNames: ['url'] }).inc({ url: 'u' }, 42);
    istio.gauge({ name: 'level', help: 'Level.' }).set(3);
    expect(await r.encode('prometheus')).toBe(
      [
        '# HELP istio_xds_message_bytes_total Bytes (unstable).',
        '# TYPE istio_xds_message_bytes_total counter',
        'istio_xds_message_bytes_total{url="u"} 42',
        '# HELP istio_level Level.',
        '# TYPE istio_level gauge',
        'istio_level 3',
        '',
      ].join('\n'),
    );
  });

  it('writes OpenMetrics: family names without _total, UNIT lines and # EOF', async () => {
    const r = new MetricsRegistry();
    r.sub('istio').counterVec({ name: 'xds_message_bytes', help: 'Bytes (unstable).', unit: 'bytes', labelNames: ['url'] }).inc({ url: 'u' }, 42);
    expect(await r.encode('openmetrics')).toBe(
      [
        '# HELP istio_xds_message_bytes Bytes (unstable).',
        '# TYPE istio_xds_message_bytes counter',
        '# UNIT istio_xds_message_bytes bytes',
        'istio_xds_message_bytes_total{url="u"} 42',
        '# EOF',
        '',
      ].join('\n'),
    );
  });

  it('writes labels in declared order whatever the caller order, with empty values as "unknown"', async () => {
    const r = new MetricsRegistry();
    const vec = r.counterVec({ name: 'c', help: 'C.', labelNames: ['b', 'a', 'c'] });
    vec.inc({ c: 'z', a: '', b: 'y' });
    vec.inc({ a: 'unknown', b: 'y', c: 'z' }, 2);
    expect(await r.encode('prometheus')).toContain('c_total{b="y",a="unknown",c="z"} 3');
  });

  it('keeps the empty value of a keepEmpty label (grpc_response_status="") on counters and histograms', async () => {
    const r = new MetricsRegistry();
    r.counterVec({ name: 'c', help: 'C.', labelNames: ['a', 'g'], keepEmpty: ['g'] }).inc({ a: '', g: '' });
    r.histogramVec({ name: 'h', help: 'H.', labelNames: ['a', 'g'], keepEmpty: ['g'], buckets: [1] }).observe({ a: '', g: '' }, 0.5);
    const text = await r.encode('prometheus');
    expect(text).toContain('c_total{a="unknown",g=""} 1');
    expect(text).toContain('h_bucket{a="unknown",g="",le="1"} 1');
    expect(text).toContain('h_count{a="unknown",g=""} 1');
  });

  it('writes histograms as prom-client did: series in first-use order, cumulative buckets, le last, then _sum and _count', async () => {
    const r = new MetricsRegistry();
    const h = r.histogramVec({ name: 'h', help: 'H.', labelNames: ['a'], buckets: [1, 5] });
    h.observe({ a: 'x' }, 2);
    h.observe({ a: 'y' }, 0.5);
    h.observe({ a: 'x' }, 7);
    h.observe({ a: 'x' }, 5);
    expect(await r.encode('prometheus')).toBe(
      [
        '# HELP h H.',
        '# TYPE h histogram',
        'h_bucket{a="x",le="1"} 0',
        'h_bucket{a="x",le="5"} 2',
        'h_bucket{a="x",le="+Inf"} 3',
        'h_sum{a="x"} 14',
        'h_count{a="x"} 3',
        'h_bucket{a="y",le="1"} 1',
        'h_bucket{a="y",le="5"} 1',
        'h_bucket{a="y",le="+Inf"} 1',
        'h_sum{a="y"} 0.5',
        'h_count{a="y"} 1',
        '',
      ].join('\n'),
    );
  });

  it('bound series add to the same series as unbound calls, counters folded at collection', async () => {
    const r = new MetricsRegistry();
    const c = r.counterVec({ name: 'c', help: 'C.', labelNames: ['b', 'a'] });
    const h = r.histogramVec({ name: 'h', help: 'H.', labelNames: ['a'], buckets: [10] });
    const bc = c.bind({ a: '1', b: '' });
    const bh = h.bind({ a: '1' });
    expect(await r.encode('prometheus')).toBe('');
    bc.inc();
    bc.inc(2);
    c.inc({ b: 'unknown', a: '1' }, 4);
    bh.observe(3);
    h.observe({ a: '1' }, 30);
    let text = await r.encode('prometheus');
    expect(text).toContain('c_total{b="unknown",a="1"} 7');
    expect(text).toContain('h_bucket{a="1",le="10"} 1');
    expect(text).toContain('h_count{a="1"} 2');
    // Increments after a collection show in the next one; nothing is counted twice.
    bc.inc(0.5);
    text = await r.encode('prometheus');
    expect(text).toContain('c_total{b="unknown",a="1"} 7.5');
    text = await r.encode('prometheus');
    expect(text).toContain('c_total{b="unknown",a="1"} 7.5');
    expect(() => bc.inc(-1)).toThrow('counter c: increments must be non-negative numbers, got -1');
    expect(() => bh.observe(Number.NaN)).toThrow('histogram observation must be a number');
  });

  it('escapes label values and HELP text', async () => {
    const r = new MetricsRegistry();
    r.gaugeVec({ name: 'g', help: 'back\\slash\nnewline', labelNames: ['v'] }).set({ v: 'a"b\\c\nd' }, 1);
    const text = await r.encode('prometheus');
    expect(text).toContain('# HELP g back\\\\slash\\nnewline');
    expect(text).toContain('g{v="a\\"b\\\\c\\nd"} 1');
  });

  it('writes histograms with series labels before le, then _sum and _count', async () => {
    const r = new MetricsRegistry();
    r.histogramVec({ name: 'd_seconds', help: 'D.', unit: 'seconds', labelNames: ['p'], buckets: [0.5, 1] }).observe({ p: 'udp' }, 0.7);
    expect(await r.encode('prometheus')).toBe(
      [
        '# HELP d_seconds D.',
        '# TYPE d_seconds histogram',
        'd_seconds_bucket{p="udp",le="0.5"} 0',
        'd_seconds_bucket{p="udp",le="1"} 1',
        'd_seconds_bucket{p="udp",le="+Inf"} 1',
        'd_seconds_sum{p="udp"} 0.7',
        'd_seconds_count{p="udp"} 1',
        '',
      ].join('\n'),
    );
  });

  it('computes collector families at scrape time and omits them when there is no value', async () => {
    const r = new MetricsRegistry();
    let v: number | undefined = 7;
    r.collector({ name: 'process_open_fds', type: 'gauge', help: 'Number of open file descriptors.', collect: () => v });
    expect(await r.encode('prometheus')).toContain('process_open_fds 7');
    v = undefined;
    expect(await r.encode('prometheus')).toBe('');
    expect(await r.encode('openmetrics')).toBe('# EOF\n');
  });

  it('runs beforeCollect hooks before reading values', async () => {
    const r = new MetricsRegistry();
    const g = r.gauge({ name: 'g', help: 'G.' });
    let n = 0;
    r.beforeCollect(() => g.set(++n));
    expect(await r.encode('prometheus')).toContain('g 1');
    expect(await r.encode('prometheus')).toContain('g 2');
  });

  it('refuses duplicate names, _total counter names and unit/name mismatches', () => {
    const r = new MetricsRegistry();
    r.counter({ name: 'a', help: 'A.' });
    expect(() => r.gauge({ name: 'a', help: 'A.' })).toThrow(/already registered/);
    expect(() => r.counter({ name: 'b_total', help: 'B.' })).toThrow(/_total/);
    expect(() => r.counter({ name: 'c', help: 'C.', unit: 'bytes' })).toThrow(/_bytes/);
  });
});

describe('negotiateExposition', () => {
  it.each<[string | undefined, string]>([
    [undefined, PROMETHEUS_CONTENT_TYPE],
    ['application/json', PROMETHEUS_CONTENT_TYPE],
    ['application/openmetrics-text; other stuff', OPENMETRICS_CONTENT_TYPE],
    [
      'application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.6,application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,text/plain;version=0.0.4;q=0.2,*/*;q=0.1',
      OPENMETRICS_CONTENT_TYPE,
    ],
    ['text/plain;version=0.0.4;q=0.2,*/*;q=0.1', PROMETHEUS_CONTENT_TYPE],
  ])('%s', (accept, contentType) => {
    expect(negotiateExposition(accept).contentType).toBe(contentType);
  });
});
