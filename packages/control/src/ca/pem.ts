/**
 * PEM helpers shared by the CA client, the chain verifier, the local CA and the
 * control-plane channel: split concatenated PEM text into blocks and parse
 * certificates without throwing.
 */
import { X509Certificate } from 'node:crypto';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';

interface PemBlock {
  /** The label after BEGIN, e.g. "CERTIFICATE" or "PRIVATE KEY". */
  readonly label: string;
  /** The whole block, BEGIN to END line, followed by "\n". */
  readonly pem: string;
}

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/** Every PEM block in `text`, in order. Text between blocks is ignored (as OpenSSL does). */
function pemBlocks(text: string): PemBlock[] {
  const out: PemBlock[] = [];
  for (const m of text.matchAll(BLOCK)) out.push({ label: m[1] ?? '', pem: `${m[0]}\n` });
  return out;
}

/** A parsed certificate together with its normalized PEM. */
export interface ParsedCertificate {
  readonly pem: string;
  readonly cert: X509Certificate;
}

/**
 * Parses every block of `text` as a certificate. Fails when there is none, when
 * a block is not a CERTIFICATE, or when one does not parse; `field` names the
 * input in the rejections.
 */
export function parseCertificates(text: string, field: string): Result<ParsedCertificate[]> {
  const blocks = pemBlocks(text);
  if (blocks.length === 0) return fail(rejection(field, 'expected one or more PEM certificates, found none'));
  const errors: Rejection[] = [];
  const certs: ParsedCertificate[] = [];
  blocks.forEach((b, i) => {
    const where = blocks.length > 1 ? `${field}[${i}]` : field;
    if (b.label !== 'CERTIFICATE') {
      errors.push(rejection(where, `expected a CERTIFICATE PEM block, found "${b.label}"`));
      return;
    }
    const cert = parseCertificate(b.pem);
    if (cert === undefined) errors.push(rejection(where, 'PEM block is not a valid X.509 certificate'));
    else certs.push({ pem: cert.toString(), cert });
  });
  return errors.length > 0 ? fail(...errors) : ok(certs);
}

/** Parses exactly one certificate. */
export function parseSingleCertificate(text: string, field: string): Result<ParsedCertificate> {
  const all = parseCertificates(text, field);
  if (!all.ok) return all;
  if (all.value.length !== 1) return fail(rejection(field, `expected exactly one certificate, found ${all.value.length}`));
  return ok(all.value[0] as ParsedCertificate);
}

function parseCertificate(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}
