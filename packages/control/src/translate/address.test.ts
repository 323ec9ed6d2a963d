import { create, toBinary } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { AddressSchema, type Address } from '../gen/istio/workload/workload_pb.js';
import { ipToBytes } from '../model/ip.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../xds/type-urls.js';
import { decodeAddressResource, translateAddress } from './address.js';

const workloadAddress = (uid: string): Address =>
  create(AddressSchema, {
    type: { case: 'workload', value: { uid, name: 'client-0', namespace: 'demo', addresses: [ipToBytes('127.0.0.20')] } },
  });

const serviceAddress = (hostname: string): Address =>
  create(AddressSchema, {
    type: {
      case: 'service',
      value: { name: 'echo', namespace: 'demo', hostname, addresses: [{ address: ipToBytes('127.10.0.30') }] },
    },
  });

describe('translateAddress', () => {
  it('translates a workload address', () => {
    const r = translateAddress(workloadAddress('Kubernetes//Pod/demo/client-0'));
    expect(r.ok && r.value.kind === 'workload' && r.value.workload.uid).toBe('Kubernetes//Pod/demo/client-0');
  });

  it('translates a service address', () => {
    const r = translateAddress(serviceAddress('echo.demo.svc.cluster.local'));
    expect(r.ok && r.value.kind === 'service' && r.value.service.vips).toEqual([{ network: '', address: '127.10.0.30' }]);
  });

  it('rejects an address with neither a workload nor a service', () => {
    expect(translateAddress(create(AddressSchema))).toEqual({
      ok: false,
      errors: [{ field: 'type', reason: 'address has neither a workload nor a service' }],
    });
  });

  it.each([
    ['workload', workloadAddress(''), 'workload.uid'],
    ['service', serviceAddress('bad host'), 'service.hostname'],
  ])('nests %s rejections under the oneof name', (_kind, address, field) => {
    const r = translateAddress(address);
    expect(r.ok ? [] : r.errors.map((e) => e.field)).toEqual([field]);
  });
});

describe('decodeAddressResource', () => {
  it('unpacks and translates an Address', () => {
    const r = decodeAddressResource(anyPack(AddressSchema, serviceAddress('echo.demo.svc.cluster.local')));
    expect(r.ok && r.value.kind).toBe('service');
  });

  it('rejects another type URL', () => {
    const r = decodeAddressResource({ ...anyPack(AddressSchema, workloadAddress('u')), typeUrl: AUTHORIZATION_TYPE_URL });
    expect(r).toEqual({ ok: false, errors: [{ field: 'typeUrl', reason: expect.stringContaining(`expected ${ADDRESS_TYPE_URL}`) }] });
  });

  it('rejects truncated bytes', () => {
    const bytes = toBinary(AddressSchema, workloadAddress('Kubernetes//Pod/demo/client-0'));
    const r = decodeAddressResource({ ...anyPack(AddressSchema, create(AddressSchema)), value: bytes.slice(0, bytes.length - 3) });
    expect(r).toEqual({ ok: false, errors: [{ field: '', reason: expect.stringContaining('does not decode as istio.workload.Address') }] });
  });

  it('rejects invalid UTF-8 in a string field, as prost does', () => {
    // Address.workload (field 1) holding Workload.uid (field 20) = bytes ff fe.
    const workload = [0xa2, 0x01, 0x02, 0xff, 0xfe];
    const value = new Uint8Array([0x0a, workload.length, ...workload]);
    const r = decodeAddressResource({ ...anyPack(AddressSchema, create(AddressSchema)), value });
    expect(r).toEqual({ ok: false, errors: [{ field: '', reason: expect.stringContaining('utf-8') }] });
  });

  it('rejects an empty Address (neither kind)', () => {
    const r = decodeAddressResource(anyPack(AddressSchema, create(AddressSchema)));
    expect(r.ok).toBe(false);
  });
});
