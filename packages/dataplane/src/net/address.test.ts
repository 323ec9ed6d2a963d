import { describe, expect, it } from 'vitest';
import { canonicalPeerIp, formatSocketAddress, isLoopbackHost, localAddressOf, peerAddress } from './address.js';

describe('canonicalPeerIp: the one unmapping rule', () => {
  it.each<[string, string | undefined]>([
    ['10.0.0.1', '10.0.0.1'],
    ['::ffff:10.0.0.1', '10.0.0.1'],
    ['::FFFF:10.1.0.10', '10.1.0.10'],
    ['::FFFF:a00:1', '10.0.0.1'],
    ['0:0:0:0:0:ffff:0a00:0001', '10.0.0.1'],
    ['fd00:0::1', 'fd00::1'],
    ['2001:0db8::0001', '2001:db8::1'],
    ['::1', '::1'],
    ['nope', undefined],
    ['', undefined],
  ])('%s → %s', (ip, want) => {
    expect(canonicalPeerIp(ip)).toBe(want);
  });
});

describe('socket addresses enter unmapped', () => {
  it('peer and local addresses of a dual-stack socket are plain IPv4', () => {
    const socket = { remoteAddress: '::ffff:10.1.0.10', remotePort: 41234, localAddress: '::ffff:10.1.0.11', localPort: 15008 };
    expect(peerAddress(socket)).toEqual({ ip: '10.1.0.10', port: 41234 });
    expect(localAddressOf(socket)).toEqual({ ip: '10.1.0.11', port: 15008 });
  });

  it('a socket that is gone has no address', () => {
    expect(peerAddress({ remoteAddress: undefined, remotePort: undefined })).toBeUndefined();
  });
});

describe('formatSocketAddress', () => {
  it.each([
    [{ ip: '10.0.0.1', port: 15008 }, '10.0.0.1:15008'],
    [{ ip: '2001:db8::1', port: 15008 }, '[2001:db8::1]:15008'],
  ])('%o → %s', (a, want) => {
    expect(formatSocketAddress(a)).toBe(want);
  });
});

// Listen addresses are parsed by control (config/listen-address.test.ts has the cases).
describe('listen addresses', () => {
  it('loopback hosts', () => {
    expect(['localhost', '127.0.0.1', '127.9.9.9', '::1'].every(isLoopbackHost)).toBe(true);
    expect(['0.0.0.0', '::', '10.0.0.1'].some(isLoopbackHost)).toBe(false);
  });
});
