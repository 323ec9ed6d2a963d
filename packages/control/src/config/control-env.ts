/**
 * The environment variables that configure the control-plane side of a data
 * plane proxy (workload discovery, the CA client, node identity), with the
 * names, meanings and defaults of Istio's ztunnel (src/config.rs). Parsed from
 * a plain record; every problem is reported at once. The proxies' own
 * configuration parsers compose this one.
 */
import { canonicalIp } from '../model/ip.js';
import { trustDomainProblem } from '../model/identity.js';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';
import { parseDuration } from './duration.js';

export type Env = Readonly<Record<string, string | undefined>>;

/** Where TLS roots for istiod come from (XDS_ROOT_CA / CA_ROOT_CA). */
export type RootCertSource =
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'system' }
  | { readonly kind: 'static'; readonly pem: string };

/** Where the bearer token comes from (AUTH_TOKEN). */
export type AuthSource =
  | { readonly kind: 'none' }
  | { readonly kind: 'file'; readonly path: string }
  | { readonly kind: 'static'; readonly token: string };

export type LocalXdsSource =
  | { readonly kind: 'path'; readonly path: string }
  | { readonly kind: 'inline'; readonly yaml: string };

export interface ControlEnv {
  /** `https://host:port`; undefined when XDS_ADDRESS="" (xDS disabled). */
  readonly xdsAddress: string | undefined;
  /** undefined with FAKE_CA=true or CA_ADDRESS="". */
  readonly caAddress: string | undefined;
  readonly fakeCa: boolean;
  readonly xdsRootCa: RootCertSource;
  readonly caRootCa: RootCertSource;
  readonly altXdsHostname: string | undefined;
  readonly altCaHostname: string | undefined;
  readonly auth: AuthSource;
  readonly clusterId: string;
  readonly clusterDomain: string;
  /** The proxy's own trust domain (TRUST_DOMAIN). */
  readonly trustDomain: string;
  readonly secretTtlSeconds: number;
  readonly xdsOnDemand: boolean;
  readonly localXds: LocalXdsSource | undefined;
  /** Extra gRPC metadata from XDS_HEADER_<NAME> / CA_HEADER_<NAME> (names lower-cased). */
  readonly xdsHeaders: ReadonlyArray<readonly [string, string]>;
  readonly caHeaders: ReadonlyArray<readonly [string, string]>;
  /** ISTIO_META_<K>=<v>, prefix stripped. */
  readonly proxyMetadata: Readonly<Record<string, string>>;
  /** ISTIO_METAJSON_<K>=<json>, prefix stripped, values still JSON text (validated). */
  readonly proxyMetadataJson: Readonly<Record<string, string>>;
  readonly podName: string;
  readonly podNamespace: string;
  readonly nodeName: string;
  readonly instanceIp: string;
  readonly serviceAccount: string;
  readonly network: string;
  readonly preferedServiceNamespace: string | undefined;
}

/** File-system facts the parser needs (ztunnel decides "path or literal" by existence). */
export interface EnvProbe {
  fileExists(path: string): boolean;
}

export const DEFAULT_ROOT_CERT_PATH = './var/run/secrets/istio/root-cert.pem';
export const DEFAULT_TOKEN_PATH = './var/run/secrets/tokens/istio-token';
export const DEFAULT_SECRET_TTL_SECONDS = 86_400;

const HEADER_NAME = /^[a-z0-9!#$%&'*+.^_`|~-]+$/;
const HEADER_VALUE = /^[\x20-\x7e]*$/;

export function parseControlEnv(env: Env, probe: EnvProbe): Result<ControlEnv> {
  const errors: Rejection[] = [];
  const bad = (name: string, value: string, reason: string) => errors.push(rejection(name, `"${value}": ${reason}`));

  const bool = (name: string, dflt: boolean): boolean => {
    const v = env[name];
    if (v === undefined) return dflt;
    if (v === 'true') return true;
    if (v === 'false') return false;
    bad(name, v, 'expected "true" or "false"');
    return dflt;
  };

  const defaultIstiod = env['KUBERNETES_SERVICE_HOST'] !== undefined
    ? 'https://istiod.istio-system.svc:15012'
    : 'https://localhost:15012';

  const address = (name: string, raw: string | undefined): string | undefined => {
    const v = raw ?? defaultIstiod;
    if (v === '') return undefined;
    const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(v) ? v : `https://${v}`;
    let url: URL;
    try {
      url = new URL(withScheme);
    } catch {
      bad(name, v, 'expected an address such as "https://istiod.istio-system.svc:15012" or "host:port"');
      return undefined;
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      bad(name, v, 'expected an https:// (or http://) address');
      return undefined;
    }
    if (url.hostname === '' || url.port === '') {
      bad(name, v, 'expected a host and a port, e.g. "istiod.istio-system.svc:15012"');
      return undefined;
    }
    return `${url.protocol}//${url.host}`;
  };

  const rootCa = (name: string): RootCertSource => {
    const v = env[name] ?? DEFAULT_ROOT_CERT_PATH;
    if (probe.fileExists(v)) return { kind: 'file', path: v };
    if (v === 'SYSTEM') return { kind: 'system' };
    if (v.includes('-----BEGIN CERTIFICATE-----')) return { kind: 'static', pem: v };
    if (env[name] === undefined) return { kind: 'file', path: v }; // default path, reported when used
    bad(name, v, 'expected an existing PEM file, "SYSTEM", or inline PEM certificates');
    return { kind: 'system' };
  };

  const headers = (prefix: string): Array<readonly [string, string]> => {
    const out: Array<readonly [string, string]> = [];
    for (const [k, v] of Object.entries(env)) {
      if (!k.startsWith(prefix) || v === undefined) continue;
      const header = k.slice(prefix.length).toLowerCase();
      if (!HEADER_NAME.test(header)) {
        bad(k, v, `"${header}" is not a valid gRPC metadata name`);
        continue;
      }
      if (!HEADER_VALUE.test(v)) {
        bad(k, v, 'metadata values must be printable ASCII');
        continue;
      }
      out.push([header, v]);
    }
    return out.sort((a, b) => a[0].localeCompare(b[0]));
  };

  const fakeCa = bool('FAKE_CA', false);
  const xdsAddress = address('XDS_ADDRESS', env['XDS_ADDRESS']);
  const caAddress = fakeCa ? undefined : address('CA_ADDRESS', env['CA_ADDRESS']);

  const clusterId = env['ISTIO_META_CLUSTER_ID'] ?? env['CLUSTER_ID'] ?? 'Kubernetes';
  if (clusterId === '') bad('CLUSTER_ID', clusterId, 'must not be empty');
  const clusterDomain = env['CLUSTER_DOMAIN'] ?? 'cluster.local';
  const trustDomain = env['TRUST_DOMAIN'] ?? 'cluster.local';
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) bad('TRUST_DOMAIN', trustDomain, tdProblem);

  let secretTtlSeconds = DEFAULT_SECRET_TTL_SECONDS;
  if (env['SECRET_TTL'] !== undefined) {
    const d = parseDuration(env['SECRET_TTL']);
    if (!d.ok) bad('SECRET_TTL', env['SECRET_TTL'], d.reason);
    else if (d.ms < 1000) bad('SECRET_TTL', env['SECRET_TTL'], 'must be at least 1s');
    else secretTtlSeconds = Math.floor(d.ms / 1000);
  }

  let auth: AuthSource;
  const token = env['AUTH_TOKEN'];
  if (token === undefined) auth = probe.fileExists(DEFAULT_TOKEN_PATH) ? { kind: 'file', path: DEFAULT_TOKEN_PATH } : { kind: 'none' };
  else if (probe.fileExists(token)) auth = { kind: 'file', path: token };
  else auth = { kind: 'static', token };

  let localXds: LocalXdsSource | undefined;
  if (env['LOCAL_XDS_PATH'] !== undefined && env['LOCAL_XDS'] !== undefined) {
    errors.push(rejection('LOCAL_XDS_PATH', 'LOCAL_XDS_PATH and LOCAL_XDS are mutually exclusive; set only one'));
  } else if (env['LOCAL_XDS_PATH'] !== undefined) {
    localXds = { kind: 'path', path: env['LOCAL_XDS_PATH'] };
  } else if (env['LOCAL_XDS'] !== undefined) {
    localXds = { kind: 'inline', yaml: env['LOCAL_XDS'] };
  }

  const proxyMetadata: Record<string, string> = {};
  const proxyMetadataJson: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith('ISTIO_META_') && k.length > 'ISTIO_META_'.length) proxyMetadata[k.slice('ISTIO_META_'.length)] = v;
    if (k.startsWith('ISTIO_METAJSON_') && k.length > 'ISTIO_METAJSON_'.length) {
      try {
        JSON.parse(v);
        proxyMetadataJson[k.slice('ISTIO_METAJSON_'.length)] = v;
      } catch {
        bad(k, v, 'expected a JSON value');
      }
    }
  }

  const instanceIp = env['INSTANCE_IP'] ?? '1.1.1.1';
  if (canonicalIp(instanceIp) === undefined) bad('INSTANCE_IP', instanceIp, 'expected an IPv4 or IPv6 address');

  const config: ControlEnv = {
    xdsAddress,
    caAddress,
    fakeCa,
    xdsRootCa: rootCa('XDS_ROOT_CA'),
    caRootCa: rootCa('CA_ROOT_CA'),
    altXdsHostname: env['ALT_XDS_HOSTNAME'] || undefined,
    altCaHostname: env['ALT_CA_HOSTNAME'] || undefined,
    auth,
    clusterId,
    clusterDomain,
    trustDomain,
    secretTtlSeconds,
    xdsOnDemand: bool('XDS_ON_DEMAND', false),
    localXds,
    xdsHeaders: headers('XDS_HEADER_'),
    caHeaders: headers('CA_HEADER_'),
    proxyMetadata,
    proxyMetadataJson,
    podName: env['POD_NAME'] ?? '',
    podNamespace: env['POD_NAMESPACE'] ?? '',
    nodeName: env['NODE_NAME'] ?? '',
    instanceIp,
    serviceAccount: env['SERVICE_ACCOUNT'] ?? '',
    network: env['NETWORK'] ?? '',
    preferedServiceNamespace: env['PREFERED_SERVICE_NAMESPACE'] || undefined,
  };
  return errors.length > 0 ? fail(...errors) : ok(config);
}
