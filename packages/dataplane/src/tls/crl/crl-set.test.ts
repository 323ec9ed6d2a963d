import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { systemClock, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { customCert, intermediate, newCa, signerOf, workloadCert, x509, type Signer } from '../../testing/certs.js';
import { crlPem, strayKey } from '../../testing/crl.js';
import { CrlSet, parseCrlFile, type ParsedCrl } from './crl-set.js';

const clock = new ManualClock({ now: systemClock.now() });

function pemToDer(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

function load(text: string | Uint8Array): readonly ParsedCrl[] {
  const parsed = parseCrlFile(typeof text === 'string' ? Buffer.from(text) : text);
  if (!parsed.ok) throw new Error(parsed.errors.map((e) => e.reason).join('; '));
  return parsed.value.crls;
}

async function setup(): Promise<{ ca: LocalCertificateAuthority; root: Signer; rootCert: X509Certificate; leaf: WorkloadCertificate; other: WorkloadCertificate }> {
  const ca = await newCa(clock);
  const root = await signerOf(ca);
  const leaf = await workloadCert(ca, 'spiffe://cluster.local/ns/a/sa/one', clock);
  const other = await workloadCert(ca, 'spiffe://cluster.local/ns/a/sa/two', clock);
  return { ca, root, rootCert: new X509Certificate(ca.signingCertPem), leaf, other };
}

describe('parseCrlFile', () => {
  it('reads an empty or blank file as no revocations', () => {
    for (const text of ['', ' \n\t\n']) {
      const parsed = parseCrlFile(Buffer.from(text));
      expect(parsed.ok && parsed.value).toEqual({ crls: [], skippedBlocks: 0, format: 'empty' });
    }
  });

  it('reads every CRL of a PEM file and skips other PEM blocks', async () => {
    const { ca, root, leaf, other } = await setup();
    const text = (await crlPem(root, [leaf.leaf.serialNumber])) + ca.signingCertPem + (await crlPem(root, [other.leaf.serialNumber]));
    const parsed = parseCrlFile(Buffer.from(text));
    expect(parsed.ok).toBe(true);
    if (!parsed.ok) return;
    expect(parsed.value.format).toBe('pem');
    expect(parsed.value.skippedBlocks).toBe(1);
    expect(parsed.value.crls.map((c) => c.index)).toEqual([1, 2]);
    expect(parsed.value.crls[0]?.issuer).toContain('ambient local CA');
  });

  it('also reads PEM blocks labelled "CRL"', async () => {
    const { root, leaf } = await setup();
    const pem = (await crlPem(root, [leaf.leaf.serialNumber])).replace(/X509 CRL/g, 'CRL');
    expect(load(pem)).toHaveLength(1);
  });

  it('reads a PEM file without CRL blocks as no revocations', async () => {
    const { ca } = await setup();
    expect(load(ca.signingCertPem)).toEqual([]);
  });

  it('reads a DER file as one CRL', async () => {
    const { root, leaf } = await setup();
    const crls = load(pemToDer(await crlPem(root, [leaf.leaf.serialNumber])));
    expect(crls).toHaveLength(1);
    expect(crls[0]?.revoked.size).toBe(1);
  });

  it('refuses garbage, a corrupt block among good ones, and a truncated PEM', async () => {
    const { root, leaf } = await setup();
    const good = await crlPem(root, [leaf.leaf.serialNumber]);
    const corrupt = '-----BEGIN X509 CRL-----\nMIIBAAAA\n-----END X509 CRL-----\n';
    for (const text of ['not a valid CRL', good + corrupt, good.slice(0, good.length - 20), '-----BEGIN X509 CRL-----\n%%%%\n-----END X509 CRL-----\n']) {
      const parsed = parseCrlFile(Buffer.from(text));
      expect(parsed.ok, text.slice(0, 40)).toBe(false);
    }
    const parsed = parseCrlFile(Buffer.from(good + corrupt));
    expect(!parsed.ok && parsed.errors[0]?.field).toBe('crl[2]');
  });
});

describe('CrlSet.check', () => {
  it('finds a revoked leaf and lets a certificate that is not listed pass', async () => {
    const { root, rootCert, leaf, other } = await setup();
    const set = new CrlSet(load(await crlPem(root, [leaf.leaf.serialNumber])));
    const verdict = set.check([leaf.leaf], [rootCert]);
    expect(verdict).toMatchObject({ revoked: true, depth: 0, crl: 1, serial: leaf.leaf.serialNumber.toLowerCase().replace(/^(00)+/, '') });
    expect(set.check([other.leaf], [rootCert])).toEqual({ revoked: false });
    // The chain as Node completes it (root included) gives the same answers.
    expect(set.check([leaf.leaf, rootCert]).revoked).toBe(true);
    expect(set.check([other.leaf, rootCert]).revoked).toBe(false);
  });

  it('uses every CRL of the file', async () => {
    const { root, rootCert, leaf, other } = await setup();
    const set = new CrlSet(load((await crlPem(root, [leaf.leaf.serialNumber])) + (await crlPem(root, [other.leaf.serialNumber]))));
    expect(set.check([leaf.leaf], [rootCert])).toMatchObject({ revoked: true, crl: 1 });
    expect(set.check([other.leaf], [rootCert])).toMatchObject({ revoked: true, crl: 2 });
  });

  it('checks intermediates: a revoked intermediate revokes every leaf under it', async () => {
    const { root, rootCert } = await setup();
    const inter = await intermediate(root, clock);
    const leaf = await customCert(inter.signer, clock);
    const set = new CrlSet(load(await crlPem(root, [inter.cert.x509.serialNumber])));
    expect(set.check([leaf.x509, inter.cert.x509], [rootCert])).toMatchObject({ revoked: true, depth: 1, subject: 'CN=intermediate' });
  });

  it("applies an intermediate's own CRL to the leaves it issued", async () => {
    const { root, rootCert } = await setup();
    const inter = await intermediate(root, clock);
    const leaf = await customCert(inter.signer, clock);
    const sibling = await customCert(inter.signer, clock);
    const set = new CrlSet(load(await crlPem(inter.signer, [leaf.x509.serialNumber])));
    expect(set.check([leaf.x509, inter.cert.x509], [rootCert])).toMatchObject({ revoked: true, depth: 0 });
    expect(set.check([sibling.x509, inter.cert.x509], [rootCert]).revoked).toBe(false);
  });

  it('ignores, and reports once, a CRL whose signature does not verify (fail-open)', async () => {
    const { root, rootCert, leaf } = await setup();
    const ignored: string[] = [];
    const set = new CrlSet(load(await crlPem(root, [leaf.leaf.serialNumber], { signingKey: await strayKey() })), {
      ignored: (_crl, _issuer, reason) => ignored.push(reason),
    });
    expect(set.check([leaf.leaf], [rootCert]).revoked).toBe(false);
    expect(set.check([leaf.leaf], [rootCert]).revoked).toBe(false);
    expect(ignored).toEqual(["the CRL signature does not verify with the issuer's public key"]);
  });

  it('ignores a CRL from an issuer that may not sign CRLs', async () => {
    const { root, rootCert } = await setup();
    const inter = await intermediate(root, clock, { keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature });
    const leaf = await customCert(inter.signer, clock);
    const ignored: string[] = [];
    const set = new CrlSet(load(await crlPem(inter.signer, [leaf.x509.serialNumber])), { ignored: (_c, _i, reason) => ignored.push(reason) });
    expect(set.check([leaf.x509, inter.cert.x509], [rootCert]).revoked).toBe(false);
    expect(ignored[0]).toContain('cRLSign');
  });

  it("does not apply another CA's CRL, even for the same serial", async () => {
    const { rootCert, leaf } = await setup();
    const stranger = await signerOf(await newCa(clock));
    const set = new CrlSet(load(await crlPem(stranger, [leaf.leaf.serialNumber])));
    expect(set.check([leaf.leaf], [rootCert]).revoked).toBe(false);
  });

  it('keeps applying a CRL past its nextUpdate (as ztunnel: CRL expiry is ignored)', async () => {
    const { root, rootCert, leaf } = await setup();
    const old = new Date(systemClock.now() - 10 * 86_400_000);
    const set = new CrlSet(load(await crlPem(root, [leaf.leaf.serialNumber], { thisUpdate: old, nextUpdate: new Date(old.getTime() + 86_400_000) })));
    expect(set.crls[0]?.nextUpdate?.getTime()).toBeLessThan(systemClock.now());
    expect(set.check([leaf.leaf], [rootCert]).revoked).toBe(true);
  });

  it('never checks the trust anchor itself, and an empty set revokes nothing', async () => {
    const { root, rootCert, leaf } = await setup();
    const set = new CrlSet(load(await crlPem(root, [rootCert.serialNumber])));
    expect(set.check([leaf.leaf, rootCert], [rootCert]).revoked).toBe(false);
    expect(CrlSet.EMPTY.check([leaf.leaf], [rootCert]).revoked).toBe(false);
  });
});
