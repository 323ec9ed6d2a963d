import { createPrivateKey, createPublicKey } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../testing/manual-clock.js';
import { LocalCertificateAuthority } from './authority.js';
import { chainError, verifyCertificateChain } from './chain.js';
import { generateKeyAndCsr, type KeyAndCsr } from './csr.js';
import { crypto, ECDSA_P256_SHA256, x509 } from './x509.js';

const T0 = Date.UTC(2025, 5, 1);
const id = { trustDomain: 'cluster.local', namespace: 'ns1', serviceAccount: 'sa1' };
const SPIFFE = 'spiffe://cluster.local/ns/ns1/sa/sa1';

/** Issues an arbitrary certificate from `ca`'s key, to build answers no honest CA would give. */
async function issueRaw(ca: LocalCertificateAuthority, opts: {
  publicKeyPem: string;
  sans?: Array<{ type: 'url' | 'dns'; value: string }>;
  isCa?: boolean;
  notBefore?: number;
  notAfter?: number;
  subject?: string;
}): Promise<string> {
  const signingKey = await crypto.subtle.importKey('pkcs8', createPrivateKey(ca.exportSigningKeyPem()).export({ type: 'pkcs8', format: 'der' }), ECDSA_P256_SHA256, false, ['sign']);
  const publicKey = new x509.PublicKey(createPublicKey(opts.publicKeyPem).export({ type: 'spki', format: 'der' }));
  const issuer = new x509.X509Certificate(ca.signingCertPem);
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(opts.isCa ?? false, undefined, true)];
  if (opts.isCa) extensions.push(new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true));
  if (opts.sans) extensions.push(new x509.SubjectAlternativeNameExtension(opts.sans, true));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '1234',
    subject: opts.subject ?? '',
    issuer: issuer.subjectName,
    notBefore: new Date(opts.notBefore ?? T0 - 60_000),
    notAfter: new Date(opts.notAfter ?? T0 + 3600_000),
    publicKey,
    signingKey,
    signingAlgorithm: ECDSA_P256_SHA256,
    extensions,
  }, crypto);
  return `${cert.toString('pem')}\n`;
}

describe('verifyCertificateChain', () => {
  let clock: ManualClock;
  let ca: LocalCertificateAuthority;
  let other: LocalCertificateAuthority;
  let key: KeyAndCsr;

  beforeAll(async () => {
    clock = new ManualClock({ now: T0 });
    ca = await LocalCertificateAuthority.generate({ clock });
    other = await LocalCertificateAuthority.generate({ clock, commonName: 'other CA' });
    key = await generateKeyAndCsr(id);
  });

  const verify = (certChain: readonly string[], now = T0, privateKeyPem = key.privateKeyPem) =>
    verifyCertificateChain({ certChain, identity: id, privateKeyPem, now });

  it('accepts istiod\'s [leaf, root] answer and splits it into chain and roots', async () => {
    const chain = await ca.sign(key.csrPem, id, 3600);
    const result = verify(chain);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.value.identity).toEqual(id);
    expect(result.value.chainPem).toEqual([chain[0]]);
    expect(result.value.rootsPem).toEqual(ca.rootsPem);
    expect(result.value.privateKeyPem).toBe(key.privateKeyPem);
    expect(result.value.notBefore).toBe(T0 - 60_000);
    expect(result.value.notAfter).toBe(T0 + 3600_000);
    expect(result.value.leaf.serialNumber).toBe(new x509.X509Certificate(chain[0] as string).serialNumber.toUpperCase());
  });

  it('trusts every root concatenated in the last element (root rotation overlap)', async () => {
    const chain = await ca.sign(key.csrPem, id, 3600);
    const result = verify([chain[0] as string, `${other.rootsPem[0]}${ca.rootsPem[0]}`]);
    expect(result.ok).toBe(true);
    if (result.ok) expect(result.value.rootsPem).toEqual([other.rootsPem[0], ca.rootsPem[0]]);
  });

  it('follows intermediates, including an element holding a whole cert-chain.pem', async () => {
    const interKey = await generateKeyAndCsr(id);
    const interPem = await issueRaw(ca, { publicKeyPem: interKey.privateKeyPem, isCa: true, subject: 'CN=intermediate' });
    const intermediateCa = await LocalCertificateAuthority.load({ clock, certPem: interPem, keyPem: interKey.privateKeyPem, rootsPem: ca.rootsPem.join('') });
    expect(intermediateCa.ok).toBe(true);
    if (!intermediateCa.ok) return;
    const chain = await intermediateCa.value.sign(key.csrPem, id, 3600);
    expect(chain).toHaveLength(3);
    const plain = verify(chain);
    expect(plain.ok).toBe(true);
    if (plain.ok) expect(plain.value.chainPem).toEqual([chain[0], interPem]);

    const istiodStyle = verify([chain[0] as string, `${interPem}${ca.rootsPem[0]}`, ca.rootsPem[0] as string]);
    expect(istiodStyle.ok).toBe(true);
    if (istiodStyle.ok) expect(istiodStyle.value.chainPem).toEqual([chain[0], interPem]);

    const withoutIntermediate = verify([chain[0] as string, ca.rootsPem[0] as string]);
    expect(withoutIntermediate).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', field: 'cert_chain' }] });
  });

  it('refuses an empty chain and a chain without roots', () => {
    expect(verify([])).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', field: 'cert_chain' }] });
    expect(verify([ca.rootsPem[0] as string])).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', reason: expect.stringMatching(/root/) }] });
  });

  it('refuses unparsable elements, naming them', async () => {
    const chain = await ca.sign(key.csrPem, id, 3600);
    expect(verify(['garbage', chain[1] as string])).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', field: 'cert_chain[0]' }] });
    expect(verify([chain[0] as string, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n'])).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', field: 'cert_chain[1]' }] });
    expect(verify([`${chain[0]}${chain[0]}`, chain[1] as string])).toMatchObject({ ok: false, errors: [{ field: 'cert_chain[0]', reason: expect.stringMatching(/exactly one/) }] });
  });

  it('refuses a certificate for another identity (F-07)', async () => {
    const otherId = { ...id, serviceAccount: 'someone-else' };
    const otherKey = await generateKeyAndCsr(otherId);
    const chain = await ca.sign(otherKey.csrPem, otherId, 3600);
    const result = verify(chain, T0, otherKey.privateKeyPem);
    expect(result).toMatchObject({ ok: false, errors: [{ code: 'CA_IDENTITY_MISMATCH' }] });
    if (!result.ok) {
      const err = chainError(id, result.errors);
      expect(err.code).toBe('CA_IDENTITY_MISMATCH');
      expect(err.message).toContain('spiffe://cluster.local/ns/ns1/sa/someone-else');
    }
  });

  it('refuses a leaf with more than one URI SAN or with none', async () => {
    const twoUris = await issueRaw(ca, { publicKeyPem: key.privateKeyPem, sans: [{ type: 'url', value: SPIFFE }, { type: 'url', value: 'spiffe://cluster.local/ns/x/sa/y' }] });
    expect(verify([twoUris, ca.rootsPem[0] as string])).toMatchObject({ ok: false, errors: [{ code: 'CA_IDENTITY_MISMATCH' }] });
    const dnsOnly = await issueRaw(ca, { publicKeyPem: key.privateKeyPem, sans: [{ type: 'dns', value: 'sa1.ns1' }] });
    expect(verify([dnsOnly, ca.rootsPem[0] as string])).toMatchObject({ ok: false, errors: [{ code: 'CA_IDENTITY_MISMATCH' }] });
  });

  it('refuses an expired or not yet valid leaf', async () => {
    const chain = await ca.sign(key.csrPem, id, 60);
    expect(verify(chain, T0 + 61_000)).toMatchObject({ ok: false, errors: [{ code: 'CA_EXPIRED', reason: expect.stringMatching(/expired/) }] });
    // Before the leaf's (back-dated) notBefore the root is not valid either: both are reported.
    expect(verify(chain, T0 - 120_000)).toMatchObject({
      ok: false,
      errors: [
        { code: 'CA_EXPIRED', field: 'cert_chain[0]', reason: expect.stringMatching(/not valid before/) },
        { code: 'CA_EXPIRED', field: expect.stringMatching(/^root/) },
      ],
    });
  });

  it('refuses a leaf that does not chain to the returned roots', async () => {
    const chain = await ca.sign(key.csrPem, id, 3600);
    expect(verify([chain[0] as string, other.rootsPem[0] as string])).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', field: 'cert_chain' }] });
  });

  it('refuses a leaf for a different key than ours', async () => {
    const chain = await ca.sign(key.csrPem, id, 3600);
    const stranger = await generateKeyAndCsr(id);
    expect(verify(chain, T0, stranger.privateKeyPem)).toMatchObject({ ok: false, errors: [{ code: 'CA_BAD_RESPONSE', reason: expect.stringMatching(/private key/) }] });
  });

  it('refuses a leaf that is itself a CA', async () => {
    const caLeaf = await issueRaw(ca, { publicKeyPem: key.privateKeyPem, isCa: true, sans: [{ type: 'url', value: SPIFFE }] });
    expect(verify([caLeaf, ca.rootsPem[0] as string])).toMatchObject({ ok: false, errors: expect.arrayContaining([expect.objectContaining({ code: 'CA_BAD_RESPONSE', reason: expect.stringMatching(/is a CA/) })]) });
  });

  it('refuses a path through an intermediate that is not a CA', async () => {
    const interKey = await generateKeyAndCsr(id);
    const notCa = await issueRaw(ca, { publicKeyPem: interKey.privateKeyPem, isCa: false, subject: 'CN=not a ca' });
    const fake = await LocalCertificateAuthority.load({ clock, certPem: notCa, keyPem: interKey.privateKeyPem, rootsPem: ca.rootsPem.join('') });
    expect(fake.ok).toBe(false);
  });
});
