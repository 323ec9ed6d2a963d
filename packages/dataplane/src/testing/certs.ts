/**
 * Certificates for the TLS and HBONE server tests: good workload certificates
 * from a LocalCertificateAuthority (issued exactly like istiod's), and
 * deliberately bad leaves and intermediates built with @peculiar/x509 and
 * signed by the same CA key, for the SPIFFE verifier matrix.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { createPrivateKey, KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import { LocalCaFetcher, LocalCertificateAuthority, parseIdentity, type Clock, type Identity, type WorkloadCertificate } from '@ambient/control';

x509.cryptoProvider.set(webcrypto);

const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export function id(spiffe: string): Identity {
  const parsed = parseIdentity(spiffe);
  if (!parsed.ok) throw new Error(`bad test identity ${spiffe}`);
  return parsed.value;
}

export async function newCa(clock: Clock): Promise<LocalCertificateAuthority> {
  return LocalCertificateAuthority.generate({ clock });
}

/** A good workload certificate, issued through the same path as istiod's answers. */
export async function workloadCert(ca: LocalCertificateAuthority, spiffe: string, clock: Clock, ttlSeconds = 3600): Promise<WorkloadCertificate> {
  return new LocalCaFetcher(ca, { clock, ttlSeconds }).fetch(id(spiffe));
}

/** Something that can sign: a CA's key and certificate. */
export interface Signer {
  readonly certPem: string;
  readonly key: webcrypto.CryptoKey;
  readonly cert: x509.X509Certificate;
}

export async function signerOf(ca: LocalCertificateAuthority): Promise<Signer> {
  const der = createPrivateKey(ca.exportSigningKeyPem()).export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, ECDSA, false, ['sign']);
  return { certPem: ca.signingCertPem, key, cert: new x509.X509Certificate(ca.signingCertPem) };
}

export type SanSpec = { type: 'url' | 'dns' | 'email' | 'ip'; value: string };

export interface LeafSpec {
  /** Default: one URI SAN spiffe://cluster.local/ns/default/sa/default. */
  readonly sans?: readonly SanSpec[];
  /** Default true (the subject is empty). */
  readonly sanCritical?: boolean;
  /** undefined: no SAN extension at all when `sans` is []. */
  readonly subject?: string;
  /** basicConstraints cA (default false); null omits the extension. */
  readonly ca?: boolean | null;
  readonly pathLength?: number;
  /** keyUsage flags; null omits the extension. */
  readonly keyUsage?: number | null;
  /** EKU OIDs; null omits the extension. */
  readonly eku?: readonly string[] | null;
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly extraExtensions?: readonly x509.Extension[];
}

export interface CustomCert {
  readonly certPem: string;
  readonly keyPem: string;
  readonly key: webcrypto.CryptoKey;
  readonly x509: X509Certificate;
  readonly cert: x509.X509Certificate;
}

let serial = 1000;

/** A certificate signed by `signer` (or self-signed when signer is undefined) with exactly the given properties. */
export async function customCert(signer: Signer | undefined, clock: Clock, spec: LeafSpec = {}): Promise<CustomCert> {
  const keys = await webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify']);
  const now = clock.now();
  const sans = spec.sans ?? [{ type: 'url', value: 'spiffe://cluster.local/ns/default/sa/default' }];
  const extensions: x509.Extension[] = [];
  if (spec.ca !== null) extensions.push(new x509.BasicConstraintsExtension(spec.ca ?? false, spec.pathLength, true));
  if (spec.keyUsage !== null) {
    extensions.push(new x509.KeyUsagesExtension(spec.keyUsage ?? (x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment), true));
  }
  if (spec.eku !== null) {
    extensions.push(new x509.ExtendedKeyUsageExtension([...(spec.eku ?? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth])], false));
  }
  if (sans.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(sans.map((s) => ({ ...s })), spec.sanCritical ?? true));
  extensions.push(await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto));
  if (signer !== undefined) extensions.push(await x509.AuthorityKeyIdentifierExtension.create(signer.cert, false, webcrypto));
  extensions.push(...(spec.extraExtensions ?? []));
  const common = {
    serialNumber: (serial++).toString(16).padStart(4, '0'),
    notBefore: spec.notBefore ?? new Date(now - 60_000),
    notAfter: spec.notAfter ?? new Date(now + 3_600_000),
    signingAlgorithm: ECDSA,
    extensions,
  };
  const cert = signer === undefined
    ? await x509.X509CertificateGenerator.createSelfSigned({ ...common, name: spec.subject ?? 'CN=self-signed', keys }, webcrypto)
    : await x509.X509CertificateGenerator.create({
      ...common,
      subject: spec.subject ?? '',
      issuer: signer.cert.subjectName,
      publicKey: keys.publicKey,
      signingKey: signer.key,
    }, webcrypto);
  const certPem = `${cert.toString('pem')}\n`;
  const keyPem = String(KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }));
  return { certPem, keyPem, key: keys.privateKey, x509: new X509Certificate(certPem), cert };
}

/** An intermediate CA under `signer` that can sign further certificates. */
export async function intermediate(signer: Signer, clock: Clock, spec: LeafSpec = {}): Promise<{ signer: Signer; cert: CustomCert }> {
  const cert = await customCert(signer, clock, {
    sans: [],
    subject: 'CN=intermediate',
    ca: true,
    keyUsage: x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
    eku: null,
    ...spec,
  });
  return { signer: { certPem: cert.certPem, key: cert.key, cert: cert.cert }, cert };
}

/** A WorkloadCertificate around a custom leaf, for presenting it in a TLS handshake. */
export function asWorkloadCertificate(leaf: CustomCert, roots: readonly string[], intermediates: readonly string[] = [], identity: Identity = id('spiffe://cluster.local/ns/default/sa/default')): WorkloadCertificate {
  return {
    identity,
    privateKeyPem: leaf.keyPem,
    chainPem: [leaf.certPem, ...intermediates],
    rootsPem: roots,
    leaf: leaf.x509,
    notBefore: leaf.cert.notBefore.getTime(),
    notAfter: leaf.cert.notAfter.getTime(),
  };
}

export { x509 };
