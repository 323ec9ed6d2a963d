import { create, type MessageInitShape } from '@bufbuild/protobuf';
import { describe, expect, it } from 'vitest';
import {
  AppProtocol,
  IPFamilies,
  LoadBalancing_HealthPolicy,
  LoadBalancing_Mode,
  LoadBalancing_Scope,
  ServiceSchema,
  Service_Visibility,
  type Service as PbService,
} from '../gen/istio/workload/workload_pb.js';
import type { GatewayAddress } from '../model/gateway.js';
import { ipToBytes } from '../model/ip.js';
import type { Service } from '../model/service.js';
import type { Rejection } from '../result.js';
import { translateService } from './service.js';

/** A number outside the enum, as protobuf-es keeps it when decoding (open enums). */
const unknownEnum = (n: number): never => n as never;

type ServiceInit = MessageInitShape<typeof ServiceSchema>;

function pbService(overrides: Partial<ServiceInit> = {}): PbService {
  const init = {
    name: 'echo',
    namespace: 'demo',
    hostname: 'echo.demo.svc.cluster.local',
    addresses: [{ network: '', address: ipToBytes('10.96.0.10') }],
    ports: [{ servicePort: 80, targetPort: 8080 }],
    ...overrides,
  } as ServiceInit;
  return create(ServiceSchema, init);
}

function translated(overrides: Partial<ServiceInit> = {}): Service {
  const r = translateService(pbService(overrides));
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.errors)}`);
  return r.value;
}

function rejections(overrides: Partial<ServiceInit>): readonly Rejection[] {
  const r = translateService(pbService(overrides));
  if (r.ok) throw new Error('expected a rejection');
  return r.errors;
}

const wp = (hostname: string, port = 15008) => ({
  destination: { case: 'hostname' as const, value: { namespace: 'demo', hostname } },
  hboneMtlsPort: port,
});

describe('translateService', () => {
  it('translates every field', () => {
    const s = translated({
      name: 'echo',
      namespace: 'demo',
      hostname: 'echo.demo.svc.cluster.local',
      addresses: [
        { network: '', address: ipToBytes('10.96.0.10') },
        { network: 'net-a', address: ipToBytes('fd00::10'), length: 128 },
        { network: 'net-a', address: ipToBytes('10.200.0.0'), length: 16 },
      ],
      ports: [{ servicePort: 80, targetPort: 8080, appProtocol: AppProtocol.HTTP11 }],
      subjectAltNames: ['spiffe://cluster.local/ns/demo/sa/server'],
      waypoint: wp('waypoint.demo.svc.cluster.local'),
      loadBalancing: {
        routingPreference: [LoadBalancing_Scope.NETWORK, LoadBalancing_Scope.REGION],
        mode: LoadBalancing_Mode.FAILOVER,
        healthPolicy: LoadBalancing_HealthPolicy.ALLOW_ALL,
      },
      ipFamilies: IPFamilies.DUAL,
      extensions: [{ name: 'istio.io/future' }],
      canonical: true,
      ingressUseWaypoint: true,
      weightedWaypoints: [
        { destination: wp('waypoint.demo.svc.cluster.local'), weight: 90 },
        { destination: wp('waypoint-canary.demo.svc.cluster.local'), weight: 10 },
      ],
      visibility: Service_Visibility.NAMESPACE,
    });
    const waypoint = (hostname: string): GatewayAddress => ({
      destination: { kind: 'hostname', namespace: 'demo', hostname },
      hboneMtlsPort: 15008,
    });
    expect(s).toEqual<Service>({
      name: 'echo',
      namespace: 'demo',
      hostname: 'echo.demo.svc.cluster.local',
      vips: [
        { network: '', address: '10.96.0.10' },
        { network: 'net-a', address: 'fd00::10' },
      ],
      cidrVips: [{ network: 'net-a', cidr: { address: '10.200.0.0', prefixLength: 16, family: 4 } }],
      ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }],
      subjectAltNames: ['spiffe://cluster.local/ns/demo/sa/server'],
      waypoint: waypoint('waypoint.demo.svc.cluster.local'),
      weightedWaypoints: [
        { destination: waypoint('waypoint.demo.svc.cluster.local'), weight: 90 },
        { destination: waypoint('waypoint-canary.demo.svc.cluster.local'), weight: 10 },
      ],
      loadBalancing: { routingPreference: ['Network', 'Region'], mode: 'Failover', healthPolicy: 'AllowAll' },
      ipFamilies: 'Dual',
      canonical: true,
      ingressUseWaypoint: true,
      visibility: 'Namespace',
    });
  });

  it('applies defaults to a minimal (headless) service', () => {
    expect(translated({ addresses: [], ports: [] })).toMatchObject({
      vips: [],
      cidrVips: [],
      ports: [],
      waypoint: undefined,
      weightedWaypoints: [],
      loadBalancing: undefined,
      ipFamilies: 'Automatic',
      canonical: false,
      ingressUseWaypoint: false,
      visibility: 'Public',
    });
  });

  it.each([
    ['absent: exact VIP', '10.96.0.10', undefined, 'vip'],
    ['equal to the width: exact VIP', '10.96.0.10', 32, 'vip'],
    ['IPv6 128: exact VIP', 'fd00::1', 128, 'vip'],
    ['shorter: CIDR VIP', '10.96.0.0', 12, 'cidr'],
    ['zero: CIDR VIP /0', '0.0.0.0', 0, 'cidr'],
    ['IPv6 64: CIDR VIP', 'fd00::', 64, 'cidr'],
  ] as const)('NetworkAddress length %s', (_name, ip, length, kind) => {
    const s = translated({ addresses: [{ address: ipToBytes(ip), ...(length === undefined ? {} : { length }) }] });
    expect(kind === 'vip' ? s.vips : s.cidrVips).toHaveLength(1);
    expect(kind === 'vip' ? s.cidrVips : s.vips).toHaveLength(0);
  });

  it('masks host bits of a CIDR VIP', () => {
    expect(translated({ addresses: [{ address: ipToBytes('10.96.3.4'), length: 12 }] }).cidrVips[0]?.cidr).toEqual({
      address: '10.96.0.0',
      prefixLength: 12,
      family: 4,
    });
  });

  it.each([
    [LoadBalancing_Scope.REGION, 'Region'],
    [LoadBalancing_Scope.ZONE, 'Zone'],
    [LoadBalancing_Scope.SUBZONE, 'Subzone'],
    [LoadBalancing_Scope.NODE, 'Node'],
    [LoadBalancing_Scope.CLUSTER, 'Cluster'],
    [LoadBalancing_Scope.NETWORK, 'Network'],
  ])('routing preference %i → %s', (scope, expected) => {
    expect(translated({ loadBalancing: { routingPreference: [scope] } }).loadBalancing?.routingPreference).toEqual([expected]);
  });

  it.each([
    [LoadBalancing_Mode.UNSPECIFIED_MODE, 'Standard'],
    [LoadBalancing_Mode.STRICT, 'Strict'],
    [LoadBalancing_Mode.FAILOVER, 'Failover'],
    [LoadBalancing_Mode.PASSTHROUGH, 'Passthrough'],
  ])('load balancing mode %i → %s', (mode, expected) => {
    expect(translated({ loadBalancing: { mode } }).loadBalancing?.mode).toBe(expected);
  });

  it.each([
    [LoadBalancing_HealthPolicy.ONLY_HEALTHY, 'OnlyHealthy'],
    [LoadBalancing_HealthPolicy.ALLOW_ALL, 'AllowAll'],
  ])('health policy %i → %s', (healthPolicy, expected) => {
    expect(translated({ loadBalancing: { healthPolicy } }).loadBalancing?.healthPolicy).toBe(expected);
  });

  it.each([
    [IPFamilies.AUTOMATIC, 'Automatic'],
    [IPFamilies.IPV4_ONLY, 'IPv4'],
    [IPFamilies.IPV6_ONLY, 'IPv6'],
    [IPFamilies.DUAL, 'Dual'],
  ])('ipFamilies %i → %s', (ipFamilies, expected) => {
    expect(translated({ ipFamilies }).ipFamilies).toBe(expected);
  });

  it.each([
    [Service_Visibility.PUBLIC, 'Public'],
    [Service_Visibility.NAMESPACE, 'Namespace'],
    // ztunnel: unknown values fall back to PUBLIC rather than dropping the service.
    [unknownEnum(17), 'Public'],
  ])('visibility %i → %s', (visibility, expected) => {
    expect(translated({ visibility }).visibility).toBe(expected);
  });

  it('accepts a wildcard ServiceEntry hostname', () => {
    expect(translated({ hostname: '*.example.com' }).hostname).toBe('*.example.com');
    expect(translated({ hostname: '*' }).hostname).toBe('*');
  });

  it.each<[string, Partial<ServiceInit>, string, string]>([
    ['empty namespace', { namespace: '' }, 'namespace', 'must not be empty'],
    ['empty hostname', { hostname: '' }, 'hostname', 'hostname must not be empty'],
    ['hostname with a slash', { hostname: 'a/b' }, 'hostname', 'RFC 1123'],
    ['wildcard in the middle', { hostname: 'a.*.com' }, 'hostname', 'RFC 1123'],
    ['hostname with an empty label', { hostname: 'a..com' }, 'hostname', 'RFC 1123'],
    ['hostname over 255 characters', { hostname: `${'a.'.repeat(128)}com` }, 'hostname', 'longer than 255'],
    ['VIP of 5 bytes', { addresses: [{ address: new Uint8Array(5) }] }, 'addresses[0].address', 'got 5'],
    ['prefix longer than IPv4', { addresses: [{ address: ipToBytes('10.0.0.0'), length: 33 }] }, 'addresses[0].length', 'prefix length 33 is longer than the 32-bit address 10.0.0.0'],
    ['prefix longer than IPv6', { addresses: [{ address: ipToBytes('fd00::'), length: 129 }] }, 'addresses[0].length', 'longer than the 128-bit'],
    ['service port 0', { ports: [{ servicePort: 0, targetPort: 80 }] }, 'ports[0].servicePort', 'port 0 is out of range; expected 1..65535'],
    ['service port 65536', { ports: [{ servicePort: 65536, targetPort: 80 }] }, 'ports[0].servicePort', 'port 65536 is out of range'],
    ['target port 65536', { ports: [{ servicePort: 80, targetPort: 65536 }] }, 'ports[0].targetPort', 'expected 0..65535'],
    ['waypoint without destination', { waypoint: { hboneMtlsPort: 15008 } }, 'waypoint.destination', 'has no destination'],
    ['weighted waypoint without destination', { weightedWaypoints: [{ weight: 10 }] }, 'weightedWaypoints[0].destination', 'weighted waypoint has no destination'],
    ['weighted waypoint with a bad destination', { weightedWaypoints: [{ destination: wp('w.demo', 0), weight: 1 }] }, 'weightedWaypoints[0].destination.hboneMtlsPort', 'out of range'],
    ['UNSPECIFIED_SCOPE routing preference', { loadBalancing: { routingPreference: [LoadBalancing_Scope.UNSPECIFIED_SCOPE] } }, 'loadBalancing.routingPreference[0]', 'Scope UNSPECIFIED_SCOPE (0) is not a routing preference'],
    ['unknown routing preference', { loadBalancing: { routingPreference: [LoadBalancing_Scope.ZONE, unknownEnum(12)] } }, 'loadBalancing.routingPreference[1]', 'unknown Scope value 12'],
    ['unknown load balancing mode', { loadBalancing: { mode: unknownEnum(8) } }, 'loadBalancing.mode', 'unknown Mode value 8; expected one of UNSPECIFIED_MODE (0), STRICT (1), FAILOVER (2), PASSTHROUGH (3)'],
    ['unknown health policy', { loadBalancing: { healthPolicy: unknownEnum(2) } }, 'loadBalancing.healthPolicy', 'unknown HealthPolicy value 2'],
    ['unknown ip families', { ipFamilies: unknownEnum(4) }, 'ipFamilies', 'unknown IPFamilies value 4'],
  ])('rejects %s', (_name, overrides, field, reason) => {
    expect(rejections(overrides)).toContainEqual({ field, reason: expect.stringContaining(reason) });
  });
});
