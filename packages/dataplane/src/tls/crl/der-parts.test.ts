import { verify as cryptoVerify, X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AsnConvert } from '@peculiar/asn1-schema';
import { Name } from '@peculiar/asn1-x509';
import { systemClock } from '@ambient/control';
import { newCa, signerOf, workloadCert } from '../../testing/certs.js';
import { crlPem } from '../../testing/crl.js';
import { certificateIssuerAndSerial, crlIssuer, normalizeSerial, signedParts } from './der-parts.js';

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

async function setup() {
  const ca = await newCa(systemClock);
  const root = await signerOf(ca);
  const leaf = await workloadCert(ca, 'spiffe://cluster.local/ns/a/sa/b', systemClock);
  const crl = pemToDer(await crlPem(root, [leaf.leaf.serialNumber]));
  return { rootCert: new X509Certificate(ca.signingCertPem), leaf: leaf.leaf, crl };
}

describe('der-parts', () => {
  it("reads a certificate's serial and issuer Name bytes, equal to its CA's CRL issuer", async () => {
    const { leaf, crl } = await setup();
    const parts = certificateIssuerAndSerial(leaf.raw);
    expect(parts?.serial).toBe(normalizeSerial(leaf.serialNumber));
    expect(parts !== undefined && leaf.raw.includes(parts.issuer)).toBe(true);
    expect(crlIssuer(crl)).toEqual(parts?.issuer);
    // For the names our CA writes, re-encoding the parsed Name reproduces the bytes too.
    const issuer = parts?.issuer ?? Buffer.alloc(0);
    expect(Buffer.from(AsnConvert.serialize(AsnConvert.parse(issuer, Name)))).toEqual(issuer);
  });

  it('keeps the original bytes of an issuer Name that would not re-encode identically', async () => {
    const { leaf } = await setup();
    const der = Buffer.from(leaf.raw);
    const issuer = certificateIssuerAndSerial(der)?.issuer ?? Buffer.alloc(0);
    const start = der.indexOf(issuer);
    // The CN "ambient local CA" (PrintableString) becomes a UTF8String starting with the invalid octet 0xff.
    const cn = start + issuer.indexOf(Buffer.from([0x06, 0x03, 0x55, 0x04, 0x03])) + 5;
    expect(der[cn]).toBe(0x13);
    der[cn] = 0x0c;
    der[cn + 2] = 0xff;
    const odd = der.subarray(start, start + issuer.length);
    expect(Buffer.from(AsnConvert.serialize(AsnConvert.parse(odd, Name)))).not.toEqual(odd);
    expect(certificateIssuerAndSerial(der)?.issuer).toEqual(odd);
  });

  it('gives the signed parts of a CRL, which verify with the issuer key', async () => {
    const { rootCert, crl } = await setup();
    const signed = signedParts(crl);
    expect(signed?.signatureAlgorithm).toBe('1.2.840.10045.4.3.2');
    expect(signed !== undefined && crl.includes(signed.tbs)).toBe(true);
    expect(signed !== undefined && cryptoVerify('sha256', signed.tbs, rootCert.publicKey, signed.signature)).toBe(true);
  });

  it('answers undefined for what is not a certificate or CRL, and never throws', async () => {
    const { leaf, crl } = await setup();
    expect(signedParts(leaf.raw)).toBeUndefined();
    expect(crlIssuer(leaf.raw)).toBeUndefined();
    expect(certificateIssuerAndSerial(crl)).toBeUndefined();
    const readers = [signedParts, crlIssuer, certificateIssuerAndSerial];
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      for (const read of readers) expect(() => read(bytes)).not.toThrow();
    }));
    for (const der of [new Uint8Array(leaf.raw), new Uint8Array(crl)]) {
      fc.assert(fc.property(fc.nat(der.length - 1), fc.integer({ min: 0, max: 255 }), (at, value) => {
        const mutated = Uint8Array.from(der);
        mutated[at] = value;
        for (const read of readers) expect(() => read(mutated)).not.toThrow();
      }));
    }
  });
});
