/**
 * The gRPC channel to istiod, shared by the xDS client and the CA client
 * (ztunnel `tls/control.rs`, `config.rs`):
 * - the address is `https://host:port` (a bare `host:port` means https, as
 *   ztunnel's validate_uri adds the scheme); `http://` gives a plaintext channel
 *   for local development only;
 * - server roots come from a file, the system store (`SYSTEM`) or inline PEM
 *   (XDS_ROOT_CA / CA_ROOT_CA);
 * - TLS 1.3 only, normal hostname verification, optionally also accepting an
 *   alternate name (ALT_XDS_HOSTNAME / ALT_CA_HOSTNAME), no client certificate;
 * - HTTP/2 keepalive 30 s with a 10 s timeout, 200 MiB messages.
 */
import { checkServerIdentity, createSecureContext, type PeerCertificate, type SecureContextOptions } from 'node:tls';
import { ChannelCredentials, credentials, type ChannelOptions } from '@grpc/grpc-js';
import type { RootCertSource } from '../config/control-env.js';
import { errorMessage, type ReadFile } from '../auth/token.js';
import { parseCertificates } from '../ca/pem.js';
import { fail, ok, rejection, type Result } from '../result.js';

/** Where to dial istiod. */
export interface ControlPlaneEndpoint {
  /** grpc-js target, `host:port` (IPv6 literals in brackets). */
  readonly target: string;
  /** Host name or IP literal (no brackets) the server certificate must match. */
  readonly host: string;
  readonly port: number;
  /** false only for an explicit `http://` address. */
  readonly secure: boolean;
}

/** Parses XDS_ADDRESS / CA_ADDRESS into a grpc-js target; `field` names the setting in rejections. */
export function parseControlPlaneAddress(address: string, field: string): Result<ControlPlaneEndpoint> {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `https://${address}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    return fail(rejection(field, `"${address}" is not an address; expected e.g. "https://istiod.istio-system.svc:15012"`));
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return fail(rejection(field, `"${address}": scheme must be https:// (or http:// for a plaintext development server)`));
  }
  if (url.hostname === '') return fail(rejection(field, `"${address}": missing host`));
  if ((url.pathname !== '' && url.pathname !== '/') || url.search !== '' || url.hash !== '' || url.username !== '') {
    return fail(rejection(field, `"${address}": expected only scheme, host and port`));
  }
  const secure = url.protocol === 'https:';
  const port = url.port === '' ? (secure ? 443 : 80) : Number(url.port);
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return ok({ target: `${url.hostname}:${port}`, host, port, secure });
}

/** Server roots after loading: the system store, or specific PEM certificates. */
export type LoadedRoots = { readonly kind: 'system' } | { readonly kind: 'pem'; readonly pem: string };

/** Loads and validates the roots. A file is read through `readFile` each time this is called. */
export async function loadRootCerts(source: RootCertSource, readFile: ReadFile, field: string): Promise<Result<LoadedRoots>> {
  let text: string;
  switch (source.kind) {
    case 'system':
      return ok({ kind: 'system' });
    case 'static':
      text = source.pem;
      break;
    case 'file':
      try {
        const raw = await readFile(source.path);
        text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
      } catch (err) {
        return fail(rejection(field, `cannot read root certificates from "${source.path}": ${errorMessage(err)}`));
      }
      break;
  }
  const certs = parseCertificates(text, field);
  if (!certs.ok) return certs;
  return ok({ kind: 'pem', pem: certs.value.map((c) => c.pem).join('') });
}

/** TLS options for the control-plane client: TLS 1.3 only, given roots or the system store. */
export function controlPlaneTlsOptions(roots: LoadedRoots): SecureContextOptions {
  return {
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ...(roots.kind === 'pem' ? { ca: roots.pem } : {}),
  };
}

/**
 * Hostname verification that also accepts `altHostname` (ztunnel's
 * AltHostnameVerifier: the dialled name first, then the alternate one).
 */
export function serverIdentityCheck(altHostname: string | undefined): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    const err = checkServerIdentity(host, cert);
    if (err === undefined || altHostname === undefined) return err;
    return checkServerIdentity(altHostname, cert);
  };
}

export interface ControlPlaneChannelSpec {
  readonly endpoint: ControlPlaneEndpoint;
  readonly roots: LoadedRoots;
  readonly altHostname?: string | undefined;
}

/** Channel credentials for istiod; insecure only for an explicit `http://` endpoint. */
export function controlPlaneCredentials(spec: ControlPlaneChannelSpec): ChannelCredentials {
  if (!spec.endpoint.secure) return credentials.createInsecure();
  const context = createSecureContext(controlPlaneTlsOptions(spec.roots));
  return ChannelCredentials.createFromSecureContext(context, { checkServerIdentity: serverIdentityCheck(spec.altHostname) });
}

/** Channel options matching ztunnel's control-plane client (tls/control.rs grpc_connector). */
export const CONTROL_PLANE_CHANNEL_OPTIONS: ChannelOptions = {
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_receive_message_length': 200 * 1024 * 1024,
  'grpc.max_send_message_length': 200 * 1024 * 1024,
};

/** Everything needed to (re)build a channel to istiod from configuration. */
export interface ControlPlaneConnection {
  /** XDS_ADDRESS / CA_ADDRESS. */
  readonly address: string;
  readonly roots: RootCertSource;
  readonly altHostname?: string | undefined;
}

/**
 * Resolves a connection's endpoint and roots. `field` prefixes the rejections
 * (e.g. "CA" gives "CA_ADDRESS" and "CA_ROOT_CA").
 */
export async function resolveControlPlaneChannel(
  conn: ControlPlaneConnection,
  readFile: ReadFile,
  field: 'XDS' | 'CA',
): Promise<Result<ControlPlaneChannelSpec>> {
  const endpoint = parseControlPlaneAddress(conn.address, `${field}_ADDRESS`);
  if (!endpoint.ok) return endpoint;
  const roots = endpoint.value.secure ? await loadRootCerts(conn.roots, readFile, `${field}_ROOT_CA`) : ok<LoadedRoots>({ kind: 'system' });
  if (!roots.ok) return roots;
  return ok({ endpoint: endpoint.value, roots: roots.value, altHostname: conn.altHostname });
}
