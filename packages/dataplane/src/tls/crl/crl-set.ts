/**
 * Certificate revocation lists (CRL_PATH, ztunnel src/tls/crl.rs + revocation.rs),
 * pure: parse the file's content into CRLs, and answer whether a peer chain
 * contains a revoked certificate.
 *
 * The file, as ztunnel reads it: empty (or only whitespace) means no
 * revocations; text starting with `-----BEGIN` is PEM with any number of
 * `X509 CRL` blocks (other PEM blocks are skipped; none at all means no
 * revocations); anything else is one DER CRL. Beyond ztunnel we also read
 * `CRL` blocks (the label some libraries, e.g. @peculiar/x509, write). If any CRL in the file cannot be
 * parsed the whole file is refused, so the caller keeps its last good set.
 *
 * The check, with webpki's policy as ztunnel configures it
 * (RevocationCheckDepth::Chain, UnknownStatusPolicy::Allow,
 * ExpirationPolicy::Ignore):
 * - every certificate of the chain except the trust anchor is checked (the
 *   leaf and each intermediate);
 * - a CRL applies to a certificate when its issuer Name equals the
 *   certificate's issuer Name byte for byte and it is signed by that issuer's
 *   key (found in the rest of the chain or the trust roots), and the issuer may
 *   sign CRLs (keyUsage cRLSign, when it carries keyUsage);
 * - the certificate is revoked when such a CRL lists its serial number;
 * - no applicable CRL means "status unknown", which is allowed (fail-open);
 * - a CRL past its nextUpdate still applies (its expiry is ignored, not the
 *   CRL: revocations never lapse because a CRL was not refreshed).
 * Differs from webpki: a CRL naming the issuer but not verifying against it
 * is skipped (reported through `ignored`) instead of failing the handshake;
 * webpki also uses only the first CRL per issuer, we use all of them.
 *
 * Invariants: a CrlSet never changes after construction (a reload builds a new
 * one); its signature memo is bounded.
 */
import 'reflect-metadata';
import { X509Crl } from '@peculiar/x509';
import { verify as cryptoVerify, type X509Certificate } from 'node:crypto';
import { fail, ok, type Rejection, type Result } from '@ambient/control';
import { KEY_USAGE, OID_KEY_USAGE, readCertificate, readKeyUsage } from '../der.js';
import { certificateIssuerAndSerial, crlIssuer, normalizeSerial, signedParts, type SignedParts } from './der-parts.js';

export interface ParsedCrl {
  /** 1-based position in the file. */
  readonly index: number;
  /** The issuer, readable (for logs). */
  readonly issuer: string;
  /** The issuer Name's DER. */
  readonly issuerDer: Buffer;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date | undefined;
  /** Normalized serials (lower-case hex, no leading zero octets). */
  readonly revoked: ReadonlySet<string>;
  readonly signed: SignedParts;
}

export interface ParsedCrlFile {
  readonly crls: readonly ParsedCrl[];
  /** PEM blocks other than X509 CRL that were skipped. */
  readonly skippedBlocks: number;
  readonly format: 'empty' | 'pem' | 'der';
}

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;
const BASE64 = /^[A-Za-z0-9+/=\s]*$/;

/** Parses a CRL file's content. Refuses the whole file when one CRL in it is malformed. */
export function parseCrlFile(data: Uint8Array): Result<ParsedCrlFile> {
  const text = Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('latin1');
  if (text.trim() === '') return ok({ crls: [], skippedBlocks: 0, format: 'empty' });
  const ders: Uint8Array[] = [];
  let skippedBlocks = 0;
  let format: 'pem' | 'der' = 'der';
  if (text.trimStart().startsWith('-----BEGIN')) {
    format = 'pem';
    let matched = 0;
    for (const m of text.matchAll(PEM_BLOCK)) {
      matched++;
      const label = m[1] as string;
      const body = m[2] as string;
      if (label !== 'X509 CRL' && label !== 'CRL') {
        skippedBlocks++;
        continue;
      }
      if (!BASE64.test(body)) return fail({ field: `crl[${ders.length + 1}]`, reason: 'the PEM block is not base64' });
      ders.push(Buffer.from(body.replace(/\s+/g, ''), 'base64'));
    }
    const begins = text.split('-----BEGIN ').length - 1;
    if (begins !== matched) return fail({ field: 'crl', reason: `malformed PEM: ${begins} BEGIN markers but ${matched} complete blocks` });
  } else {
    ders.push(data);
  }
  const crls: ParsedCrl[] = [];
  const errors: Rejection[] = [];
  ders.forEach((der, i) => {
    const parsed = parseCrl(der, i + 1);
    if (parsed.ok) crls.push(parsed.value);
    else errors.push(...parsed.errors);
  });
  return errors.length > 0 ? fail(...errors) : ok({ crls, skippedBlocks, format });
}

function parseCrl(der: Uint8Array, index: number): Result<ParsedCrl> {
  const field = `crl[${index}]`;
  const signed = signedParts(der);
  const issuerDer = crlIssuer(der);
  if (signed === undefined || issuerDer === undefined) return fail({ field, reason: 'not a DER CertificateList (RFC 5280 5.1)' });
  let crl: X509Crl;
  try {
    crl = new X509Crl(Buffer.from(der));
  } catch (err) {
    return fail({ field, reason: `not a valid CRL: ${err instanceof Error ? err.message : String(err)}` });
  }
  try {
    const revoked = new Set(crl.entries.map((e) => normalizeSerial(e.serialNumber)));
    return ok({ index, issuer: crl.issuer, issuerDer, thisUpdate: crl.thisUpdate, nextUpdate: crl.nextUpdate, revoked, signed });
  } catch (err) {
    return fail({ field, reason: `unreadable CRL entries: ${err instanceof Error ? err.message : String(err)}` });
  }
}

export type RevocationVerdict =
  | { readonly revoked: false }
  | {
      readonly revoked: true;
      /** The revoked certificate's serial (lower-case hex). */
      readonly serial: string;
      readonly subject: string;
      readonly issuer: string;
      /** 0 = the leaf, 1 = the first intermediate, ... */
      readonly depth: number;
      /** Which CRL of the file (1-based) lists it. */
      readonly crl: number;
    };

export interface CrlSetEvents {
  /** A CRL names a chain's issuer but cannot be trusted for it; reported once per CRL and issuer. */
  ignored?(crl: ParsedCrl, issuerSubject: string, reason: string): void;
}

const NOT_REVOKED: RevocationVerdict = { revoked: false };
const MEMO_LIMIT = 4096;

/** Hash for node:crypto.verify per signature algorithm OID (null: the key type implies it). */
const SIGNATURE_HASH: ReadonlyMap<string, string | null> = new Map([
  ['1.2.840.10045.4.3.2', 'sha256'],
  ['1.2.840.10045.4.3.3', 'sha384'],
  ['1.2.840.10045.4.3.4', 'sha512'],
  ['1.2.840.113549.1.1.11', 'sha256'],
  ['1.2.840.113549.1.1.12', 'sha384'],
  ['1.2.840.113549.1.1.13', 'sha512'],
  ['1.3.101.112', null],
  ['1.3.101.113', null],
]);

/** Why `crl` cannot be trusted as issued by `issuer`, or undefined when it can. */
export function crlTrustProblem(crl: ParsedCrl, issuer: X509Certificate): string | undefined {
  const hash = SIGNATURE_HASH.get(crl.signed.signatureAlgorithm);
  if (hash === undefined) return `unsupported CRL signature algorithm ${crl.signed.signatureAlgorithm}`;
  let valid: boolean;
  try {
    valid = cryptoVerify(hash, crl.signed.tbs, issuer.publicKey, crl.signed.signature);
  } catch {
    valid = false;
  }
  if (!valid) return "the CRL signature does not verify with the issuer's public key";
  const fields = readCertificate(issuer.raw);
  const ku = fields.ok ? fields.value.extensions.find((e) => e.oid === OID_KEY_USAGE) : undefined;
  if (ku !== undefined) {
    const usage = readKeyUsage(ku.value);
    if (!usage.ok || !usage.value.has(KEY_USAGE.cRLSign)) return 'the issuer certificate is not allowed to sign CRLs (keyUsage lacks cRLSign)';
  }
  return undefined;
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/** Node's X509Certificate.subject is undefined for an empty subject (as Istio leaves have). */
function oneLine(name: string | undefined): string {
  return (name ?? '').replace(/\n/g, ', ');
}

/** An immutable set of CRLs and the revocation check over it. */
export class CrlSet {
  static readonly EMPTY = new CrlSet([]);

  readonly crls: readonly ParsedCrl[];
  readonly #byIssuer = new Map<string, ParsedCrl[]>();
  readonly #trust = new Map<string, string | undefined>();
  readonly #events: CrlSetEvents;

  constructor(crls: readonly ParsedCrl[], events: CrlSetEvents = {}) {
    this.crls = crls;
    this.#events = events;
    for (const crl of crls) {
      const key = crl.issuerDer.toString('hex');
      const list = this.#byIssuer.get(key);
      if (list === undefined) this.#byIssuer.set(key, [crl]);
      else list.push(crl);
    }
  }

  /** Revoked serials across all CRLs. */
  get revokedCount(): number {
    return this.crls.reduce((n, c) => n + c.revoked.size, 0);
  }

  /**
   * Whether any certificate of `chain` (leaf first, then its issuers as
   * presented or as Node completed it) other than the trust anchor is revoked.
   * `roots` are the workload trust roots, where the last issuer is looked up.
   */
  check(chain: readonly X509Certificate[], roots: readonly X509Certificate[] = []): RevocationVerdict {
    if (this.crls.length === 0) return NOT_REVOKED;
    for (let depth = 0; depth < chain.length; depth++) {
      const cert = chain[depth] as X509Certificate;
      if (depth > 0 && roots.some((r) => r.fingerprint256 === cert.fingerprint256)) break; // the trust anchor
      const parts = certificateIssuerAndSerial(cert.raw);
      if (parts === undefined) break;
      const candidates = this.#byIssuer.get(parts.issuer.toString('hex'));
      if (candidates === undefined) continue;
      if (issuedBy(cert, cert)) break; // self-signed: a trust anchor, never checked
      const issuer = [...chain.slice(depth + 1), ...roots].find((c) => issuedBy(cert, c));
      if (issuer === undefined) continue; // unknown status: allowed
      for (const crl of candidates) {
        if (!crl.revoked.has(parts.serial) || !this.#trusted(crl, issuer)) continue;
        return { revoked: true, serial: parts.serial, subject: oneLine(cert.subject) || (cert.subjectAltName ?? ''), issuer: crl.issuer, depth, crl: crl.index };
      }
    }
    return NOT_REVOKED;
  }

  #trusted(crl: ParsedCrl, issuer: X509Certificate): boolean {
    const key = `${crl.index}|${issuer.fingerprint256}`;
    if (this.#trust.has(key)) return this.#trust.get(key) === undefined;
    const problem = crlTrustProblem(crl, issuer);
    if (this.#trust.size >= MEMO_LIMIT) this.#trust.clear();
    this.#trust.set(key, problem);
    if (problem !== undefined) this.#events.ignored?.(crl, oneLine(issuer.subject), problem);
    return problem === undefined;
  }
}
