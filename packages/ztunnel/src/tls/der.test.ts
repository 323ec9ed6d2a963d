import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type WorkloadCertificate } from '@ambient/control';
import { customCert, newCa, signerOf, workloadCert, x509 } from '../../test/support/hbone-certs.js';
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
