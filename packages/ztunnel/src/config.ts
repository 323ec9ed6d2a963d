/**
 * ztunnel's configuration: the command line and every environment variable of
 * Istio's ztunnel (src/config.rs) with the same names, meanings and defaults,
 * composed over the control-plane variables of `parseControlEnv`, plus a few
 * variables of our own (all prefixed `ZTUNNEL_`, see OUR_ENV_VARS). Parsed
 * from a plain record with no I/O except through the probe; every problem is
 * reported at once, naming the variable, the value and what was expected.
 */
import {
  fail,
  ok,
  parseControlEnv,
  parseDuration,
  parseListenAddress,
  rejection,
  spiffeSegmentProblem,
  type ControlEnv,
  type Env,
  type Identity,
  type ListenAddress,
  type Rejection,
  type Result,
} from '@ambient/control';
import { isLoopbackHost, type TcpSocketOptions } from '@ambient/dataplane';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_LOG_FILTER, parseLogFilter, type LogFormat } from '@ambient/dataplane';

/** What the process was asked to do (argv[1] of ztunnel). */
export type Command = 'proxy' | 'version' | 'help';
type ProxyMode = 'shared' | 'dedicated';

/** The pod a dedicated-mode ztunnel serves (PROXY_WORKLOAD_INFO=ns/name/sa). */
interface WorkloadInfo {
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string;
}

/** The subset of Istio's ProxyConfig that ztunnel reads (mesh `defaultConfig`, then PROXY_CONFIG). */
interface ProxyConfig {
  readonly discoveryAddress: string | undefined;
  readonly proxyAdminPort: number | undefined;
  readonly statsPort: number | undefined;
  readonly concurrency: number | undefined;
  /** Keys with `ISTIO_META_` stripped, as ztunnel does. */
  readonly proxyMetadata: Readonly<Record<string, string>>;
}

export interface ZtunnelConfig {
  readonly command: Command;
  /** The arguments after the program name, joined by spaces (config_dump `proxyArgs`). */
  readonly proxyArgs: string;
  /** Control-plane settings; `proxyMetadata` is the merged ProxyConfig + ISTIO_META_* map. */
  readonly control: ControlEnv;
  readonly proxyConfig: ProxyConfig;

  readonly proxyMode: ProxyMode;
  /** Set in dedicated mode only. */
  readonly proxyWorkloadInfo: WorkloadInfo | undefined;
  readonly inpodUds: string;
  readonly inpodPortReuse: boolean;
  /** SO_MARK for every socket in a pod netns; 1337 by default in shared mode, none in dedicated mode. */
  readonly packetMark: number | undefined;
  /** ENABLE_PROXY: run the data-plane listeners. */
  readonly enableProxy: boolean;
  /** ENABLE_ORIG_SRC: undefined = best effort, true = required, false = off. */
  readonly requireOriginalSource: boolean | undefined;
  readonly localhostAppTunnel: boolean;
  readonly ipv6Enabled: boolean;
  readonly socks5Enabled: boolean;

  readonly pool: {
    readonly maxStreamsPerConnection: number;
    readonly unusedReleaseTimeoutMs: number;
  };
  readonly http2: {
    readonly streamWindowSize: number;
    readonly connectionWindowSize: number;
    readonly frameSize: number;
  };
  /**
   * KEEPALIVE_*, USER_TIMEOUT_ENABLED as ztunnel reads them. Node sets
   * SO_KEEPALIVE and TCP_KEEPIDLE only (`tcp` below, applied to every socket we
   * make or accept); a non-default interval, retry count or user timeout is
   * warned about at start-up (the kernel's values apply).
   */
  readonly socket: {
    readonly keepaliveTimeMs: number;
    readonly keepaliveIntervalMs: number;
    readonly keepaliveRetries: number;
    readonly keepaliveEnabled: boolean;
    readonly userTimeoutEnabled: boolean;
    /** What is applied: TCP_NODELAY, KEEPALIVE_ENABLED, KEEPALIVE_TIME. */
    readonly tcp: TcpSocketOptions;
  };
  /** How long a drain waits for open connections before force-closing them. */
  readonly terminationDeadlineMs: number;
  /** Upstream TCP connect timeout (ztunnel: a 10 s constant; ours: ZTUNNEL_CONNECT_TIMEOUT). */
  readonly connectTimeoutMs: number;
  /** ZTUNNEL_WORKER_THREADS resolved as ztunnel would; recorded only (Node runs one event loop). */
  readonly workerThreads: number;

  readonly tls12Enabled: boolean;
  /** COMPLIANCE_POLICY (only `pqc` is meaningful). */
  readonly compliancePolicy: 'pqc' | undefined;
  /** CRL_PATH: PEM (several CRLs) or DER file of revoked peer certificates, watched; unset: no revocation checks. */
  readonly crlPath: string | undefined;
  readonly enableResponseBaggage: boolean;
  readonly authzPolicyInfoLogging: boolean;
  /** RUST_LOG-style filter text (validated; see parseLogFilter in access-log.ts). */
  readonly logFilter: string;
  readonly logFormat: LogFormat;

  /** DNS proxy on unless proxy metadata DNS_CAPTURE is not "true" (ztunnel default: on). */
  readonly dnsProxy: boolean;
  /** CLUSTER_DOMAIN: the DNS proxy's Kubernetes suffix (default cluster.local). */
  readonly clusterDomain: string;

  /** Our limits (not in ztunnel). */
  readonly limits: {
    readonly tlsHandshakeTimeoutMs: number;
    readonly h2PrefaceTimeoutMs: number;
    readonly socks5HandshakeTimeoutMs: number;
    readonly maxConnections: number;
  };
  /** ZTUNNEL_MALLOC_TRIM_INTERVAL (0 = off). */
  readonly mallocTrimIntervalMs: number;

  readonly addresses: {
    readonly admin: ListenAddress;
    readonly stats: ListenAddress;
    readonly readiness: ListenAddress;
    readonly inbound: ListenAddress;
    readonly inboundPlaintext: ListenAddress;
    readonly outbound: ListenAddress;
    /** Undefined unless UNSTABLE_ENABLE_SOCKS5=true. */
    readonly socks5: ListenAddress | undefined;
    readonly dnsProxy: ListenAddress;
  };
  /** The port dialled on remote workloads for HBONE (ztunnel: the inbound listener's port). */
  readonly hbonePort: number;
  /** Destination ports clients may not reach through ztunnel (its own data-plane ports). */
  readonly illegalPorts: ReadonlySet<number>;

  /** `istio_build` tag: ISTIO_META_ISTIO_VERSION, or "unknown". */
  readonly istioVersion: string;
  /** ztunnel's own identity and pod, when POD_NAMESPACE, SERVICE_ACCOUNT and POD_NAME are all set. */
  readonly ztunnelIdentity: Identity | undefined;
  readonly ztunnelWorkload: WorkloadInfo | undefined;

  /** Accepted settings we do not act on, for one startup log line each. */
  readonly warnings: readonly string[];
}

/** What parseConfig may ask of the machine. */
export interface ConfigProbe {
  fileExists(path: string): boolean;
  /** Logical CPUs (os.availableParallelism()). */
  readonly cpuCount: number;
  /** Reads the mesh config file; omitted = no mesh file support. Returns undefined when absent. */
  readFile?(path: string): string | undefined;
}

export const MESH_CONFIG_PATH = './etc/istio/config/mesh';

const DEFAULT_PORTS = {
  admin: 15000,
  outbound: 15001,
  inboundPlaintext: 15006,
  inbound: 15008,
  stats: 15020,
  readiness: 15021,
  dns: 15053,
  socks5: 15080,
} as const;

const DEFAULT_INPOD_MARK = 1337;
const DEFAULT_TERMINATION_DEADLINE_MS = 5_000;
const DEFAULT_WORKER_THREADS = 2;
const WORKER_THREAD_CPU_FRACTION = 0.25;
const MAX_U16 = 65_535;
const MAX_U32 = 4_294_967_295;
const MAX_WINDOW = 2_147_483_647;

/**
 * Our own variables (not read by Istio's ztunnel), with defaults. Documented
 * here so ARCHITECTURE.md and the README can list them.
 */
export const OUR_ENV_VARS: Readonly<Record<string, string>> = {
  ZTUNNEL_TLS_HANDSHAKE_TIMEOUT: '10s: a TLS handshake on 15008 that has not finished is closed',
  ZTUNNEL_H2_PREFACE_TIMEOUT: '10s: an HBONE connection that sends no HTTP/2 preface / first request is closed',
  ZTUNNEL_SOCKS5_HANDSHAKE_TIMEOUT: '10s: a SOCKS5 client that has not finished greeting + request is closed',
  ZTUNNEL_CONNECT_TIMEOUT: '10s: upstream TCP connect timeout (a constant in ztunnel)',
  ZTUNNEL_MAX_CONNECTIONS: '100000: global cap on proxied connections; more are refused',
  ZTUNNEL_ADMIN_ADDR: 'localhost:15000 (port from ProxyConfig proxyAdminPort); must be a loopback address',
  ZTUNNEL_STATS_ADDR: '[::]:15020 (port from ProxyConfig statsPort)',
  ZTUNNEL_READINESS_ADDR: '[::]:15021',
  ZTUNNEL_INBOUND_ADDR: '[::]:15008',
  ZTUNNEL_INBOUND_PLAINTEXT_ADDR: '[::]:15006',
  ZTUNNEL_OUTBOUND_ADDR: '[::]:15001',
  ZTUNNEL_SOCKS5_ADDR: '127.0.0.1:15080 (only used with UNSTABLE_ENABLE_SOCKS5=true)',
  ZTUNNEL_HBONE_PORT: 'the inbound listener port (15008): the port dialled on remote workloads',
  ZTUNNEL_MALLOC_TRIM_INTERVAL: '10s: how often memory freed after bursts is handed back to the kernel (glibc malloc_trim); 0 turns it off',
};

// ---------------------------------------------------------------------------
// Command line

/** `ztunnel`, `ztunnel proxy`, `ztunnel proxy ztunnel` (Helm), `ztunnel version`, `ztunnel help`. */
export function parseCommand(argv: readonly string[]): Result<{ command: Command; proxyArgs: string }> {
  const proxyArgs = argv.join(' ');
  const [first, ...rest] = argv;
  const usage = 'expected no arguments, "proxy", "proxy ztunnel", "version" or "help"';
  if (first === undefined) return ok({ command: 'proxy', proxyArgs });
  if (first === 'proxy') {
    if (rest.length === 0 || (rest.length === 1 && rest[0] === 'ztunnel')) return ok({ command: 'proxy', proxyArgs });
    return fail(rejection('argv', `unexpected arguments "${proxyArgs}"; ${usage}`));
  }
  if ((first === 'version' || first === 'help') && rest.length === 0) return ok({ command: first, proxyArgs });
  return fail(rejection('argv', `unknown command "${proxyArgs}"; ${usage}`));
}

// ---------------------------------------------------------------------------
// Addresses


// ---------------------------------------------------------------------------
// ProxyConfig (YAML)

interface MutableProxyConfig {
  discoveryAddress: string | undefined;
  proxyAdminPort: number | undefined;
  statsPort: number | undefined;
  concurrency: number | undefined;
  proxyMetadata: Record<string, string>;
}

function parseProxyConfigYaml(source: string, text: string, errors: Rejection[]): Partial<MutableProxyConfig> | undefined {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    errors.push(rejection(source, `not valid YAML: ${firstLine(err)}`));
    return undefined;
  }
  return proxyConfigFromObject(source, doc, errors);
}

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0] ?? '';
}

function proxyConfigFromObject(source: string, doc: unknown, errors: Rejection[]): Partial<MutableProxyConfig> | undefined {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    errors.push(rejection(source, 'expected a YAML mapping (ProxyConfig)'));
    return undefined;
  }
  const obj = doc as Record<string, unknown>;
  const out: Partial<MutableProxyConfig> = {};
  const port = (key: 'proxyAdminPort' | 'statsPort' | 'concurrency') => {
    const v = obj[key];
    if (v === undefined || v === null) return;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > MAX_U16) {
      errors.push(rejection(`${source}.${key}`, `${JSON.stringify(v)}: expected an integer between 0 and 65535`));
      return;
    }
    out[key] = v;
  };
  if (obj['discoveryAddress'] !== undefined && obj['discoveryAddress'] !== null) {
    if (typeof obj['discoveryAddress'] === 'string') out.discoveryAddress = obj['discoveryAddress'];
    else errors.push(rejection(`${source}.discoveryAddress`, 'expected a string such as "istiod.istio-system.svc:15012"'));
  }
  port('proxyAdminPort');
  port('statsPort');
  port('concurrency');
  const md = obj['proxyMetadata'];
  if (md !== undefined && md !== null) {
    if (typeof md !== 'object' || Array.isArray(md)) {
      errors.push(rejection(`${source}.proxyMetadata`, 'expected a mapping of names to string values'));
    } else {
      const meta: Record<string, string> = {};
      for (const [k, v] of Object.entries(md as Record<string, unknown>)) {
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
          meta[k.startsWith('ISTIO_META_') ? k.slice('ISTIO_META_'.length) : k] = String(v);
        } else {
          errors.push(rejection(`${source}.proxyMetadata.${k}`, 'expected a string value'));
        }
      }
      out.proxyMetadata = meta;
    }
  }
  return out;
}

function mergeProxyConfig(base: MutableProxyConfig, over: Partial<MutableProxyConfig>): MutableProxyConfig {
  return {
    discoveryAddress: over.discoveryAddress ?? base.discoveryAddress,
    proxyAdminPort: over.proxyAdminPort ?? base.proxyAdminPort,
    statsPort: over.statsPort ?? base.statsPort,
    concurrency: over.concurrency ?? base.concurrency,
    proxyMetadata: { ...base.proxyMetadata, ...over.proxyMetadata },
  };
}

// ---------------------------------------------------------------------------
// The parser

/**
 * Parses ztunnel's configuration. `argv` is the arguments after the program
 * name (process.argv.slice(2)).
 */
export function parseConfig(env: Env, probe: ConfigProbe, argv: readonly string[]): Result<ZtunnelConfig> {
  const errors: Rejection[] = [];
  const warnings: string[] = [];
  const bad = (name: string, value: string, reason: string) => errors.push(rejection(name, `"${value}": ${reason}`));

  const cmd = parseCommand(argv);
  if (!cmd.ok) errors.push(...cmd.errors);

  const bool = (name: string, dflt: boolean): boolean => {
    const v = env[name];
    if (v === undefined) return dflt;
    if (v === 'true') return true;
    if (v === 'false') return false;
    bad(name, v, 'expected "true" or "false"');
    return dflt;
  };
  const optionalBool = (name: string): boolean | undefined => (env[name] === undefined ? undefined : bool(name, false));
  const int = (name: string, dflt: number, min: number, max: number): number => {
    const v = env[name];
    if (v === undefined) return dflt;
    if (!/^\d+$/.test(v.trim()) || Number(v) < min || Number(v) > max) {
      bad(name, v, `expected an integer between ${min} and ${max}`);
      return dflt;
    }
    return Number(v);
  };
  const duration = (name: string, dfltMs: number, minMs = 0): number => {
    const v = env[name];
    if (v === undefined) return dfltMs;
    const d = parseDuration(v);
    if (!d.ok) {
      errors.push(rejection(name, d.reason));
      return dfltMs;
    }
    if (d.ms < minMs) {
      bad(name, v, `must be at least ${minMs}ms`);
      return dfltMs;
    }
    return d.ms;
  };

  // ProxyConfig: mesh config defaultConfig, then PROXY_CONFIG over it.
  let pc: MutableProxyConfig = {
    discoveryAddress: undefined,
    proxyAdminPort: undefined,
    statsPort: undefined,
    concurrency: undefined,
    proxyMetadata: {},
  };
  if (probe.readFile && probe.fileExists(MESH_CONFIG_PATH)) {
    const text = probe.readFile(MESH_CONFIG_PATH);
    if (text !== undefined) {
      let mesh: unknown;
      try {
        mesh = parseYaml(text);
      } catch (err) {
        errors.push(rejection(MESH_CONFIG_PATH, `not valid YAML: ${firstLine(err)}`));
      }
      if (mesh !== null && typeof mesh === 'object' && !Array.isArray(mesh)) {
        const dc = (mesh as Record<string, unknown>)['defaultConfig'];
        if (dc !== undefined && dc !== null) {
          const parsed = proxyConfigFromObject(`${MESH_CONFIG_PATH} defaultConfig`, dc, errors);
          if (parsed) pc = mergeProxyConfig(pc, parsed);
        }
      }
    }
  }
  const pcEnv = env['PROXY_CONFIG'];
  if (pcEnv !== undefined && pcEnv !== '') {
    const parsed = parseProxyConfigYaml('PROXY_CONFIG', pcEnv, errors);
    if (parsed) pc = mergeProxyConfig(pc, parsed);
  }
  // ISTIO_META_* from the environment win over ProxyConfig proxyMetadata.
  const proxyMetadata: Record<string, string> = { ...pc.proxyMetadata };
  for (const [k, v] of Object.entries(env)) {
    if (v !== undefined && k.startsWith('ISTIO_META_') && k.length > 'ISTIO_META_'.length) proxyMetadata[k.slice('ISTIO_META_'.length)] = v;
  }

  // Control plane: XDS_ADDRESS falls back to ProxyConfig discoveryAddress.
  const controlEnv: Env =
    env['XDS_ADDRESS'] === undefined && pc.discoveryAddress !== undefined ? { ...env, XDS_ADDRESS: pc.discoveryAddress } : env;
  const controlResult = parseControlEnv(controlEnv, probe);
  if (!controlResult.ok) errors.push(...controlResult.errors);

  // Mode.
  let proxyMode: ProxyMode = 'shared';
  const modeText = env['PROXY_MODE'];
  if (modeText !== undefined) {
    if (modeText === 'shared' || modeText === 'dedicated') proxyMode = modeText;
    else bad('PROXY_MODE', modeText, 'expected "shared" or "dedicated"');
  }
  let proxyWorkloadInfo: WorkloadInfo | undefined;
  const pwi = env['PROXY_WORKLOAD_INFO'];
  if (proxyMode === 'dedicated') {
    if (pwi === undefined) {
      errors.push(rejection('PROXY_WORKLOAD_INFO', 'PROXY_MODE=dedicated requires PROXY_WORKLOAD_INFO=<namespace>/<pod name>/<service account>'));
    } else {
      const parts = pwi.split('/');
      const [namespace = '', name = '', serviceAccount = ''] = parts;
      const problems = [
        parts.length !== 3 ? 'expected exactly three parts <namespace>/<pod name>/<service account>' : undefined,
        parts.length === 3 && spiffeSegmentProblem(namespace) ? `namespace ${spiffeSegmentProblem(namespace)}` : undefined,
        parts.length === 3 && name === '' ? 'pod name must not be empty' : undefined,
        parts.length === 3 && spiffeSegmentProblem(serviceAccount) ? `service account ${spiffeSegmentProblem(serviceAccount)}` : undefined,
      ].filter((p): p is string => p !== undefined);
      if (problems.length > 0) bad('PROXY_WORKLOAD_INFO', pwi, problems.join('; '));
      else proxyWorkloadInfo = { namespace, name, serviceAccount };
    }
  } else if (pwi !== undefined) {
    warnings.push('PROXY_WORKLOAD_INFO is ignored because PROXY_MODE is not "dedicated"');
  }

  const ipv6Enabled = bool('IPV6_ENABLED', true);
  const wildcard = ipv6Enabled ? '::' : '0.0.0.0';
  const socks5Enabled = bool('UNSTABLE_ENABLE_SOCKS5', false);

  const address = (name: string, dflt: ListenAddress): ListenAddress => {
    const v = env[name];
    if (v === undefined) return dflt;
    const parsed = parseListenAddress(v, name);
    if (!parsed.ok) {
      errors.push(...parsed.errors);
      return dflt;
    }
    return parsed.value;
  };
  const admin = address('ZTUNNEL_ADMIN_ADDR', { host: 'localhost', port: pc.proxyAdminPort ?? DEFAULT_PORTS.admin });
  if (env['ZTUNNEL_ADMIN_ADDR'] !== undefined && !isLoopbackHost(admin.host)) {
    bad('ZTUNNEL_ADMIN_ADDR', env['ZTUNNEL_ADMIN_ADDR'], 'the admin server must bind a loopback address (localhost, 127.0.0.0/8 or [::1])');
  }
  const stats = address('ZTUNNEL_STATS_ADDR', { host: wildcard, port: pc.statsPort ?? DEFAULT_PORTS.stats });
  const readiness = address('ZTUNNEL_READINESS_ADDR', { host: wildcard, port: DEFAULT_PORTS.readiness });
  const inbound = address('ZTUNNEL_INBOUND_ADDR', { host: wildcard, port: DEFAULT_PORTS.inbound });
  const inboundPlaintext = address('ZTUNNEL_INBOUND_PLAINTEXT_ADDR', { host: wildcard, port: DEFAULT_PORTS.inboundPlaintext });
  const outbound = address('ZTUNNEL_OUTBOUND_ADDR', { host: wildcard, port: DEFAULT_PORTS.outbound });
  const socks5Addr = address('ZTUNNEL_SOCKS5_ADDR', { host: '127.0.0.1', port: DEFAULT_PORTS.socks5 });
  const socks5 = socks5Enabled ? socks5Addr : undefined;

  let dnsProxyAddr: ListenAddress = { host: 'localhost', port: DEFAULT_PORTS.dns };
  const dnsAddrText = proxyMetadata['DNS_PROXY_ADDR'];
  if (dnsAddrText !== undefined) {
    const parsed = parseListenAddress(dnsAddrText, 'ISTIO_META_DNS_PROXY_ADDR');
    if (parsed.ok) dnsProxyAddr = parsed.value;
    else errors.push(...parsed.errors);
  }
  const dnsCapture = proxyMetadata['DNS_CAPTURE'];
  const dnsProxy = dnsCapture === undefined || dnsCapture.toLowerCase() === 'true';

  const hbonePort = int('ZTUNNEL_HBONE_PORT', inbound.port, 1, MAX_U16);
  const illegalPorts = new Set([inbound.port, inboundPlaintext.port, outbound.port]);
  if (socks5) illegalPorts.add(socks5.port);
  illegalPorts.delete(0);

  // Termination deadline: explicit, else derived from the pod's grace period.
  let terminationDeadlineMs = DEFAULT_TERMINATION_DEADLINE_MS;
  if (env['CONNECTION_TERMINATION_DEADLINE'] !== undefined) {
    terminationDeadlineMs = duration('CONNECTION_TERMINATION_DEADLINE', DEFAULT_TERMINATION_DEADLINE_MS);
  } else if (env['TERMINATION_GRACE_PERIOD_SECONDS'] !== undefined) {
    const secs = int('TERMINATION_GRACE_PERIOD_SECONDS', -1, 0, Number.MAX_SAFE_INTEGER);
    if (secs >= 0) terminationDeadlineMs = terminationDeadlineFromGracePeriod(secs) * 1000;
  }

  // Worker threads (recorded only).
  const cpu = cpuInputs(env, probe.cpuCount, errors);
  const defaultThreads =
    pc.concurrency !== undefined ? (pc.concurrency > 0 ? pc.concurrency : cpu.cpuCount) : cpu.defaultWorkerThreads;
  let workerThreads = defaultThreads;
  const wt = env['ZTUNNEL_WORKER_THREADS'];
  if (wt !== undefined) {
    if (wt.endsWith('%')) {
      const pct = Number(wt.slice(0, -1));
      if (wt.length < 2 || !Number.isFinite(pct) || pct <= 0 || pct > 100) bad('ZTUNNEL_WORKER_THREADS', wt, 'percentage must be greater than 0 and at most 100');
      else workerThreads = Math.max(1, Math.ceil((cpu.cpuCount * pct) / 100));
    } else if (/^\d+$/.test(wt)) {
      workerThreads = Number(wt) === 0 ? cpu.cpuCount : Number(wt);
    } else {
      bad('ZTUNNEL_WORKER_THREADS', wt, 'expected a number of threads, "N%" of the CPUs, or 0 for all CPUs');
    }
    warnings.push(`ZTUNNEL_WORKER_THREADS=${wt} is recorded only: this ztunnel runs on one Node.js event loop`);
  }
  workerThreads = Math.max(1, workerThreads);

  const logFilter = env['RUST_LOG'] ?? DEFAULT_LOG_FILTER;
  const lfParsed = parseLogFilter(logFilter);
  if (!lfParsed.ok) bad('RUST_LOG', logFilter, lfParsed.errors.map((e) => e.reason).join('; '));

  let logFormat: LogFormat = 'plain';
  const lf = env['LOG_FORMAT'];
  if (lf !== undefined) {
    if (lf === 'plain' || lf === 'json') logFormat = lf;
    else bad('LOG_FORMAT', lf, 'expected "plain" or "json"');
  }

  let compliancePolicy: 'pqc' | undefined;
  const cp = env['COMPLIANCE_POLICY'];
  if (cp !== undefined && cp !== '') {
    // ztunnel's pqc policy restricts TLS to the X25519MLKEM768 key exchange. Node.js 20's OpenSSL has no
    // ML-KEM, so the policy cannot be met: refuse to start rather than run non-compliant (fail closed).
    if (cp === 'pqc') bad('COMPLIANCE_POLICY', cp, 'the "pqc" policy needs the X25519MLKEM768 key exchange, which this build\'s TLS library (Node.js OpenSSL) does not offer; unset COMPLIANCE_POLICY or run Istio\'s ztunnel on this node');
    else bad('COMPLIANCE_POLICY', cp, 'expected "pqc" or empty');
  }

  const socketConfig = (): ZtunnelConfig['socket'] => {
    const keepaliveTimeMs = duration('KEEPALIVE_TIME', 180_000);
    const keepaliveIntervalMs = duration('KEEPALIVE_INTERVAL', 180_000);
    const keepaliveRetries = int('KEEPALIVE_RETRIES', 9, 0, MAX_U32);
    const keepaliveEnabled = bool('KEEPALIVE_ENABLED', true);
    const userTimeoutEnabled = bool('USER_TIMEOUT_ENABLED', false);
    if (keepaliveEnabled && (keepaliveIntervalMs !== 180_000 || keepaliveRetries !== 9)) {
      warnings.push(
        `KEEPALIVE_INTERVAL=${keepaliveIntervalMs / 1000}s / KEEPALIVE_RETRIES=${keepaliveRetries} cannot be applied: Node.js sets only TCP_KEEPIDLE (KEEPALIVE_TIME); the kernel's tcp_keepalive_intvl and tcp_keepalive_probes apply`,
      );
    }
    if (userTimeoutEnabled) warnings.push('USER_TIMEOUT_ENABLED=true cannot be applied: Node.js cannot set TCP_USER_TIMEOUT; dead peers are found by TCP keepalive and the HTTP/2 PING keepalive');
    return {
      keepaliveTimeMs, keepaliveIntervalMs, keepaliveRetries, keepaliveEnabled, userTimeoutEnabled,
      tcp: { noDelay: true, keepAlive: keepaliveEnabled, keepAliveTimeMs: keepaliveTimeMs },
    };
  };
  const tls12 = (): boolean => {
    const enabled = bool('TLS12_ENABLED', false);
    if (enabled) warnings.push('TLS12_ENABLED=true is ignored: HBONE stays TLS 1.3-only (every ztunnel, waypoint and istiod speaks TLS 1.3)');
    return enabled;
  };

  const crlPath = env['CRL_PATH'] ? env['CRL_PATH'] : undefined;

  const enableProxy = bool('ENABLE_PROXY', true);
  const xdsOnDemand = controlResult.ok ? controlResult.value.xdsOnDemand : false;
  if (dnsProxy && xdsOnDemand) {
    errors.push(rejection('XDS_ON_DEMAND', 'the DNS proxy does not support on-demand xDS; set ISTIO_META_DNS_CAPTURE=false or XDS_ON_DEMAND=false'));
  }
  if (!enableProxy && !dnsProxy) {
    errors.push(rejection('ENABLE_PROXY', 'ztunnel would run without any servers: ENABLE_PROXY=false and the DNS proxy is off'));
  }

  // ztunnel's own identity (self inbound listener), from the downward API.
  let ztunnelIdentity: Identity | undefined;
  let ztunnelWorkload: WorkloadInfo | undefined;
  const podNs = env['POD_NAMESPACE'];
  const podSa = env['SERVICE_ACCOUNT'];
  const podName = env['POD_NAME'];
  if (podNs !== undefined && podSa !== undefined && podName !== undefined && controlResult.ok) {
    ztunnelIdentity = { trustDomain: controlResult.value.trustDomain, namespace: podNs, serviceAccount: podSa };
    ztunnelWorkload = { namespace: podNs, name: podName, serviceAccount: podSa };
  }

  const config = {
    command: cmd.ok ? cmd.value.command : 'proxy',
    proxyArgs: argv.join(' '),
    proxyConfig: { ...pc, proxyMetadata: { ...pc.proxyMetadata } },
    proxyMode,
    proxyWorkloadInfo,
    inpodUds: env['INPOD_UDS'] ?? '/var/run/ztunnel/ztunnel.sock',
    inpodPortReuse: bool('INPOD_PORT_REUSE', true),
    packetMark: env['PACKET_MARK'] !== undefined ? int('PACKET_MARK', DEFAULT_INPOD_MARK, 0, MAX_U32) : proxyMode === 'shared' ? DEFAULT_INPOD_MARK : undefined,
    enableProxy,
    requireOriginalSource: optionalBool('ENABLE_ORIG_SRC'),
    localhostAppTunnel: bool('LOCALHOST_APP_TUNNEL', true),
    ipv6Enabled,
    socks5Enabled,
    pool: {
      maxStreamsPerConnection: int('POOL_MAX_STREAMS_PER_CONNECTION', 100, 1, MAX_U16),
      unusedReleaseTimeoutMs: duration('POOL_UNUSED_RELEASE_TIMEOUT', 5 * 60_000),
    },
    http2: {
      streamWindowSize: int('HTTP2_STREAM_WINDOW_SIZE', 4 * 1024 * 1024, 1, MAX_WINDOW),
      connectionWindowSize: int('HTTP2_CONNECTION_WINDOW_SIZE', 16 * 1024 * 1024, 1, MAX_WINDOW),
      frameSize: int('HTTP2_FRAME_SIZE', 1024 * 1024, 16_384, 16_777_215),
    },
    socket: socketConfig(),
    terminationDeadlineMs,
    connectTimeoutMs: duration('ZTUNNEL_CONNECT_TIMEOUT', 10_000, 1),
    workerThreads,
    tls12Enabled: tls12(),
    compliancePolicy,
    crlPath,
    enableResponseBaggage: bool('ENABLE_RESPONSE_BAGGAGE', true),
    authzPolicyInfoLogging: bool('AUTHZ_POLICY_INFO_LOGGING', false),
    logFilter,
    logFormat,
    dnsProxy,
    clusterDomain: (env['CLUSTER_DOMAIN'] ?? '').replace(/\.$/, '') || 'cluster.local',
    limits: {
      tlsHandshakeTimeoutMs: duration('ZTUNNEL_TLS_HANDSHAKE_TIMEOUT', 10_000, 1),
      h2PrefaceTimeoutMs: duration('ZTUNNEL_H2_PREFACE_TIMEOUT', 10_000, 1),
      socks5HandshakeTimeoutMs: duration('ZTUNNEL_SOCKS5_HANDSHAKE_TIMEOUT', 10_000, 1),
      maxConnections: int('ZTUNNEL_MAX_CONNECTIONS', 100_000, 1, Number.MAX_SAFE_INTEGER),
    },
    mallocTrimIntervalMs: duration('ZTUNNEL_MALLOC_TRIM_INTERVAL', 10_000, 0),
    addresses: { admin, stats, readiness, inbound, inboundPlaintext, outbound, socks5, dnsProxy: dnsProxyAddr },
    hbonePort,
    illegalPorts,
    istioVersion: env['ISTIO_META_ISTIO_VERSION'] || 'unknown',
    ztunnelIdentity,
    ztunnelWorkload,
    warnings,
  } satisfies Omit<ZtunnelConfig, 'control'>;

  if (errors.length > 0 || !controlResult.ok) return fail(...errors);
  return ok({ ...config, control: { ...controlResult.value, proxyMetadata } });
}

/**
 * ztunnel's drain deadline from terminationGracePeriodSeconds: leave 5 s
 * before Kubernetes' SIGKILL when the period is over 10 s, else 1 s; at least 1 s.
 */
export function terminationDeadlineFromGracePeriod(secs: number): number {
  return Math.max(secs > 10 ? secs - 5 : secs - 1, 1);
}

/** A Kubernetes CPU quantity ("2", "1.5", "500m") as whole CPUs, rounded up. */
function cpuQuantity(env: Env, name: string, errors: Rejection[]): number | undefined {
  const raw = env[name];
  if (raw === undefined) return undefined;
  const cores = raw.endsWith('m') ? Number(raw.slice(0, -1)) / 1000 : Number(raw);
  if (raw.trim() === '' || raw === 'm' || !Number.isFinite(cores) || cores <= 0) {
    errors.push(rejection(name, `"${raw}": expected a positive CPU quantity such as "2", "1.5" or "500m"`));
    return undefined;
  }
  return Math.ceil(cores);
}

function cpuInputs(env: Env, logicalCpus: number, errors: Rejection[]): { cpuCount: number; defaultWorkerThreads: number } {
  const limit = cpuQuantity(env, 'ZTUNNEL_RESOURCE_CPU_LIMIT', errors);
  const request = cpuQuantity(env, 'ZTUNNEL_RESOURCE_CPU_REQUEST', errors) ?? 0;
  let cpuCount = logicalCpus;
  if (limit !== undefined) cpuCount = limit;
  else if (env['ZTUNNEL_CPU_LIMIT'] !== undefined) {
    const v = env['ZTUNNEL_CPU_LIMIT'];
    if (/^\d+$/.test(v)) cpuCount = Number(v);
    else errors.push(rejection('ZTUNNEL_CPU_LIMIT', `"${v}": expected a whole number of CPUs`));
  }
  const defaultWorkerThreads =
    limit !== undefined
      ? Math.max(limit, request)
      : Math.max(Math.ceil(cpuCount * WORKER_THREAD_CPU_FRACTION), request, DEFAULT_WORKER_THREADS);
  return { cpuCount, defaultWorkerThreads };
}
