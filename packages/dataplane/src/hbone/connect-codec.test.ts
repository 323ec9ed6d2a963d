import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { Workload } from '@ambient/control';
import { canonicalPeerIp } from '../net/address.js';
import {
  baggageForWorkload,
  decodeConnectRequest,
  decodeConnectResponse,
  encodeBaggage,
  encodeConnectRequest,
  encodeConnectResponse,
  encodeForwarded,
  formatAuthority,
  newTraceparent,
  parseAuthority,
  parseBaggage,
  parseForwarded,
  parseTraceparent,
  type Baggage,
  type ConnectRequestFields,
  type HboneAuthority,
} from './connect-codec.js';

describe('encodeConnectRequest', () => {
  it('writes the headers ztunnel sends', () => {
    const headers = encodeConnectRequest({
      authority: { kind: 'address', ip: '10.0.0.2', port: 8080 },
      forwardedFor: { ip: '10.0.0.1', port: 34567 },
      forwardedHost: 'echo.default.svc.cluster.local',
      baggage: {
        clusterId: 'Kubernetes', namespace: 'default', workloadType: 'deployment', workloadName: 'sleep',
        serviceName: 'sleep', serviceVersion: 'v1', region: 'eu', zone: 'eu-1a',
      },
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00',
    });
    expect(headers).toEqual({
      ':method': 'CONNECT',
      ':authority': '10.0.0.2:8080',
      baggage: 'k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1,cloud.region=eu,cloud.availability_zone=eu-1a',
      forwarded: 'for="10.0.0.1:34567";host=echo.default.svc.cluster.local',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00',
    });
  });

  it('brackets IPv6, writes hostname authorities, omits empty baggage and adds x-forwarded-network only when given', () => {
    const headers = encodeConnectRequest({
      authority: { kind: 'hostname', hostname: 'echo.default.svc.cluster.local', port: 80 },
      forwardedFor: { ip: 'fd00::1', port: 80 },
      baggage: { namespace: '', workloadName: '' },
      forwardedNetwork: 'network-a',
    });
    expect(headers).toEqual({
      ':method': 'CONNECT',
      ':authority': 'echo.default.svc.cluster.local:80',
      forwarded: 'for="[fd00::1]:80"',
      'x-forwarded-network': 'network-a',
    });
    expect(formatAuthority({ kind: 'address', ip: '::1', port: 15008 })).toBe('[::1]:15008');
  });
});

describe('decodeConnectRequest', () => {
  it('decodes what ztunnel sends', () => {
    const decoded = decodeConnectRequest({
      ':method': 'CONNECT',
      ':authority': '10.0.0.2:8080',
      baggage: 'k8s.cluster.name=K1,k8s.namespace.name=NS1,k8s.job.name=N1,service.name=N2,service.version=V1',
      forwarded: 'for="10.0.0.1:34567";host=echo.default.svc.cluster.local',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      'x-forwarded-network': 'net2',
    });
    expect(decoded).toEqual({
      ok: true,
      value: {
        authority: { kind: 'address', ip: '10.0.0.2', port: 8080 },
        forwardedFor: { ip: '10.0.0.1', port: 34567 },
        forwardedHost: 'echo.default.svc.cluster.local',
        baggage: { clusterId: 'K1', namespace: 'NS1', workloadType: 'job', workloadName: 'N1', serviceName: 'N2', serviceVersion: 'V1' },
        traceparent: { version: '00', traceId: '0af7651916cd43dd8448eb211c80319c', parentId: 'b7ad6b7169203331', flags: '01' },
        forwardedNetwork: 'net2',
      },
    });
  });

  it.each([
    [{ ':method': 'GET', ':path': '/', ':authority': 'a:1' }, 'NOT_CONNECT'],
    [{ ':authority': 'a:1' }, 'NOT_CONNECT'],
    [{ ':method': 'connect', ':authority': '10.0.0.1:80' }, 'NOT_CONNECT'],
    [{ ':method': 'CONNECT', ':authority': '10.0.0.1:80', ':path': '/' }, 'NOT_CONNECT'],
    [{ ':method': 'CONNECT', ':authority': '10.0.0.1:80', ':scheme': 'https' }, 'NOT_CONNECT'],
    [{ ':method': 'CONNECT', ':authority': '10.0.0.1:80', ':protocol': 'websocket' }, 'NOT_CONNECT'],
    [{ ':method': 'CONNECT' }, 'BAD_AUTHORITY'],
  ])('refuses %j with %s', (headers, code) => {
    const decoded = decodeConnectRequest(headers);
    expect(decoded.ok ? undefined : decoded.errors[0]?.code).toBe(code);
  });

  it('keeps informational headers lenient: bad ones are ignored, never a refusal', () => {
    const decoded = decodeConnectRequest({
      ':method': 'CONNECT', ':authority': '10.0.0.1:80',
      baggage: '=,,k8s.namespace.name,junk==x,k8s.namespace.name= ns ;prop=1',
      forwarded: 'for=unknown;host=""',
      traceparent: 'garbage',
      'x-forwarded-network': 'bad,value',
    });
    expect(decoded).toEqual({ ok: true, value: { authority: { kind: 'address', ip: '10.0.0.1', port: 80 }, baggage: { namespace: 'ns' } } });
  });

  it('joins repeated baggage headers (HTTP/2 delivers them as one comma-joined value or an array)', () => {
    const decoded = decodeConnectRequest({ ':method': 'CONNECT', ':authority': '10.0.0.1:80', baggage: ['k8s.cluster.name=K1', 'k8s.namespace.name=NS1'] });
    expect(decoded.ok && decoded.value.baggage).toEqual({ clusterId: 'K1', namespace: 'NS1' });
  });
});

describe('parseAuthority', () => {
  it.each<[string, HboneAuthority]>([
    ['10.0.0.1:80', { kind: 'address', ip: '10.0.0.1', port: 80 }],
    ['[fd00::1]:8080', { kind: 'address', ip: 'fd00::1', port: 8080 }],
    ['[FD00:0:0::1]:1', { kind: 'address', ip: 'fd00::1', port: 1 }],
    ['[::ffff:10.0.0.1]:80', { kind: 'address', ip: '10.0.0.1', port: 80 }],
    ['[::ffff:a00:1]:80', { kind: 'address', ip: '10.0.0.1', port: 80 }],
    ['[fd00:0:0:0:0:0:0:2]:80', { kind: 'address', ip: 'fd00::2', port: 80 }],
    ['svc:80', { kind: 'hostname', hostname: 'svc', port: 80 }],
    ['echo.default.svc.cluster.local:80', { kind: 'hostname', hostname: 'echo.default.svc.cluster.local', port: 80 }],
    ['Echo.Default.SVC:65535', { kind: 'hostname', hostname: 'echo.default.svc', port: 65535 }],
  ])('accepts %s', (text, expected) => {
    expect(parseAuthority(text)).toEqual({ ok: true, value: expected });
  });

  it.each([
    '', '10.0.0.1', '10.0.0.1:', '10.0.0.1:0', '10.0.0.1:65536', '10.0.0.1:+80', '10.0.0.1:8o', 'fd00::1:80', '[fd00::1]', '[fd00::1]80',
    '[10.0.0.1]:80', '[fe80::1%eth0]:80', ':80', 'user@host:80', 'a b:80', 'host/x:80', '010.0.0.1:80', '1.2.3:80', '-a.b:80',
    'a..b:80', `${'a'.repeat(64)}.b:80`, 'a\u0000b:80', 'häst:80',
    'svc:http', '[svc]:80', 'svc .ns:80', `${'a'.repeat(300)}:80`, 'svc.ns',
  ])('refuses %j with BAD_AUTHORITY', (text) => {
    const parsed = parseAuthority(text);
    expect(parsed.ok ? undefined : parsed.errors[0]?.code).toBe('BAD_AUTHORITY');
  });

  it('names the offending authority and what was wrong', () => {
    const parsed = parseAuthority('10.0.0.2:0');
    expect(parsed.ok ? '' : parsed.errors[0]?.reason).toBe('"10.0.0.2:0": port must be 1 to 65535');
  });
});

describe('baggage', () => {
  const workload = {
    clusterId: 'Kubernetes', namespace: 'ns', workloadType: 'cronjob', workloadName: 'nightly', canonicalName: 'nightly',
    canonicalRevision: 'latest', locality: { region: 'r', zone: '', subzone: '' },
  } as unknown as Workload;

  it('describes a workload as ztunnel does, omitting empty fields', () => {
    const baggage = baggageForWorkload(workload);
    expect(encodeBaggage(baggage)).toBe('k8s.cluster.name=Kubernetes,k8s.namespace.name=ns,k8s.cronjob.name=nightly,service.name=nightly,service.version=latest,cloud.region=r');
    expect(encodeBaggage(baggageForWorkload({ ...workload, workloadName: '', namespace: '', locality: undefined } as unknown as Workload)))
      .toBe('k8s.cluster.name=Kubernetes,service.name=nightly,service.version=latest');
  });

  it('parses values as ztunnel (empty values are absent, unknown workload types ignored)', () => {
    expect(parseBaggage('k8s.cluster.name=,k8s.namespace.name=,k8s.deployment.name=,service.name=,service.version=')).toEqual({});
    expect(parseBaggage('k8s.statefulset.name=x,k8s.pod.name=p')).toEqual({ workloadType: 'pod', workloadName: 'p' });
    expect(parseBaggage(undefined)).toEqual({});
  });
});

describe('forwarded and traceparent', () => {
  it('parses for= and host= with quotes stripped', () => {
    expect(parseForwarded('for="[::1]:80";host="svc.ns.svc.cluster.local"')).toEqual({ for: { ip: '::1', port: 80 }, host: 'svc.ns.svc.cluster.local' });
    expect(parseForwarded('by=x;for=10.0.0.1:5;proto=https')).toEqual({ for: { ip: '10.0.0.1', port: 5 } });
    expect(parseForwarded('host=é')).toEqual({});
    expect(encodeForwarded({ ip: '10.0.0.1', port: 80 }, 'bad;host')).toBe('for="10.0.0.1:80"');
  });

  it('generates 00-<32 hex>-<16 hex>-00 from the injected random source', () => {
    const bytes = Uint8Array.from({ length: 24 }, (_, i) => i + 1);
    const t = newTraceparent((n) => bytes.subarray(0, n));
    expect(t).toBe('00-0102030405060708090a0b0c0d0e0f10-1112131415161718-00');
    expect(parseTraceparent(t)).toEqual({ version: '00', traceId: '0102030405060708090a0b0c0d0e0f10', parentId: '1112131415161718', flags: '00' });
    expect(newTraceparent((n) => new Uint8Array(n))).toBe('00-00000000000000000000000000000001-0000000000000001-00');
    expect(parseTraceparent('00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-00')).toBeUndefined();
  });
});

describe('response', () => {
  it('encodes 200 with destination baggage and decodes it back', () => {
    const headers = encodeConnectResponse(200, { namespace: 'ns', workloadType: 'deployment', workloadName: 'echo' });
    expect(headers).toEqual({ ':status': 200, baggage: 'k8s.namespace.name=ns,k8s.deployment.name=echo' });
    expect(decodeConnectResponse({ ':status': 200, baggage: headers['baggage'] as string })).toEqual({
      status: 200, baggage: { namespace: 'ns', workloadType: 'deployment', workloadName: 'echo' },
    });
    expect(encodeConnectResponse(401)).toEqual({ ':status': 401 });
    expect(decodeConnectResponse({ ':status': 'x' }).status).toBeUndefined();
  });
});

// --- properties --------------------------------------------------------------

const safe = fc.stringMatching(/^[A-Za-z0-9._:/+-]{1,20}$/);
const label = fc.stringMatching(/^[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?$/);
const hostname = fc.array(label, { minLength: 1, maxLength: 4 }).chain((labels) =>
  fc.constantFrom('svc', 'local', 'com').map((tld) => [...labels, tld].join('.')));
const port = fc.integer({ min: 1, max: 65535 });
// The codec's canonical form: IPv4-mapped IPv6 is IPv4 (the one unmapping rule).
const ip = fc.oneof(fc.ipV4(), fc.ipV6()).map((s) => canonicalPeerIp(s) ?? '10.0.0.1');
const authority: fc.Arbitrary<HboneAuthority> = fc.oneof(
  fc.record({ kind: fc.constant('address' as const), ip, port }),
  fc.record({ kind: fc.constant('hostname' as const), hostname, port }),
);
const baggage: fc.Arbitrary<Baggage> = fc.record({
  clusterId: safe, namespace: safe, serviceName: safe, serviceVersion: safe, region: safe, zone: safe,
  workload: fc.option(fc.record({ workloadType: fc.constantFrom('deployment', 'cronjob', 'pod', 'job' as const), workloadName: safe }), { nil: undefined }),
}, { requiredKeys: [] }).map(({ workload, ...rest }) => ({ ...rest, ...(workload ?? {}) }));
const request: fc.Arbitrary<ConnectRequestFields> = fc.record({
  authority,
  forwardedFor: fc.record({ ip, port }),
  forwardedHost: hostname,
  baggage,
  traceparent: fc.uint8Array({ minLength: 24, maxLength: 24 }).map((b) => newTraceparent(() => b)),
  forwardedNetwork: safe,
}, { requiredKeys: ['authority'] });

describe('properties', () => {
  it('decode(encode(request)) gives the request back', () => {
    fc.assert(fc.property(request, (r) => {
      const decoded = decodeConnectRequest(encodeConnectRequest(r) as Record<string, string>);
      expect(decoded.ok).toBe(true);
      if (!decoded.ok) return;
      const v = decoded.value;
      expect(v.authority).toEqual(r.authority);
      expect(v.baggage).toEqual(r.baggage ?? {});
      expect(v.forwardedFor).toEqual(r.forwardedFor);
      expect(v.forwardedHost).toEqual(r.forwardedFor === undefined ? undefined : r.forwardedHost);
      expect(v.traceparent === undefined ? undefined : `${v.traceparent.version}-${v.traceparent.traceId}-${v.traceparent.parentId}-${v.traceparent.flags}`).toEqual(r.traceparent);
      expect(v.forwardedNetwork).toEqual(r.forwardedNetwork);
      expect(parseAuthority(formatAuthority(r.authority))).toEqual({ ok: true, value: r.authority });
    }));
  });

  it('decoding never throws on arbitrary header values, and only ever refuses with NOT_CONNECT or BAD_AUTHORITY', () => {
    const value = fc.oneof(
      fc.string({ unit: 'binary', maxLength: 60 }),
      fc.array(fc.string({ maxLength: 20 }), { maxLength: 3 }),
      fc.constant(undefined),
      fc.integer(),
    );
    const names = fc.constantFrom(':method', ':authority', ':path', ':scheme', ':protocol', 'baggage', 'forwarded', 'traceparent', 'x-forwarded-network', 'x');
    fc.assert(fc.property(fc.dictionary(names, value), fc.boolean(), (headers, connect) => {
      const h = connect ? { ...headers, ':method': 'CONNECT' } : headers;
      const decoded = decodeConnectRequest(h as Record<string, string>);
      if (!decoded.ok) expect(['NOT_CONNECT', 'BAD_AUTHORITY']).toContain(decoded.errors[0]?.code);
      expect(() => decodeConnectResponse(h as Record<string, string>)).not.toThrow();
    }), { numRuns: 2000 });
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 200 }), (s) => {
      expect(() => parseBaggage(s)).not.toThrow();
      expect(() => parseForwarded(s)).not.toThrow();
      expect(() => parseTraceparent(s)).not.toThrow();
      const a = parseAuthority(s);
      if (a.ok) expect(parseAuthority(formatAuthority(a.value))).toEqual(a);
    }), { numRuns: 2000 });
  });

  it('encoding only ever produces header-safe values, whatever the input strings', () => {
    const any = fc.string({ unit: 'binary', maxLength: 30 });
    fc.assert(fc.property(
      fc.record({ clusterId: any, namespace: any, workloadName: any, serviceName: any, region: any }, { requiredKeys: [] }), any, any,
      (b, host, network) => {
        const headers = encodeConnectRequest({
          authority: { kind: 'address', ip: '10.0.0.1', port: 80 },
          forwardedFor: { ip: '10.0.0.2', port: 1 },
          forwardedHost: host,
          baggage: b,
          forwardedNetwork: network,
          traceparent: host,
        });
        for (const v of Object.values(headers)) expect(String(v)).toMatch(/^[\x20-\x7e]*$/);
      },
    ));
  });
});
