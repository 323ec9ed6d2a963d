/**
 * A certificate authority that signs locally: the CA behind FAKE_CA and the
 * local control plane. It issues workload certificates the way istiod does
 * (security/pkg/pki/ca, pki/util/generate_cert.go): empty subject, one critical
 * URI SAN (the SPIFFE ID), CA:FALSE, digitalSignature+keyEncipherment,
 * serverAuth+clientAuth, back-dated one minute for clock skew, capped at the
 * signing certificate's expiry; and answers with istiod's chain layout
 * [leaf, (signing cert + its chain, when it is not the root), roots], each
 * element ending in "\n".
 *
 * The signing key is either a freshly generated self-signed ECDSA P-256 root or
 * a user-supplied certificate and key (validated before use). Time comes from
 * the injected Clock.
 */
import { createPrivateKey, createPublicKey, KeyObject, type webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import type { Clock } from '../platform/clock.js';
import { identityToString, type Identity } from '../model/identity.js';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';
import { findPathToRoot, oneLine, validityProblem } from './chain.js';
import { parseCertificates, parseSingleCertificate, type ParsedCertificate } from './pem.js';
import { CaError, type CertificateAuthority } from './types.js';
import { crypto, ECDSA_P256_SHA256, keyUsages, subjectAltNames, x509 } from './x509.js';

/** istiod's default workload certificate lifetime (DEFAULT_WORKLOAD_CERT_TTL). */
const DEFAULT_WORKLOAD_TTL_SECONDS = 24 * 3600;
/** istiod's default maximum (MAX_WORKLOAD_CERT_TTL). */
const DEFAULT_MAX_WORKLOAD_TTL_SECONDS = 90 * 24 * 3600;
const ROOT_VALIDITY_SECONDS = 10 * 365 * 24 * 3600;
const SERVER_CERT_TTL_SECONDS = 365 * 24 * 3600;
const BACKDATE_MS = 60_000;

export interface LocalCaOptions {
  readonly clock: Clock;
  /** Used when a request asks for 0 s (default 24 h). */
  readonly defaultTtlSeconds?: number;
  /** Requests for longer lifetimes are refused, as istiod does (default 90 days). */
  readonly maxTtlSeconds?: number;
}

export interface GenerateRootOptions extends LocalCaOptions {
  /** Default "ambient local CA". */
  readonly commonName?: string;
  /** Default "cluster.local", as Istio's self-signed root. */
  readonly organization?: string;
  /** Default 10 years. */
  readonly validitySeconds?: number;
}

export interface LoadCaOptions extends LocalCaOptions {
  /** The signing certificate (PEM). */
  readonly certPem: string;
  /** Its private key: PKCS#8, SEC1 EC or PKCS#1 RSA PEM. */
  readonly keyPem: string;
  /** Certificates between the signing certificate and the root (PEM, concatenated), if any. */
  readonly chainPem?: string;
  /** Trust roots (PEM, concatenated). Default: the signing certificate, which must then be self-signed. */
  readonly rootsPem?: string;
}

/** A certificate issued with a key generated here (server certificates, test workloads). */
export interface IssuedCertificate {
  readonly certPem: string;
  /** PKCS#8 PEM. */
  readonly privateKeyPem: string;
  /** The certificate then the intermediates up to (excluding) the roots: what a TLS server presents. */
  readonly chainPem: readonly string[];
  readonly rootsPem: readonly string[];
}

interface SigningKey {
  readonly key: webcrypto.CryptoKey;
  readonly algorithm: webcrypto.Algorithm | webcrypto.EcdsaParams | webcrypto.RsaHashedImportParams;
}

export class LocalCertificateAuthority implements CertificateAuthority {
  readonly rootsPem: readonly string[];
  /** The certificate that signs leaves (the root itself for a generated CA). */
  readonly signingCertPem: string;
  readonly #signingCert: x509.X509Certificate;
  readonly #signingKey: SigningKey;
  readonly #signingKeyPem: string;
  /** Signing cert + its chain, sent between leaf and roots; empty when the signing cert is a root. */
  readonly #chainElement: string | undefined;
  readonly #clock: Clock;
  readonly #defaultTtl: number;
  readonly #maxTtl: number;

  private constructor(args: {
    options: LocalCaOptions;
    signingCert: x509.X509Certificate;
    signingCertPem: string;
    signingKey: SigningKey;
    signingKeyPem: string;
    chainPem: readonly string[];
    rootsPem: readonly string[];
  }) {
    this.#clock = args.options.clock;
    this.#defaultTtl = args.options.defaultTtlSeconds ?? DEFAULT_WORKLOAD_TTL_SECONDS;
    this.#maxTtl = args.options.maxTtlSeconds ?? DEFAULT_MAX_WORKLOAD_TTL_SECONDS;
    this.#signingCert = args.signingCert;
    this.signingCertPem = args.signingCertPem;
    this.#signingKey = args.signingKey;
    this.#signingKeyPem = args.signingKeyPem;
    this.rootsPem = args.rootsPem;
    const isRoot = args.rootsPem.includes(args.signingCertPem);
    this.#chainElement = isRoot ? undefined : [args.signingCertPem, ...args.chainPem].join('');
  }

  /** A new self-signed ECDSA P-256 root. */
  static async generate(options: GenerateRootOptions): Promise<LocalCertificateAuthority> {
    const keys = await crypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify']);
    const now = options.clock.now();
    const validitySeconds = options.validitySeconds ?? ROOT_VALIDITY_SECONDS;
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomSerial(),
      name: [{ O: [options.organization ?? 'cluster.local'] }, { CN: [options.commonName ?? 'ambient local CA'] }],
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + validitySeconds * 1000),
      signingAlgorithm: ECDSA_P256_SHA256,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    });
    const rootPem = pem(root);
    return new LocalCertificateAuthority({
      options,
      signingCert: root,
      signingCertPem: rootPem,
      signingKey: { key: keys.privateKey, algorithm: ECDSA_P256_SHA256 },
      signingKeyPem: exportPkcs8(keys.privateKey),
      chainPem: [],
      rootsPem: [rootPem],
    });
  }

  /**
   * A CA from a user-given certificate and key (e.g. Istio's cacerts layout:
   * ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem). Checks that the
   * certificate is a currently valid CA allowed to sign certificates, that the
   * key belongs to it, and that it chains to the roots.
   */
  static async load(options: LoadCaOptions): Promise<Result<LocalCertificateAuthority>> {
    const errors: Rejection[] = [];
    const cert = parseSingleCertificate(options.certPem, 'ca.cert');
    if (!cert.ok) return cert;
    const chain = options.chainPem === undefined || options.chainPem.trim() === '' ? ok<ParsedCertificate[]>([]) : parseCertificates(options.chainPem, 'ca.chain');
    if (!chain.ok) return chain;
    const roots = options.rootsPem === undefined ? ok([cert.value]) : parseCertificates(options.rootsPem, 'ca.roots');
    if (!roots.ok) return roots;

    const signing = cert.value;
    const parsed = new x509.X509Certificate(signing.cert.raw);
    if (!signing.cert.ca) errors.push(rejection('ca.cert', `"${oneLine(signing.cert.subject)}" is not a CA certificate (basicConstraints cA=false)`));
    const usages = keyUsages(parsed);
    if (usages !== undefined && (usages & x509.KeyUsageFlags.keyCertSign) === 0) {
      errors.push(rejection('ca.cert', 'keyUsage does not allow keyCertSign'));
    }
    const expiry = validityProblem(signing.cert, options.clock.now());
    if (expiry !== undefined) errors.push(rejection('ca.cert', expiry));
    const path = findPathToRoot(signing, chain.value, roots.value);
    // Without explicit roots the signing certificate is the root, so it must sign itself.
    const listedAsRoot = options.rootsPem !== undefined && roots.value.some((r) => r.pem === signing.pem);
    if (path.intermediates === undefined && !listedAsRoot) {
      errors.push(rejection(options.rootsPem === undefined ? 'ca.cert' : 'ca.roots',
        options.rootsPem === undefined ? 'certificate is not self-signed; give the root certificate(s) too' : 'signing certificate does not chain to the given roots'));
    }

    const key = await importSigningKey(options.keyPem);
    if (!key.ok) return fail(...errors, ...key.errors);
    if (!keyMatchesCert(key.value.pkcs8Pem, signing)) errors.push(rejection('ca.key', 'private key does not belong to the signing certificate'));
    if (errors.length > 0) return fail(...errors);

    return ok(new LocalCertificateAuthority({
      options,
      signingCert: parsed,
      signingCertPem: signing.pem,
      signingKey: key.value.signing,
      signingKeyPem: key.value.pkcs8Pem,
      chainPem: chain.value.map((c) => c.pem),
      rootsPem: roots.value.map((r) => r.pem),
    }));
  }

  /** PKCS#8 PEM of the signing key, for persisting a generated CA. Never log it. */
  exportSigningKeyPem(): string {
    return this.#signingKeyPem;
  }

  /**
   * Signs a workload CSR. Rejects with CaError CA_REJECTED when the CSR is not a
   * valid self-signed PKCS#10 request carrying exactly the URI SAN of
   * `identity`, or when `ttlSeconds` exceeds the maximum (0 means the default).
   */
  async sign(csrPem: string, identity: Identity, ttlSeconds: number): Promise<readonly string[]> {
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(csrPem);
    } catch {
      throw new CaError('CA_REJECTED', 'csr: not a PEM-encoded PKCS#10 certificate request');
    }
    if (!(await csr.verify(crypto).catch(() => false))) throw new CaError('CA_REJECTED', 'csr: signature does not verify');
    const expected = identityToString(identity);
    const san = subjectAltNames(csr);
    const names = san?.names ?? [];
    if (names.length !== 1 || names[0]?.type !== 'url' || names[0].value !== expected) {
      const found = names.map((g) => `${g.type}:${g.value}`).join(', ') || 'none';
      throw new CaError('CA_REJECTED', `csr: subjectAltName must be exactly the URI "${expected}", found ${found}`);
    }
    const keyProblem = publicKeyProblem(csr.publicKey.algorithm);
    if (keyProblem !== undefined) throw new CaError('CA_REJECTED', `csr: ${keyProblem}`);
    const ttl = ttlSeconds > 0 ? ttlSeconds : this.#defaultTtl;
    if (ttl > this.#maxTtl) {
      throw new CaError('CA_REJECTED', `requested TTL ${ttl}s is greater than the max allowed TTL ${this.#maxTtl}s`);
    }

    const leaf = await this.#issue({
      publicKey: csr.publicKey,
      ttlSeconds: ttl,
      subject: undefined,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth], false),
        // Empty subject, so the SAN must be critical (RFC 5280 4.2.1.6).
        new x509.SubjectAlternativeNameExtension([{ type: 'url', value: expected }], true),
      ],
    });
    return this.#answer(leaf);
  }

  /**
   * A TLS serving certificate for the control plane itself (xDS and CA on
   * :15012), with DNS and IP SANs, signed by this CA. Default lifetime one year,
   * capped at the CA's expiry.
   */
  async issueServerCertificate(dnsNames: readonly string[], ips: readonly string[], ttlSeconds = SERVER_CERT_TTL_SECONDS): Promise<IssuedCertificate> {
    const bad = ips.filter((ip) => isIP(ip) === 0);
    if (bad.length > 0) throw new CaError('CA_REJECTED', `issueServerCertificate: not IP addresses: ${bad.join(', ')}`);
    if (dnsNames.length + ips.length === 0) throw new CaError('CA_REJECTED', 'issueServerCertificate: at least one DNS name or IP is required');
    const keys = await crypto.subtle.generateKey(ECDSA_P256_SHA256, true, ['sign', 'verify']);
    const cert = await this.#issue({
      publicKey: keys.publicKey,
      ttlSeconds,
      subject: `CN=${dnsNames[0] ?? ips[0] ?? ''}`,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth], false),
        new x509.SubjectAlternativeNameExtension([
          ...dnsNames.map((value) => ({ type: 'dns' as const, value })),
          ...ips.map((value) => ({ type: 'ip' as const, value })),
        ], false),
      ],
    });
    const certPem = pem(cert);
    return {
      certPem,
      privateKeyPem: exportPkcs8(keys.privateKey),
      chainPem: [certPem, ...(this.#chainElement === undefined ? [] : splitPems(this.#chainElement))],
      rootsPem: this.rootsPem,
    };
  }

  async #issue(args: {
    publicKey: webcrypto.CryptoKey | x509.PublicKey;
    ttlSeconds: number;
    subject: string | undefined;
    extensions: x509.Extension[];
  }): Promise<x509.X509Certificate> {
    const now = this.#clock.now();
    const caNotAfter = this.#signingCert.notAfter.getTime();
    const notAfter = Math.min(now + args.ttlSeconds * 1000, caNotAfter);
    if (notAfter <= now) throw new CaError('CA_REJECTED', `the CA certificate expired at ${new Date(caNotAfter).toISOString()}`);
    return x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: args.subject ?? '',
      issuer: this.#signingCert.subjectName,
      notBefore: new Date(Math.max(now - BACKDATE_MS, this.#signingCert.notBefore.getTime())),
      notAfter: new Date(notAfter),
      publicKey: args.publicKey,
      signingKey: this.#signingKey.key,
      signingAlgorithm: this.#signingKey.algorithm,
      extensions: [...args.extensions, await x509.AuthorityKeyIdentifierExtension.create(this.#signingCert, false, crypto)],
    }, crypto);
  }

  #answer(leaf: x509.X509Certificate): readonly string[] {
    return [pem(leaf), ...(this.#chainElement === undefined ? [] : [this.#chainElement]), this.rootsPem.join('')];
  }
}

function pem(cert: x509.X509Certificate): string {
  return `${cert.toString('pem')}\n`;
}

function splitPems(text: string): string[] {
  const parsed = parseCertificates(text, 'chain');
  return parsed.ok ? parsed.value.map((c) => c.pem) : [];
}

function exportPkcs8(key: webcrypto.CryptoKey): string {
  return String(KeyObject.from(key).export({ type: 'pkcs8', format: 'pem' }));
}

/** 128 random bits, positive and non-zero, as RFC 5280 asks (at most 20 octets). */
function randomSerial(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}

function publicKeyProblem(algorithm: webcrypto.Algorithm): string | undefined {
  const a = algorithm as Partial<webcrypto.EcKeyAlgorithm & webcrypto.RsaHashedKeyAlgorithm>;
  if (a.name === 'ECDSA' && (a.namedCurve === 'P-256' || a.namedCurve === 'P-384')) return undefined;
  if ((a.name === 'RSASSA-PKCS1-v1_5' || a.name === 'RSA-PSS') && (a.modulusLength ?? 0) >= 2048) return undefined;
  return `unsupported public key ${a.name ?? '?'}${a.namedCurve ? ` ${a.namedCurve}` : ''}${a.modulusLength ? ` ${a.modulusLength} bits` : ''}; expected ECDSA P-256/P-384 or RSA >= 2048 bits`;
}

async function importSigningKey(keyPem: string): Promise<Result<{ signing: SigningKey; pkcs8Pem: string }>> {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch {
    return fail(rejection('ca.key', 'not a PEM private key (PKCS#8, SEC1 EC or PKCS#1 RSA)'));
  }
  const pkcs8Der = key.export({ type: 'pkcs8', format: 'der' });
  const pkcs8Pem = String(key.export({ type: 'pkcs8', format: 'pem' }));
  let algorithm: (webcrypto.EcKeyImportParams & webcrypto.EcdsaParams) | webcrypto.RsaHashedImportParams;
  if (key.asymmetricKeyType === 'ec') {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === 'prime256v1') algorithm = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    else if (curve === 'secp384r1') algorithm = { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' };
    else return fail(rejection('ca.key', `unsupported EC curve ${curve ?? '?'}; expected P-256 or P-384`));
  } else if (key.asymmetricKeyType === 'rsa') {
    algorithm = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' };
  } else {
    return fail(rejection('ca.key', `unsupported key type ${key.asymmetricKeyType ?? '?'}; expected EC or RSA`));
  }
  try {
    const imported = await crypto.subtle.importKey('pkcs8', pkcs8Der, algorithm, false, ['sign']);
    return ok({ signing: { key: imported, algorithm }, pkcs8Pem });
  } catch (err) {
    return fail(rejection('ca.key', `cannot use key for signing: ${err instanceof Error ? err.message : String(err)}`));
  }
}

function keyMatchesCert(pkcs8Pem: string, cert: ParsedCertificate): boolean {
  try {
    const ours = createPublicKey(createPrivateKey(pkcs8Pem)).export({ type: 'spki', format: 'der' });
    return ours.equals(cert.cert.publicKey.export({ type: 'spki', format: 'der' }));
  } catch {
    return false;
  }
}
