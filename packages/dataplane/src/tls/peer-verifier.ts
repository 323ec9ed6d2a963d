/**
 * The one peer verifier of HBONE mTLS, for every handshake we take part in:
 * the server side of 15008 (the client must be in our trust domain), the
 * client side of an outbound connection (the server must be one of the
 * expected identities) and the inner tunnel of double HBONE (the final
 * destination's identities). It runs the SPIFFE checks of spiffe-verify.ts
 * on the chain the handshake saw, then, with CRL_PATH, the revocation check;
 * every refusal says which check failed, so callers can log and count it.
 */
import type { X509Certificate } from 'node:crypto';
import { fail, formatRejections, ok, type Clock, type Result } from '@ambient/control';
import { ProxyError } from '../errors.js';
import { revocationRejection, type RevocationRejection, type RevocationSource } from './crl/manager.js';
import { verifyPeerCertificate, type PeerCheck, type PeerExpectation, type PeerRejection, type VerifiedPeer } from './spiffe-verify.js';

/** A peer that passed the SPIFFE checks but whose chain a CRL revokes. */
export interface RevokedPeer extends RevocationRejection {
  readonly peer: VerifiedPeer;
}

export type PeerRefusal = PeerRejection | RevokedPeer;

export interface PeerVerifierOptions {
  /** The workload trust roots (our own certificate's roots). */
  readonly roots: readonly X509Certificate[];
  readonly expect: PeerExpectation;
  readonly clock: Pick<Clock, 'now'>;
  /** CRL_PATH's revocation lists for this side of the proxy; absent: no revocation checks. */
  readonly revocation?: RevocationSource | undefined;
}

/** Checks a peer chain (leaf first, as the handshake saw it). */
export type PeerVerifier = (chain: readonly X509Certificate[]) => Result<VerifiedPeer, PeerRefusal>;

export function peerVerifier(o: PeerVerifierOptions): PeerVerifier {
  return (chain) => {
    const verified = verifyPeerCertificate({ chain, roots: o.roots, now: o.clock.now(), expect: o.expect });
    if (!verified.ok) return verified;
    const revoked = revocationRejection(o.revocation, chain, o.roots);
    return revoked === undefined ? ok(verified.value) : fail({ ...revoked, peer: verified.value });
  };
}

/** Which checks refused the peer (`revoked` for a CRL refusal), for metrics and logs. */
export function refusedChecks(refusals: readonly PeerRefusal[]): readonly (PeerCheck | 'revoked')[] {
  return [...new Set(refusals.map((r) => (r.code === 'CERT_REVOKED' ? ('revoked' as const) : r.check)))];
}

/** The error a refused peer becomes: CERT_REVOKED when a CRL refused it, else PEER_IDENTITY_INVALID. */
export function peerRefusalError(refusals: readonly PeerRefusal[], context: string): ProxyError {
  const revoked = refusals.some((r) => r.code === 'CERT_REVOKED');
  return new ProxyError(revoked ? 'CERT_REVOKED' : 'PEER_IDENTITY_INVALID', `${context}: ${revoked ? 'certificate revoked' : 'peer identity rejected'}: ${formatRejections(refusals)}`);
}
