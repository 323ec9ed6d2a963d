import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { AccessLog } from '../access-log.js';
import { createLogger } from '@ambient/dataplane';
import { ProxyError } from '@ambient/dataplane';
import { ConnectionResults, flagFor } from './connection-result.js';
import { MetricsRegistry } from '@ambient/dataplane';
import { TrafficMetrics, type TrafficContext } from './traffic.js';

const identity = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' };
const source = {
  name: 'sleep-0',
  namespace: 'default',
  workloadName: 'sleep',
  canonicalName: 'sleep',
  canonicalRevision: 'v1',
  identity,
  clusterId: 'Kubernetes',
  locality: undefined,
};
const ctx: TrafficContext = { reporter: 'source', source, derivedSource: { identity }, securityPolicy: 'mutual_tls' };

function setup() {
  const clock = new ManualClock();
  const lines: Array<Record<string, unknown>> = [];
  const { logger } = createLogger({ format: 'json', level: 'access=debug,info', clock, destination: { write: (l: string) => lines.push(JSON.parse(l)) } });
  const registry = new MetricsRegistry();
  const traffic = new TrafficMetrics(registry.sub('istio'));
  const results = new ConnectionResults({ traffic, access: new AccessLog(logger), clock });
  return { clock, lines, registry, results };
}

const line = (text: string, name: string) => text.split('\n').find((l) => l.startsWith(`${name}{`));

describe('ConnectionResults', () => {
  it('logs opened, then complete with bytes and duration, and counts once', async () => {
    const { clock, lines, registry, results } = setup();
    const r = results.start({ src: '127.0.0.1:5000', dst: '127.0.0.2:15008', hboneAddr: '127.0.0.2:8080', traffic: ctx });
    expect(lines).toEqual([expect.objectContaining({ message: 'connection opened', level: 'debug', 'src.workload': 'sleep-0' })]);
    r.addReceived(10);
    r.addSent(20);
    await clock.advance(1500);
    expect(r.record()).toBe(true);
    expect(r.recorded).toBe(true);
    expect(r.record(new Error('late'))).toBe(false);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ message: 'connection complete', level: 'info', bytes_sent: 10, bytes_recv: 20, duration: '1500ms', 'dst.hbone_addr': '127.0.0.2:8080' });
    const text = await registry.encode('prometheus');
    expect(line(text, 'istio_tcp_connections_closed_total')).toContain('response_flags="-"');
    expect(text).not.toContain('istio_tcp_connections_failed_total');
  });

  it('records a ProxyError with its response flag and logs it at error', async () => {
    const { lines, registry, results } = setup();
    const r = results.start({ src: '127.0.0.1:5000', dst: '127.0.0.2:15008', traffic: ctx });
    r.record(new ProxyError('POLICY_DENIED', 'denied by default/deny-all'));
    expect(lines[1]).toMatchObject({ level: 'error', error: 'denied by default/deny-all' });
    const text = await registry.encode('prometheus');
    expect(line(text, 'istio_tcp_connections_closed_total')).toContain('response_flags="DENY"');
    expect(line(text, 'istio_tcp_connections_failed_total')).toContain('response_flags="DENY"');
  });

  it('records an explicit flag (live connection closed by a new policy)', async () => {
    const { registry, results } = setup();
    results.start({ src: '127.0.0.1:5000', dst: '127.0.0.2:15008', traffic: ctx }).recordWithFlag('DENY', new ProxyError('POLICY_CHANGED', 'no longer allowed'));
    expect(line(await registry.encode('prometheus'), 'istio_tcp_connections_failed_total')).toContain('response_flags="DENY"');
  });
});

describe('flagFor', () => {
  it.each<[unknown, string]>([
    [new ProxyError('TLS_HANDSHAKE_FAILED', 'x'), 'TLS_FAILURE'],
    [new ProxyError('UPSTREAM_CONNECT_FAILED', 'x'), 'CONNECT'],
    [new ProxyError('PEER_IDENTITY_INVALID', 'x'), 'IDENTITY_ERROR'],
    [new ProxyError('BAD_AUTHORITY', 'x'), 'CONNECT'],
    [new Error('socket hang up'), 'CONNECT'],
    ['text', 'CONNECT'],
  ])('%s -> %s', (err, flag) => {
    expect(flagFor(err)).toBe(flag);
  });
});
