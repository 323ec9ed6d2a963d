/**
 * The pure parts of the HBONE client: the interim SPIFFE peer check and
 * address formatting. The wire behaviour is in test/hbone-client.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { LocalCertificateAuthority } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { issueCertificate, newTestCa } from '../../test/support/mini-hbone-server.js';
import { expectedIdentityVerifier } from './client.js';

const SERVER_ID = 'spiffe://cluster.local/ns/backend/sa/server';
let ca: LocalCertificateAuthority;
let leaf: X509Certificate;
// Validity is not what this check is about, so any fixed time does.
const clock = new ManualClock();

beforeAll(async () => {
  ca = await newTestCa(clock);
  const cert = await issueCertificate(ca, SERVER_ID, clock);
  leaf = new X509Certificate(cert.chainPem[0]!);
});

describe('expectedIdentityVerifier', () => {
  it('accepts a leaf whose single URI SAN is one of the expected identities', () => {
    const verdict = expectedIdentityVerifier(['spiffe://cluster.local/ns/backend/sa/other', SERVER_ID])([leaf]);
    expect(verdict).toEqual({ ok: true, value: { trustDomain: 'cluster.local', namespace: 'backend', serviceAccount: 'server' } });
  });

  it('refuses an identity outside the expected set, naming both', () => {
    const verdict = expectedIdentityVerifier(['spiffe://cluster.local/ns/backend/sa/other'])([leaf]);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.errors[0]?.reason).toBe(`"${SERVER_ID}" is not one of the expected identities [spiffe://cluster.local/ns/backend/sa/other]`);
  });

  it('refuses an empty expected set (fails closed)', () => {
    expect(expectedIdentityVerifier([])([leaf]).ok).toBe(false);
  });

  it('refuses a CA certificate as the leaf', () => {
    const verdict = expectedIdentityVerifier([SERVER_ID])([new X509Certificate(ca.rootsPem[0]!)]);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.errors[0]?.reason).toContain('CA certificate');
  });

  it('refuses a certificate with DNS/IP SANs but no URI SAN', async () => {
    const serving = await ca.issueServerCertificate(['istiod.istio-system.svc'], ['10.0.0.1']);
    const verdict = expectedIdentityVerifier([SERVER_ID])([new X509Certificate(serving.certPem)]);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.errors[0]?.reason).toBe('expected exactly one URI SAN, found 0');
  });

  it('refuses an empty chain', () => {
    expect(expectedIdentityVerifier([SERVER_ID])([]).ok).toBe(false);
  });
});
