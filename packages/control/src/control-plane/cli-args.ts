/**
 * Command-line flags of `ambient-control-plane`, parsed into options with
 * every problem reported at once (unknown flags, missing values, bad values).
 */
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';
import { parseListenAddress } from '../config/listen-address.js';

export const USAGE = `Usage: ambient-control-plane --mesh FILE [options]

A local Istio control plane for ambient data planes: delta ADS (WDS Address and
Authorization) and the Istio CA (IstioCertificateService) on one TLS 1.3 port.

  --mesh FILE                  mesh file in ztunnel's LOCAL_XDS_PATH shape (workloads, services, policies); watched
  --listen IP:PORT             address to serve on: IP:PORT, [IPV6]:PORT or localhost:PORT (default 127.0.0.1:15012;
                               port 0 picks a free port)
  --tokens FILE                bearer tokens (YAML list of {token, namespace, serviceAccount, node?, pod?}); watched
  --root-cert-out FILE         write the root CA PEM here (point XDS_ROOT_CA and CA_ROOT_CA at it)
  --ca-cert FILE --ca-key FILE sign with this CA certificate and key instead of a generated root
  --trust-domain DOMAIN        trust domain of issued identities (default cluster.local)
  --cluster-id ID              refuse callers whose clusterid header names another cluster
  --trusted-node-accounts LIST comma-separated namespace/serviceAccount allowed to impersonate (default istio-system/ztunnel)
  --log-level LEVEL            trace, debug, info, warn, error, fatal or silent (default info)
  -h, --help                   show this help
`;

interface CliOptions {
  readonly meshPath: string;
  readonly listen?: string;
  readonly tokensPath?: string;
  readonly rootCertOutPath?: string;
  readonly caCertPath?: string;
  readonly caKeyPath?: string;
  readonly trustDomain?: string;
  readonly clusterId?: string;
  readonly trustedNodeAccounts?: readonly string[];
  readonly logLevel: string;
}

export type CliCommand = { readonly kind: 'help' } | { readonly kind: 'run'; readonly options: CliOptions };

const VALUE_FLAGS = {
  '--mesh': 'meshPath',
  '--listen': 'listen',
  '--tokens': 'tokensPath',
  '--root-cert-out': 'rootCertOutPath',
  '--ca-cert': 'caCertPath',
  '--ca-key': 'caKeyPath',
  '--trust-domain': 'trustDomain',
  '--cluster-id': 'clusterId',
  '--trusted-node-accounts': 'trustedNodeAccounts',
  '--log-level': 'logLevel',
} as const;
type ValueFlag = keyof typeof VALUE_FLAGS;
const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function parseCliArgs(argv: readonly string[]): Result<CliCommand> {
  const errors: Rejection[] = [];
  const values = new Map<ValueFlag, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '-h' || arg === '--help') return ok({ kind: 'help' });
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    if (!(flag in VALUE_FLAGS)) {
      errors.push(rejection(flag, arg.startsWith('-') ? 'unknown flag (see --help)' : `unexpected argument "${arg}"`));
      continue;
    }
    let value: string | undefined;
    if (eq > 0) value = arg.slice(eq + 1);
    else {
      const next = argv[i + 1];
      if (next !== undefined && !next.startsWith('--')) {
        value = next;
        i++;
      }
    }
    if (value === undefined || value === '') {
      errors.push(rejection(flag, 'needs a value'));
      continue;
    }
    if (values.has(flag as ValueFlag)) errors.push(rejection(flag, 'given more than once'));
    values.set(flag as ValueFlag, value);
  }

  const meshPath = values.get('--mesh');
  if (meshPath === undefined) errors.push(rejection('--mesh', 'is required'));
  const listen = values.get('--listen');
  if (listen !== undefined) {
    const parsed = parseListenAddress(listen, '--listen');
    if (!parsed.ok) errors.push(...parsed.errors);
  }
  if (values.has('--ca-cert') !== values.has('--ca-key')) {
    errors.push(rejection(values.has('--ca-cert') ? '--ca-key' : '--ca-cert', 'is required with ' + (values.has('--ca-cert') ? '--ca-cert' : '--ca-key')));
  }
  const logLevel = values.get('--log-level') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) errors.push(rejection('--log-level', `"${logLevel}" must be one of ${LOG_LEVELS.join(', ')}`));
  const accounts = values.get('--trusted-node-accounts');
  const trustedNodeAccounts = accounts?.split(',').map((a) => a.trim()).filter((a) => a !== '');
  for (const a of trustedNodeAccounts ?? []) {
    if (!/^[^/]+\/[^/]+$/.test(a)) errors.push(rejection('--trusted-node-accounts', `"${a}" must be namespace/serviceAccount`));
  }

  if (errors.length > 0 || meshPath === undefined) return fail(...errors);
  const opt = (flag: ValueFlag, key: string) => {
    const v = values.get(flag);
    return v === undefined ? {} : { [key]: v };
  };
  return ok({
    kind: 'run',
    options: {
      meshPath,
      logLevel,
      ...opt('--listen', 'listen'),
      ...opt('--tokens', 'tokensPath'),
      ...opt('--root-cert-out', 'rootCertOutPath'),
      ...opt('--ca-cert', 'caCertPath'),
      ...opt('--ca-key', 'caKeyPath'),
      ...opt('--trust-domain', 'trustDomain'),
      ...opt('--cluster-id', 'clusterId'),
      ...(trustedNodeAccounts ? { trustedNodeAccounts } : {}),
    },
  });
}
