import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { encodeProxyV2, PP2_TYPE_ISTIO_PEER_PRINCIPAL } from './proxy-protocol.js';

describe('encodeProxyV2', () => {
  it('writes the v2 signature, PROXY/STREAM over IPv4, both addresses and ports, and the identity TLV', () => {
    const h = encodeProxyV2({ src: { ip: '10.0.0.1', port: 40000 }, dst: { ip: '10.0.0.2', port: 15088 }, peerIdentity: 'spiffe://cluster.local/ns/a/sa/b' });
    expect(h.subarray(0, 12).toString('hex')).toBe('0d0a0d0a000d0a515549540a');
    expect(h[12]).toBe(0x21);
    expect(h[13]).toBe(0x11);
    const len = h.readUInt16BE(14);
    expect(h.length).toBe(16 + len);
    expect([...h.subarray(16, 24)]).toEqual([10, 0, 0, 1, 10, 0, 0, 2]);
    expect(h.readUInt16BE(24)).toBe(40000);
    expect(h.readUInt16BE(26)).toBe(15088);
    expect(h[28]).toBe(PP2_TYPE_ISTIO_PEER_PRINCIPAL);
    const tlvLen = h.readUInt16BE(29);
    expect(h.subarray(31, 31 + tlvLen).toString()).toBe('spiffe://cluster.local/ns/a/sa/b');
  });

  it('uses IPv6 (with mapped IPv4) when either side is IPv6, and omits the TLV without an identity', () => {
    const h = encodeProxyV2({ src: { ip: '10.0.0.1', port: 1 }, dst: { ip: 'fd00::2', port: 2 } });
    expect(h[13]).toBe(0x21);
    expect(h.readUInt16BE(14)).toBe(36);
    expect(h.subarray(16, 32).toString('hex')).toBe('00000000000000000000ffff0a000001');
  });

  it('declares exactly the length it writes, for every identity length', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 2000 }), fc.boolean(), (id, six) => {
        const h = encodeProxyV2({ src: { ip: six ? 'fd00::1' : '10.0.0.1', port: 5 }, dst: { ip: '10.0.0.2', port: 6 }, peerIdentity: id });
        expect(h.readUInt16BE(14)).toBe(h.length - 16);
      }),
    );
  });
});
