import { create, toBinary } from '@bufbuild/protobuf';
import { anyPack, StringValueSchema } from '@bufbuild/protobuf/wkt';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DeltaDiscoveryResponseSchema, ResourceSchema } from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import { decodeScannedResource, scanDeltaResponse } from './scanned-response.js';

describe('scanDeltaResponse', () => {
  it('reads every outer field and returns each resource still encoded, in order', () => {
    const resources = ['a', 'b', 'c'].map((name, i) =>
      create(ResourceSchema, { name, version: `v${i}`, resource: anyPack(StringValueSchema, create(StringValueSchema, { value: name })) }),
    );
    const bytes = toBinary(
      DeltaDiscoveryResponseSchema,
      create(DeltaDiscoveryResponseSchema, {
        systemVersionInfo: 'sys-1',
        typeUrl: 'type.googleapis.com/istio.workload.Address',
        nonce: 'n-7',
        removedResources: ['gone-1', 'gone-2'],
        resources,
      }),
    );
    const scanned = scanDeltaResponse(bytes);
    expect(scanned).toMatchObject({
      systemVersionInfo: 'sys-1',
      typeUrl: 'type.googleapis.com/istio.workload.Address',
      nonce: 'n-7',
      removedResources: ['gone-1', 'gone-2'],
    });
    expect(scanned.resources.map((r) => decodeScannedResource(r)?.name)).toEqual(['a', 'b', 'c']);
    expect(decodeScannedResource(scanned.resources[2] as Uint8Array)?.version).toBe('v2');
  });

  it('agrees with a full decode on arbitrary responses', () => {
    const arb = fc.record({
      typeUrl: fc.string(),
      nonce: fc.string(),
      systemVersionInfo: fc.string(),
      removedResources: fc.array(fc.string(), { maxLength: 4 }),
      names: fc.array(fc.string(), { maxLength: 6 }),
    });
    fc.assert(
      fc.property(arb, (r) => {
        const bytes = toBinary(
          DeltaDiscoveryResponseSchema,
          create(DeltaDiscoveryResponseSchema, { ...r, resources: r.names.map((name) => create(ResourceSchema, { name })) }),
        );
        const scanned = scanDeltaResponse(bytes);
        expect(scanned.typeUrl).toBe(r.typeUrl);
        expect(scanned.nonce).toBe(r.nonce);
        expect(scanned.removedResources).toEqual(r.removedResources);
        expect(scanned.resources.map((x) => decodeScannedResource(x)?.name)).toEqual(r.names);
      }),
    );
  });

  it('throws on truncated bytes (the stream then fails) and never throws when decoding a resource', () => {
    const bytes = toBinary(DeltaDiscoveryResponseSchema, create(DeltaDiscoveryResponseSchema, { typeUrl: 'x'.repeat(50) }));
    expect(() => scanDeltaResponse(bytes.subarray(0, 10))).toThrow();
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (junk) => {
      decodeScannedResource(junk);
    }));
  });
});
