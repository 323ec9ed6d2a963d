import { describe, expect, it } from 'vitest';
import { aService, aWorkload } from '@ambient/control/testing';
import { clientIdentity, httpRecord, productpage, ratings, server } from '../../test/telemetry/records.js';
import { HTTP_LABEL_NAMES, PEER_LABEL_NAMES, TCP_LABEL_NAMES, grpcStatusText, httpLabels, peerLabels, responseFlagsText, tcpLabels, type HttpLabels } from './labels.js';
import type { HttpRequestRecord, PeerInfo } from './types.js';

const full = (r: HttpRequestRecord): HttpLabels => httpLabels(peerLabels(r.source, r.destination, r.destinationService), r);

describe('label names', () => {
  it("are istio_stats' HTTP order (observability.md §5.1)", () => {
    expect(HTTP_LABEL_NAMES.join(',')).toBe(
      'reporter,source_workload,source_canonical_service,source_canonical_revision,source_workload_namespace,' +
        'source_principal,source_app,source_version,source_cluster,' +
        'destination_workload,destination_workload_namespace,destination_principal,destination_app,destination_version,' +
        'destination_service,destination_canonical_service,destination_canonical_revision,destination_service_name,' +
        'destination_service_namespace,destination_cluster,' +
        'request_protocol,response_code,grpc_response_status,response_flags,connection_security_policy',
    );
  });

  it('TCP has the peer labels then request_protocol, response_flags, connection_security_policy', () => {
    expect(TCP_LABEL_NAMES).toEqual([...PEER_LABEL_NAMES, 'request_protocol', 'response_flags', 'connection_security_policy']);
  });

  it('label objects list their keys in that order', () => {
    const r = httpRecord();
    expect(Object.keys(full(r))).toEqual([...HTTP_LABEL_NAMES]);
    expect(Object.keys(tcpLabels(peerLabels(r.source, r.destination, r.destinationService), r.source, []))).toEqual([...TCP_LABEL_NAMES]);
  });
});

describe('peer labels', () => {
  it("match istio/proxy's waypoint series for full endpoint metadata (server_waypoint_proxy_connect_request_total)", () => {
    expect(full(httpRecord())).toEqual({
      reporter: 'waypoint',
      source_workload: 'productpage-v1',
      source_canonical_service: 'unknown',
      source_canonical_revision: 'latest',
      source_workload_namespace: 'default',
      source_principal: 'spiffe://cluster.local/ns/default/sa/client',
      source_app: 'unknown',
      source_version: 'unknown',
      source_cluster: 'unknown',
      destination_workload: 'ratings-v1',
      destination_workload_namespace: 'default',
      destination_principal: 'spiffe://cluster.global/ns/default/sa/ratings',
      destination_app: 'ratings',
      destination_version: 'version-1',
      destination_service: 'server.default.svc.cluster.local',
      destination_canonical_service: 'ratings',
      destination_canonical_revision: 'version-1',
      destination_service_name: 'server',
      destination_service_namespace: 'default',
      destination_cluster: 'ratings-cluster',
      request_protocol: 'http',
      response_code: '200',
      grpc_response_status: '',
      response_flags: '-',
      connection_security_policy: 'mutual_tls',
    });
  });

  it('match the empty-metadata twin: the endpoint known only by uid and namespace (emptymeta_request_total)', () => {
    const bare = aWorkload({ uid: 'Kubernetes//Pod/default/ratings', namespace: 'default', clusterId: '' });
    const l = full(httpRecord({ destination: { identity: undefined, workload: bare } }));
    expect(l).toMatchObject({
      destination_workload: 'unknown',
      destination_workload_namespace: 'default',
      // The workload's defaulted identity, as Istio builds it from metadata.
      destination_principal: 'spiffe://cluster.local/ns/default/sa/default',
      destination_app: 'unknown',
      destination_version: 'unknown',
      destination_canonical_service: 'unknown',
      // A waypoint does not default the destination revision to "latest".
      destination_canonical_revision: 'unknown',
      destination_cluster: 'unknown',
      destination_service: 'server.default.svc.cluster.local',
    });
  });

  const sleep = aWorkload({
    uid: 'Kubernetes//Pod/apps/sleep-abc',
    namespace: 'apps',
    workloadName: 'sleep',
    canonicalName: 'sleep',
    canonicalRevision: 'v2',
    identity: { trustDomain: 'cluster.local', namespace: 'apps', serviceAccount: 'sleep' },
  });
  const sleepId = sleep.identity;

  type Row = readonly [label: string, source: PeerInfo, expected: string];
  const sourceRows: readonly Row[] = [
    ['source_workload', { identity: sleepId, workload: sleep }, 'sleep'],
    ['source_workload', { identity: sleepId, workload: undefined }, 'unknown'],
    ['source_canonical_service', { identity: sleepId, workload: sleep }, 'sleep'],
    ['source_canonical_service', { identity: sleepId, workload: aWorkload({ uid: 'x' }) }, 'unknown'],
    ['source_canonical_revision', { identity: sleepId, workload: sleep }, 'v2'],
    ['source_canonical_revision', { identity: sleepId, workload: aWorkload({ uid: 'x' }) }, 'latest'],
    ['source_canonical_revision', { identity: sleepId, workload: undefined }, 'latest'],
    // The SAN's namespace wins over the workload's.
    ['source_workload_namespace', { identity: { ...sleepId, namespace: 'from-san' }, workload: sleep }, 'from-san'],
    ['source_workload_namespace', { identity: undefined, workload: sleep }, 'apps'],
    ['source_workload_namespace', { identity: undefined, workload: undefined }, 'unknown'],
    ['source_principal', { identity: sleepId, workload: sleep }, 'spiffe://cluster.local/ns/apps/sa/sleep'],
    // Only the peer certificate gives a principal, never the WDS workload.
    ['source_principal', { identity: undefined, workload: sleep }, 'unknown'],
    ['source_app', { identity: sleepId, workload: sleep }, 'sleep'],
    ['source_app', { identity: sleepId, workload: undefined }, 'unknown'],
    ['source_version', { identity: sleepId, workload: sleep }, 'v2'],
    ['source_version', { identity: sleepId, workload: aWorkload({ uid: 'x' }) }, 'unknown'],
    ['source_cluster', { identity: sleepId, workload: sleep }, 'Kubernetes'],
    ['source_cluster', { identity: sleepId, workload: aWorkload({ uid: 'x', clusterId: 'east' }) }, 'east'],
    ['source_cluster', { identity: sleepId, workload: undefined }, 'unknown'],
  ];
  it.each(sourceRows)('%s (source row %#)', (label, source, expected) => {
    const l = peerLabels(source, { identity: undefined, workload: undefined }, undefined) as Record<string, string>;
    expect(l[label]).toBe(expected);
  });

  const destRows: readonly Row[] = [
    ['destination_workload', { identity: undefined, workload: ratings }, 'ratings-v1'],
    ['destination_workload', { identity: ratings.identity, workload: undefined }, 'unknown'],
    ['destination_workload_namespace', { identity: undefined, workload: ratings }, 'default'],
    ['destination_workload_namespace', { identity: sleepId, workload: undefined }, 'apps'],
    ['destination_workload_namespace', { identity: undefined, workload: undefined }, 'unknown'],
    // The workload's identity (metadata) wins over the endpoint's certificate.
    ['destination_principal', { identity: sleepId, workload: ratings }, 'spiffe://cluster.global/ns/default/sa/ratings'],
    ['destination_principal', { identity: sleepId, workload: undefined }, 'spiffe://cluster.local/ns/apps/sa/sleep'],
    ['destination_principal', { identity: undefined, workload: undefined }, 'unknown'],
    ['destination_app', { identity: undefined, workload: ratings }, 'ratings'],
    ['destination_version', { identity: undefined, workload: ratings }, 'version-1'],
    ['destination_canonical_service', { identity: undefined, workload: ratings }, 'ratings'],
    ['destination_canonical_revision', { identity: undefined, workload: ratings }, 'version-1'],
    ['destination_canonical_revision', { identity: undefined, workload: undefined }, 'unknown'],
    ['destination_cluster', { identity: undefined, workload: ratings }, 'ratings-cluster'],
    ['destination_cluster', { identity: undefined, workload: aWorkload({ uid: 'y' }) }, 'Kubernetes'],
    ['destination_cluster', { identity: undefined, workload: undefined }, 'unknown'],
  ];
  it.each(destRows)('%s (destination row %#)', (label, destination, expected) => {
    const l = peerLabels({ identity: clientIdentity, workload: productpage }, destination, undefined) as Record<string, string>;
    expect(l[label]).toBe(expected);
  });

  it('destination_service* come from the routed service (FQDN, name, namespace), "unknown" without one', () => {
    const svc = aService({ namespace: 'shop', hostname: 'cart.shop.svc.cluster.local', name: 'cart' });
    const with_ = peerLabels({ identity: undefined, workload: undefined }, { identity: undefined, workload: undefined }, svc);
    expect([with_.destination_service, with_.destination_service_name, with_.destination_service_namespace]).toEqual([
      'cart.shop.svc.cluster.local',
      'cart',
      'shop',
    ]);
    const without = peerLabels({ identity: undefined, workload: undefined }, { identity: undefined, workload: undefined }, undefined);
    expect([without.destination_service, without.destination_service_name, without.destination_service_namespace]).toEqual(['unknown', 'unknown', 'unknown']);
  });

  it('reporter is always "waypoint"; no label is ever empty', () => {
    const l = peerLabels({ identity: undefined, workload: undefined }, { identity: undefined, workload: undefined }, undefined);
    expect(l.reporter).toBe('waypoint');
    expect(Object.values(l).every((v) => v !== '')).toBe(true);
  });
});

describe('outcome labels', () => {
  it.each([
    [httpRecord({ requestProtocol: 'http' }), 'http'],
    [httpRecord({ requestProtocol: 'grpc', grpcStatus: 0 }), 'grpc'],
  ] as const)('request_protocol %#', (r, expected) => {
    expect(full(r).request_protocol).toBe(expected);
  });

  it.each([
    [200, '200'],
    [503, '503'],
    [0, '0'],
  ])('response_code %d → %s', (code, expected) => {
    expect(full(httpRecord({ responseCode: code })).response_code).toBe(expected);
  });

  it.each([
    ['http', 200, undefined, ''],
    ['http', 200, 5, ''],
    ['grpc', 200, 0, '0'],
    ['grpc', 200, 14, '14'],
    // No grpc-status in the response: inferred from the HTTP status, as Envoy's getGrpcStatus.
    ['grpc', 503, undefined, '14'],
    ['grpc', 404, undefined, '12'],
    ['grpc', 401, undefined, '16'],
    ['grpc', 403, undefined, '7'],
    ['grpc', 400, undefined, '13'],
    ['grpc', 200, undefined, '2'],
    // No response at all: nothing to report.
    ['grpc', 0, undefined, ''],
  ] as const)('grpc_response_status for %s %d with grpc-status %s → "%s"', (requestProtocol, responseCode, grpcStatus, expected) => {
    expect(grpcStatusText({ requestProtocol, responseCode, grpcStatus })).toBe(expected);
    expect(full(httpRecord({ requestProtocol, responseCode, grpcStatus })).grpc_response_status).toBe(expected);
  });

  it.each([
    [[], '-'],
    [['UF'], 'UF'],
    [['URX', 'UF'], 'UF,URX'],
    [['DC', 'UH', 'UH'], 'UH,DC'],
    [['DR', 'NR', 'UT'], 'UT,NR,DR'],
  ] as const)('response_flags %j → %s (Envoy order, each once)', (flags, expected) => {
    expect(responseFlagsText(flags)).toBe(expected);
    expect(full(httpRecord({ flags })).response_flags).toBe(expected);
  });

  it('connection_security_policy is mutual_tls with a downstream SAN, none without', () => {
    expect(full(httpRecord()).connection_security_policy).toBe('mutual_tls');
    expect(full(httpRecord({ source: { identity: undefined, workload: productpage } })).connection_security_policy).toBe('none');
  });

  it('TCP labels say request_protocol="tcp" and carry the flags', () => {
    const r = httpRecord();
    const l = tcpLabels(peerLabels(r.source, r.destination, r.destinationService), r.source, ['UF']);
    expect(l.request_protocol).toBe('tcp');
    expect(l.response_flags).toBe('UF');
    expect(l.connection_security_policy).toBe('mutual_tls');
    expect('response_code' in l).toBe(false);
    expect('grpc_response_status' in l).toBe(false);
  });

  it('uses the service record given, not the Host header', () => {
    const l = full(httpRecord({ authority: 'evil.example.com', destinationService: server }));
    expect(l.destination_service).toBe('server.default.svc.cluster.local');
  });
});
