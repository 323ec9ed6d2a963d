/**
 * Pure peer-certificate checks for HBONE mTLS, in both directions
 * (reliability.md 5.3). Stricter than ztunnel, which accepts any chain to the
 * workload roots with at least one URI SAN in the right trust domain:
 *
 * - the chain (leaf, then the intermediates the peer presented) must reach one
 *   of the workload trust roots, each link signed by the next, every
 *   certificate within its validity at `now`, intermediates CAs allowed to sign,
 *   path-length constraints respected;
 * - the leaf is not a CA, may not sign certificates or CRLs, carries the EKU for
 *   its role (clientAuth for a client, serverAuth for a server) when it carries
 *   an EKU at all, and has no critical extension we do not understand;
 * - the leaf carries exactly one URI SAN (SPIFFE X.509-SVID), read from the DER
 *   (never Node's stringified SAN), which is a well-formed
 *   `spiffe://<td>/ns/<ns>/sa/<sa>` (no percent-encoding, query, fragment, NUL,
 *   upper-case trust domain, trailing slash, empty or dot segments; at most
 *   2048 bytes); DNS names, e-mail addresses and the subject never count;
 * - a client's trust domain equals ours (server side); a server's identity is
 *   one of the expected identities (client side).
 *
 * Every failed check is reported (not only the first), each with the check that
 * failed so a metric can count refusals per reason.
 */
import { X509Certificate } from 'node:crypto';
import { fail, identityEquals, identityToString, ok, parseIdentity, type Identity, type Rejection, type Result } from '@ambient/control';
import {
  KEY_USAGE,
  OID_AUTHORITY_KEY_ID,
  OID_BASIC_CONSTRAINTS,
  OID_CERTIFICATE_POLICIES,
  OID_EKU_ANY,
  OID_EKU_CLIENT_AUTH,
  OID_EKU_SERVER_AUTH,
  OID_EXT_KEY_USAGE,
  OID_KEY_USAGE,
  OID_SUBJECT_ALT_NAME,
  OID_SUBJECT_KEY_ID,
  readBasicConstraints,
  readCertificate,
  readExtendedKeyUsage,
  readKeyUsage,
  readSubjectAltNames,
  type CertificateFields,
} from './der.js';

/** Which part of the verification refused the peer. */
export type PeerCheck =
  | 'missing' //             no certificate at all
  | 'encoding' //            the DER could not be read
  | 'chain' //               does not chain to the workload trust roots
  | 'validity' //            expired or not yet valid (leaf, intermediate or root)
  | 'leaf-ca' //             the leaf is a CA or may sign certificates/CRLs
  | 'key-usage' //           keyUsage or extendedKeyUsage does not fit the role
  | 'critical-extension' //  a critical extension we cannot evaluate
  | 'san' //                 not exactly one URI SAN
  | 'spiffe-id' //           the URI SAN is not a well-formed Istio SPIFFE ID
  | 'trust-domain' //        a client from another trust domain
  | 'identity'; //           a server that is not one of the expected identities

export interface PeerRejection extends Rejection {
  readonly code: 'PEER_IDENTITY_INVALID';
  readonly check: PeerCheck;
}

/** What the peer must prove. `client`: we are the server; `server`: we are the client. */
export type PeerExpectation =
  | { readonly peer: 'client'; readonly trustDomain: string }
  | { readonly peer: 'server'; readonly identities: readonly Identity[] };

export interface VerifyPeerInput {
  /** The peer's leaf first, then the intermediates it presented (extra certificates are ignored). */
  readonly chain: readonly X509Certificate[];
  /** The workload trust roots (the roots of our own workload certificate). */
  readonly roots: readonly X509Certificate[];
  /** Wall-clock epoch milliseconds (Clock.now()). */
  readonly now: number;
  readonly expect: PeerExpectation;
}

export interface VerifiedPeer {
  readonly identity: Identity;
  /** The URI SAN exactly as presented. */
  readonly spiffeId: string;
  readonly certificate: X509Certificate;
}

export const MAX_SPIFFE_ID_BYTES = 2048;
/** Intermediates allowed between a leaf and a root (Istio uses at most a few). */
export const MAX_INTERMEDIATES = 8;

/** Extensions a leaf may mark critical: the ones checked here, plus identifiers and policies. */
const UNDERSTOOD_LEAF_EXTENSIONS: ReadonlySet<string> = new Set([
  OID_SUBJECT_ALT_NAME, OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_EXT_KEY_USAGE,
  OID_SUBJECT_KEY_ID, OID_AUTHORITY_KEY_ID, OID_CERTIFICATE_POLICIES,
]);

function refuse(check: PeerCheck, field: string, reason: string): PeerRejection {
  return { code: 'PEER_IDENTITY_INVALID', check, field, reason };
}

/** Parses the workload trust roots (one PEM each). */
export function parseTrustRoots(pems: readonly string[]): Result<readonly X509Certificate[]> {
  const roots: X509Certificate[] = [];
  const errors: Rejection[] = [];
  pems.forEach((pem, i) => {
    try {
      roots.push(new X509Certificate(pem));
    } catch {
      errors.push({ field: `roots[${i}]`, reason: 'not a PEM certificate' });
    }
  });
  if (roots.length === 0 && errors.length === 0) errors.push({ field: 'roots', reason: 'no trust roots' });
  return errors.length > 0 ? fail(...errors) : ok(roots);
}

/**
 * The SPIFFE identity of a single certificate's URI SAN, with the SVID rules on
 * the SAN itself (exactly one URI, well-formed, critical when the subject is
 * empty). Does not look at the chain, key usage or time.
 */
export function spiffeIdOf(fields: CertificateFields): Result<{ identity: Identity; spiffeId: string }, PeerRejection> {
  const ext = fields.extensions.find((e) => e.oid === OID_SUBJECT_ALT_NAME);
  if (ext === undefined) {
    return fail(refuse('san', 'subjectAltName', 'the certificate has no subjectAltName; a SPIFFE ID URI SAN is required'));
  }
  const names = readSubjectAltNames(ext.value);
  if (!names.ok) return fail(refuse('encoding', 'subjectAltName', names.errors.map((e) => e.reason).join('; ')));
  const uris = names.value.filter((n) => n.type === 'uri').map((n) => n.value);
  const errors: PeerRejection[] = [];
  if (uris.length === 0) {
    const found = names.value.map((n) => (n.type === 'other' ? `[${n.tag}]` : n.type)).join(', ');
    errors.push(refuse('san', 'subjectAltName', `no URI SAN (found ${found}); DNS names, e-mail addresses and the subject never count as a SPIFFE ID`));
  } else if (uris.length > 1) {
    errors.push(refuse('san', 'subjectAltName', `an X.509-SVID carries exactly one URI SAN, found ${uris.length}: ${uris.map(quote).join(', ')}`));
  }
  if (fields.subjectEmpty && !ext.critical) {
    errors.push(refuse('san', 'subjectAltName', 'the subject is empty, so subjectAltName must be critical (RFC 5280 4.2.1.6)'));
  }
  if (uris.length !== 1) return fail(...errors);
  const uri = uris[0] as string;
  const problem = spiffeIdProblem(uri);
  if (problem !== undefined) errors.push(refuse('spiffe-id', 'subjectAltName.uri', problem));
  if (errors.length > 0) return fail(...errors);
  const parsed = parseIdentity(uri);
  if (!parsed.ok) return fail(refuse('spiffe-id', 'subjectAltName.uri', parsed.errors.map((e) => e.reason).join('; ')));
  return ok({ identity: parsed.value, spiffeId: uri });
}

/** Why `uri` is not an Istio SPIFFE ID, or undefined. */
export function spiffeIdProblem(uri: string): string | undefined {
  if (uri.length > MAX_SPIFFE_ID_BYTES) return `SPIFFE ID is ${uri.length} bytes, more than ${MAX_SPIFFE_ID_BYTES}`;
  if (/[^\x21-\x7e]/.test(uri)) return `${quote(uri)} contains a control, space or non-ASCII character`;
  if (uri.includes('%')) return `${quote(uri)} is percent-encoded; SPIFFE IDs never are`;
  const parsed = parseIdentity(uri);
  if (!parsed.ok) return parsed.errors.map((e) => e.reason).join('; ');
  return undefined;
}

/** Runs every check; the verified identity or every reason the peer was refused. */
export function verifyPeerCertificate(input: VerifyPeerInput): Result<VerifiedPeer, PeerRejection> {
  const leaf = input.chain[0];
  if (leaf === undefined) return fail(refuse('missing', 'certificate', 'the peer presented no certificate'));
  const fields = readCertificate(leaf.raw);
  if (!fields.ok) return fail(refuse('encoding', 'certificate', fields.errors.map((e) => e.reason).join('; ')));

  const errors: PeerRejection[] = [];
  const id = spiffeIdOf(fields.value);
  if (!id.ok) errors.push(...id.errors);
  errors.push(...leafProblems(fields.value, input.expect.peer));
  errors.push(...validityProblems('certificate', fields.value, input.now));
  errors.push(...pathProblems(leaf, input.chain.slice(1), input.roots, input.now));

  if (id.ok) {
    const { identity, spiffeId } = id.value;
    if (input.expect.peer === 'client') {
      if (identity.trustDomain !== input.expect.trustDomain) {
        errors.push(refuse('trust-domain', 'subjectAltName.uri', `client identity ${quote(spiffeId)} is in trust domain "${identity.trustDomain}", expected "${input.expect.trustDomain}"`));
      }
    } else if (!input.expect.identities.some((e) => identityEquals(e, identity))) {
      const expected = input.expect.identities.map((e) => quote(identityToString(e))).join(', ') || 'none';
      errors.push(refuse('identity', 'subjectAltName.uri', `server identity ${quote(spiffeId)} is not one of the expected identities (${expected})`));
    }
  }
  if (errors.length > 0 || !id.ok) return fail(...errors);
  return ok({ identity: id.value.identity, spiffeId: id.value.spiffeId, certificate: leaf });
}

function leafProblems(fields: CertificateFields, peer: 'client' | 'server'): PeerRejection[] {
  const errors: PeerRejection[] = [];
  for (const ext of fields.extensions) {
    if (ext.critical && !UNDERSTOOD_LEAF_EXTENSIONS.has(ext.oid)) {
      errors.push(refuse('critical-extension', 'certificate', `unsupported critical extension ${ext.oid}`));
    }
  }
  const bc = fields.extensions.find((e) => e.oid === OID_BASIC_CONSTRAINTS);
  if (bc !== undefined) {
    const parsed = readBasicConstraints(bc.value);
    if (!parsed.ok) errors.push(refuse('encoding', 'basicConstraints', parsed.errors.map((e) => e.reason).join('; ')));
    else if (parsed.value.ca) errors.push(refuse('leaf-ca', 'basicConstraints', 'the peer certificate is a CA (cA=true); a workload certificate never is'));
  }
  const ku = fields.extensions.find((e) => e.oid === OID_KEY_USAGE);
  if (ku !== undefined) {
    const parsed = readKeyUsage(ku.value);
    if (!parsed.ok) {
      errors.push(refuse('encoding', 'keyUsage', parsed.errors.map((e) => e.reason).join('; ')));
    } else {
      if (parsed.value.has(KEY_USAGE.keyCertSign) || parsed.value.has(KEY_USAGE.cRLSign)) {
        errors.push(refuse('leaf-ca', 'keyUsage', 'the peer certificate may sign certificates or CRLs (keyCertSign/cRLSign)'));
      }
      if (!parsed.value.has(KEY_USAGE.digitalSignature)) {
        errors.push(refuse('key-usage', 'keyUsage', 'keyUsage lacks digitalSignature, which TLS 1.3 authentication needs'));
      }
    }
  }
  const eku = fields.extensions.find((e) => e.oid === OID_EXT_KEY_USAGE);
  if (eku !== undefined) {
    const parsed = readExtendedKeyUsage(eku.value);
    const needed = peer === 'client' ? OID_EKU_CLIENT_AUTH : OID_EKU_SERVER_AUTH;
    if (!parsed.ok) errors.push(refuse('encoding', 'extendedKeyUsage', parsed.errors.map((e) => e.reason).join('; ')));
    else if (!parsed.value.has(needed) && !parsed.value.has(OID_EKU_ANY)) {
      errors.push(refuse('key-usage', 'extendedKeyUsage', `a ${peer} certificate needs the ${peer === 'client' ? 'clientAuth' : 'serverAuth'} extended key usage`));
    }
  }
  return errors;
}

function validityProblems(field: string, fields: CertificateFields, now: number): PeerRejection[] {
  if (now < fields.notBefore) return [refuse('validity', field, `not valid before ${new Date(fields.notBefore).toISOString()}`)];
  if (now > fields.notAfter) return [refuse('validity', field, `expired at ${new Date(fields.notAfter).toISOString()}`)];
  return [];
}

function issuedBy(cert: X509Certificate, issuer: X509Certificate): boolean {
  try {
    return cert.checkIssued(issuer) && cert.verify(issuer.publicKey);
  } catch {
    return false;
  }
}

function name(cert: X509Certificate): string {
  return quote(cert.subject.replace(/\n/g, ', ') || cert.subjectAltName || '(empty subject)');
}

/** Walks leaf → intermediates → root, checking each issuer as a CA. */
function pathProblems(leaf: X509Certificate, pool: readonly X509Certificate[], roots: readonly X509Certificate[], now: number): PeerRejection[] {
  if (roots.length === 0) return [refuse('chain', 'roots', 'no workload trust roots to verify against')];
  const errors: PeerRejection[] = [];
  const used = new Set<X509Certificate>();
  let current = leaf;
  for (let below = 0; ; below++) {
    const root = roots.find((r) => issuedBy(current, r));
    const issuer = root ?? pool.find((c) => !used.has(c) && c !== current && issuedBy(current, c));
    if (issuer === undefined) {
      errors.push(refuse('chain', 'certificate', `${current === leaf ? 'the peer certificate' : `intermediate ${name(current)}`} is not signed by a workload trust root or a presented intermediate`));
      return errors;
    }
    const label = root !== undefined ? `root ${name(issuer)}` : `intermediate ${name(issuer)}`;
    const fields = readCertificate(issuer.raw);
    if (!fields.ok) {
      errors.push(refuse('encoding', label, fields.errors.map((e) => e.reason).join('; ')));
      return errors;
    }
    errors.push(...validityProblems(label, fields.value, now));
    errors.push(...issuerProblems(label, fields.value, below));
    if (root !== undefined) return errors;
    if (below >= MAX_INTERMEDIATES) {
      errors.push(refuse('chain', 'certificate', `more than ${MAX_INTERMEDIATES} intermediates`));
      return errors;
    }
    used.add(issuer);
    current = issuer;
  }
}

/** An issuer must be a CA allowed to sign certificates, with room in its path length. */
function issuerProblems(label: string, fields: CertificateFields, intermediatesBelow: number): PeerRejection[] {
  const errors: PeerRejection[] = [];
  const bc = fields.extensions.find((e) => e.oid === OID_BASIC_CONSTRAINTS);
  const parsed = bc === undefined ? undefined : readBasicConstraints(bc.value);
  if (parsed === undefined || !parsed.ok || !parsed.value.ca) {
    errors.push(refuse('chain', label, 'is not a CA (basicConstraints cA=true is required to sign certificates)'));
  } else if (parsed.value.pathLength !== undefined && intermediatesBelow > parsed.value.pathLength) {
    errors.push(refuse('chain', label, `pathLenConstraint ${parsed.value.pathLength} allows fewer intermediates than the ${intermediatesBelow} below it`));
  }
  const ku = fields.extensions.find((e) => e.oid === OID_KEY_USAGE);
  if (ku !== undefined) {
    const usage = readKeyUsage(ku.value);
    if (!usage.ok || !usage.value.has(KEY_USAGE.keyCertSign)) errors.push(refuse('chain', label, 'keyUsage does not allow keyCertSign'));
  }
  return errors;
}

function quote(s: string): string {
  return JSON.stringify(s);
}
