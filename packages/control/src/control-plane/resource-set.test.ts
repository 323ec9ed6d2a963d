import { anyPack } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import { AddressSchema } from '../gen/istio/workload/workload_pb.js';
import { create } from '@bufbuild/protobuf';
import { workload } from '../testing/builders.js';
import { diffResourceSets, ResourceSet, resourceVersion } from './resource-set.js';

const pack = (ip: string) => anyPack(AddressSchema, create(AddressSchema, { type: { case: 'workload', value: workload({ ips: [ip] }) } }));

describe('resourceVersion', () => {
  it('is a stable content hash: equal bytes, equal version; different bytes, different version', () => {
    expect(resourceVersion(pack('10.0.0.1'))).toBe(resourceVersion(pack('10.0.0.1')));
    expect(resourceVersion(pack('10.0.0.1'))).not.toBe(resourceVersion(pack('10.0.0.2')));
    expect(resourceVersion(pack('10.0.0.1'))).toMatch(/^[0-9a-f]{16}$/);
  });
});

describe('ResourceSet', () => {
  it('returns the same set when nothing changes, and diffs upserts and removals', () => {
    const a = ResourceSet.of([{ name: 'a', resource: pack('10.0.0.1') }, { name: 'b', resource: pack('10.0.0.2') }]);
    expect(a.with('a', pack('10.0.0.1'))).toBe(a);
    expect(a.without('zzz')).toBe(a);
    const b = a.with('a', pack('10.0.0.9')).without('b').with('c', pack('10.0.0.3'));
    expect(diffResourceSets(a, b)).toEqual({ upserted: ['a', 'c'], removed: ['b'] });
    expect(a.size).toBe(2);
  });

  it('treats an alias change as an upsert', () => {
    const a = ResourceSet.of([{ name: 'a', resource: pack('10.0.0.1'), aliases: ['/10.0.0.1'] }]);
    const b = a.with('a', pack('10.0.0.1'), ['/10.0.0.1', 'net/10.0.0.1']);
    expect(diffResourceSets(a, b).upserted).toEqual(['a']);
  });
});
