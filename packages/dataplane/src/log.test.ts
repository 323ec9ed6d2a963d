import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { createLogger, formatLogFilter, formatPlainLine, parseLogFilter, thresholdFor, type LogFormat } from './log.js';

function capture(format: LogFormat, level = 'info') {
  const lines: string[] = [];
  const clock = new ManualClock({ now: Date.UTC(2025, 0, 1) });
  const { logger, levels } = createLogger({ format, level, destination: { write: (l: string) => lines.push(l) }, clock });
  return { lines, logger, levels };
}

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

