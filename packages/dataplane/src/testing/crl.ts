/**
 * Certificate revocation lists for the CRL tests, signed with a test CA's
 * key through @peculiar/x509 (as an operator's tooling would make them).
 */
import { webcrypto } from 'node:crypto';
import { x509, type Signer } from './certs.js';

const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface CrlSpec {
  readonly thisUpdate?: Date;
  /** Default: a day after thisUpdate; null: no nextUpdate. */
  readonly nextUpdate?: Date | null;
  /** Sign with this key instead of the issuer's own (a forged CRL). */
  readonly signingKey?: webcrypto.CryptoKey;
}

/** A PEM CRL issued by `issuer` revoking `serials` (hex, as X509Certificate.serialNumber gives them). */
export async function crlPem(issuer: Signer, serials: readonly string[], spec: CrlSpec = {}): Promise<string> {
  const thisUpdate = spec.thisUpdate ?? new Date(Date.now() - 60_000);
  const nextUpdate = spec.nextUpdate === null ? undefined : (spec.nextUpdate ?? new Date(thisUpdate.getTime() + 86_400_000));
  const crl = await x509.X509CrlGenerator.create(
    {
      issuer: issuer.cert.subjectName,
      thisUpdate,
      ...(nextUpdate === undefined ? {} : { nextUpdate }),
      signingAlgorithm: ECDSA,
      signingKey: spec.signingKey ?? issuer.key,
      entries: serials.map((serialNumber) => ({ serialNumber, revocationDate: thisUpdate, reason: x509.X509CrlReason.keyCompromise })),
    },
    webcrypto,
  );
  // The standard label (RFC 7468), as openssl writes it; @peculiar/x509 writes "CRL".
  return `${crl.toString('pem').replace(/-----(BEGIN|END) CRL-----/g, '-----$1 X509 CRL-----')}\n`;
}

/** A fresh P-256 key nobody's certificate carries (to forge CRLs with). */
export async function strayKey(): Promise<webcrypto.CryptoKey> {
  const keys = await webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify']);
  return keys.privateKey;
}
