import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { AccessLog, accessLogFields, type AccessLogConnection } from './access-log.js';
import { createLogger, type LogFormat } from '@ambient/dataplane';
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
