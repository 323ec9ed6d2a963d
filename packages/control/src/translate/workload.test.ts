import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import {
  AppProtocol,
  ApplicationTunnel_Protocol,
  LocalitySchema,
  NetworkMode,
  TunnelProtocol,
  WorkloadSchema,
  WorkloadStatus,
  WorkloadType,
  type Workload as PbWorkload,
} from '../gen/istio/workload/workload_pb.js';
import { ipToBytes } from '../model/ip.js';
import type { Workload } from '../model/workload.js';
import type { Rejection } from '../result.js';
import { translateWorkload } from './workload.js';

/** A number outside the enum, as protobuf-es keeps it when decoding (open enums). */
const unknownEnum = (n: number): never => n as never;

type WorkloadInit = MessageInitShape<typeof WorkloadSchema>;

function pbWorkload(overrides: Partial<WorkloadInit> = {}): PbWorkload {
  const init: WorkloadInit = {
    uid: 'Kubernetes//Pod/demo/server-0',
    name: 'server-0',
    namespace: 'demo',
    addresses: [ipToBytes('10.0.0.5')],
    ...overrides,
  } as WorkloadInit;
  return create(WorkloadSchema, init);
}

function translated(overrides: Partial<WorkloadInit> = {}): Workload {
  const r = translateWorkload(pbWorkload(overrides));
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.errors)}`);
  return r.value;
}

function rejections(overrides: Partial<WorkloadInit>): readonly Rejection[] {
  const r = translateWorkload(pbWorkload(overrides));
  if (r.ok) throw new Error('expected a rejection');
  return r.errors;
}

describe('translateWorkload', () => {
  it('translates every field', () => {
    const w = translated({
      uid: 'cluster1//v1/Pod/demo/server-0',
      name: 'server-0',
      namespace: 'demo',
      addresses: [ipToBytes('10.0.0.5'), ipToBytes('2001:db8:0:0:0:0:0:1')],
      hostname: 'server-0.example.com',
      network: 'net-a',
      tunnelProtocol: TunnelProtocol.HBONE,
      trustDomain: 'example.org',
      serviceAccount: 'server',
      waypoint: {
        destination: { case: 'hostname', value: { namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local' } },
        hboneMtlsPort: 15008,
      },
      networkGateway: {
        destination: { case: 'address', value: { network: 'net-b', address: ipToBytes('192.168.1.1') } },
        hboneMtlsPort: 15009,
      },
      node: 'node-a',
      canonicalName: 'server',
      canonicalRevision: 'v1',
      workloadType: WorkloadType.POD,
      workloadName: 'server',
      nativeTunnel: true,
      applicationTunnel: { protocol: ApplicationTunnel_Protocol.PROXY, port: 15088 },
      services: {
        'demo/echo.demo.svc.cluster.local': {
          ports: [{ servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.HTTP2 }],
        },
      },
      authorizationPolicies: ['demo/allow-client', 'istio-system/istio_converted_static_strict'],
      status: WorkloadStatus.UNHEALTHY,
      clusterId: 'cluster1',
      locality: { region: 'eu', zone: 'eu-1', subzone: 'rack-3' },
      networkMode: NetworkMode.HOST_NETWORK,
      extensions: [{ name: 'istio.io/future', config: anyPack(LocalitySchema, create(LocalitySchema, { region: 'x' })) }],
      capacity: 3,
    });
    expect(w).toEqual<Workload>({
      uid: 'cluster1//v1/Pod/demo/server-0',
      name: 'server-0',
      namespace: 'demo',
      addresses: ['10.0.0.5', '2001:db8::1'],
      hostname: 'server-0.example.com',
      network: 'net-a',
      protocol: 'HBONE',
      identity: { trustDomain: 'example.org', namespace: 'demo', serviceAccount: 'server' },
      waypoint: {
        destination: { kind: 'hostname', namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local' },
        hboneMtlsPort: 15008,
      },
      networkGateway: {
        destination: { kind: 'address', network: 'net-b', address: '192.168.1.1' },
        hboneMtlsPort: 15009,
      },
      node: 'node-a',
      canonicalName: 'server',
      canonicalRevision: 'v1',
      workloadType: 'pod',
      workloadName: 'server',
      nativeTunnel: true,
      applicationTunnel: { protocol: 'PROXY', port: 15088 },
      services: [
        { key: 'demo/echo.demo.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP2' }] },
      ],
      authorizationPolicies: ['demo/allow-client', 'istio-system/istio_converted_static_strict'],
      status: 'Unhealthy',
      clusterId: 'cluster1',
      locality: { region: 'eu', zone: 'eu-1', subzone: 'rack-3' },
      networkMode: 'HostNetwork',
      capacity: 3,
    });
  });

  it('applies ztunnel defaults to an otherwise empty workload', () => {
    const w = translated({ addresses: [] });
    expect(w).toMatchObject({
      addresses: [],
      protocol: 'TCP',
      identity: { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'default' },
      clusterId: 'Kubernetes',
      capacity: 1,
      status: 'Healthy',
      networkMode: 'Standard',
      workloadType: 'deployment',
      waypoint: undefined,
      networkGateway: undefined,
      applicationTunnel: undefined,
      locality: undefined,
      services: [],
      authorizationPolicies: [],
      nativeTunnel: false,
    });
  });

  it.each([
    ['absent', undefined, 1],
    ['zero (kept: ztunnel uses unwrap_or(1))', 0, 0],
    ['set', 7, 7],
  ])('capacity %s → %s', (_name, capacity, expected) => {
    expect(translated(capacity === undefined ? {} : { capacity }).capacity).toBe(expected);
  });

  it('treats an all-empty locality as absent, as ztunnel does', () => {
    expect(translated({ locality: { region: '', zone: '', subzone: '' } }).locality).toBeUndefined();
    expect(translated({ locality: { zone: 'z' } }).locality).toEqual({ region: '', zone: 'z', subzone: '' });
  });

  it.each([
    [TunnelProtocol.NONE, 'TCP'],
    [TunnelProtocol.HBONE, 'HBONE'],
  ])('tunnelProtocol %i → %s', (tunnelProtocol, expected) => {
    expect(translated({ tunnelProtocol }).protocol).toBe(expected);
  });

  it.each([
    [WorkloadStatus.HEALTHY, 'Healthy'],
    [WorkloadStatus.UNHEALTHY, 'Unhealthy'],
  ])('status %i → %s', (status, expected) => {
    expect(translated({ status }).status).toBe(expected);
  });

  it.each([
    [NetworkMode.STANDARD, 'Standard'],
    [NetworkMode.HOST_NETWORK, 'HostNetwork'],
  ])('networkMode %i → %s', (networkMode, expected) => {
    expect(translated({ networkMode }).networkMode).toBe(expected);
  });

  it.each([
    [WorkloadType.DEPLOYMENT, 'deployment'],
    [WorkloadType.CRONJOB, 'cronjob'],
    [WorkloadType.POD, 'pod'],
    [WorkloadType.JOB, 'job'],
    // ztunnel reads workload_type through prost's getter: unknown numbers become the default.
    [unknownEnum(42), 'deployment'],
  ])('workloadType %i → %s', (workloadType, expected) => {
    expect(translated({ workloadType }).workloadType).toBe(expected);
  });

  it.each([
    [ApplicationTunnel_Protocol.NONE, 0, { protocol: 'NONE', port: undefined }],
    [ApplicationTunnel_Protocol.PROXY, 15088, { protocol: 'PROXY', port: 15088 }],
  ])('applicationTunnel protocol %i port %i', (protocol, port, expected) => {
    expect(translated({ applicationTunnel: { protocol, port } }).applicationTunnel).toEqual(expected);
  });

  it.each([
    [AppProtocol.UNKNOWN, 'Unknown'],
    [AppProtocol.HTTP11, 'HTTP11'],
    [AppProtocol.HTTP2, 'HTTP2'],
    [AppProtocol.GRPC, 'GRPC'],
    [AppProtocol.TCP, 'TCP'],
    [AppProtocol.TLS, 'TLS'],
    // ztunnel never reads app_protocol, so an unknown number cannot refuse the workload.
    [unknownEnum(99), 'Unknown'],
  ])('service port appProtocol %i → %s', (appProtocol, expected) => {
    const w = translated({ services: { 'demo/a.demo.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 8080, appProtocol }] } } });
    expect(w.services[0]?.ports[0]?.appProtocol).toBe(expected);
  });

  it('keeps target port 0 (use the service target port), sorts ports and lets a repeated service port win last', () => {
    const w = translated({
      services: {
        'demo/a.demo.svc.cluster.local': {
          ports: [
            { servicePort: 9090, targetPort: 0 },
            { servicePort: 80, targetPort: 8080 },
            { servicePort: 9090, targetPort: 9091 },
          ],
        },
      },
    });
    expect(w.services[0]?.ports).toEqual([
      { servicePort: 80, targetPort: 8080, appProtocol: 'Unknown' },
      { servicePort: 9090, targetPort: 9091, appProtocol: 'Unknown' },
    ]);
    const zero = translated({ services: { 'demo/a.demo.svc.cluster.local': { ports: [{ servicePort: 80, targetPort: 0 }] } } });
    expect(zero.services[0]?.ports[0]?.targetPort).toBe(0);
  });

  it('accepts a wildcard ServiceEntry host as a services key', () => {
    expect(translated({ services: { 'demo/*.example.com': { ports: [] } } }).services[0]?.key).toBe('demo/*.example.com');
  });

  it('uses canonical text for IPv6 and IPv4-mapped addresses', () => {
    const mapped = new Uint8Array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]);
    const w = translated({ addresses: [ipToBytes('2001:DB8::0:1'), mapped] });
    expect(w.addresses).toEqual(['2001:db8::1', '::ffff:a00:1']);
  });

  it.each<[string, Partial<WorkloadInit>, string, string]>([
    ['empty uid', { uid: '' }, 'uid', 'must not be empty'],
    ['5-byte address', { addresses: [ipToBytes('10.0.0.1'), new Uint8Array(5)] }, 'addresses[1]', 'must be 4 (IPv4) or 16 (IPv6) bytes, got 5'],
    ['empty address', { addresses: [new Uint8Array(0)] }, 'addresses[0]', 'got 0'],
    ['invalid hostname', { hostname: 'bad_host.example.com' }, 'hostname', '"bad_host.example.com" must be dot-separated labels'],
    ['wildcard workload hostname', { hostname: '*.example.com' }, 'hostname', 'must not be a wildcard'],
    ['label too long', { hostname: `${'a'.repeat(64)}.com` }, 'hostname', 'RFC 1123'],
    ['legacy istio mtls', { tunnelProtocol: TunnelProtocol.LEGACY_ISTIO_MTLS }, 'tunnelProtocol', 'LEGACY_ISTIO_MTLS (2) is not supported'],
    ['unknown tunnel protocol', { tunnelProtocol: unknownEnum(9) }, 'tunnelProtocol', 'unknown TunnelProtocol value 9; expected one of NONE (0), HBONE (1)'],
    ['upper-case trust domain', { trustDomain: 'Cluster.Local' }, 'trustDomain', '"Cluster.Local" may only contain lower-case'],
    ['empty namespace', { namespace: '' }, 'namespace', 'namespace must not be empty'],
    ['namespace with a slash', { namespace: 'a/b' }, 'namespace', '"a/b" may only contain'],
    ['service account ..', { serviceAccount: '..' }, 'serviceAccount', 'must not be ".."'],
    ['waypoint without destination', { waypoint: { hboneMtlsPort: 15008 } }, 'waypoint.destination', 'has no destination'],
    [
      'waypoint address of 3 bytes',
      { waypoint: { destination: { case: 'address', value: { address: new Uint8Array(3) } }, hboneMtlsPort: 15008 } },
      'waypoint.destination.address.address',
      'got 3',
    ],
    [
      'waypoint port 0',
      { waypoint: { destination: { case: 'address', value: { address: ipToBytes('10.0.0.9') } }, hboneMtlsPort: 0 } },
      'waypoint.hboneMtlsPort',
      'port 0 is out of range; expected 1..65535',
    ],
    [
      'waypoint port 70000',
      { waypoint: { destination: { case: 'address', value: { address: ipToBytes('10.0.0.9') } }, hboneMtlsPort: 70000 } },
      'waypoint.hboneMtlsPort',
      'port 70000 is out of range',
    ],
    [
      'waypoint hostname without namespace',
      { waypoint: { destination: { case: 'hostname', value: { namespace: '', hostname: 'wp.demo' } }, hboneMtlsPort: 15008 } },
      'waypoint.destination.hostname.namespace',
      'must not be empty',
    ],
    [
      'waypoint wildcard hostname',
      { waypoint: { destination: { case: 'hostname', value: { namespace: 'demo', hostname: '*.demo' } }, hboneMtlsPort: 15008 } },
      'waypoint.destination.hostname.hostname',
      'must not be a wildcard',
    ],
    ['network gateway without destination', { networkGateway: { hboneMtlsPort: 15008 } }, 'networkGateway.destination', 'has no destination'],
    ['unknown application tunnel protocol', { applicationTunnel: { protocol: unknownEnum(5) } }, 'applicationTunnel.protocol', 'unknown Protocol value 5'],
    ['application tunnel port 70000', { applicationTunnel: { port: 70000 } }, 'applicationTunnel.port', 'out of range'],
    ['services key without slash', { services: { nohost: { ports: [] } } }, 'services["nohost"]', 'must have the form "<namespace>/<hostname>"'],
    ['services key without hostname', { services: { 'demo/': { ports: [] } } }, 'services["demo/"]', 'hostname must not be empty'],
    ['services key without namespace', { services: { '/a.b': { ports: [] } } }, 'services["/a.b"]', 'namespace of "/a.b": must not be empty'],
    [
      'service port 0',
      { services: { 'demo/a.b': { ports: [{ servicePort: 0, targetPort: 80 }] } } },
      'services["demo/a.b"].ports[0].servicePort',
      'port 0 is out of range; expected 1..65535',
    ],
    [
      'target port 70000',
      { services: { 'demo/a.b': { ports: [{ servicePort: 80, targetPort: 70000 }] } } },
      'services["demo/a.b"].ports[0].targetPort',
      'expected 0..65535 (0: use the service target port)',
    ],
    ['policy key without slash', { authorizationPolicies: ['allow'] }, 'authorizationPolicies[0]', '"allow" must have the form "<namespace>/<name>"'],
    ['policy key with two slashes', { authorizationPolicies: ['ok/fine', 'a/b/c'] }, 'authorizationPolicies[1]', '<namespace>/<name>'],
    ['policy key with empty namespace', { authorizationPolicies: ['/x'] }, 'authorizationPolicies[0]', '<namespace>/<name>'],
    ['unknown status', { status: unknownEnum(7) }, 'status', 'unknown WorkloadStatus value 7; expected one of HEALTHY (0), UNHEALTHY (1)'],
    ['unknown network mode', { networkMode: unknownEnum(3) }, 'networkMode', 'unknown NetworkMode value 3'],
  ])('rejects %s', (_name, overrides, field, reason) => {
    const errors = rejections(overrides);
    expect(errors).toContainEqual({ field, reason: expect.stringContaining(reason) });
  });

  it('reports every problem of a resource at once', () => {
    const errors = rejections({
      uid: '',
      addresses: [new Uint8Array(1)],
      tunnelProtocol: TunnelProtocol.LEGACY_ISTIO_MTLS,
      serviceAccount: 'a b',
      status: unknownEnum(9),
    });
    expect(errors.map((e) => e.field)).toEqual(['uid', 'addresses[0]', 'tunnelProtocol', 'serviceAccount', 'status']);
  });
});
