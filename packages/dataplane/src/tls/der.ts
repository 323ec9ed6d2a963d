/**
 * Reads the parts of an X.509 certificate that the peer-identity checks need:
 * validity, whether the subject is empty, and the extensions (subjectAltName as
 * typed GeneralNames, basicConstraints, keyUsage, extendedKeyUsage). Node only
 * offers the SAN as a comma-joined string, which cannot be parsed safely (Node
 * CVE-2021-44532/44533), so the SAN is decoded from the DER as typed
 * GeneralNames.
 *
 * Decoding is done by PeculiarVentures' @peculiar/asn1-schema (over asn1js)
 * with the RFC 5280 schemas of @peculiar/asn1-x509. That parser accepts BER
 * (indefinite and non-minimal lengths, constructed strings, BOOLEAN true as any
 * non-zero octet) and ignores bytes after the outer element. We keep the old
 * strict-DER property anyway: every decoded structure is re-encoded with the
 * same library and must reproduce the input byte for byte (DER is the one
 * canonical encoding, so a mismatch means the input was not DER, carried
 * trailing bytes, or holds something the schema cannot represent faithfully).
 * Even were this check to miss some BER form, it would be harmless: the chain
 * signatures are verified by node:crypto (OpenSSL) over the original bytes, and
 * BER's alternatives encode the same values, so a lenient read cannot change
 * what a signed certificate says.
 *
 * Nothing here throws: library exceptions become refusals naming the structure.
 *
 * Decoding plus the re-encoding check costs about half a millisecond per
 * certificate (the hand-written reader this replaced took about 10 µs), and
 * every handshake reads the peer's leaf and each issuer up to the root, so
 * readCertificate keeps its answers for the certificates it has seen.
 * Invariants: the memo maps a certificate's exact bytes to the (immutable,
 * deterministic) answer for them; it holds at most MEMO_LIMIT entries and is
 * emptied when full.
 */
import { AsnConvert } from '@peculiar/asn1-schema';
import {
  anyExtendedKeyUsage,
  BasicConstraints,
  Certificate,
  ExtendedKeyUsage,
  id_ce_authorityKeyIdentifier,
  id_ce_basicConstraints,
  id_ce_certificatePolicies,
  id_ce_extKeyUsage,
  id_ce_keyUsage,
  id_ce_subjectAltName,
  id_ce_subjectKeyIdentifier,
  id_kp_clientAuth,
  id_kp_serverAuth,
  KeyUsage,
  SubjectAlternativeName,
  type GeneralName as AsnGeneralName,
} from '@peculiar/asn1-x509';
import { fail, ipToBytes, ok, rejection, type Result } from '@ambient/control';

/** A typed GeneralName (RFC 5280 4.2.1.6). Text values are the raw bytes as latin1. */
export type GeneralName =
  | { readonly type: 'uri'; readonly value: string }
  | { readonly type: 'dns'; readonly value: string }
  | { readonly type: 'email'; readonly value: string }
  | { readonly type: 'ip'; readonly value: string }
  | { readonly type: 'other'; readonly tag: number };

interface CertificateExtension {
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

export const OID_SUBJECT_ALT_NAME = id_ce_subjectAltName;
export const OID_BASIC_CONSTRAINTS = id_ce_basicConstraints;
export const OID_KEY_USAGE = id_ce_keyUsage;
export const OID_EXT_KEY_USAGE = id_ce_extKeyUsage;
export const OID_SUBJECT_KEY_ID = id_ce_subjectKeyIdentifier;
export const OID_AUTHORITY_KEY_ID = id_ce_authorityKeyIdentifier;
export const OID_CERTIFICATE_POLICIES = id_ce_certificatePolicies;
export const OID_EKU_SERVER_AUTH = id_kp_serverAuth;
export const OID_EKU_CLIENT_AUTH = id_kp_clientAuth;
export const OID_EKU_ANY = anyExtendedKeyUsage;

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

class DerError extends Error {}

/** Decodes `der` as `type` and refuses it unless re-encoding reproduces it exactly (strict DER, no trailing bytes). */
function decodeDer<T>(der: Uint8Array, type: new () => T, what: string): T {
  const value = AsnConvert.parse(der, type);
  const again = new Uint8Array(AsnConvert.serialize(value));
  if (Buffer.compare(again, der) !== 0) throw new DerError(`${what} is not DER (trailing bytes, non-minimal lengths or another BER form)`);
  return value;
}

function describe(err: unknown): string {
  return err instanceof DerError ? err.message : err instanceof Error ? `malformed: ${err.message}` : 'malformed';
}

const MEMO_LIMIT = 1024;
const memo = new Map<string, Result<CertificateFields>>();

/**
 * Reads validity, subject emptiness and the extensions of a DER certificate.
 * Duplicate extensions are refused (RFC 5280 4.2: at most one instance each).
 * The answer is shared between calls for the same bytes: do not modify it.
 */
export function readCertificate(der: Uint8Array): Result<CertificateFields> {
  const key = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('latin1');
  const known = memo.get(key);
  if (known !== undefined) return known;
  const result = decodeCertificate(der);
  if (memo.size >= MEMO_LIMIT) memo.clear();
  memo.set(key, result);
  return result;
}

function decodeCertificate(der: Uint8Array): Result<CertificateFields> {
  try {
    const tbs = decodeDer(der, Certificate, 'the certificate').tbsCertificate;
    const notBefore = tbs.validity.notBefore.getTime().getTime();
    const notAfter = tbs.validity.notAfter.getTime().getTime();
    if (Number.isNaN(notBefore) || Number.isNaN(notAfter)) throw new DerError('validity holds an invalid time');
    const seen = new Set<string>();
    const extensions: CertificateExtension[] = [];
    for (const ext of tbs.extensions ?? []) {
      if (seen.has(ext.extnID)) throw new DerError(`extension ${ext.extnID} appears more than once`);
      seen.add(ext.extnID);
      extensions.push({ oid: ext.extnID, critical: ext.critical, value: new Uint8Array(ext.extnValue.buffer) });
    }
    return ok({ notBefore, notAfter, subjectEmpty: tbs.subject.length === 0, extensions });
  } catch (err) {
    return fail(rejection('certificate', describe(err)));
  }
}

function typed(name: AsnGeneralName): GeneralName {
  if (name.uniformResourceIdentifier !== undefined) return { type: 'uri', value: name.uniformResourceIdentifier };
  if (name.dNSName !== undefined) return { type: 'dns', value: name.dNSName };
  if (name.rfc822Name !== undefined) return { type: 'email', value: name.rfc822Name };
  if (name.iPAddress !== undefined) return { type: 'ip', value: Buffer.from(ipToBytes(name.iPAddress)).toString('hex') };
  if (name.otherName !== undefined) return { type: 'other', tag: 0 };
  if (name.x400Address !== undefined) return { type: 'other', tag: 3 };
  if (name.directoryName !== undefined) return { type: 'other', tag: 4 };
  if (name.ediPartyName !== undefined) return { type: 'other', tag: 5 };
  if (name.registeredID !== undefined) return { type: 'other', tag: 8 };
  throw new DerError('empty GeneralName');
}

/** GeneralNames from a subjectAltName extension value. */
export function readSubjectAltNames(value: Uint8Array): Result<readonly GeneralName[]> {
  try {
    const names = decodeDer(value, SubjectAlternativeName, 'subjectAltName').map(typed);
    if (names.length === 0) throw new DerError('subjectAltName must not be empty');
    return ok(names);
  } catch (err) {
    return fail(rejection('subjectAltName', describe(err)));
  }
}

/** basicConstraints: cA and the optional pathLenConstraint. */
export function readBasicConstraints(value: Uint8Array): Result<{ readonly ca: boolean; readonly pathLength: number | undefined }> {
  try {
    const bc = decodeDer(value, BasicConstraints, 'basicConstraints');
    const pathLength = bc.pathLenConstraint;
    if (pathLength !== undefined && !(Number.isSafeInteger(pathLength) && pathLength >= 0 && pathLength <= 0xffffffff)) {
      throw new DerError('bad pathLenConstraint');
    }
    return ok({ ca: bc.cA, pathLength });
  } catch (err) {
    return fail(rejection('basicConstraints', describe(err)));
  }
}

/** keyUsage as a set of bit numbers (see KEY_USAGE). */
export function readKeyUsage(value: Uint8Array): Result<ReadonlySet<number>> {
  try {
    const ku = decodeDer(value, KeyUsage, 'keyUsage');
    // DER drops trailing zero bits, so the nine defined bits fit in two octets;
    // the bound also keeps toNumber() within exact integer range.
    if (ku.value.byteLength > 2) throw new DerError('keyUsage has more bits than RFC 5280 defines');
    const flags = ku.toNumber();
    const set = new Set<number>();
    for (const bit of Object.values(KEY_USAGE)) if (flags & (1 << bit)) set.add(bit);
    return ok(set);
  } catch (err) {
    return fail(rejection('keyUsage', describe(err)));
  }
}

/** extendedKeyUsage purpose OIDs. */
export function readExtendedKeyUsage(value: Uint8Array): Result<ReadonlySet<string>> {
  try {
    return ok(new Set<string>(decodeDer(value, ExtendedKeyUsage, 'extendedKeyUsage')));
  } catch (err) {
    return fail(rejection('extendedKeyUsage', describe(err)));
  }
}
