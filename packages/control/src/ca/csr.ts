/**
 * Key and certificate signing request for one workload identity, as ztunnel's
 * `tls/csr.rs` makes them: a fresh ECDSA P-256 key per request (PKCS#8 PEM),
 * and a PKCS#10 CSR signed with SHA-256 whose subject is empty and which
 * carries a single critical SubjectAltName extension holding one URI, the
 * SPIFFE ID. istiod takes the identity from the SAN, never from the subject.
 */
import { KeyObject } from 'node:crypto';
import { identityToString, type Identity } from '../model/identity.js';
import { crypto, ECDSA_P256_SHA256, x509 } from './x509.js';

export interface KeyAndCsr {
  /** PEM "CERTIFICATE REQUEST". */
  readonly csrPem: string;
  /** PEM "PRIVATE KEY" (PKCS#8). Never logged. */
  readonly privateKeyPem: string;
}

export async function generateKeyAndCsr(identity: Identity): Promise<KeyAndCsr> {
  const keys = await crypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys,
    signingAlgorithm: ECDSA_P256_SHA256,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: identityToString(identity) }], true)],
  });
  const privateKeyPem = KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' });
  return { csrPem: `${csr.toString('pem')}\n`, privateKeyPem: String(privateKeyPem) };
}
