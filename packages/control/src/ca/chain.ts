/**
 * Verifies a CA answer before anything is installed (ztunnel `tls/certificate.rs`
 * WorkloadCertificate::new and the SAN check in `identity/caclient.rs`, made
 * stricter). `cert_chain` is read as istiod writes it: element 0 is the leaf,
 * the last element holds the trust root(s) (possibly several concatenated PEMs,
 * all of which are trusted), and the elements in between hold intermediates
 * (an element may hold several PEMs; istiod sends a plugged-in CA's whole
 * cert-chain.pem as one element).
 *
 * Checks, all against the injected time `now`:
 * - the leaf is not a CA, has no keyCertSign/cRLSign, and carries exactly one
 *   URI SAN, which is the SPIFFE ID that was asked for (ztunnel compares the
 *   first SPIFFE SAN; the SPIFFE X.509-SVID rules require exactly one URI SAN);
 * - the leaf chains through intermediates (each a CA, each signature verified)
 *   to one of the returned roots;
 * - every certificate on that path is within its validity window;
 * - the leaf's public key is the one of our private key.
 * Never throws: failures are Rejections tagged with a CaErrorCode.
 */
import { createPrivateKey, createPublicKey, type X509Certificate } from 'node:crypto';
import { identityToString, type Identity } from '../model/identity.js';
import { fail, formatRejections, ok, rejection, type Rejection, type Result } from '../result.js';
import { parseCertificates, parseSingleCertificate, type ParsedCertificate } from './pem.js';
import { CaError, type CaErrorCode, type WorkloadCertificate } from './types.js';
import { keyUsages, subjectAltNames, x509 } from './x509.js';

export interface ChainRejection extends Rejection {
  readonly code: CaErrorCode;
}

export interface VerifyChainInput {
  /** IstioCertificateResponse.cert_chain as received. */
  readonly certChain: readonly string[];
  /** The identity the CSR asked for. */
  readonly identity: Identity;
  /** Our PKCS#8 private key; the leaf must certify its public key. */
  readonly privateKeyPem: string;
  /** Wall-clock time in epoch milliseconds (Clock.now()). */
  readonly now: number;
}

function reject(code: CaErrorCode, field: string, reason: string): ChainRejection {
  return { ...rejection(field, reason), code };
}

/** The verified certificate, or every reason it was refused. */
export function verifyCertificateChain(input: VerifyChainInput): Result<WorkloadCertificate, ChainRejection> {
  const { certChain, identity, now } = input;
  const n = certChain.length;
  if (n === 0) return fail(reject('CA_BAD_RESPONSE', 'cert_chain', 'is empty; expected the leaf certificate followed by the root certificate(s)'));
  if (n === 1) return fail(reject('CA_BAD_RESPONSE', 'cert_chain', 'holds only a leaf; the last element must hold the root certificate(s)'));

  // Parse everything first: a response with an unparsable element is refused whole.
  const parseErrors: ChainRejection[] = [];
  const leafParsed = parseSingleCertificate(certChain[0] ?? '', 'cert_chain[0]');
  if (!leafParsed.ok) parseErrors.push(...tag('CA_BAD_RESPONSE', leafParsed.errors));
  const intermediates: ParsedCertificate[] = [];
  for (let i = 1; i < n - 1; i++) {
    const parsed = parseCertificates(certChain[i] ?? '', `cert_chain[${i}]`);
    if (parsed.ok) intermediates.push(...parsed.value);
    else parseErrors.push(...tag('CA_BAD_RESPONSE', parsed.errors));
  }
  const rootsParsed = parseCertificates(certChain[n - 1] ?? '', `cert_chain[${n - 1}]`);
  if (!rootsParsed.ok) parseErrors.push(...tag('CA_BAD_RESPONSE', rootsParsed.errors));
  if (!leafParsed.ok || !rootsParsed.ok || parseErrors.length > 0) return fail(...parseErrors);

  const leaf = leafParsed.value;
  const roots = rootsParsed.value;
  const leafX509 = new x509.X509Certificate(leaf.cert.raw);
  const errors: ChainRejection[] = [];

  // Identity first: a certificate for someone else is the most important thing to report.
  const expected = identityToString(identity);
  const san = subjectAltNames(leafX509);
  const uris = (san?.names ?? []).filter((g) => g.type === 'url').map((g) => g.value);
  if (uris.length !== 1) {
    errors.push(reject('CA_IDENTITY_MISMATCH', 'cert_chain[0].subjectAltName', `expected exactly one URI SAN "${expected}", found ${uris.length === 0 ? 'none' : uris.map((u) => `"${u}"`).join(', ')}`));
  } else if (uris[0] !== expected) {
    errors.push(reject('CA_IDENTITY_MISMATCH', 'cert_chain[0].subjectAltName', `certificate is for "${uris[0]}", expected "${expected}"`));
  }

  if (leaf.cert.ca) errors.push(reject('CA_BAD_RESPONSE', 'cert_chain[0]', 'leaf certificate is a CA (basicConstraints cA=true)'));
  const usages = keyUsages(leafX509);
  if (usages !== undefined && (usages & (x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign)) !== 0) {
    errors.push(reject('CA_BAD_RESPONSE', 'cert_chain[0].keyUsage', 'leaf certificate may sign certificates or CRLs (keyCertSign/cRLSign)'));
  }

  const path = buildPath(leaf, intermediates, roots);
  if (!path.ok) {
    errors.push(...path.errors);
  } else {
    const checked: Array<[string, X509Certificate]> = [
      ['cert_chain[0]', leaf.cert],
      ...path.value.intermediates.map((c, i): [string, X509Certificate] => [`intermediate[${i}] (${oneLine(c.cert.subject)})`, c.cert]),
      [`root (${oneLine(path.value.root.cert.subject)})`, path.value.root.cert],
    ];
    for (const [field, cert] of checked) {
      const problem = validityProblem(cert, now);
      if (problem !== undefined) errors.push(reject('CA_EXPIRED', field, problem));
    }
  }

  if (!sameKey(input.privateKeyPem, leaf.cert)) {
    errors.push(reject('CA_BAD_RESPONSE', 'cert_chain[0]', 'leaf public key does not match the private key the CSR was made with'));
  }

  if (errors.length > 0 || !path.ok) return fail(...errors);
  const { notBefore, notAfter } = validity(leaf.cert);
  return ok({
    identity,
    privateKeyPem: input.privateKeyPem,
    chainPem: [leaf.pem, ...path.value.intermediates.map((c) => c.pem)],
    rootsPem: roots.map((r) => r.pem),
    leaf: leaf.cert,
    notBefore,
    notAfter,
  });
}

/** One CaError for a refused answer: the code of the first problem, every problem in the message. */
export function chainError(identity: Identity, errors: readonly ChainRejection[]): CaError {
  const code = errors[0]?.code ?? 'CA_BAD_RESPONSE';
  return new CaError(code, `CA response for ${identityToString(identity)} refused: ${formatRejections(errors)}`);
}

/** notBefore/notAfter in epoch milliseconds. */
export function validity(cert: X509Certificate): { notBefore: number; notAfter: number } {
  const parsed = new x509.X509Certificate(cert.raw);
  return { notBefore: parsed.notBefore.getTime(), notAfter: parsed.notAfter.getTime() };
}

export function validityProblem(cert: X509Certificate, now: number): string | undefined {
  const { notBefore, notAfter } = validity(cert);
  if (now < notBefore) return `not valid before ${new Date(notBefore).toISOString()} (now ${new Date(now).toISOString()})`;
  if (now > notAfter) return `expired at ${new Date(notAfter).toISOString()} (now ${new Date(now).toISOString()})`;
  return undefined;
}

function issuedBy(child: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return child.checkIssued(issuer) && child.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

/**
 * Walks from `start` up through `intermediates` (each must be a CA that signed
 * the previous link) until one of `roots` (a CA) signed the last link.
 * Returns the intermediates used, in order, and the root; undefined when there
 * is no such path.
 */
export function findPathToRoot(
  start: ParsedCertificate,
  intermediates: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
): { intermediates: ParsedCertificate[]; root: ParsedCertificate } | { intermediates: undefined; stuckAt: ParsedCertificate } {
  const used: ParsedCertificate[] = [];
  let current = start;
  for (let depth = 0; depth <= intermediates.length; depth++) {
    const root = roots.find((r) => r.cert.ca && issuedBy(current.cert, r.cert));
    if (root !== undefined) return { intermediates: used, root };
    const next = intermediates.find((c) => !used.includes(c) && c.cert.ca && issuedBy(current.cert, c.cert));
    if (next === undefined) break;
    used.push(next);
    current = next;
  }
  return { intermediates: undefined, stuckAt: current };
}

function buildPath(
  leaf: ParsedCertificate,
  intermediates: readonly ParsedCertificate[],
  roots: readonly ParsedCertificate[],
): Result<{ intermediates: ParsedCertificate[]; root: ParsedCertificate }, ChainRejection> {
  const path = findPathToRoot(leaf, intermediates, roots);
  if (path.intermediates !== undefined) return ok(path);
  const current = path.stuckAt;
  const who = current === leaf ? 'leaf certificate' : `intermediate "${oneLine(current.cert.subject)}"`;
  return fail(reject('CA_BAD_RESPONSE', 'cert_chain', `${who} (issuer "${oneLine(current.cert.issuer)}") is not signed by any returned root or CA intermediate`));
}

/** Node prints distinguished names one attribute per line. */
export function oneLine(dn: string): string {
  return dn.replace(/\n/g, ', ');
}

function sameKey(privateKeyPem: string, cert: X509Certificate): boolean {
  try {
    const ours = createPublicKey(createPrivateKey(privateKeyPem)).export({ type: 'spki', format: 'der' });
    const theirs = cert.publicKey.export({ type: 'spki', format: 'der' });
    return ours.equals(theirs);
  } catch {
    return false;
  }
}

function tag(code: CaErrorCode, errors: readonly Rejection[]): ChainRejection[] {
  return errors.map((e) => ({ ...e, code }));
}
