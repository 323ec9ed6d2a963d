/**
 * The few fields revocation checking needs, read without trusting the input:
 * the signed parts of a CRL (to-be-signed bytes, signature algorithm,
 * signature), a CRL's issuer Name, and a certificate's issuer Name and serial
 * number. Decoding is @peculiar/asn1-schema with the RFC 5280 schemas of
 * @peculiar/asn1-x509. Every function is pure and throws nothing: malformed
 * input gives `undefined`.
 *
 * Names are returned as their exact original DER bytes because, as in webpki,
 * a CRL applies to a certificate only when the two issuer Names are byte-for-
 * byte equal. They are taken from the input through the library's `raw`
 * option (the parsed element's own encoding), never re-encoded: re-encoding a
 * parsed Name is not guaranteed to reproduce it (e.g. a string that is not
 * valid in its declared type). The to-be-signed bytes come the same way.
 *
 * Lenient like the parser (BER lengths, bytes after the outer element are
 * accepted): harmless here, since a CRL counts only when its signature verifies
 * over the original to-be-signed bytes (node:crypto), and the certificates
 * whose issuer and serial are read are ones OpenSSL already parsed.
 */
import { AsnConvert, AsnProp } from '@peculiar/asn1-schema';
import { Certificate, CertificateList, Name, TBSCertificate, TBSCertList } from '@peculiar/asn1-x509';

/** TBSCertificate whose issuer also keeps its original encoding (in `issuerRaw`). */
class TbsCertificateWithRawIssuer extends TBSCertificate {
  declare issuerRaw: Uint8Array | undefined;
}
AsnProp({ type: Name, raw: true })(TbsCertificateWithRawIssuer.prototype, 'issuer');

class CertificateWithRawIssuer extends Certificate {
  declare tbsCertificate: TbsCertificateWithRawIssuer;
}
AsnProp({ type: TbsCertificateWithRawIssuer, raw: true })(CertificateWithRawIssuer.prototype, 'tbsCertificate');

/** TBSCertList whose issuer also keeps its original encoding (in `issuerRaw`). */
class TbsCertListWithRawIssuer extends TBSCertList {
  declare issuerRaw: Uint8Array | undefined;
}
AsnProp({ type: Name, raw: true })(TbsCertListWithRawIssuer.prototype, 'issuer');

class CertificateListWithRawIssuer extends CertificateList {
  declare tbsCertList: TbsCertListWithRawIssuer;
}
AsnProp({ type: TbsCertListWithRawIssuer, raw: true })(CertificateListWithRawIssuer.prototype, 'tbsCertList');

function parse<T>(der: Uint8Array, type: new () => T): T | undefined {
  try {
    return AsnConvert.parse(der, type);
  } catch {
    return undefined;
  }
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

/** tbs, algorithm and signature of a CRL (CertificateList, RFC 5280 5.1). */
export function signedParts(der: Uint8Array): SignedParts | undefined {
  const crl = parse(der, CertificateListWithRawIssuer);
  if (crl?.tbsCertListRaw === undefined || crl.signature.byteLength === 0) return undefined;
  return { tbs: Buffer.from(crl.tbsCertListRaw), signatureAlgorithm: crl.signatureAlgorithm.algorithm, signature: Buffer.from(crl.signature) };
}

/** The issuer Name (DER) of a CRL. */
export function crlIssuer(der: Uint8Array): Buffer | undefined {
  const raw = parse(der, CertificateListWithRawIssuer)?.tbsCertList.issuerRaw;
  return raw === undefined ? undefined : Buffer.from(raw);
}

/** The issuer Name (DER) and normalized serial of a certificate. */
export function certificateIssuerAndSerial(der: Uint8Array): { readonly issuer: Buffer; readonly serial: string } | undefined {
  const tbs = parse(der, CertificateWithRawIssuer)?.tbsCertificate;
  if (tbs?.issuerRaw === undefined || tbs.serialNumber.byteLength === 0) return undefined;
  return { issuer: Buffer.from(tbs.issuerRaw), serial: normalizeSerial(Buffer.from(tbs.serialNumber).toString('hex')) };
}
