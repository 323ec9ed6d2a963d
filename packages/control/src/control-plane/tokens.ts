/**
 * Who is calling: the static bearer-token table that stands in for Kubernetes
 * TokenReview, and the authentication of gRPC request metadata against it.
 *
 * Token file format (YAML; a top-level list, one entry per token):
 *
 * ```yaml
 * - token: "ztunnel-node-a-secret"   # required, the literal bearer token
 *   namespace: istio-system          # required, the caller's namespace
 *   serviceAccount: ztunnel          # required, the caller's service account
 *   node: node-a                     # optional; needed to impersonate (node proxies)
 *   pod: ztunnel-abcde               # optional, informational (logs)
 * ```
 *
 * A caller presenting `authorization: Bearer <token>` is
 * `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`, like istiod's
 * KubeJWTAuthenticator maps a projected service-account token
 * (`istio/istio:security/pkg/server/ca/authenticate/kube_jwt.go`).
 */
import { createHash } from 'node:crypto';
import { parseDocument } from 'yaml';
import { spiffeSegmentProblem } from '../model/identity.js';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';

export interface TokenEntry {
  readonly token: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly node?: string | undefined;
  readonly pod?: string | undefined;
}

/** An authenticated caller. */
export interface Caller {
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly node?: string | undefined;
  readonly pod?: string | undefined;
}

/** The header/metadata view authentication needs (grpc-js `Metadata.get` shape). */
export interface MetadataLike {
  get(key: string): ReadonlyArray<string | Buffer>;
}

export type AuthenticationResult =
  | { readonly ok: true; readonly caller: Caller }
  | { readonly ok: false; readonly reason: string };

const TOKEN_KEYS = new Set(['token', 'namespace', 'serviceAccount', 'node', 'pod']);

/** Parses a token file; every problem is reported, with its entry index. */
export function parseTokenFile(text: string, source: string): Result<TokenEntry[]> {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    return fail(...doc.errors.map((e) => rejection(source, `invalid YAML: ${e.message.split('\n')[0] ?? e.message}`)));
  }
  const data: unknown = doc.toJS();
  if (data === null || data === undefined) return ok([]);
  if (!Array.isArray(data)) {
    return fail(rejection(source, 'must be a YAML list of {token, namespace, serviceAccount, node?, pod?} entries'));
  }
  const errors: Rejection[] = [];
  const entries: TokenEntry[] = [];
  const seen = new Map<string, number>();
  data.forEach((raw: unknown, i) => {
    const field = `${source}[${i}]`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
      errors.push(rejection(field, 'must be a mapping with token, namespace and serviceAccount'));
      return;
    }
    const rec = raw as Record<string, unknown>;
    for (const key of Object.keys(rec)) {
      if (!TOKEN_KEYS.has(key)) errors.push(rejection(`${field}.${key}`, 'unknown key; expected token, namespace, serviceAccount, node or pod'));
    }
    const str = (key: string, required: boolean): string | undefined => {
      const v = rec[key];
      if (v === undefined || v === null) {
        if (required) errors.push(rejection(`${field}.${key}`, 'is required'));
        return undefined;
      }
      if (typeof v !== 'string' || v === '') {
        errors.push(rejection(`${field}.${key}`, `must be a non-empty string, got ${JSON.stringify(v)}`));
        return undefined;
      }
      return v;
    };
    const token = str('token', true);
    const namespace = str('namespace', true);
    const serviceAccount = str('serviceAccount', true);
    const node = str('node', false);
    const pod = str('pod', false);
    if (namespace !== undefined) {
      const p = spiffeSegmentProblem(namespace);
      if (p) errors.push(rejection(`${field}.namespace`, p));
    }
    if (serviceAccount !== undefined) {
      const p = spiffeSegmentProblem(serviceAccount);
      if (p) errors.push(rejection(`${field}.serviceAccount`, p));
    }
    if (token !== undefined) {
      const previous = seen.get(token);
      if (previous !== undefined) errors.push(rejection(`${field}.token`, `duplicates the token of entry ${previous}`));
      else seen.set(token, i);
    }
    if (token !== undefined && namespace !== undefined && serviceAccount !== undefined) {
      entries.push({ token, namespace, serviceAccount, ...(node ? { node } : {}), ...(pod ? { pod } : {}) });
    }
  });
  return errors.length > 0 ? fail(...errors) : ok(entries);
}

/** The token table. Tokens are kept only as SHA-256 digests. */
export class TokenRegistry {
  private byDigest = new Map<string, Caller>();

  constructor(entries: readonly TokenEntry[] = []) {
    this.replace(entries);
  }

  get size(): number {
    return this.byDigest.size;
  }

  /** Replaces the whole table (a token-file reload). */
  replace(entries: readonly TokenEntry[]): void {
    const next = new Map<string, Caller>();
    for (const e of entries) next.set(digest(e.token), callerOf(e));
    this.byDigest = next;
  }

  /** Adds or replaces one token. */
  add(entry: TokenEntry): void {
    this.byDigest.set(digest(entry.token), callerOf(entry));
  }

  lookup(token: string): Caller | undefined {
    return this.byDigest.get(digest(token));
  }
}

/**
 * Authenticates request metadata: `authorization: Bearer <token>` must name a
 * known token, and a `clusterid` header, when the control plane has a cluster
 * id, must equal it (istiod's KubeJWTAuthenticator refuses callers that claim
 * another cluster: "client claims to be in cluster %q, but we only know about
 * local cluster %q"; no header means the local cluster).
 */
export function authenticate(metadata: MetadataLike, tokens: TokenRegistry, clusterId?: string): AuthenticationResult {
  const claimed = firstString(metadata.get('clusterid'));
  if (clusterId !== undefined && claimed !== undefined && claimed !== '' && claimed !== clusterId) {
    return { ok: false, reason: `client claims to be in cluster "${claimed}", but we only know about local cluster "${clusterId}"` };
  }
  const header = firstString(metadata.get('authorization'));
  if (header === undefined) return { ok: false, reason: 'no "authorization: Bearer <token>" header' };
  const match = /^bearer\s+(.+)$/i.exec(header.trim());
  if (!match?.[1]) return { ok: false, reason: 'the authorization header is not of the form "Bearer <token>"' };
  const caller = tokens.lookup(match[1].trim());
  if (!caller) return { ok: false, reason: 'the bearer token is not in the token table' };
  return { ok: true, caller };
}

export function callerSpiffeId(caller: Caller, trustDomain: string): string {
  return `spiffe://${trustDomain}/ns/${caller.namespace}/sa/${caller.serviceAccount}`;
}

function callerOf(e: TokenEntry): Caller {
  return { namespace: e.namespace, serviceAccount: e.serviceAccount, node: e.node, pod: e.pod };
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function firstString(values: ReadonlyArray<string | Buffer>): string | undefined {
  const v = values[0];
  if (v === undefined) return undefined;
  return typeof v === 'string' ? v : v.toString('utf8');
}
