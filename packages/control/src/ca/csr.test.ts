import { createPrivateKey, createPublicKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { generateKeyAndCsr } from './csr.js';
import { subjectAltNames, x509 } from './x509.js';

const id = { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'bookinfo' };

describe('generateKeyAndCsr', () => {
  it('makes a P-256 CSR with an empty subject and one critical URI SAN holding the SPIFFE ID', async () => {
    const { csrPem } = await generateKeyAndCsr(id);
    expect(csrPem).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----\n[\s\S]+-----END CERTIFICATE REQUEST-----\n$/);
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    expect(csr.subject).toBe('');
    expect(csr.extensions.filter((e) => e.type === '2.5.29.17')).toHaveLength(1);
    expect(subjectAltNames(csr)).toEqual({ critical: true, names: [{ type: 'url', value: 'spiffe://cluster.local/ns/default/sa/bookinfo' }] });
    expect(csr.publicKey.algorithm).toMatchObject({ name: 'ECDSA', namedCurve: 'P-256' });
    expect(csr.signatureAlgorithm).toMatchObject({ name: 'ECDSA', hash: { name: 'SHA-256' } });
    expect(await csr.verify()).toBe(true);
  });

  it('returns the matching private key as PKCS#8 PEM', async () => {
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(id);
    expect(privateKeyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const key = createPrivateKey(privateKeyPem);
    expect(key.asymmetricKeyType).toBe('ec');
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    const csr = new x509.Pkcs10CertificateRequest(csrPem);
    const fromCsr = Buffer.from(csr.publicKey.rawData);
    expect(createPublicKey(key).export({ type: 'spki', format: 'der' }).equals(fromCsr)).toBe(true);
  });

  it('uses a fresh key for every request', async () => {
    const a = await generateKeyAndCsr(id);
    const b = await generateKeyAndCsr(id);
    expect(a.privateKeyPem).not.toBe(b.privateKeyPem);
  });
});
