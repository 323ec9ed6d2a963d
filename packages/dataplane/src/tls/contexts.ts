/**
 * TLS settings for HBONE (ztunnel.md 3.1) and a cache of the expensive TLS
 * objects built from a workload certificate.
 *
 * Both roles: TLS 1.3 only, exactly TLS_AES_256_GCM_SHA384 and
 * TLS_AES_128_GCM_SHA256, ALPN `h2`, the workload trust roots (never the system
 * store) as the only trust anchors, no session resumption (CVE-2022-21654: every
 * connection re-runs verification).
 * - Server (hbone/acceptor.ts): a client certificate is required and verified
 *   against the roots; then the one PeerVerifier (peer-verifier.ts) applies
 *   the SPIFFE and revocation checks with our trust domain.
 * - Client (handshake.ts, the one client path): no SNI, no `session` to
 *   resume, and the same PeerVerifier with the expected identities.
 *
 * A SecureContext (and a tls.Server) per connection would cap the handshake
 * rate (performance.md 6.4), so TlsMaterialCache keeps one TlsMaterial per
 * identity and rebuilds it only when the certificate changes (new serial).
 *
 * Invariants (TlsMaterialCache):
 * - at most one TlsMaterial per identity; it always reflects the latest
 *   certificate passed to `get` for that identity;
 * - at most `maxEntries` identities; the least recently used is dropped first
 *   (connections already using a dropped material keep working).
 */
import { constants as cryptoConstants, X509Certificate } from 'node:crypto';
import tls from 'node:tls';
import { formatRejections, identityToString, type Identity, type WorkloadCertificate } from '@ambient/control';
import { ProxyError } from '../errors.js';
import { parseTrustRoots } from './spiffe-verify.js';

export const HBONE_ALPN = 'h2';
export const HBONE_CIPHERS = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';
export const HBONE_TLS_VERSION = 'TLSv1.3';

/** No tickets: with TLS 1.3 OpenSSL then issues only stateful tickets, which nothing stores, so nothing resumes. */
const SECURE_OPTIONS = cryptoConstants.SSL_OP_NO_TICKET | cryptoConstants.SSL_OP_NO_RENEGOTIATION;

/** createSecureContext options for a workload certificate (both roles). */
export function secureContextOptions(cert: WorkloadCertificate): tls.SecureContextOptions {
  return {
    key: cert.privateKeyPem,
    cert: cert.chainPem.map((p) => (p.endsWith('\n') ? p : `${p}\n`)).join(''),
    ca: [...cert.rootsPem],
    minVersion: HBONE_TLS_VERSION,
    maxVersion: HBONE_TLS_VERSION,
    ciphers: HBONE_CIPHERS,
    secureOptions: SECURE_OPTIONS,
  };
}

export interface ServerTlsOptionsExtra {
  /** Node's own handshake timer, a backstop behind the server's Clock-driven one. */
  readonly handshakeTimeoutMs: number;
}

/** tls.createServer options: client certificate required, ALPN h2 only. */
export function serverTlsOptions(cert: WorkloadCertificate, extra: ServerTlsOptionsExtra): tls.TlsOptions {
  return {
    ...secureContextOptions(cert),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: [HBONE_ALPN],
    handshakeTimeout: extra.handshakeTimeoutMs,
  };
}

/** One workload certificate, parsed once, with its TLS objects built on first use. */
export class TlsMaterial {
  readonly identity: Identity;
  readonly serial: string;
  readonly fingerprint: string;
  #clientContext: tls.SecureContext | undefined;

  private constructor(
    readonly certificate: WorkloadCertificate,
    readonly roots: readonly X509Certificate[],
  ) {
    this.identity = certificate.identity;
    this.serial = certificate.leaf.serialNumber;
    this.fingerprint = certificate.leaf.fingerprint256;
  }

  /** Throws ProxyError CERT_UNAVAILABLE when the roots cannot be parsed. */
  static from(cert: WorkloadCertificate): TlsMaterial {
    const roots = parseTrustRoots(cert.rootsPem);
    if (!roots.ok) {
      throw new ProxyError('CERT_UNAVAILABLE', `workload certificate for ${identityToString(cert.identity)}: ${formatRejections(roots.errors)}`);
    }
    return new TlsMaterial(cert, roots.value);
  }

  /** The SecureContext outbound connections present (built once). */
  clientContext(): tls.SecureContext {
    this.#clientContext ??= tls.createSecureContext(secureContextOptions(this.certificate));
    return this.#clientContext;
  }

  sameCertificate(cert: WorkloadCertificate): boolean {
    return cert === this.certificate || (cert.leaf.serialNumber === this.serial && cert.leaf.fingerprint256 === this.fingerprint);
  }
}

export interface TlsMaterialCacheOptions {
  /** Identities kept (default 4096). */
  readonly maxEntries?: number;
}

export class TlsMaterialCache {
  readonly #entries = new Map<string, TlsMaterial>();
  readonly #max: number;

  constructor(options: TlsMaterialCacheOptions = {}) {
    this.#max = Math.max(1, options.maxEntries ?? 4096);
  }

  /** The material for `cert`, rebuilt when the identity's certificate changed. Throws ProxyError CERT_UNAVAILABLE. */
  get(cert: WorkloadCertificate): TlsMaterial {
    const key = identityToString(cert.identity);
    const cached = this.#entries.get(key);
    if (cached !== undefined && cached.sameCertificate(cert)) {
      this.#entries.delete(key);
      this.#entries.set(key, cached);
      return cached;
    }
    const material = TlsMaterial.from(cert);
    this.#entries.delete(key);
    this.#entries.set(key, material);
    while (this.#entries.size > this.#max) {
      const oldest = this.#entries.keys().next().value;
      if (oldest === undefined) break;
      this.#entries.delete(oldest);
    }
    return material;
  }

  /** Drops an identity (its certificate was forgotten). */
  forget(identity: Identity): void {
    this.#entries.delete(identityToString(identity));
  }

  get size(): number {
    return this.#entries.size;
  }
}

/**
 * The peer's chain as X509Certificates, leaf first, from
 * getPeerCertificate(true) (which follows issuers up to the root when known).
 */
export function peerChainOf(cert: tls.PeerCertificate | tls.DetailedPeerCertificate | undefined): X509Certificate[] {
  const chain: X509Certificate[] = [];
  const seen = new Set<string>();
  let current: Partial<tls.DetailedPeerCertificate> | undefined = cert;
  while (current?.raw !== undefined && current.fingerprint256 !== undefined && !seen.has(current.fingerprint256)) {
    seen.add(current.fingerprint256);
    try {
      chain.push(new X509Certificate(current.raw));
    } catch {
      break;
    }
    current = current.issuerCertificate;
  }
  return chain;
}
