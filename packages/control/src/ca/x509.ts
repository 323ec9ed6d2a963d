/**
 * The one place that wires @peculiar/x509 to Node's WebCrypto, plus small
 * readers for the certificate extensions the CA code checks. Import x509 from
 * here, never from '@peculiar/x509' directly, so 'reflect-metadata' is loaded
 * first and the crypto provider is set exactly once.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

x509.cryptoProvider.set(webcrypto);

export { x509 };
export const crypto: webcrypto.Crypto = webcrypto;

/** ECDSA P-256 with SHA-256 (rcgen PKCS_ECDSA_P256_SHA256 in ztunnel). */
export const ECDSA_P256_SHA256 = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

const OID_SUBJECT_ALT_NAME = '2.5.29.17';
const OID_KEY_USAGE = '2.5.29.15';

/** The SAN extension of a certificate or CSR, if present. */
export function subjectAltNames(source: { getExtension(type: string): x509.Extension | null }):
  { readonly critical: boolean; readonly names: ReadonlyArray<{ readonly type: string; readonly value: string }> } | undefined {
  const ext = source.getExtension(OID_SUBJECT_ALT_NAME);
  if (!(ext instanceof x509.SubjectAlternativeNameExtension)) return undefined;
  return { critical: ext.critical, names: ext.names.toJSON() };
}

/** Key usage bits, or undefined when the extension is absent. */
export function keyUsages(cert: x509.X509Certificate): x509.KeyUsageFlags | undefined {
  const ext = cert.getExtension(OID_KEY_USAGE);
  return ext instanceof x509.KeyUsagesExtension ? ext.usages : undefined;
}
