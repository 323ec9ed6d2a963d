/** The pool key: canonical and injective (two different keys never share a connection). */
import { describe, expect, it } from 'vitest';
import type { Identity } from '@ambient/control';
import { poolKeyString } from './pool.js';

const sa = (namespace: string, serviceAccount: string, trustDomain = 'cluster.local'): Identity => ({ trustDomain, namespace, serviceAccount });
const ALICE = sa('apps', 'alice');
const BOB = sa('apps', 'bob');
const SERVER_ID = sa('backend', 'server');
const SERVICE_SAN = sa('backend', 'service-account-of-svc');

describe('poolKeyString', () => {
  it('is canonical for equal keys and distinct for different ones', () => {
    const hop = { ip: '10.0.0.5', port: 15008 };
    const k = { srcIdentity: ALICE, dstIdentities: [SERVER_ID, SERVICE_SAN], nextHop: hop, srcIp: '10.0.0.1' };
    expect(poolKeyString({ ...k, dstIdentities: [SERVICE_SAN, SERVER_ID] })).toBe(poolKeyString(k));
    expect(poolKeyString({ ...k, nextHop: { ip: '2001:db8::1', port: 15008 } })).toBe(poolKeyString({ ...k, nextHop: { ip: '2001:0db8:0:0::1', port: 15008 } }));
    const variants = [
      { ...k, srcIdentity: BOB },
      { ...k, dstIdentities: [SERVER_ID] },
      { ...k, nextHop: { ip: '10.0.0.6', port: 15008 } },
      { ...k, nextHop: { ip: '10.0.0.5', port: 15009 } },
      { ...k, srcIp: '10.0.0.2' },
      // Separator injection cannot make two different keys equal.
      { ...k, srcIdentity: sa('apps', 'alice","x'), dstIdentities: [] },
    ];
    const strings = new Set([poolKeyString(k), ...variants.map(poolKeyString)]);
    expect(strings.size).toBe(variants.length + 1);
  });
});

describe('poolKeyString (property)', () => {
  it('two keys map to the same string exactly when they are the same key', async () => {
    const fc = await import('fast-check');
    const ids = fc.constantFrom(ALICE, BOB, SERVER_ID, SERVICE_SAN, sa('a,b', '"x"', 'td'), sa('a', 'b', 'other.td'));
    const key = fc.record({
      srcIdentity: ids,
      dstIdentities: fc.array(ids, { maxLength: 3 }),
      nextHop: fc.record({ ip: fc.constantFrom('10.0.0.1', '10.0.0.2', '::1', '0:0:0:0:0:0:0:1'), port: fc.constantFrom(15008, 15009) }),
      srcIp: fc.constantFrom('10.0.0.1', '10.0.0.3'),
    });
    const text = (i: Identity) => `${i.trustDomain}/${i.namespace}/${i.serviceAccount}`;
    const canonical = (k: { srcIdentity: Identity; dstIdentities: Identity[]; nextHop: { ip: string; port: number }; srcIp: string }) => ({
      src: text(k.srcIdentity),
      dst: [...new Set(k.dstIdentities.map(text))].sort(),
      hop: `${k.nextHop.ip === '0:0:0:0:0:0:0:1' ? '::1' : k.nextHop.ip}|${k.nextHop.port}`,
      srcIp: k.srcIp,
    });
    fc.assert(fc.property(key, key, (a, b) => {
      const same = JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
      return (poolKeyString(a) === poolKeyString(b)) === same;
    }), { numRuns: 2000 });
  });
});
