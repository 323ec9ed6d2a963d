import { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Certificate } from '@peculiar/asn1-x509';
import { beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type WorkloadCertificate } from '@ambient/control';
import { customCert, newCa, signerOf, workloadCert, x509 } from '../testing/certs.js';
import {
  KEY_USAGE,
  OID_BASIC_CONSTRAINTS,
  OID_EKU_CLIENT_AUTH,
  OID_EKU_SERVER_AUTH,
  OID_EXT_KEY_USAGE,
  OID_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  readBasicConstraints,
  readCertificate,
  readExtendedKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
} from './der.js';

let cert: WorkloadCertificate;

beforeAll(async () => {
  cert = await workloadCert(await newCa(systemClock), 'spiffe://cluster.local/ns/a/sa/b', systemClock);
});

function ext(oid: string) {
  const fields = readCertificate(cert.leaf.raw);
  if (!fields.ok) throw new Error('unreadable');
  const found = fields.value.extensions.find((e) => e.oid === oid);
  if (found === undefined) throw new Error(`no ${oid}`);
  return found;
}

describe('readCertificate', () => {
  it('reads validity, the empty subject and the extensions of an istiod-style certificate', () => {
    const fields = readCertificate(cert.leaf.raw);
    expect(fields.ok && fields.value.notBefore).toBe(cert.notBefore);
    expect(fields.ok && fields.value.notAfter).toBe(cert.notAfter);
    expect(fields.ok && fields.value.subjectEmpty).toBe(true);
    expect(ext(OID_SUBJECT_ALT_NAME).critical).toBe(true);
    expect(readSubjectAltNames(ext(OID_SUBJECT_ALT_NAME).value)).toEqual({ ok: true, value: [{ type: 'uri', value: 'spiffe://cluster.local/ns/a/sa/b' }] });
    expect(readBasicConstraints(ext(OID_BASIC_CONSTRAINTS).value)).toEqual({ ok: true, value: { ca: false, pathLength: undefined } });
    const ku = readKeyUsage(ext(OID_KEY_USAGE).value);
    expect(ku.ok && [...ku.value].sort()).toEqual([KEY_USAGE.digitalSignature, KEY_USAGE.keyEncipherment]);
    const eku = readExtendedKeyUsage(ext(OID_EXT_KEY_USAGE).value);
    expect(eku.ok && [...eku.value].sort()).toEqual([OID_EKU_SERVER_AUTH, OID_EKU_CLIENT_AUTH].sort());
  });

  it('reads every SAN type with its type, never merging them into one string', async () => {
    const signer = await signerOf(await newCa(systemClock));
    const c = await customCert(signer, systemClock, {
      sans: [
        { type: 'dns', value: 'a.example' },
        { type: 'url', value: 'spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/x/sa/y' },
        { type: 'email', value: 'x@y' },
        { type: 'ip', value: '10.1.2.3' },
      ],
    });
    const fields = readCertificate(c.x509.raw);
    const san = fields.ok ? fields.value.extensions.find((e) => e.oid === OID_SUBJECT_ALT_NAME) : undefined;
    expect(san && readSubjectAltNames(san.value)).toEqual({
      ok: true,
      value: [
        { type: 'dns', value: 'a.example' },
        { type: 'uri', value: 'spiffe://td/ns/a/sa/b, URI:spiffe://td/ns/x/sa/y' },
        { type: 'email', value: 'x@y' },
        { type: 'ip', value: '0a010203' },
      ],
    });
    const bc = new x509.BasicConstraintsExtension(true, 3, true);
    expect(readBasicConstraints(new Uint8Array(bc.value))).toEqual({ ok: true, value: { ca: true, pathLength: 3 } });
  });

  it('refuses trailing bytes, truncation, indefinite and non-minimal lengths', () => {
    const der = new Uint8Array(cert.leaf.raw);
    expect(readCertificate(Buffer.concat([der, Buffer.from([0])])).ok).toBe(false);
    expect(readCertificate(der.subarray(0, der.length - 1)).ok).toBe(false);
    expect(readCertificate(Buffer.from([0x30, 0x80, 0x00, 0x00])).ok).toBe(false);
    expect(readCertificate(Buffer.from([0x30, 0x81, 0x01, 0x00])).ok).toBe(false);
    expect(readSubjectAltNames(Buffer.from([0x30, 0x00])).ok).toBe(false);
  });

  it('never throws on arbitrary or mutated input', () => {
    const der = new Uint8Array(cert.leaf.raw);
    const readers = [readCertificate, readSubjectAltNames, readBasicConstraints, readKeyUsage, readExtendedKeyUsage];
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      for (const read of readers) expect(typeof read(bytes).ok).toBe('boolean');
    }));
    fc.assert(fc.property(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), (at, value) => {
      const mutated = Uint8Array.from(der);
      mutated[at] = value;
      expect(typeof readCertificate(mutated).ok).toBe('boolean');
    }));
  });
});

/** Made by OpenSSL (not the library under test): UTF-8 subject, GeneralizedTime notAfter (2109), URI and IPv6 SANs. */
const OPENSSL_CA = `-----BEGIN CERTIFICATE-----
MIICBjCCAa2gAwIBAgIUQ+okJACOoJpBM2/oTABm1F28/hMwCgYIKoZIzj0EAwIw
MjELMAkGA1UEBhMCVVMxDzANBgNVBAoMBkV4IE9yZzESMBAGA1UEAwwJUm9vdCDD
g8KpMCAXDTI2MTEyNTAyNDMzNloYDzIxMDkwMTE0MDI0MzM2WjAyMQswCQYDVQQG
EwJVUzEPMA0GA1UECgwGRXggT3JnMRIwEAYDVQQDDAlSb290IMODwqkwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAS+2Jp+GI3tUTUfeiLpWWpEFinGBW+8OJUrAsZw
y1JQ4Gm+6ZOZly6lAvyNfJjqX4cZ8pGdK6a4Jf1mh/sF1Xedo4GeMIGbMB0GA1Ud
DgQWBBTdskT8bcZeVlo0ptNj3nyWVarZjDAfBgNVHSMEGDAWgBTdskT8bcZeVlo0
ptNj3nyWVarZjDA1BgNVHREBAf8EKzAphhVzcGlmZmU6Ly90ZC9ucy9hL3NhL2KH
ECABDbgAAAAAAAAAAAAAAAEwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYB
Af8CAQAwCgYIKoZIzj0EAwIDRwAwRAIgLjo+dlQj/DnAM2K6/r80waUeZTT9zaU1
o5eHYvBKYRACIHfKVGrmFbQLEMKMFakgixIsCToxN3dpxBlywiZXTDPm
-----END CERTIFICATE-----`;

function reason(result: { ok: boolean; errors?: readonly { reason: string }[] }): string | undefined {
  return result.ok ? undefined : result.errors?.map((e) => e.reason).join('; ');
}

describe('strict DER over a BER-tolerant parser', () => {
  it('reads a certificate made by OpenSSL (its DER re-encodes identically)', () => {
    const x = new X509Certificate(OPENSSL_CA);
    const fields = readCertificate(x.raw);
    expect(fields.ok && fields.value.notAfter).toBe(Date.parse(x.validTo));
    expect(fields.ok && fields.value.subjectEmpty).toBe(false);
    const find = (oid: string) => (fields.ok ? fields.value.extensions.find((e) => e.oid === oid)?.value : undefined) ?? new Uint8Array();
    expect(readSubjectAltNames(find(OID_SUBJECT_ALT_NAME))).toEqual({
      ok: true,
      value: [{ type: 'uri', value: 'spiffe://td/ns/a/sa/b' }, { type: 'ip', value: '20010db8000000000000000000000001' }],
    });
    expect(readBasicConstraints(find(OID_BASIC_CONSTRAINTS))).toEqual({ ok: true, value: { ca: true, pathLength: 0 } });
    const ku = readKeyUsage(find(OID_KEY_USAGE));
    expect(ku.ok && [...ku.value].sort()).toEqual([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]);
  });

  it('refuses a certificate in BER that is not DER, although the parser alone accepts it', () => {
    const der = Buffer.from(cert.leaf.raw);
    expect([der[0], der[1]]).toEqual([0x30, 0x82]);
    // The outer length with a superfluous leading zero octet.
    const longLength = Buffer.concat([Buffer.from([0x30, 0x83, 0x00]), der.subarray(2)]);
    // BOOLEAN TRUE as 0x01 (DER demands 0xff) in the SAN's critical flag.
    const at = der.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x11, 0x01, 0x01, 0xff]));
    expect(at).toBeGreaterThan(0);
    const softTrue = Buffer.from(der);
    softTrue[at + 7] = 0x01;
    for (const ber of [longLength, softTrue]) {
      expect(() => AsnConvert.parse(ber, Certificate)).not.toThrow();
      expect(reason(readCertificate(ber))).toMatch(/not DER/);
    }
    expect(reason(readSubjectAltNames(Buffer.from([0x30, 0x81, 0x03, 0x82, 0x01, 0x61])))).toMatch(/not DER/);
  });

  it('refuses trailing bytes, names outside GeneralName, negative path lengths and oversized keyUsage', () => {
    expect(reason(readSubjectAltNames(Buffer.from([0x30, 0x03, 0x82, 0x01, 0x61, 0x00])))).toMatch(/not DER/);
    expect(readSubjectAltNames(Buffer.from([0x30, 0x03, 0x82, 0x01, 0x61]))).toEqual({ ok: true, value: [{ type: 'dns', value: 'a' }] });
    expect(readSubjectAltNames(Buffer.from([0x30, 0x03, 0x89, 0x01, 0x61])).ok).toBe(false); // [9] is not a GeneralName
    expect(readSubjectAltNames(Buffer.from([0x30, 0x06, 0x87, 0x04, 0x0a, 0x01, 0x02]))).toMatchObject({ ok: false });
    expect(readBasicConstraints(Buffer.from([0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0xff])).ok).toBe(false);
    expect(reason(readKeyUsage(Buffer.from([0x03, 0x04, 0x00, 0x80, 0x00, 0x01])))).toMatch(/more bits/);
    expect(readExtendedKeyUsage(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x01])).ok).toBe(false);
  });

  it('remembers answers by the bytes, wherever they sit in memory', () => {
    const der = new Uint8Array(cert.leaf.raw);
    const copy = Buffer.concat([Buffer.from([1, 2, 3]), der]).subarray(3);
    expect(readCertificate(copy)).toBe(readCertificate(der));
    const mutated = Uint8Array.from(der);
    mutated[mutated.length - 1] = (mutated[mutated.length - 1] as number) ^ 0xff;
    expect(readCertificate(mutated)).not.toBe(readCertificate(der));
  });
});
