import { describe, expect, it } from 'vitest';
import { illegalPorts, isIllegalPort, isLocalHostAddress, isSelfCall } from './ports.js';

describe('illegalPorts', () => {
  it.each<[string, Parameters<typeof illegalPorts>[0], number[]]>([
    ['defaults: outbound, plaintext inbound, HBONE', { socks5Enabled: false }, [15001, 15006, 15008]],
    ['SOCKS5 on adds 15080', { socks5Enabled: true }, [15001, 15006, 15008, 15080]],
    ['listener overrides are what is banned', { socks5Enabled: true, listeners: { outbound: 25001, socks5: 25080 } }, [15006, 15008, 25001, 25080]],
    ['a SOCKS5 port is ignored while SOCKS5 is off', { socks5Enabled: false, listeners: { socks5: 25080 } }, [15001, 15006, 15008]],
  ])('%s', (_name, options, want) => {
    expect([...illegalPorts(options)].sort()).toEqual(want);
  });
});

describe('self calls', () => {
  const illegal = illegalPorts({ socks5Enabled: true });
  it.each<[string, string, number, boolean]>([
    ['127.0.0.1 on the outbound port', '127.0.0.1', 15001, true],
    ['anywhere in 127/8', '127.1.2.3', 15008, true],
    ['::1', '::1', 15006, true],
    ['IPv4-mapped loopback', '::ffff:127.0.0.1', 15008, true],
    ['the unspecified IPv4 address', '0.0.0.0', 15001, true],
    ['the unspecified IPv6 address', '::', 15080, true],
    ['loopback on an application port', '127.0.0.1', 8080, false],
    ['a pod IP on an illegal port (the outbound rule is loopback only)', '10.0.0.2', 15008, false],
    ['not an IP', 'localhost', 15001, false],
  ])('%s', (_name, ip, port, want) => {
    expect(isSelfCall(ip, port, illegal)).toBe(want);
  });

  it('inbound rules ban the port whatever the IP', () => {
    expect(isIllegalPort(15006, illegal)).toBe(true);
    expect(isIllegalPort(8080, illegal)).toBe(false);
  });
});

describe('isLocalHostAddress', () => {
  it.each<[string, boolean]>([
    ['127.0.0.1', true],
    ['10.0.0.1', false],
    ['::2', false],
  ])('isLocalHostAddress(%s) = %s', (ip, want) => {
    expect(isLocalHostAddress(ip)).toBe(want);
  });
});
