/**
 * Contracts shared by the CA client, the certificate manager, the built-in
 * authorities (FAKE_CA and the local control plane) and their users.
 */
import type { X509Certificate } from 'node:crypto';
import type { Identity } from '../model/identity.js';

/** A verified workload certificate: the leaf's SPIFFE SAN is `identity`. */
export interface WorkloadCertificate {
  readonly identity: Identity;
  /** PKCS#8 PEM of the ECDSA P-256 private key. Never logged, never dumped. */
  readonly privateKeyPem: string;
  /** Leaf first, then intermediates (no roots). */
  readonly chainPem: readonly string[];
  /** Workload trust roots (the last element of the CA answer, split into single PEMs). */
  readonly rootsPem: readonly string[];
  readonly leaf: X509Certificate;
  /** Validity in epoch milliseconds. */
  readonly notBefore: number;
  readonly notAfter: number;
}

/** Fetches one certificate for an identity from a CA (istiod, or a built-in one). */
export interface CertificateFetcher {
  /**
   * Generates a fresh key and CSR, asks the CA, and verifies the answer.
   * Rejects with CaError on any failure.
   */
  fetch(identity: Identity, signal?: AbortSignal): Promise<WorkloadCertificate>;
}

/** A CA that signs CSRs locally (the control plane's CA, FAKE_CA). */
export interface CertificateAuthority {
  /** PEMs of the trust roots this CA's leaves chain to. */
  readonly rootsPem: readonly string[];
  /**
   * Signs a PEM CSR for `identity` (the CSR's SAN must equal it), valid for
   * `ttlSeconds` from now. Returns the chain as istiod does: leaf, intermediates, roots last.
   */
  sign(csrPem: string, identity: Identity, ttlSeconds: number): Promise<readonly string[]>;
}

export type CaErrorCode =
  | 'CA_UNAVAILABLE'        // transport error, deadline, gRPC UNAVAILABLE
  | 'CA_REJECTED'           // the CA answered with an error status (auth, impersonation, bad CSR)
  | 'CA_BAD_RESPONSE'       // empty chain, unparsable PEM, chain does not verify
  | 'CA_IDENTITY_MISMATCH'  // the leaf's SPIFFE SAN is not the identity asked for
  | 'CA_EXPIRED'            // the returned certificate is not currently valid
  | 'CERT_UNAVAILABLE';     // the manager has no valid certificate for the identity

export class CaError extends Error {
  constructor(
    readonly code: CaErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'CaError';
  }
}
