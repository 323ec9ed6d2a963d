/**
 * IP addresses and CIDRs in the model are canonical strings (IPv4 dotted quad,
 * IPv6 in RFC 5952 compressed form), so they can be compared and used as map
 * keys directly. Parsing and prefix math go through ipaddr.js.
 */
import ipaddr from 'ipaddr.js';

export type IpFamily = 4 | 6;

/** An IP prefix, e.g. 10.96.0.0/12. `address` is the canonical network address. */
export interface Cidr {
  readonly address: string;
  readonly prefixLength: number;
  readonly family: IpFamily;
}

/** An IP on a named network ("" is the default network). Key form: `network/ip`. */
export interface NetworkAddress {
  readonly network: string;
  readonly address: string;
}

/** A CIDR on a named network (CIDR VIPs). */
export interface NetworkCidr {
  readonly network: string;
  readonly cidr: Cidr;
}

export function networkAddressKey(network: string, address: string): string {
  return `${network}/${address}`;
}

/** Canonical text for 4 or 16 raw bytes, or undefined for any other length. */
export function ipFromBytes(bytes: Uint8Array): string | undefined {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  if (bytes.length === 16) {
    const parsed = ipaddr.fromByteArray(Array.from(bytes)) as ipaddr.IPv6;
    // An IPv4-mapped address stays IPv6 on the wire; keep its canonical v6 form.
    return parsed.toRFC5952String();
  }
  return undefined;
}

/** Raw bytes (4 or 16) of a canonical or user-written IP. */
export function ipToBytes(ip: string): Uint8Array {
  return Uint8Array.from(ipaddr.parse(ip).toByteArray());
}

/** Canonicalizes user-written IP text; undefined when it is not an IP. */
export function canonicalIp(text: string): string | undefined {
  if (!ipaddr.isValid(text)) return undefined;
  // ipaddr.isValid accepts legacy forms like "10" or "0x0a.0.0.1"; require the strict ones.
  if (!ipaddr.IPv4.isValidFourPartDecimal(text) && !ipaddr.IPv6.isValid(text)) return undefined;
  const parsed = ipaddr.parse(text);
  return parsed.kind() === 'ipv4' ? parsed.toString() : (parsed as ipaddr.IPv6).toRFC5952String();
}

export function ipFamily(ip: string): IpFamily {
  return ip.includes(':') ? 6 : 4;
}

/** Builds a CIDR from an address and prefix length, masking host bits. */
export function makeCidr(ip: string, prefixLength: number): Cidr | undefined {
  const canonical = canonicalIp(ip);
  if (canonical === undefined) return undefined;
  const family = ipFamily(canonical);
  const max = family === 4 ? 32 : 128;
  if (!Number.isInteger(prefixLength) || prefixLength < 0 || prefixLength > max) return undefined;
  const parsed = ipaddr.parse(canonical);
  const net = family === 4
    ? ipaddr.IPv4.networkAddressFromCIDR(`${canonical}/${prefixLength}`).toString()
    : (ipaddr.IPv6.networkAddressFromCIDR(`${canonical}/${prefixLength}`) as ipaddr.IPv6).toRFC5952String();
  void parsed;
  return { address: net, prefixLength, family };
}

/** Parses "a.b.c.d/n" or "v6/n"; a bare IP is a full-length prefix. */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  if (slash < 0) {
    const ip = canonicalIp(text);
    return ip === undefined ? undefined : { address: ip, prefixLength: ipFamily(ip) === 4 ? 32 : 128, family: ipFamily(ip) };
  }
  const lenText = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(lenText)) return undefined;
  return makeCidr(text.slice(0, slash), Number(lenText));
}

export function formatCidr(c: Cidr): string {
  return `${c.address}/${c.prefixLength}`;
}

/** True when `ip` (canonical) lies inside `cidr`. Different families never match. */
export function cidrContains(cidr: Cidr, ip: string): boolean {
  if (ipFamily(ip) !== cidr.family) return false;
  const addr = ipaddr.parse(ip);
  const range = ipaddr.parse(cidr.address);
  return addr.match(range, cidr.prefixLength);
}
