import type { X509Certificate } from 'node:crypto';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { identityToString, parseIdentity, systemClock, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { customCert, id, intermediate, newCa, signerOf, workloadCert, x509, type LeafSpec, type Signer } from '../testing/certs.js';
import { parseTrustRoots, spiffeIdProblem, verifyPeerCertificate, type PeerCheck, type PeerExpectation } from './spiffe-verify.js';

const clock = systemClock;
const TD = 'cluster.local';
const asClient: PeerExpectation = { peer: 'client', trustDomain: TD };
const uri = (value: string) => ({ type: 'url' as const, value });

let ca: LocalCertificateAuthority;
let otherCa: LocalCertificateAuthority;
let signer: Signer;
let roots: readonly X509Certificate[];
let good: WorkloadCertificate;

beforeAll(async () => {
  ca = await newCa(clock);
  otherCa = await newCa(clock);
  signer = await signerOf(ca);
  const parsed = parseTrustRoots(ca.rootsPem);
  if (!parsed.ok) throw new Error('roots');
  roots = parsed.value;
  good = await workloadCert(ca, 'spiffe://cluster.local/ns/a/sa/b', clock);
});

function verify(chain: readonly X509Certificate[], expectation: PeerExpectation = asClient, now = clock.now()) {
  return verifyPeerCertificate({ chain, roots, now, expect: expectation });
}

function checksOf(result: ReturnType<typeof verify>): PeerCheck[] {
  return result.ok ? [] : [...new Set(result.errors.map((e) => e.check))];
}

async function leaf(spec: LeafSpec): Promise<X509Certificate> {
  return (await customCert(signer, clock, spec)).x509;
}

describe('verifyPeerCertificate: a client (we are the server, same trust domain required)', () => {
  it('accepts an istiod-style workload certificate and returns its identity', () => {
    const result = verify([good.leaf]);
    expect(result).toEqual({ ok: true, value: { identity: id('spiffe://cluster.local/ns/a/sa/b'), spiffeId: 'spiffe://cluster.local/ns/a/sa/b', certificate: good.leaf } });
  });

  const SPIFFE_DEFECTS: Array<[string, string]> = [
    ['an extra path segment', 'spiffe://cluster.local/ns/a/sa/b/extra'],
    ['a missing service account', 'spiffe://cluster.local/ns/a'],
    ['segments in the wrong order', 'spiffe://cluster.local/sa/b/ns/a'],
    ['percent-encoding', 'spiffe://cluster.local/ns/a%2Fb/sa/b'],
    ['an encoded dot segment', 'spiffe://cluster.local/ns/%2e%2e/sa/b'],
    ['an upper-case trust domain', 'spiffe://Cluster.local/ns/a/sa/b'],
    ['an upper-case scheme', 'SPIFFE://cluster.local/ns/a/sa/b'],
    ['a trailing slash', 'spiffe://cluster.local/ns/a/sa/b/'],
    ['an empty segment', 'spiffe://cluster.local/ns//sa/b'],
    ['a dot-dot segment', 'spiffe://cluster.local/ns/../sa/b'],
    ['an embedded NUL byte', 'spiffe://cluster.local/ns/a/sa/b\u0000evil'],
    ['a query', 'spiffe://cluster.local/ns/a/sa/b?x=1'],
    ['a fragment', 'spiffe://cluster.local/ns/a/sa/b#f'],
    ['userinfo in the trust domain', 'spiffe://u@cluster.local/ns/a/sa/b'],
    ['a port in the trust domain', 'spiffe://cluster.local:443/ns/a/sa/b'],
    ['an https scheme', 'https://cluster.local/ns/a/sa/b'],
    ['an injected second URI in the string', 'spiffe://cluster.local/ns/a/sa/b, URI:spiffe://cluster.local/ns/admin/sa/root'],
    ['a space', 'spiffe://cluster.local/ns/a b/sa/b'],
    ['more than 2048 bytes', `spiffe://cluster.local/ns/a/sa/${'b'.repeat(2030)}`],
  ];
  it.each(SPIFFE_DEFECTS)('refuses a URI SAN with %s', async (_name, value) => {
    const result = verify([await leaf({ sans: [uri(value)] })]);
    expect(checksOf(result)).toEqual(['spiffe-id']);
  });

  it('refuses a client from another trust domain (ztunnel #498), naming both domains', async () => {
    const other = await workloadCert(ca, 'spiffe://other.local/ns/a/sa/b', clock);
    const result = verify([other.leaf]);
    expect(checksOf(result)).toEqual(['trust-domain']);
    expect(result.ok ? '' : result.errors[0]?.reason).toContain('"other.local", expected "cluster.local"');
  });

  it('refuses two URI SANs, even when both are well-formed and in our trust domain', async () => {
    const result = verify([await leaf({ sans: [uri('spiffe://cluster.local/ns/a/sa/b'), uri('spiffe://cluster.local/ns/c/sa/d')] })]);
    expect(checksOf(result)).toEqual(['san']);
  });

  it.each([
    ['only a DNS SAN holding the SPIFFE ID', [{ type: 'dns' as const, value: 'spiffe.cluster.local' }]],
    ['only an e-mail SAN', [{ type: 'email' as const, value: 'a@cluster.local' }]],
    ['only an IP SAN', [{ type: 'ip' as const, value: '10.0.0.1' }]],
  ])('refuses %s (SAN type confusion, CVE-2022-21656)', async (_name, sans) => {
    expect(checksOf(verify([await leaf({ sans })]))).toEqual(['san']);
  });

  it('refuses a certificate whose identity is only in the subject CN', async () => {
    const cert = await leaf({ sans: [], subject: 'CN=spiffe://cluster.local/ns/a/sa/b' });
    expect(checksOf(verify([cert]))).toEqual(['san']);
  });

  it('accepts a DNS SAN next to the single URI SAN', async () => {
    const cert = await leaf({ sans: [uri('spiffe://cluster.local/ns/a/sa/b'), { type: 'dns', value: 'b.a.svc' }] });
    expect(verify([cert]).ok).toBe(true);
  });

  it('refuses a non-critical SAN on a certificate with an empty subject', async () => {
    expect(checksOf(verify([await leaf({ sanCritical: false })]))).toEqual(['san']);
  });

  it('refuses two subjectAltName extensions (an attempt to hide a second identity)', async () => {
    const second = new x509.SubjectAlternativeNameExtension([uri('spiffe://cluster.local/ns/admin/sa/root')], true);
    expect(checksOf(verify([await leaf({ extraExtensions: [second] })]))).toEqual(['encoding']);
  });

  it('refuses a CA certificate as a leaf', async () => {
    const cert = await leaf({ ca: true, keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature });
    expect(checksOf(verify([cert]))).toEqual(['leaf-ca']);
  });

  it('refuses a leaf that may sign certificates or CRLs without being a CA', async () => {
    expect(checksOf(verify([await leaf({ keyUsage: x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.cRLSign })]))).toEqual(['leaf-ca']);
  });

  it('refuses a keyUsage without digitalSignature', async () => {
    expect(checksOf(verify([await leaf({ keyUsage: x509.KeyUsageFlags.keyEncipherment })]))).toEqual(['key-usage']);
  });

  it('refuses a serverAuth-only certificate used as a client (CVE-2022-21657)', async () => {
    expect(checksOf(verify([await leaf({ eku: [x509.ExtendedKeyUsage.serverAuth] })]))).toEqual(['key-usage']);
  });

  it('accepts certificates without keyUsage or EKU extensions', async () => {
    expect(verify([await leaf({ keyUsage: null, eku: null })]).ok).toBe(true);
  });

  it('refuses an unknown critical extension', async () => {
    const ext = new x509.Extension('1.2.3.4.5.6', true, new Uint8Array([0x05, 0x00]));
    expect(checksOf(verify([await leaf({ extraExtensions: [ext] })]))).toEqual(['critical-extension']);
  });

  it('refuses an expired certificate and one not yet valid', async () => {
    const now = clock.now();
    const expired = await leaf({ notBefore: new Date(now - 7_200_000), notAfter: new Date(now - 1000) });
    const future = await leaf({ notBefore: new Date(now + 60_000), notAfter: new Date(now + 7_200_000) });
    expect(checksOf(verify([expired]))).toEqual(['validity']);
    expect(checksOf(verify([future]))).toEqual(['validity']);
    expect(verify([good.leaf], asClient, good.notAfter + 1).ok).toBe(false);
  });

  it('refuses a certificate from another CA and a self-signed one', async () => {
    const foreign = await workloadCert(otherCa, 'spiffe://cluster.local/ns/a/sa/b', clock);
    expect(checksOf(verify([foreign.leaf]))).toEqual(['chain']);
    const self = await customCert(undefined, clock, { subject: 'CN=me' });
    expect(checksOf(verify([self.x509]))).toEqual(['chain']);
  });

  it('follows presented intermediates to the root, and refuses without them', async () => {
    const inter = await intermediate(signer, clock);
    const cert = (await customCert(inter.signer, clock, {})).x509;
    expect(verify([cert, inter.cert.x509]).ok).toBe(true);
    expect(checksOf(verify([cert]))).toEqual(['chain']);
  });

  it('refuses an intermediate that is not a CA, exceeds its path length, or has expired', async () => {
    const notCa = await intermediate(signer, clock, { ca: false, keyUsage: x509.KeyUsageFlags.digitalSignature });
    expect(checksOf(verify([(await customCert(notCa.signer, clock, {})).x509, notCa.cert.x509]))).toEqual(['chain']);

    const top = await intermediate(signer, clock, { pathLength: 0 });
    const below = await intermediate(top.signer, clock, { subject: 'CN=below' });
    const deep = (await customCert(below.signer, clock, {})).x509;
    expect(checksOf(verify([deep, below.cert.x509, top.cert.x509]))).toEqual(['chain']);

    const now = clock.now();
    const old = await intermediate(signer, clock, { notBefore: new Date(now - 7_200_000), notAfter: new Date(now - 1000) });
    expect(checksOf(verify([(await customCert(old.signer, clock, {})).x509, old.cert.x509]))).toEqual(['validity']);
  });

  it('reports every failed check at once', async () => {
    const now = clock.now();
    const cert = await leaf({
      sans: [uri('spiffe://other.local/ns/a/sa/b')],
      ca: true,
      keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.digitalSignature,
      notBefore: new Date(now - 7_200_000),
      notAfter: new Date(now - 1000),
    });
    expect(checksOf(verify([cert])).sort()).toEqual(['leaf-ca', 'trust-domain', 'validity']);
  });

  it('refuses an empty chain and an empty root set', () => {
    expect(checksOf(verify([]))).toEqual(['missing']);
    const result = verifyPeerCertificate({ chain: [good.leaf], roots: [], now: clock.now(), expect: asClient });
    expect(checksOf(result)).toEqual(['chain']);
  });
});

describe('verifyPeerCertificate: a server (we are the client, expected identity set)', () => {
  const expected = (...ids: string[]): PeerExpectation => ({ peer: 'server', identities: ids.map(id) });

  it('accepts a server whose identity is in the expected set', () => {
    expect(verify([good.leaf], expected('spiffe://cluster.local/ns/x/sa/y', 'spiffe://cluster.local/ns/a/sa/b')).ok).toBe(true);
  });

  it('refuses a valid certificate for another identity, listing what was expected', () => {
    const result = verify([good.leaf], expected('spiffe://cluster.local/ns/x/sa/y'));
    expect(checksOf(result)).toEqual(['identity']);
    expect(result.ok ? '' : result.errors[0]?.reason).toContain('"spiffe://cluster.local/ns/x/sa/y"');
    expect(checksOf(verify([good.leaf], expected()))).toEqual(['identity']);
  });

  it('accepts a server in another trust domain when it is expected (trust domain is not checked outbound)', async () => {
    const other = await workloadCert(ca, 'spiffe://other.local/ns/a/sa/b', clock);
    expect(verify([other.leaf], expected('spiffe://other.local/ns/a/sa/b')).ok).toBe(true);
  });

  it('refuses a clientAuth-only certificate used as a server', async () => {
    const cert = await leaf({ sans: [uri('spiffe://cluster.local/ns/a/sa/b')], eku: [x509.ExtendedKeyUsage.clientAuth] });
    expect(checksOf(verify([cert], expected('spiffe://cluster.local/ns/a/sa/b')))).toEqual(['key-usage']);
  });
});

describe('spiffeIdProblem', () => {
  it('accepts exactly the IDs parseIdentity accepts and that print back identically', () => {
    fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (s) => {
      const problem = spiffeIdProblem(s);
      const parsed = parseIdentity(s);
      if (problem === undefined) {
        expect(parsed.ok && identityToString(parsed.value)).toBe(s);
      }
    }));
    fc.assert(fc.property(
      fc.stringMatching(/^[a-z0-9][a-z0-9.-]{0,20}$/), fc.stringMatching(/^[a-z0-9]{1,10}$/), fc.stringMatching(/^[A-Za-z0-9_-]{1,10}$/),
      (td, ns, sa) => {
        expect(spiffeIdProblem(`spiffe://${td}/ns/${ns}/sa/${sa}`)).toBeUndefined();
      },
    ));
  });
});

describe('parseTrustRoots', () => {
  it('parses PEMs and refuses garbage and an empty set', () => {
    expect(parseTrustRoots(ca.rootsPem).ok).toBe(true);
    expect(parseTrustRoots(['not a pem']).ok).toBe(false);
    expect(parseTrustRoots([]).ok).toBe(false);
  });
});
