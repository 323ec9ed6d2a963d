/**
 * The few DER fields revocation checking needs, read without trusting the
 * input: the signed parts of a CRL (to-be-signed bytes, signature algorithm,
 * signature), a CRL's issuer Name, and a certificate's issuer Name and serial
 * number. Names are returned as their exact DER bytes because, as in webpki,
 * a CRL applies to a certificate only when the two issuer Names are
 * byte-for-byte equal. Every function is pure and throws nothing: malformed
 * input gives `undefined`.
 */

interface Tlv {
  readonly tag: number;
  /** Offset of the identifier octet. */
  readonly offset: number;
  readonly start: number;
  readonly end: number;
}

const TAG_INTEGER = 0x02;
const TAG_BIT_STRING = 0x03;
const TAG_OID = 0x06;
const TAG_SEQUENCE = 0x30;
const TAG_VERSION = 0xa0;

function tlv(buf: Uint8Array, offset: number, limit: number): Tlv | undefined {
  if (offset + 2 > limit) return undefined;
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) return undefined;
  let length = buf[offset + 1] as number;
  let start = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0 || octets > 4 || start + octets > limit) return undefined;
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + (buf[start + i] as number);
    start += octets;
  }
  const end = start + length;
  return end > limit ? undefined : { tag, offset, start, end };
}

function children(buf: Uint8Array, parent: Tlv): Tlv[] | undefined {
  const out: Tlv[] = [];
  for (let offset = parent.start; offset < parent.end; ) {
    const child = tlv(buf, offset, parent.end);
    if (child === undefined) return undefined;
    out.push(child);
    offset = child.end;
  }
  return out;
}

function oid(buf: Uint8Array, t: Tlv): string | undefined {
  if (t.tag !== TAG_OID || t.end === t.start || ((buf[t.end - 1] as number) & 0x80) !== 0) return undefined;
  const arcs: number[] = [];
  let value = 0;
  for (let i = t.start; i < t.end; i++) {
    const byte = buf[i] as number;
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) return undefined;
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

/** The outer SEQUENCE (which must span the whole input) and its children. */
function outer(der: Uint8Array): Tlv[] | undefined {
  const top = tlv(der, 0, der.length);
  if (top === undefined || top.tag !== TAG_SEQUENCE || top.end !== der.length) return undefined;
  return children(der, top);
}

function bytes(der: Uint8Array, t: Tlv, whole = true): Buffer {
  return Buffer.from(der.subarray(whole ? t.offset : t.start, t.end));
}

/** A serial number as lower-case hex without leading zero octets ("0" for zero). */
export function normalizeSerial(hex: string): string {
  const s = hex.toLowerCase().replace(/^(00)+/, '');
  return s === '' ? '0' : s;
}

export interface SignedParts {
  /** The to-be-signed element, tag and length included (what the signature covers). */
  readonly tbs: Buffer;
  readonly signatureAlgorithm: string;
  /** The signature BIT STRING's content without its unused-bits octet. */
  readonly signature: Buffer;
}

/** tbs, algorithm and signature of a signed X.509 structure (certificate or CRL). */
export function signedParts(der: Uint8Array): SignedParts | undefined {
  const parts = outer(der);
  if (parts === undefined || parts.length !== 3) return undefined;
  const [tbs, alg, sig] = parts as [Tlv, Tlv, Tlv];
  if (tbs.tag !== TAG_SEQUENCE || alg.tag !== TAG_SEQUENCE || sig.tag !== TAG_BIT_STRING || sig.end - sig.start < 2) return undefined;
  if (der[sig.start] !== 0) return undefined;
  const algChildren = children(der, alg);
  const algOid = algChildren?.[0] === undefined ? undefined : oid(der, algChildren[0]);
  if (algOid === undefined) return undefined;
  return { tbs: bytes(der, tbs), signatureAlgorithm: algOid, signature: Buffer.from(der.subarray(sig.start + 1, sig.end)) };
}

/** The issuer Name (DER) of a CRL: TBSCertList ::= SEQUENCE { version INTEGER OPTIONAL, signature, issuer, ... }. */
export function crlIssuer(der: Uint8Array): Buffer | undefined {
  const parts = outer(der);
  const tbs = parts?.[0];
  if (tbs === undefined || tbs.tag !== TAG_SEQUENCE) return undefined;
  const fields = children(der, tbs);
  if (fields === undefined) return undefined;
  const i = fields[0]?.tag === TAG_INTEGER ? 1 : 0;
  const issuer = fields[i + 1];
  return issuer?.tag === TAG_SEQUENCE ? bytes(der, issuer) : undefined;
}

/** The issuer Name (DER) and normalized serial of a certificate. */
export function certificateIssuerAndSerial(der: Uint8Array): { readonly issuer: Buffer; readonly serial: string } | undefined {
  const parts = outer(der);
  const tbs = parts?.[0];
  if (tbs === undefined || tbs.tag !== TAG_SEQUENCE) return undefined;
  const fields = children(der, tbs);
  if (fields === undefined) return undefined;
  const i = fields[0]?.tag === TAG_VERSION ? 1 : 0;
  const serial = fields[i];
  const issuer = fields[i + 2];
  if (serial?.tag !== TAG_INTEGER || serial.end === serial.start || issuer?.tag !== TAG_SEQUENCE) return undefined;
  return { issuer: bytes(der, issuer), serial: normalizeSerial(bytes(der, serial, false).toString('hex')) };
}
