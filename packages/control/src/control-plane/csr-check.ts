/**
 * Checks a PEM PKCS#10 certificate signing request before the CA signs it:
 * it must parse, be self-signed by the key it carries, and name exactly the
 * identity the caller is authorized for as its only URI SAN.
 *
 * istiod ignores the CSR's SANs and stamps the authorized identity on the
 * leaf; we refuse a mismatching CSR instead, so a client bug surfaces as
 * INVALID_ARGUMENT here rather than as a certificate it did not ask for.
 */
import { crypto, subjectAltNames, x509 } from '../ca/x509.js';
import { fail, ok, rejection, type Result } from '../result.js';

/** Upper bound on the PEM we try to parse (a P-256 CSR with one SAN is well under 1 KiB). */
const MAX_CSR_PEM_BYTES = 64 * 1024;

/** Verifies the CSR and that its only URI SAN is `expectedUri`. */
export async function checkCsr(csrPem: string, expectedUri: string): Promise<Result<void>> {
  if (csrPem.trim() === '') return fail(rejection('csr', 'is empty; expected a PEM "CERTIFICATE REQUEST"'));
  if (csrPem.length > MAX_CSR_PEM_BYTES) {
    return fail(rejection('csr', `is ${csrPem.length} bytes; at most ${MAX_CSR_PEM_BYTES} are accepted`));
  }
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    return fail(rejection('csr', `is not a PEM PKCS#10 certificate request (${describe(err)})`));
  }
  try {
    if (!(await csr.verify(crypto))) return fail(rejection('csr', 'signature does not verify with the public key it carries'));
  } catch (err) {
    return fail(rejection('csr', `signature could not be verified (${describe(err)})`));
  }
  let uris: string[];
  try {
    uris = (subjectAltNames(csr)?.names ?? []).filter((n) => n.type === 'url').map((n) => n.value);
  } catch (err) {
    return fail(rejection('csr', `SubjectAltName extension could not be read (${describe(err)})`));
  }
  if (uris.length === 0) return fail(rejection('csr', `has no URI SAN; expected "${expectedUri}"`));
  if (uris.length !== 1 || uris[0] !== expectedUri) {
    return fail(rejection('csr', `URI SANs ${JSON.stringify(uris)} are not exactly the authorized identity "${expectedUri}"`));
  }
  return ok(undefined);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
