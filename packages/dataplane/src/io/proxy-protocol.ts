/**
 * PROXY protocol v2 headers, as ztunnel writes them towards workloads whose
 * application tunnel is PROXY (waypoints): command PROXY, transport STREAM,
 * addresses (original client source, tunnel target), and TLV 0xD0 carrying
 * the client's SPIFFE identity. ztunnel never writes TLV 0xD1.
 * Pure: encodes into a Buffer whose length fields always equal what follows
 * (the class of bug behind CVE-2026-47692).
 */
import { ipFamily, ipToBytes } from '@ambient/control';

const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const VERSION_2_PROXY = 0x21;
const TCP_OVER_IPV4 = 0x11;
const TCP_OVER_IPV6 = 0x21;
/** Istio's TLV type for the peer's SPIFFE identity. */
export const PP2_TYPE_ISTIO_PEER_PRINCIPAL = 0xd0;

export interface ProxyHeaderInput {
  readonly src: { readonly ip: string; readonly port: number };
  readonly dst: { readonly ip: string; readonly port: number };
  /** `spiffe://...`, when the client had one. */
  readonly peerIdentity?: string | undefined;
}

export function encodeProxyV2(input: ProxyHeaderInput): Buffer {
  const { src, dst } = input;
  // Mixed families: express both as IPv6 (IPv4-mapped), as the spec allows.
  const v6 = ipFamily(src.ip) === 6 || ipFamily(dst.ip) === 6;
  const addr = (ip: string) => {
    const bytes = Buffer.from(ipToBytes(ip));
    if (!v6 || bytes.length === 16) return bytes;
    return Buffer.concat([Buffer.alloc(10), Buffer.from([0xff, 0xff]), bytes]);
  };
  const tlvs: Buffer[] = [];
  if (input.peerIdentity !== undefined && input.peerIdentity !== '') {
    const value = Buffer.from(input.peerIdentity, 'utf8');
    const tlv = Buffer.alloc(3 + value.length);
    tlv[0] = PP2_TYPE_ISTIO_PEER_PRINCIPAL;
    tlv.writeUInt16BE(value.length, 1);
    value.copy(tlv, 3);
    tlvs.push(tlv);
  }
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(src.port, 0);
  ports.writeUInt16BE(dst.port, 2);
  const body = Buffer.concat([addr(src.ip), addr(dst.ip), ports, ...tlvs]);
  const header = Buffer.alloc(16);
  SIGNATURE.copy(header, 0);
  header[12] = VERSION_2_PROXY;
  header[13] = v6 ? TCP_OVER_IPV6 : TCP_OVER_IPV4;
  header.writeUInt16BE(body.length, 14);
  return Buffer.concat([header, body]);
}
