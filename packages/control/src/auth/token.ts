/**
 * The bearer token sent to istiod (xDS and CA). Follows ztunnel's
 * `identity/auth.rs`: a file-backed token is read again on every call, so a
 * rotated Kubernetes projected token (audience istio-ca) is picked up without a
 * restart; a static token is used as is; with no token nothing is sent. Whether
 * AUTH_TOKEN names a file or is the token itself is decided once, when the
 * configuration is parsed (config/control-env.ts), as ztunnel does.
 */
import type { AuthSource } from '../config/control-env.js';
import { fail, ok, rejection, type Result } from '../result.js';

/** Reads a whole file; injected so the logic is testable without a file system. */
export type ReadFile = (path: string) => Promise<Uint8Array | string>;

/** Header values must be visible ASCII (RFC 9110 field-value without obs-text). */
const TOKEN_CHARS = /^[\x21-\x7e]+$/;

/**
 * Validates a token read from a file or configuration. Surrounding whitespace
 * (a trailing newline written by an editor or `echo`) is dropped; ztunnel sends
 * the bytes verbatim, which fails as an invalid header value instead.
 */
export function parseToken(raw: string, field: string): Result<string> {
  const token = raw.trim();
  if (token === '') return fail(rejection(field, 'token is empty; expected a JWT (projected service account token, audience istio-ca)'));
  if (!TOKEN_CHARS.test(token)) return fail(rejection(field, 'token contains characters not allowed in an HTTP header value'));
  return ok(token);
}

/**
 * The current token, or undefined when no authentication is configured.
 * Never throws: an unreadable or empty file is a Rejection naming the path.
 */
export async function loadToken(source: AuthSource, readFile: ReadFile): Promise<Result<string | undefined>> {
  switch (source.kind) {
    case 'none':
      return ok(undefined);
    case 'static':
      return parseToken(source.token, 'AUTH_TOKEN');
    case 'file': {
      let raw: Uint8Array | string;
      try {
        raw = await readFile(source.path);
      } catch (err) {
        return fail(rejection('AUTH_TOKEN', `cannot read token file "${source.path}": ${errorMessage(err)}`));
      }
      const text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
      const parsed = parseToken(text, 'AUTH_TOKEN');
      if (!parsed.ok) return fail(rejection('AUTH_TOKEN', `token file "${source.path}": ${parsed.errors[0]?.reason ?? 'invalid'}`));
      return parsed;
    }
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
