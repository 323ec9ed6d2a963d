import { describe, expect, it } from 'vitest';
import { canonicalIp, cidrContains, ipFromBytes, ipToBytes, makeCidr, parseCidr } from './ip.js';

describe('ip', () => {
  it('canonicalizes IPv4 and IPv6 text and refuses legacy or malformed forms', () => {
    expect(canonicalIp('10.0.0.1')).toBe('10.0.0.1');
    expect(canonicalIp('2001:DB8:0:0:0:0:0:1')).toBe('2001:db8::1');
    expect(canonicalIp('10')).toBeUndefined();
    expect(canonicalIp('0x0a.0.0.1')).toBeUndefined();
    expect(canonicalIp('10.0.0.256')).toBeUndefined();
    expect(canonicalIp('')).toBeUndefined();
  });

  it('converts 4 and 16 bytes and nothing else', () => {
    expect(ipFromBytes(new Uint8Array([10, 1, 2, 3]))).toBe('10.1.2.3');
    expect(ipFromBytes(ipToBytes('fd00::5'))).toBe('fd00::5');
    expect(ipFromBytes(new Uint8Array(5))).toBeUndefined();
    expect(ipFromBytes(new Uint8Array(0))).toBeUndefined();
  });

  it('masks host bits and matches only its own family', () => {
    const c = makeCidr('10.1.2.3', 8);
    expect(c).toEqual({ address: '10.0.0.0', prefixLength: 8, family: 4 });
    expect(cidrContains(c!, '10.200.0.1')).toBe(true);
    expect(cidrContains(c!, '11.0.0.1')).toBe(false);
    expect(cidrContains(c!, '::ffff:10.0.0.1')).toBe(false);
    expect(makeCidr('10.0.0.1', 33)).toBeUndefined();
    expect(parseCidr('fd00::/8')).toEqual({ address: 'fd00::', prefixLength: 8, family: 6 });
    expect(parseCidr('10.0.0.1')).toEqual({ address: '10.0.0.1', prefixLength: 32, family: 4 });
    expect(parseCidr('10.0.0.1/x')).toBeUndefined();
  });
});
