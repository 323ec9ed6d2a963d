/**
 * The waypoint's configuration from the environment Istio gives a waypoint pod
 * (istio-discovery's files/waypoint.yaml: POD_NAME, POD_NAMESPACE,
 * INSTANCE_IP, SERVICE_ACCOUNT, ISTIO_META_SERVICE_ACCOUNT, CA_ADDR,
 * PROXY_CONFIG with discoveryAddress, ISTIO_META_CLUSTER_ID,
 * ISTIO_META_NETWORK, ISTIO_META_WORKLOAD_NAME, TRUST_DOMAIN; the token at
 * /var/run/secrets/tokens/istio-token and the root certificate at
 * /var/run/secrets/istio/root-cert.pem), plus our own WAYPOINT_* settings for
 * what Envoy gets from istiod's xDS (the Gateway served, listen addresses,
 * access log, connect timeout) and for running without a cluster.
 *
 * pilot-agent's names are translated into the control package's settings
 * (XDS_ADDRESS / CA_ADDRESS / AUTH_TOKEN / *_ROOT_CA), so workload discovery
 * and the CA client are configured exactly as for ztunnel. Explicit
 * XDS_ADDRESS / CA_ADDRESS win (tests, the quick start). Every problem is
 * reported at once, naming the variable and what was expected; nothing here
 * reads process.env.
 */
import { parseControlEnv, parseDuration, parseListenAddress, rejection, type ControlEnv, type Env, type EnvProbe, type ListenAddress, type Rejection, type Result } from '@ambient/control';

/** pilot-agent's defaults inside a waypoint pod. */
const WAYPOINT_TOKEN_PATH = '/var/run/secrets/tokens/istio-token';
const WAYPOINT_ROOT_CERT_PATH = '/var/run/secrets/istio/root-cert.pem';

type ConfigSourceSetting =
  | { readonly kind: 'directory'; readonly path: string }
  | { readonly kind: 'kubernetes' };

interface AccessLogSetting {
  /** meshConfig.accessLogFile: "" = off (Istio's default), "/dev/stdout" or a path. */
  readonly file: string;
  /** meshConfig.accessLogEncoding. */
  readonly encoding: 'TEXT' | 'JSON';
}

export interface WaypointConfig {
  readonly control: ControlEnv;
  /** The Gateway this waypoint serves (its Service `<name>.<namespace>.svc.<domain>` is what istiod names as waypoint). */
  readonly gateway: { readonly namespace: string; readonly name: string };
  readonly configSource: ConfigSourceSetting;
  readonly addresses: {
    readonly inbound: ListenAddress;
    readonly admin: ListenAddress;
    readonly stats: ListenAddress;
    readonly readiness: ListenAddress;
  };
  /** meshConfig.connectTimeout (Istio default 10 s): upstream HBONE connect. */
  readonly connectTimeoutMs: number;
  /** ProxyConfig.terminationDrainDuration (default 5 s): how long a drain waits for in-flight requests. */
  readonly drainDurationMs: number;
  readonly accessLog: AccessLogSetting;
  /** ProxyConfig.tracing.zipkin.address (host:port), undefined = no spans sent. */
  readonly zipkinAddress: string | undefined;
  /** istio_build tag. */
  readonly istioVersion: string;
  readonly logLevel: string;
  readonly logFormat: 'json' | 'plain';
  readonly warnings: readonly string[];
}

const DEFAULTS = {
  inbound: '[::]:15008',
  admin: 'localhost:15000',
  stats: '[::]:15020',
  readiness: '[::]:15021',
};

/** The subset of ProxyConfig (PROXY_CONFIG JSON, meshConfig.defaultConfig) the waypoint reads. */
interface ProxyConfigSubset {
  readonly discoveryAddress?: string;
  readonly terminationDrainDuration?: string;
  readonly tracing?: { readonly zipkin?: { readonly address?: string } };
  readonly proxyMetadata?: Readonly<Record<string, string>>;
}

export function parseWaypointConfig(env: Env, probe: EnvProbe, argv: readonly string[] = []): Result<WaypointConfig> {
  const errors: Rejection[] = [];
  const warnings: string[] = [];

  const proxyConfig = parseProxyConfig(env['PROXY_CONFIG'], errors);
  const args = parseArgs(argv, errors);

  // pilot-agent names → the control package's names (explicit ztunnel-style names win).
  const translated: Record<string, string | undefined> = { ...env };
  for (const [k, v] of Object.entries(proxyConfig.proxyMetadata ?? {})) translated[k] ??= v;
  const discovery = env['XDS_ADDRESS'] ?? (proxyConfig.discoveryAddress === undefined ? undefined : withScheme(proxyConfig.discoveryAddress));
  if (discovery !== undefined) translated['XDS_ADDRESS'] = discovery;
  if (env['CA_ADDRESS'] === undefined && env['CA_ADDR'] !== undefined) translated['CA_ADDRESS'] = withScheme(env['CA_ADDR']);
  // pilot-agent's mount points, when the pod has them (ztunnel's relative defaults otherwise).
  if (probe.fileExists(WAYPOINT_TOKEN_PATH)) translated['AUTH_TOKEN'] ??= WAYPOINT_TOKEN_PATH;
  if (probe.fileExists(WAYPOINT_ROOT_CERT_PATH)) {
    translated['XDS_ROOT_CA'] ??= WAYPOINT_ROOT_CERT_PATH;
    translated['CA_ROOT_CA'] ??= WAYPOINT_ROOT_CERT_PATH;
  }
  if (translated['SERVICE_ACCOUNT'] === undefined && env['ISTIO_META_SERVICE_ACCOUNT'] !== undefined) {
    translated['SERVICE_ACCOUNT'] = env['ISTIO_META_SERVICE_ACCOUNT'];
  }
  if (translated['NETWORK'] === undefined && env['ISTIO_META_NETWORK'] !== undefined) translated['NETWORK'] = env['ISTIO_META_NETWORK'];
  if (translated['NODE_NAME'] === undefined && env['ISTIO_META_NODE_NAME'] !== undefined) translated['NODE_NAME'] = env['ISTIO_META_NODE_NAME'];

  const control = parseControlEnv(translated, probe);
  if (!control.ok) errors.push(...control.errors);

  const podNamespace = env['POD_NAMESPACE'];
  if (podNamespace === undefined || podNamespace === '') errors.push(rejection('POD_NAMESPACE', 'is required: the namespace of the waypoint Gateway'));
  const gatewayName = env['WAYPOINT_GATEWAY_NAME'] ?? env['ISTIO_META_WORKLOAD_NAME'];
  if (gatewayName === undefined || gatewayName === '') {
    errors.push(rejection('WAYPOINT_GATEWAY_NAME', 'is required (or ISTIO_META_WORKLOAD_NAME, which istiod sets to the Gateway\'s Deployment name)'));
  } else if (!DNS_LABEL.test(gatewayName)) {
    errors.push(rejection('WAYPOINT_GATEWAY_NAME', `"${gatewayName}" is not a Kubernetes object name (RFC 1123 label)`));
  }

  const dir = args.configDir ?? env['WAYPOINT_CONFIG_DIR'];
  let configSource: ConfigSourceSetting = { kind: 'kubernetes' };
  if (dir !== undefined && dir !== '') configSource = { kind: 'directory', path: dir };
  else if (env['KUBERNETES_SERVICE_HOST'] === undefined && env['KUBECONFIG'] === undefined) {
    errors.push(rejection('WAYPOINT_CONFIG_DIR', 'no config source: set --config-dir / WAYPOINT_CONFIG_DIR (a directory of manifests), or run in a cluster (KUBERNETES_SERVICE_HOST) or with KUBECONFIG'));
  }

  const address = (name: string, fallback: string): ListenAddress => {
    const text = env[name] ?? fallback;
    const parsed = parseListenAddress(text, name);
    if (parsed.ok) return parsed.value;
    errors.push(...parsed.errors);
    return { host: '::', port: 0 };
  };
  const addresses = {
    inbound: address('WAYPOINT_INBOUND_ADDR', DEFAULTS.inbound),
    admin: address('WAYPOINT_ADMIN_ADDR', DEFAULTS.admin),
    stats: address('WAYPOINT_STATS_ADDR', DEFAULTS.stats),
    readiness: address('WAYPOINT_READINESS_ADDR', DEFAULTS.readiness),
  };

  const duration = (name: string, text: string | undefined, fallbackMs: number): number => {
    if (text === undefined || text === '') return fallbackMs;
    const parsed = parseDuration(text);
    if (parsed.ok) return parsed.ms;
    errors.push(rejection(name, `"${text}": ${parsed.reason}`));
    return fallbackMs;
  };
  const connectTimeoutMs = duration('WAYPOINT_CONNECT_TIMEOUT', env['WAYPOINT_CONNECT_TIMEOUT'], 10_000);
  const drainDurationMs = duration('PROXY_CONFIG.terminationDrainDuration', env['TERMINATION_DRAIN_DURATION'] ?? proxyConfig.terminationDrainDuration, 5_000);

  const encodingText = (env['WAYPOINT_ACCESS_LOG_ENCODING'] ?? 'TEXT').toUpperCase();
  if (encodingText !== 'TEXT' && encodingText !== 'JSON') errors.push(rejection('WAYPOINT_ACCESS_LOG_ENCODING', `"${encodingText}": expected TEXT or JSON`));
  const accessLog: AccessLogSetting = { file: env['WAYPOINT_ACCESS_LOG_FILE'] ?? '', encoding: encodingText === 'JSON' ? 'JSON' : 'TEXT' };

  const logFormat = env['LOG_FORMAT'] ?? 'plain';
  if (logFormat !== 'json' && logFormat !== 'plain') errors.push(rejection('LOG_FORMAT', `"${logFormat}": expected json or plain`));

  if (errors.length > 0 || !control.ok || podNamespace === undefined || gatewayName === undefined) return { ok: false, errors };
  return {
    ok: true,
    value: {
      control: control.value,
      gateway: { namespace: podNamespace, name: gatewayName },
      configSource,
      addresses,
      connectTimeoutMs,
      drainDurationMs,
      accessLog,
      zipkinAddress: proxyConfig.tracing?.zipkin?.address,
      istioVersion: env['ISTIO_META_ISTIO_VERSION'] ?? 'unknown',
      logLevel: env['RUST_LOG'] ?? env['WAYPOINT_LOG_LEVEL'] ?? 'info',
      logFormat: logFormat === 'json' ? 'json' : 'plain',
      warnings,
    },
  };
}

/** The waypoint's own service FQDN, the hostname istiod names in Service.waypoint / Workload.waypoint. */
export function waypointHostname(config: Pick<WaypointConfig, 'gateway' | 'control'>): string {
  return `${config.gateway.name}.${config.gateway.namespace}.svc.${config.control.clusterDomain}`;
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

function withScheme(address: string): string {
  return /^[a-z]+:\/\//.test(address) ? address : `https://${address}`;
}

function parseProxyConfig(text: string | undefined, errors: Rejection[]): ProxyConfigSubset {
  if (text === undefined || text.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    errors.push(rejection('PROXY_CONFIG', `not JSON (${err instanceof Error ? err.message : String(err)}); expected the ProxyConfig JSON istiod's template writes`));
    return {};
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    errors.push(rejection('PROXY_CONFIG', 'expected a JSON object (ProxyConfig)'));
    return {};
  }
  const o = value as Record<string, unknown>;
  const out: { -readonly [K in keyof ProxyConfigSubset]: ProxyConfigSubset[K] } = {};
  const str = (key: string, v: unknown): string | undefined => {
    if (v === undefined) return undefined;
    if (typeof v === 'string') return v;
    errors.push(rejection(`PROXY_CONFIG.${key}`, 'expected a string'));
    return undefined;
  };
  const discoveryAddress = str('discoveryAddress', o['discoveryAddress']);
  if (discoveryAddress !== undefined) out.discoveryAddress = discoveryAddress;
  const drain = str('terminationDrainDuration', o['terminationDrainDuration']);
  if (drain !== undefined) out.terminationDrainDuration = drain;
  const tracing = o['tracing'];
  if (typeof tracing === 'object' && tracing !== null) {
    const zipkin = (tracing as Record<string, unknown>)['zipkin'];
    if (typeof zipkin === 'object' && zipkin !== null) {
      const address = str('tracing.zipkin.address', (zipkin as Record<string, unknown>)['address']);
      if (address !== undefined) out.tracing = { zipkin: { address } };
    }
  }
  const md = o['proxyMetadata'];
  if (md !== undefined) {
    if (typeof md !== 'object' || md === null || Array.isArray(md)) errors.push(rejection('PROXY_CONFIG.proxyMetadata', 'expected a mapping of names to string values'));
    else {
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(md as Record<string, unknown>)) {
        if (typeof v === 'string') meta[k] = v;
        else errors.push(rejection(`PROXY_CONFIG.proxyMetadata.${k}`, 'expected a string value'));
      }
      out.proxyMetadata = meta;
    }
  }
  return out;
}

/**
 * The arguments the waypoint binary takes: Istio's template passes `proxy waypoint --domain ... --serviceCluster ...`
 * (accepted, as pilot-agent does; the domain and cluster come from the environment), and `--config-dir DIR` is ours.
 */
function parseArgs(argv: readonly string[], errors: Rejection[]): { configDir?: string } {
  const out: { configDir?: string } = {};
  const withValue = new Set(['--domain', '--serviceCluster', '--proxyLogLevel', '--proxyComponentLogLevel', '--log_output_level', '--outlierLogPath', '--config-dir']);
  for (let i = 0; i < argv.length; i++) {
    const raw = argv[i] ?? '';
    if (i < 2 && (raw === 'proxy' || raw === 'waypoint')) continue;
    const eq = raw.indexOf('=');
    const flag = eq >= 0 ? raw.slice(0, eq) : raw;
    if (raw === '--log_as_json') continue;
    if (!withValue.has(flag)) {
      errors.push(rejection('argv', `unknown argument "${raw}"; expected --config-dir DIR or the arguments Istio's waypoint template passes`));
      continue;
    }
    const value = eq >= 0 ? raw.slice(eq + 1) : argv[++i];
    if (value === undefined) {
      errors.push(rejection('argv', `${flag} needs a value`));
      continue;
    }
    if (flag === '--config-dir') out.configDir = value;
  }
  return out;
}
