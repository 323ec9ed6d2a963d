import { X509Certificate, createPrivateKey } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '../testing/manual-clock.js';
import { LocalCertificateAuthority } from './authority.js';
import { generateKeyAndCsr } from './csr.js';
import { CaError } from './types.js';
import { crypto, ECDSA_P256_SHA256, keyUsages, subjectAltNames, x509 } from './x509.js';

const T0 = Date.UTC(2025, 5, 1);
const id = { trustDomain: 'cluster.local', namespace: 'ns1', serviceAccount: 'sa1' };
const SPIFFE = 'spiffe://cluster.local/ns/ns1/sa/sa1';

async function intermediateOf(root: LocalCertificateAuthority, clock: ManualClock): Promise<{ certPem: string; keyPem: string }> {
  const rootKey = await crypto.subtle.importKey('pkcs8', createPrivateKey(root.exportSigningKeyPem()).export({ type: 'pkcs8', format: 'der' }), ECDSA_P256_SHA256, false, ['sign']);
  const keys = await crypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify']);
  const rootCert = new x509.X509Certificate(root.signingCertPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a',
    subject: 'O=cluster.local, CN=intermediate',
    issuer: rootCert.subjectName,
    notBefore: new Date(clock.now() - 60_000),
    notAfter: new Date(clock.now() + 365 * 86_400_000),
    publicKey: keys.publicKey,
    signingKey: rootKey,
    signingAlgorithm: ECDSA_P256_SHA256,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  const keyPem = String(createPrivateKey({ key: Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)), format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }));
  return { certPem: `${cert.toString('pem')}\n`, keyPem };
}

describe('LocalCertificateAuthority.generate', () => {
  it('creates a self-signed P-256 root: CA:true critical, keyCertSign, O=cluster.local', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock });
    expect(ca.rootsPem).toHaveLength(1);
    const root = new X509Certificate(ca.rootsPem[0] as string);
    expect(root.ca).toBe(true);
    expect(root.checkIssued(root) && root.verify(root.publicKey)).toBe(true);
    expect(root.subject).toContain('O=cluster.local');
    expect(root.subject).toContain('CN=ambient local CA');
    const parsed = new x509.X509Certificate(ca.rootsPem[0] as string);
    expect(parsed.getExtension(x509.BasicConstraintsExtension)?.critical).toBe(true);
    expect((keyUsages(parsed) ?? 0) & x509.KeyUsageFlags.keyCertSign).not.toBe(0);
    expect(parsed.notBefore.getTime()).toBeLessThanOrEqual(T0);
    expect(root.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });
});

describe('LocalCertificateAuthority.sign', () => {
  it('issues a workload leaf as istiod does and answers [leaf, root], each ending in a newline', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock });
    const { csrPem } = await generateKeyAndCsr(id);
    const chain = await ca.sign(csrPem, id, 3600);
    expect(chain).toHaveLength(2);
    for (const element of chain) expect(element.endsWith('-----\n')).toBe(true);
    expect(chain[1]).toBe(ca.rootsPem[0]);

    const leaf = new X509Certificate(chain[0] as string);
    const root = new X509Certificate(chain[1] as string);
    expect(leaf.checkIssued(root) && leaf.verify(root.publicKey)).toBe(true);
    expect(leaf.ca).toBe(false);
    expect(leaf.subject ?? '').toBe('');
    expect(leaf.keyUsage).toEqual(expect.arrayContaining(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']));
    const parsed = new x509.X509Certificate(chain[0] as string);
    expect(subjectAltNames(parsed)).toEqual({ critical: true, names: [{ type: 'url', value: SPIFFE }] });
    expect(keyUsages(parsed)).toBe(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment);
    expect(parsed.getExtension(x509.KeyUsagesExtension)?.critical).toBe(true);
    expect(parsed.notBefore.getTime()).toBe(T0 - 60_000);
    expect(parsed.notAfter.getTime()).toBe(T0 + 3600_000);
  });

  it('gives every certificate a different positive serial', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock });
    const serials = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const chain = await ca.sign((await generateKeyAndCsr(id)).csrPem, id, 60);
      const serial = new X509Certificate(chain[0] as string).serialNumber;
      expect(Number.parseInt(serial.slice(0, 2), 16) & 0x80).toBe(0);
      serials.add(serial);
    }
    expect(serials.size).toBe(5);
  });

  it('uses 24h for a zero TTL and caps the lifetime at the CA certificate expiry', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock, validitySeconds: 7200 });
    const capped = await ca.sign((await generateKeyAndCsr(id)).csrPem, id, 86_400);
    expect(new x509.X509Certificate(capped[0] as string).notAfter.getTime()).toBe(T0 + 7200_000);
    const ca2 = await LocalCertificateAuthority.generate({ clock });
    const dflt = await ca2.sign((await generateKeyAndCsr(id)).csrPem, id, 0);
    expect(new x509.X509Certificate(dflt[0] as string).notAfter.getTime()).toBe(T0 + 86_400_000);
  });

  it('refuses a TTL above the maximum, as istiod does', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock, maxTtlSeconds: 3600 });
    await expect(ca.sign((await generateKeyAndCsr(id)).csrPem, id, 3601)).rejects.toMatchObject({ code: 'CA_REJECTED', message: expect.stringMatching(/max allowed TTL/) });
  });

  it('refuses a CSR for another identity', async () => {
    const ca = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: T0 }) });
    const { csrPem } = await generateKeyAndCsr({ ...id, serviceAccount: 'other' });
    const err = await ca.sign(csrPem, id, 60).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaError);
    expect(err).toMatchObject({ code: 'CA_REJECTED', message: expect.stringContaining('spiffe://cluster.local/ns/ns1/sa/other') });
  });

  it('refuses a CSR carrying more names than the SPIFFE URI', async () => {
    const ca = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: T0 }) });
    const keys = await crypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: ECDSA_P256_SHA256,
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: SPIFFE }, { type: 'dns', value: 'evil.example' }], true)],
    });
    await expect(ca.sign(csr.toString('pem'), id, 60)).rejects.toMatchObject({ code: 'CA_REJECTED' });
  });

  it('refuses a CSR whose signature does not verify, and text that is not a CSR', async () => {
    const ca = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: T0 }) });
    const { csrPem } = await generateKeyAndCsr(id);
    const der = Buffer.from(csrPem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff; // inside the signature
    const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
    await expect(ca.sign(tampered, id, 60)).rejects.toMatchObject({ code: 'CA_REJECTED' });
    await expect(ca.sign('not a csr', id, 60)).rejects.toMatchObject({ code: 'CA_REJECTED' });
  });
});

describe('LocalCertificateAuthority.load', () => {
  it('loads a generated root and its key and signs with it', async () => {
    const clock = new ManualClock({ now: T0 });
    const gen = await LocalCertificateAuthority.generate({ clock });
    const loaded = await LocalCertificateAuthority.load({ clock, certPem: gen.signingCertPem, keyPem: gen.exportSigningKeyPem() });
    expect(loaded.ok).toBe(true);
    if (!loaded.ok) return;
    const chain = await loaded.value.sign((await generateKeyAndCsr(id)).csrPem, id, 60);
    expect(new X509Certificate(chain[0] as string).verify(new X509Certificate(gen.signingCertPem).publicKey)).toBe(true);
  });

  it('refuses a key that does not belong to the certificate', async () => {
    const clock = new ManualClock({ now: T0 });
    const a = await LocalCertificateAuthority.generate({ clock });
    const b = await LocalCertificateAuthority.generate({ clock });
    const loaded = await LocalCertificateAuthority.load({ clock, certPem: a.signingCertPem, keyPem: b.exportSigningKeyPem() });
    expect(loaded).toMatchObject({ ok: false, errors: [{ field: 'ca.key' }] });
  });

  it('refuses an expired CA certificate, a non-CA certificate and garbage', async () => {
    const clock = new ManualClock({ now: T0 });
    const gen = await LocalCertificateAuthority.generate({ clock, validitySeconds: 60 });
    await clock.advance(120_000);
    const expired = await LocalCertificateAuthority.load({ clock, certPem: gen.signingCertPem, keyPem: gen.exportSigningKeyPem() });
    expect(expired.ok).toBe(false);
    if (!expired.ok) expect(expired.errors.map((e) => e.reason).join()).toMatch(/expired/);

    const server = await (await LocalCertificateAuthority.generate({ clock })).issueServerCertificate(['x'], []);
    const notCa = await LocalCertificateAuthority.load({ clock, certPem: server.certPem, keyPem: server.privateKeyPem });
    expect(notCa.ok).toBe(false);
    if (!notCa.ok) expect(notCa.errors.map((e) => e.reason).join()).toMatch(/not a CA/);

    expect((await LocalCertificateAuthority.load({ clock, certPem: 'junk', keyPem: 'junk' })).ok).toBe(false);
  });

  it('signs with an intermediate and answers [leaf, intermediate, root] like istiod with plugged-in certs', async () => {
    const clock = new ManualClock({ now: T0 });
    const root = await LocalCertificateAuthority.generate({ clock });
    const inter = await intermediateOf(root, clock);
    const missingRoots = await LocalCertificateAuthority.load({ clock, certPem: inter.certPem, keyPem: inter.keyPem });
    expect(missingRoots.ok).toBe(false);

    const loaded = await LocalCertificateAuthority.load({ clock, certPem: inter.certPem, keyPem: inter.keyPem, rootsPem: root.signingCertPem });
    expect(loaded.ok).toBe(true);
    if (!loaded.ok) return;
    expect(loaded.value.rootsPem).toEqual([root.signingCertPem]);
    const chain = await loaded.value.sign((await generateKeyAndCsr(id)).csrPem, id, 60);
    expect(chain).toHaveLength(3);
    const [leaf, mid, top] = chain.map((p) => new X509Certificate(p));
    expect(leaf?.verify((mid as X509Certificate).publicKey)).toBe(true);
    expect(mid?.verify((top as X509Certificate).publicKey)).toBe(true);
  });
});

describe('LocalCertificateAuthority.issueServerCertificate', () => {
  it('issues a serving certificate with DNS and IP SANs and serverAuth, chaining to the root', async () => {
    const clock = new ManualClock({ now: T0 });
    const ca = await LocalCertificateAuthority.generate({ clock });
    const issued = await ca.issueServerCertificate(['istiod.istio-system.svc', 'localhost'], ['127.0.0.1', '::1']);
    const cert = new X509Certificate(issued.certPem);
    expect(cert.verify(new X509Certificate(ca.rootsPem[0] as string).publicKey)).toBe(true);
    expect(cert.checkHost('istiod.istio-system.svc')).toBe('istiod.istio-system.svc');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(issued.chainPem).toEqual([issued.certPem]);
    expect(createPrivateKey(issued.privateKeyPem).asymmetricKeyType).toBe('ec');
  });

  it('refuses invalid IPs', async () => {
    const ca = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: T0 }) });
    await expect(ca.issueServerCertificate([], ['not-an-ip'])).rejects.toMatchObject({ code: 'CA_REJECTED' });
  });
});
