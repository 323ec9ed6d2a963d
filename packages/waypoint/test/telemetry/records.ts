/**
 * Telemetry records for the telemetry tests: the istio/proxy waypoint test's
 * peers (productpage-v1 as client, ratings-v1 as the chosen endpoint of
 * server.default.svc.cluster.local) and builders overridable field by field.
 */
import type { Logger } from '@ambient/control';
import { aService, aWorkload } from '@ambient/control/testing';
import type { HttpRequestRecord, TcpConnectionRecord } from '../../src/telemetry/types.js';

/** The downstream: WDS knows only its workload name; the SAN says its namespace. */
export const productpage = aWorkload({ uid: 'Kubernetes//Pod/default/productpage', namespace: 'default', workloadName: 'productpage-v1', clusterId: '' });
export const clientIdentity = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'client' };

/** The chosen endpoint, with full metadata (istio/proxy BackendMetadata). */
export const ratings = aWorkload({
  uid: 'ratings-cluster//Pod/default/ratings',
  namespace: 'default',
  workloadName: 'ratings-v1',
  canonicalName: 'ratings',
  canonicalRevision: 'version-1',
  identity: { trustDomain: 'cluster.global', namespace: 'default', serviceAccount: 'ratings' },
  clusterId: 'ratings-cluster',
  addresses: ['10.244.2.4'],
});

export const server = aService({ namespace: 'default', hostname: 'server.default.svc.cluster.local', name: 'server' }, [[8000, 80]]);

export function httpRecord(over: Partial<HttpRequestRecord> = {}): HttpRequestRecord {
  return {
    kind: 'http',
    startMs: Date.UTC(2024, 0, 1, 0, 0, 0, 0),
    durationMs: 2.4,
    requestProtocol: 'http',
    httpVersion: 'HTTP/1.1',
    method: 'GET',
    path: '/get',
    authority: 'server.default:8000',
    userAgent: 'curl/8.5.0',
    requestId: '6c3c2f4e-0b4e-4bd0-9d7e-1f8b2a4c5d6e',
    forwardedFor: undefined,
    responseCode: 200,
    grpcStatus: undefined,
    flags: [],
    responseCodeDetails: 'via_upstream',
    upstreamTransportFailureReason: undefined,
    requestBytes: 120,
    responseBytes: 480,
    requestBodyBytes: 0,
    responseBodyBytes: 300,
    upstreamServiceTimeMs: 2,
    requestMessages: 0,
    responseMessages: 0,
    source: { identity: clientIdentity, workload: productpage },
    destination: { identity: ratings.identity, workload: ratings },
    destinationService: server,
    upstreamHost: '10.244.2.4:80',
    upstreamCluster: 'inbound-vip|8000|http|server.default.svc.cluster.local',
    downstreamLocal: '10.96.34.189:8000',
    downstreamRemote: '10.244.1.7:43210',
    routeName: 'default',
    trace: undefined,
    ...over,
  };
}

export function tcpRecord(over: Partial<TcpConnectionRecord> = {}): TcpConnectionRecord {
  return {
    kind: 'tcp',
    startMs: Date.UTC(2024, 0, 1, 0, 0, 0, 0),
    durationMs: 1500.9,
    bytesReceived: 5,
    bytesSent: 11,
    flags: [],
    source: { identity: clientIdentity, workload: productpage },
    destination: { identity: ratings.identity, workload: ratings },
    destinationService: server,
    upstreamHost: '10.244.2.4:80',
    upstreamCluster: 'inbound-vip|8000|tcp|server.default.svc.cluster.local',
    downstreamLocal: '10.96.34.189:8000',
    downstreamRemote: '10.244.1.7:43210',
    routeName: undefined,
    connectionTerminationDetails: undefined,
    ...over,
  };
}

export interface LogEntry {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly bindings: Readonly<Record<string, unknown>>;
  readonly obj: object;
  readonly msg: string | undefined;
}

/** A Logger that keeps what was logged (with the child bindings) for assertions. */
export function recordingLogger(): { logger: Logger; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at = (level: LogEntry['level']) => (obj: object, msg?: string) => entries.push({ level, bindings, obj, msg });
    return { child: (b) => make({ ...bindings, ...b }), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  };
  return { logger: make({}), entries };
}
