/**
 * A minimal, strict DER reader for the parts of an X.509 certificate that the
 * peer-identity checks need: validity, whether the subject is empty, and the
 * extensions (subjectAltName as typed GeneralNames, basicConstraints, keyUsage,
 * extendedKeyUsage). Node only offers the SAN as a comma-joined string, which
 * cannot be parsed safely (Node CVE-2021-44532/44533), so the SAN is read from
 * the DER here. Anything that is not well-formed DER is refused; nothing throws.
 */
import { fail, ok, rejection, type Result } from '@ambient/control';

/** A typed GeneralName (RFC 5280 4.2.1.6). Text values are the raw bytes as latin1. */
export type GeneralName =
  | { readonly type: 'uri'; readonly value: string }
  | { readonly type: 'dns'; readonly value: string }
  | { readonly type: 'email'; readonly value: string }
  | { readonly type: 'ip'; readonly value: string }
  | { readonly type: 'other'; readonly tag: number };

export interface CertificateExtension {
  readonly oid: string;
  readonly critical: boolean;
  /** The content of extnValue (the DER of the extension's own structure). */
  readonly value: Uint8Array;
}

export interface CertificateFields {
  /** Epoch milliseconds. */
  readonly notBefore: number;
  readonly notAfter: number;
  readonly subjectEmpty: boolean;
  readonly extensions: readonly CertificateExtension[];
}

export const OID_SUBJECT_ALT_NAME = '2.5.29.17';
export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';
export const OID_EXT_KEY_USAGE = '2.5.29.37';
export const OID_SUBJECT_KEY_ID = '2.5.29.14';
export const OID_AUTHORITY_KEY_ID = '2.5.29.35';
export const OID_CERTIFICATE_POLICIES = '2.5.29.32';
export const OID_EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
export const OID_EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
export const OID_EKU_ANY = '2.5.29.37.0';

/** keyUsage bits as numbered in RFC 5280 (bit 0 is the most significant bit of the first octet). */
export const KEY_USAGE = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
  keyCertSign: 5,
  cRLSign: 6,
  encipherOnly: 7,
  decipherOnly: 8,
} as const;

const TAG_BOOLEAN = 0x01;
const TAG_INTEGER = 0x02;
const TAG_BIT_STRING = 0x03;
const TAG_OCTET_STRING = 0x04;
const TAG_OID = 0x06;
const TAG_UTC_TIME = 0x17;
const TAG_GENERALIZED_TIME = 0x18;
const TAG_SEQUENCE = 0x30;

interface Tlv {
  /** The identifier octet (class, constructed bit, tag number < 31). */
  readonly tag: number;
  /** Content start and end offsets into the buffer. */
  readonly start: number;
  readonly end: number;
}

class DerError extends Error {}

/** Reads one TLV at `offset`, which must end at or before `limit`. */
function readTlv(buf: Uint8Array, offset: number, limit: number): Tlv {
  if (offset + 2 > limit) throw new DerError('truncated element');
  const tag = buf[offset] as number;
  if ((tag & 0x1f) === 0x1f) throw new DerError('high tag numbers are not used in certificates');
  let length = buf[offset + 1] as number;
  let start = offset + 2;
  if (length & 0x80) {
    const octets = length & 0x7f;
    if (octets === 0) throw new DerError('indefinite length is not DER');
    if (octets > 4) throw new DerError('element too long');
    if (start + octets > limit) throw new DerError('truncated length');
    length = 0;
    for (let i = 0; i < octets; i++) length = length * 256 + (buf[start + i] as number);
    if (length < 0x80 || (octets > 1 && (buf[start] as number) === 0)) throw new DerError('non-minimal length encoding');
    start += octets;
  }
  const end = start + length;
  if (end > limit) throw new DerError('element runs past its container');
  return { tag, start, end };
}

function expect(buf: Uint8Array, offset: number, limit: number, tag: number, what: string): Tlv {
  const tlv = readTlv(buf, offset, limit);
  if (tlv.tag !== tag) throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${tlv.tag.toString(16)}`);
  return tlv;
}

/** The elements directly inside a constructed TLV. */
function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = [];
  let offset = parent.start;
  while (offset < parent.end) {
    const tlv = readTlv(buf, offset, parent.end);
    out.push(tlv);
    offset = tlv.end;
  }
  return out;
}

function decodeOid(buf: Uint8Array, tlv: Tlv): string {
  if (tlv.end === tlv.start) throw new DerError('empty OID');
  const arcs: number[] = [];
  let value = 0;
  for (let i = tlv.start; i < tlv.end; i++) {
    const byte = buf[i] as number;
    if (value === 0 && byte === 0x80) throw new DerError('non-minimal OID arc');
    value = value * 128 + (byte & 0x7f);
    if (value > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OID arc too large');
    if ((byte & 0x80) === 0) {
      arcs.push(value);
      value = 0;
    }
  }
  if ((buf[tlv.end - 1] as number) & 0x80) throw new DerError('truncated OID');
  const first = arcs[0] as number;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

function latin1(buf: Uint8Array, tlv: Tlv): string {
  return Buffer.from(buf.buffer, buf.byteOffset + tlv.start, tlv.end - tlv.start).toString('latin1');
}

function decodeTime(buf: Uint8Array, tlv: Tlv): number {
  const text = latin1(buf, tlv);
  let m: RegExpExecArray | null;
  let year: number;
  if (tlv.tag === TAG_UTC_TIME) {
    m = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!m) throw new DerError(`bad UTCTime "${text}"`);
    const yy = Number(m[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (tlv.tag === TAG_GENERALIZED_TIME) {
    m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (!m) throw new DerError(`bad GeneralizedTime "${text}"`);
    year = Number(m[1]);
  } else {
    throw new DerError('validity: expected a time');
  }
  const [month, day, hour, minute, second] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 59) throw new DerError(`bad time "${text}"`);
  return Date.UTC(year, month - 1, day, hour, minute, second);
}

function describe(err: unknown): string {
  return err instanceof DerError ? err.message : err instanceof Error ? `malformed: ${err.message}` : 'malformed';
}

/**
 * Reads validity, subject emptiness and the extensions of a DER certificate.
 * Duplicate extensions are refused (RFC 5280 4.2: at most one instance each).
 */
export function readCertificate(der: Uint8Array): Result<CertificateFields> {
  try {
    const cert = expect(der, 0, der.length, TAG_SEQUENCE, 'Certificate');
    if (cert.end !== der.length) throw new DerError('trailing bytes after the certificate');
    const tbs = expect(der, cert.start, cert.end, TAG_SEQUENCE, 'TBSCertificate');
    const parts = children(der, tbs);
    let i = 0;
    if (parts[i]?.tag === 0xa0) i++; // version [0]
    const serial = parts[i++];
    if (serial?.tag !== TAG_INTEGER) throw new DerError('serialNumber missing');
    if (parts[i++]?.tag !== TAG_SEQUENCE) throw new DerError('signature algorithm missing');
    if (parts[i++]?.tag !== TAG_SEQUENCE) throw new DerError('issuer missing');
    const validity = parts[i++];
    if (validity?.tag !== TAG_SEQUENCE) throw new DerError('validity missing');
    const subject = parts[i++];
    if (subject?.tag !== TAG_SEQUENCE) throw new DerError('subject missing');
    if (parts[i++]?.tag !== TAG_SEQUENCE) throw new DerError('subjectPublicKeyInfo missing');
    const times = children(der, validity);
    if (times.length !== 2) throw new DerError('validity must hold notBefore and notAfter');
    const notBefore = decodeTime(der, times[0] as Tlv);
    const notAfter = decodeTime(der, times[1] as Tlv);

    const extensions: CertificateExtension[] = [];
    for (; i < parts.length; i++) {
      const part = parts[i] as Tlv;
      if (part.tag === 0x81 || part.tag === 0x82 || part.tag === 0xa1 || part.tag === 0xa2) continue; // unique IDs
      if (part.tag !== 0xa3) throw new DerError(`unexpected element 0x${part.tag.toString(16)} in TBSCertificate`);
      const list = expect(der, part.start, part.end, TAG_SEQUENCE, 'extensions');
      if (list.end !== part.end) throw new DerError('trailing bytes after extensions');
      const seen = new Set<string>();
      for (const ext of children(der, list)) {
        if (ext.tag !== TAG_SEQUENCE) throw new DerError('extension: expected a SEQUENCE');
        const fields = children(der, ext);
        const oidTlv = fields[0];
        if (oidTlv?.tag !== TAG_OID) throw new DerError('extension: missing extnID');
        const oid = decodeOid(der, oidTlv);
        let critical = false;
        let valueTlv = fields[1];
        if (valueTlv?.tag === TAG_BOOLEAN) {
          if (valueTlv.end - valueTlv.start !== 1) throw new DerError('extension: bad critical flag');
          critical = (der[valueTlv.start] as number) !== 0;
          valueTlv = fields[2];
          if (fields.length !== 3) throw new DerError(`extension ${oid}: unexpected fields`);
        } else if (fields.length !== 2) {
          throw new DerError(`extension ${oid}: unexpected fields`);
        }
        if (valueTlv?.tag !== TAG_OCTET_STRING) throw new DerError(`extension ${oid}: missing extnValue`);
        if (seen.has(oid)) throw new DerError(`extension ${oid} appears more than once`);
        seen.add(oid);
        extensions.push({ oid, critical, value: der.subarray(valueTlv.start, valueTlv.end) });
      }
    }
    return ok({ notBefore, notAfter, subjectEmpty: subject.end === subject.start, extensions });
  } catch (err) {
    return fail(rejection('certificate', describe(err)));
  }
}

/** GeneralNames from a subjectAltName extension value. */
export function readSubjectAltNames(value: Uint8Array): Result<readonly GeneralName[]> {
  try {
    const seq = expect(value, 0, value.length, TAG_SEQUENCE, 'subjectAltName');
    if (seq.end !== value.length) throw new DerError('trailing bytes after subjectAltName');
    const names: GeneralName[] = [];
    for (const gn of children(value, seq)) {
      const number = gn.tag & 0x1f;
      const context = (gn.tag & 0xc0) === 0x80;
      const constructed = (gn.tag & 0x20) !== 0;
      if (!context) throw new DerError('GeneralName must be context-tagged');
      if (!constructed && number === 6) names.push({ type: 'uri', value: latin1(value, gn) });
      else if (!constructed && number === 2) names.push({ type: 'dns', value: latin1(value, gn) });
      else if (!constructed && number === 1) names.push({ type: 'email', value: latin1(value, gn) });
      else if (!constructed && number === 7) names.push({ type: 'ip', value: Buffer.from(value.subarray(gn.start, gn.end)).toString('hex') });
      else names.push({ type: 'other', tag: number });
    }
    if (names.length === 0) throw new DerError('subjectAltName must not be empty');
    return ok(names);
  } catch (err) {
    return fail(rejection('subjectAltName', describe(err)));
  }
}

/** basicConstraints: cA and the optional pathLenConstraint. */
export function readBasicConstraints(value: Uint8Array): Result<{ readonly ca: boolean; readonly pathLength: number | undefined }> {
  try {
    const seq = expect(value, 0, value.length, TAG_SEQUENCE, 'basicConstraints');
    const fields = children(value, seq);
    let ca = false;
    let pathLength: number | undefined;
    let i = 0;
    const first = fields[i];
    if (first?.tag === TAG_BOOLEAN) {
      if (first.end - first.start !== 1) throw new DerError('bad cA flag');
      ca = (value[first.start] as number) !== 0;
      i++;
    }
    const len = fields[i];
    if (len !== undefined) {
      if (len.tag !== TAG_INTEGER || len.end - len.start > 4 || len.end === len.start) throw new DerError('bad pathLenConstraint');
      pathLength = 0;
      for (let j = len.start; j < len.end; j++) pathLength = pathLength * 256 + (value[j] as number);
      i++;
    }
    if (i !== fields.length) throw new DerError('unexpected fields');
    return ok({ ca, pathLength });
  } catch (err) {
    return fail(rejection('basicConstraints', describe(err)));
  }
}

/** keyUsage as a set of bit numbers (see KEY_USAGE). */
export function readKeyUsage(value: Uint8Array): Result<ReadonlySet<number>> {
  try {
    const bits = expect(value, 0, value.length, TAG_BIT_STRING, 'keyUsage');
    if (bits.end === bits.start) throw new DerError('empty BIT STRING');
    const unused = value[bits.start] as number;
    if (unused > 7) throw new DerError('bad unused-bits count');
    const set = new Set<number>();
    const octets = bits.end - bits.start - 1;
    for (let i = 0; i < octets * 8 - unused; i++) {
      const byte = value[bits.start + 1 + (i >> 3)] as number;
      if (byte & (0x80 >> (i & 7))) set.add(i);
    }
    return ok(set);
  } catch (err) {
    return fail(rejection('keyUsage', describe(err)));
  }
}

/** extendedKeyUsage purpose OIDs. */
export function readExtendedKeyUsage(value: Uint8Array): Result<ReadonlySet<string>> {
  try {
    const seq = expect(value, 0, value.length, TAG_SEQUENCE, 'extendedKeyUsage');
    const set = new Set<string>();
    for (const tlv of children(value, seq)) {
      if (tlv.tag !== TAG_OID) throw new DerError('expected purpose OIDs');
      set.add(decodeOid(value, tlv));
    }
    return ok(set);
  } catch (err) {
    return fail(rejection('extendedKeyUsage', describe(err)));
  }
}
