/**
 * A CertificateFetcher backed by an in-process CertificateAuthority (FAKE_CA,
 * the local control plane's own workloads, tests). It goes through the same
 * steps as the istiod client — fresh key and CSR, sign, verify the answer — so
 * the certificate manager and everything above it see identical behaviour.
 */
import { identityToString, type Identity } from '../model/identity.js';
import type { Clock } from '../platform/clock.js';
import { chainError, verifyCertificateChain } from './chain.js';
import { generateKeyAndCsr } from './csr.js';
import { CaError, type CertificateAuthority, type CertificateFetcher, type WorkloadCertificate } from './types.js';

export interface LocalCaFetcherOptions {
  readonly clock: Clock;
  /** Requested lifetime, default 86400 s (SECRET_TTL). */
  readonly ttlSeconds?: number;
}

export class LocalCaFetcher implements CertificateFetcher {
  constructor(
    private readonly ca: CertificateAuthority,
    private readonly options: LocalCaFetcherOptions,
  ) {}

  async fetch(identity: Identity, signal?: AbortSignal): Promise<WorkloadCertificate> {
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(identity);
    if (signal?.aborted) throw new CaError('CA_UNAVAILABLE', `certificate request for ${identityToString(identity)} aborted`, { cause: signal.reason });
    let chain: readonly string[];
    try {
      chain = await this.ca.sign(csrPem, identity, this.options.ttlSeconds ?? 86_400);
    } catch (err) {
      if (err instanceof CaError) throw err;
      throw new CaError('CA_REJECTED', `local CA could not sign for ${identityToString(identity)}`, { cause: err });
    }
    const verified = verifyCertificateChain({ certChain: chain, identity, privateKeyPem, now: this.options.clock.now() });
    if (!verified.ok) throw chainError(identity, verified.errors);
    return verified.value;
  }
}
