import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import {
  AccessLog,
  accessLogFields,
  createLogger,
  formatLogFilter,
  formatPlainLine,
  parseLogFilter,
  thresholdFor,
  type AccessLogConnection,
} from './access-log.js';
import type { LogFormat } from './config.js';
import { trafficLabels } from './metrics/traffic.js';

function capture(format: LogFormat, level = 'info') {
  const lines: string[] = [];
  const clock = new ManualClock({ now: Date.UTC(2025, 0, 1) });
  const { logger, levels } = createLogger({ format, level, destination: { write: (l: string) => lines.push(l) }, clock });
  return { lines, logger, levels };
}

const sleepId = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' };
const hwId = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'helloworld' };
const workload = (name: string, workloadName: string, identity: typeof sleepId) => ({
  name,
  namespace: 'default',
  workloadName,
  canonicalName: workloadName,
  canonicalRevision: 'v1',
  identity,
  clusterId: 'Kubernetes',
  locality: undefined,
});

const outboundHbone: AccessLogConnection = {
  src: '10.0.0.1:46776',
  dst: '10.0.0.2:15008',
  hboneAddr: '10.0.0.2:8080',
  labels: trafficLabels({
    reporter: 'source',
    source: workload('sleep-0', 'sleep', sleepId),
    derivedSource: { identity: sleepId },
    destination: workload('helloworld-0', 'helloworld', hwId),
    destinationService: { hostname: 'helloworld.default.svc.cluster.local', name: 'helloworld', namespace: 'default' },
    securityPolicy: 'mutual_tls',
  }),
  srcWorkload: 'sleep-0',
  dstWorkload: 'helloworld-0',
};

describe('parseLogFilter', () => {
  it.each<[string, string]>([
    ['info', 'info'],
    ['DEBUG', 'debug'],
    ['access=debug,info', 'access=debug,info'],
    ['info,access=debug', 'access=debug,info'],
    ['ztunnel::proxy=trace,warn', 'proxy=trace,warn'],
    ['access=debug,access=off', 'access=off'],
    ['info,debug', 'debug'],
    ['access=debug', 'access=debug'],
  ])('%s -> %s', (text, canonical) => {
    const r = parseLogFilter(text);
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(formatLogFilter(r.value)).toBe(canonical);
  });

  it.each(['', 'loud', 'access=loud', 'a b=info', ','])('rejects %j', (text) => {
    expect(parseLogFilter(text).ok).toBe(false);
  });

  it('picks the most specific matching target, then the default, else off', () => {
    const r = parseLogFilter('proxy=warn,proxy::inbound=trace,info');
    if (!r.ok) throw new Error('parse');
    expect(thresholdFor(r.value, 'proxy::inbound')).toBe(10);
    expect(thresholdFor(r.value, 'proxy::outbound')).toBe(40);
    expect(thresholdFor(r.value, 'xds')).toBe(30);
    const only = parseLogFilter('access=debug');
    if (!only.ok) throw new Error('parse');
    expect(thresholdFor(only.value, 'xds')).toBe(Number.POSITIVE_INFINITY);
  });
});

describe('createLogger', () => {
  it('writes ztunnel plain lines: time, level, scope, message, then k=v fields', () => {
    const { lines, logger } = capture('plain');
    logger.child({ scope: 'access' }).info({ 'src.addr': '10.0.0.1:1', 'src.workload': 'sleep', bytes_sent: 3 }, 'connection complete');
    expect(lines).toEqual(['2025-01-01T00:00:00.000Z\tinfo\taccess\tconnection complete\tsrc.addr=10.0.0.1:1 src.workload="sleep" bytes_sent=3\n']);
  });

  it('uses the component binding as the scope and "ztunnel" when there is none', () => {
    const { lines, logger } = capture('plain');
    logger.child({ component: 'xds' }).warn('stream ended');
    logger.info('started');
    expect(lines).toEqual(['2025-01-01T00:00:00.000Z\twarn\txds\tstream ended\n', '2025-01-01T00:00:00.000Z\tinfo\tztunnel\tstarted\n']);
  });

  it('writes JSON lines with level, time, scope and message', () => {
    const { lines, logger } = capture('json');
    logger.child({ scope: 'access' }).error({ error: 'boom' }, 'connection complete');
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0] ?? '')).toEqual({ level: 'error', time: '2025-01-01T00:00:00.000Z', scope: 'access', error: 'boom', message: 'connection complete' });
  });

  it('filters per scope and changes the filter at runtime (POST /logging semantics)', () => {
    const { lines, logger, levels } = capture('json', 'access=debug,warn');
    const access = logger.child({ scope: 'access' });
    const xds = logger.child({ component: 'xds' });
    access.debug('a1');
    xds.info('x1');
    xds.warn('x2');
    expect(lines.map((l) => JSON.parse(l).message)).toEqual(['a1', 'x2']);
    expect(levels.current()).toBe('access=debug,warn');

    // Appending: existing children follow the new filter.
    expect(levels.change(false, 'xds=info')).toEqual({ ok: true, value: 'access=debug,xds=info,warn' });
    xds.info('x3');
    expect(lines.map((l) => JSON.parse(l).message)).toContain('x3');

    // Reset to the startup filter, plus a level.
    expect(levels.change(true, 'access=off')).toEqual({ ok: true, value: 'access=off,warn' });
    lines.length = 0;
    access.error('a2');
    xds.info('x4');
    expect(lines).toEqual([]);

    expect(levels.change(true, '')).toEqual({ ok: true, value: 'access=debug,warn' });
    expect(levels.change(false, '')).toEqual({ ok: true, value: 'access=debug,warn' });
  });

  it('refuses an invalid level and keeps the filter', () => {
    const { levels } = capture('json', 'info');
    const r = levels.change(false, 'loud');
    expect(r.ok).toBe(false);
    expect(levels.change(false, 'access')).toMatchObject({ ok: false });
    expect(levels.current()).toBe('info');
  });

  it('throws on a filter that does not parse', () => {
    expect(() => createLogger({ format: 'plain', level: 'chatty', destination: { write: () => undefined } })).toThrow(/invalid log filter/);
  });
});

describe('formatPlainLine', () => {
  it('quotes strings (not addresses), prints numbers bare, and error objects by message', () => {
    const line = JSON.stringify({ level: 'error', time: 't', scope: 's', message: 'm', 'dst.hbone_addr': '[::1]:80', name: 'a "b"', n: 1, ok: false, err: { type: 'Error', message: 'bad' } });
    expect(formatPlainLine(line)).toBe('t\terror\ts\tm\tdst.hbone_addr=[::1]:80 name="a \\"b\\"" n=1 ok=false err="bad"\n');
  });
});

describe('accessLogFields', () => {
  it('has ztunnel fields in order, identities for mTLS only', () => {
    expect(accessLogFields(outboundHbone)).toEqual({
      'src.addr': '10.0.0.1:46776',
      'src.workload': 'sleep-0',
      'src.namespace': 'default',
      'src.identity': 'spiffe://cluster.local/ns/default/sa/sleep',
      'src.cluster': 'Kubernetes',
      'dst.addr': '10.0.0.2:15008',
      'dst.hbone_addr': '10.0.0.2:8080',
      'dst.service': 'helloworld.default.svc.cluster.local',
      'dst.workload': 'helloworld-0',
      'dst.namespace': 'default',
      'dst.identity': 'spiffe://cluster.local/ns/default/sa/helloworld',
      'dst.cluster': 'Kubernetes',
      direction: 'outbound',
    });
    expect(Object.keys(accessLogFields(outboundHbone))[0]).toBe('src.addr');
  });

  it('omits identities for plain TCP and unknown values, falls back to the canonical service', () => {
    const plain: AccessLogConnection = {
      src: '10.0.0.9:5000',
      dst: '10.0.0.2:8080',
      labels: trafficLabels({ reporter: 'destination', destination: workload('helloworld-0', 'helloworld', hwId), securityPolicy: 'unknown' }),
    };
    expect(accessLogFields(plain)).toEqual({
      'src.addr': '10.0.0.9:5000',
      'dst.addr': '10.0.0.2:8080',
      'dst.workload': 'helloworld',
      'dst.namespace': 'default',
      'dst.cluster': 'Kubernetes',
      direction: 'inbound',
    });
  });
});

describe('AccessLog', () => {
  it('logs opened at debug, complete at info with un-flipped bytes for outbound', () => {
    const { lines, logger } = capture('json', 'access=debug,info');
    const log = new AccessLog(logger);
    log.opened(outboundHbone);
    log.completed(outboundHbone, { receivedBytes: 84, sentBytes: 1234, durationMs: 2.4 });
    const [opened, done] = lines.map((l) => JSON.parse(l));
    expect(opened).toMatchObject({ level: 'debug', scope: 'access', message: 'connection opened', direction: 'outbound' });
    expect(done).toMatchObject({ level: 'info', message: 'connection complete', bytes_sent: 84, bytes_recv: 1234, duration: '2ms' });
    expect(done).not.toHaveProperty('error');
  });

  it('logs inbound bytes as counted, failures at error with the error', () => {
    const { lines, logger } = capture('json');
    const inbound = { ...outboundHbone, labels: { ...outboundHbone.labels, reporter: 'destination' } };
    new AccessLog(logger).completed(inbound, { receivedBytes: 84, sentBytes: 1234, durationMs: 10, error: 'connection refused' });
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ level: 'error', direction: 'inbound', bytes_sent: 1234, bytes_recv: 84, error: 'connection refused' });
  });

  it('logs an early deny as "connection failed" at warn', () => {
    const { lines, logger } = capture('plain');
    new AccessLog(logger).failed({ src: '10.0.0.1:1', dst: '10.0.0.2:15008', reporter: 'destination', error: 'unknown source' });
    expect(lines).toEqual(['2025-01-01T00:00:00.000Z\twarn\taccess\tconnection failed\tsrc.addr=10.0.0.1:1 dst.addr=10.0.0.2:15008 direction="inbound" error="unknown source"\n']);
  });

  it('skips building "connection opened" fields when debug is off for access', () => {
    const { lines, logger, levels } = capture('json', 'info');
    const log = new AccessLog(logger, levels);
    let built = 0;
    const conn = { ...outboundHbone, get labels() {
      built++;
      return outboundHbone.labels;
    } };
    log.opened(conn);
    expect([lines.length, built]).toEqual([0, 0]);
    expect(levels.enabled('access', 'info')).toBe(true);
    levels.change(false, 'access=debug');
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({ level: 'info', message: 'new log filter is access=debug,info' });
    log.opened(conn);
    expect(lines.map((l) => JSON.parse(l).message)).toEqual(['new log filter is access=debug,info', 'connection opened']);
  });

  it('writes nothing when the access scope is filtered out', () => {
    const { lines, logger } = capture('plain', 'access=off,info');
    const log = new AccessLog(logger);
    log.completed(outboundHbone, { receivedBytes: 1, sentBytes: 1, durationMs: 1 });
    expect(lines).toEqual([]);
  });
});
