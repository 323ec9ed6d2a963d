/**
 * The gRPC metadata every request to istiod carries (ztunnel `identity/auth.rs`,
 * `config.rs` parse_headers): `authorization: Bearer <token>` and
 * `clusterid: <CLUSTER_ID>` when a token is configured, plus the operator's
 * extra headers (XDS_HEADER_<NAME> for xDS, CA_HEADER_<NAME> for the CA).
 * The header list is computed by a pure function; the token file is read through
 * an injected ReadFile on every call.
 */
import { CallCredentials, Metadata } from '@grpc/grpc-js';
import type { AuthSource } from '../config/control-env.js';
import { formatRejections, ok, type Result } from '../result.js';
import { loadToken, type ReadFile } from './token.js';

export type HeaderList = ReadonlyArray<readonly [name: string, value: string]>;

/** What a client to istiod authenticates with. */
export interface ControlPlaneAuth {
  readonly token: AuthSource;
  /** CLUSTER_ID (ISTIO_META_CLUSTER_ID wins), default "Kubernetes". */
  readonly clusterId: string;
  /** Already validated and lower-cased by the configuration parser. */
  readonly extraHeaders: HeaderList;
}

/**
 * The headers for one request. Extra headers come first; `authorization` and
 * `clusterid` replace any extra header of the same name, because ztunnel inserts
 * them last, at the transport. Without a token ztunnel sends neither
 * `authorization` nor `clusterid` (AuthSource::None), and neither do we.
 */
export function authHeaders(token: string | undefined, clusterId: string, extra: HeaderList): HeaderList {
  const out = new Map<string, string>();
  for (const [name, value] of extra) out.set(name.toLowerCase(), value);
  if (token !== undefined) {
    out.set('authorization', `Bearer ${token}`);
    out.set('clusterid', clusterId);
  }
  return [...out];
}

export function toMetadata(headers: HeaderList): Metadata {
  const md = new Metadata();
  for (const [name, value] of headers) md.set(name, value);
  return md;
}

/** Reads the token (if file-backed) and builds the metadata for one request. */
export async function loadAuthMetadata(auth: ControlPlaneAuth, readFile: ReadFile): Promise<Result<Metadata>> {
  const token = await loadToken(auth.token, readFile);
  if (!token.ok) return token;
  return ok(toMetadata(authHeaders(token.value, auth.clusterId, auth.extraHeaders)));
}

/**
 * Per-call credentials for a TLS channel (grpc-js refuses them on insecure
 * channels). A token that cannot be read fails the call with UNAVAILABLE, so
 * the caller's retry and backoff apply, instead of sending an unauthenticated
 * request.
 */
export function authCallCredentials(auth: ControlPlaneAuth, readFile: ReadFile): CallCredentials {
  return CallCredentials.createFromMetadataGenerator((_options, callback) => {
    loadAuthMetadata(auth, readFile).then(
      (md) => (md.ok ? callback(null, md.value) : callback(new Error(formatRejections(md.errors)))),
      (err: unknown) => callback(err instanceof Error ? err : new Error(String(err))),
    );
  });
}
