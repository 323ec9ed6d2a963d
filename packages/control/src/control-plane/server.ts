/**
 * The local control plane: one gRPC server over TLS 1.3 (like istiod's :15012)
 * serving delta ADS for the two WDS types and IstioCertificateService, fed by
 * a mesh file in ztunnel's static-config shape and a bearer-token file.
 *
 * Composition only: the mesh state (mesh-state.ts), the ADS endpoint
 * (ads-service.ts), the CA endpoint (ca-service.ts), file loading and
 * watching (mesh-file.ts, tokens.ts, ../platform/file-watch.ts) and the shared local CA
 * (ca/authority.ts) are wired here.
 *
 * Startup fails with one ControlPlaneError listing every problem found in the
 * options, the mesh file, the token file and the CA files. Later reloads that
 * fail keep serving the last good state and log every problem.
 */
import { systemRandomBytes } from '../platform/crypto.js';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { pino, type Logger } from 'pino';
import { LocalCertificateAuthority } from '../ca/authority.js';
import type { CertificateAuthority } from '../ca/types.js';
import { DEFAULT_TRUST_DOMAIN, spiffeSegmentProblem, trustDomainProblem } from '../model/identity.js';
import { systemClock, type Clock } from '../platform/clock.js';
import { fail, formatRejections, ok, rejection, type Rejection, type Result } from '../result.js';
import { AdsService, type AdsObserver, type AdsStreamInfo, type AdsSubscriptionStatus, type StreamStatus } from './ads-service.js';
import { CaService, DEFAULT_TRUSTED_NODE_ACCOUNTS, type CaRequestRecord } from './ca-service.js';
import { watchFile, type FileWatch } from '../platform/file-watch.js';
import { parseListenAddress } from '../config/listen-address.js';
import { loadMeshFile, readTextFile } from './mesh-file.js';
import { MeshState } from './mesh-state.js';
import { parseTokenFile, TokenRegistry, type TokenEntry } from './tokens.js';

export const DEFAULT_LISTEN = '127.0.0.1:15012';
/** Names the serving certificate covers, so clients can use any of them (ztunnel's default XDS_ADDRESS off-cluster is https://localhost:15012). */
export const SERVING_DNS_NAMES: readonly string[] = ['localhost', 'istiod.istio-system.svc'];
export const SERVING_IPS: readonly string[] = ['127.0.0.1', '::1'];
const DEFAULT_RELOAD_DEBOUNCE_MS = 100;
const SHUTDOWN_GRACE_MS = 2_000;

/** A CA able to sign workload CSRs and issue the control plane's own serving certificate. */
export interface ServingCertificateAuthority extends CertificateAuthority {
  issueServerCertificate(
    dnsNames: readonly string[],
    ips: readonly string[],
  ): Promise<{ readonly privateKeyPem: string; readonly chainPem: readonly string[] }>;
}

export interface ReloadEvent {
  readonly file: 'mesh' | 'tokens';
  readonly path: string;
  readonly ok: boolean;
  /** Every problem, when the file was refused (the last good content stays in use). */
  readonly problems: readonly Rejection[];
}

export interface ControlPlaneObserver extends AdsObserver {
  onCaRequest?(record: CaRequestRecord): void;
  onReload?(event: ReloadEvent): void;
}

export interface ControlPlaneOptions {
  /** Mesh file in ztunnel's LOCAL_XDS_PATH shape; watched and reloaded. Omit to start with an empty mesh. */
  readonly meshPath?: string | undefined;
  /** Token file (see tokens.ts for the format); watched and reloaded. */
  readonly tokensPath?: string | undefined;
  /** Tokens known from the start, in addition to the token file. */
  readonly tokens?: readonly TokenEntry[] | undefined;
  /** `<ip>:<port>`, `[<ipv6>]:<port>` or `localhost:<port>` to listen on (default 127.0.0.1:15012); port 0 picks a free port. */
  readonly listen?: string | undefined;
  /** Trust domain of issued identities (default cluster.local). */
  readonly trustDomain?: string | undefined;
  /** When set, callers whose `clusterid` header names another cluster are refused, as istiod does. */
  readonly clusterId?: string | undefined;
  /** `namespace/serviceAccount` allowed to impersonate (CA_TRUSTED_NODE_ACCOUNTS; default istio-system/ztunnel). */
  readonly trustedNodeAccounts?: readonly string[] | undefined;
  /**
   * Whether ADS streams need a valid bearer token (istiod's XDS_AUTH).
   * Default: 'required' when tokens are configured, else 'none'.
   */
  readonly xdsAuth?: 'required' | 'none' | undefined;
  /** Where to write the root CA PEM (for XDS_ROOT_CA / CA_ROOT_CA). */
  readonly rootCertOutPath?: string | undefined;
  /** Signing certificate and key files; both or neither. Without them a root is generated. */
  readonly caCertPath?: string | undefined;
  readonly caKeyPath?: string | undefined;
  /** A ready CA (tests); overrides the CA files. */
  readonly authority?: ServingCertificateAuthority | undefined;
  readonly defaultCertTtlSeconds?: number | undefined;
  readonly maxCertTtlSeconds?: number | undefined;
  readonly reloadDebounceMs?: number | undefined;
  readonly clock?: Clock | undefined;
  readonly logger?: Logger | undefined;
  readonly observer?: ControlPlaneObserver | undefined;
}

export interface ControlPlane extends AsyncDisposable {
  /** `host:port` actually bound (the real port when 0 was asked for). */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** The trust roots of the serving certificate and of issued workload certificates (PEM). */
  readonly rootCaPem: string;
  readonly trustDomain: string;
  /** The served mesh; changing it pushes deltas. A mesh-file reload replaces it whole. */
  readonly state: MeshState;
  readonly tokens: TokenRegistry;
  /** Open ADS streams. */
  streams(): AdsStreamInfo[];
  subscriptions(streamId: number): AdsSubscriptionStatus[] | undefined;
  /** Ends every ADS stream with `status` (default UNAVAILABLE); returns how many. */
  dropStreams(status?: StreamStatus): number;
  /** Reads the mesh file now (also done on every change); refused content keeps the last good state. */
  reloadMesh(): Promise<Result<void>>;
  close(): Promise<void>;
}

export type ControlPlaneErrorCode = 'CONFIG_INVALID' | 'LISTEN_FAILED' | 'ROOT_CERT_WRITE_FAILED';

export class ControlPlaneError extends Error {
  constructor(
    readonly code: ControlPlaneErrorCode,
    message: string,
    readonly problems: readonly Rejection[] = [],
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ControlPlaneError';
  }
}

export async function startControlPlane(options: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? pino({ level: 'silent' });
  const log = logger.child({ component: 'control-plane' });
  const problems: Rejection[] = [];

  const listen = parseListenAddress(options.listen ?? DEFAULT_LISTEN, 'listen');
  if (!listen.ok) problems.push(...listen.errors);
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const tdProblem = trustDomainProblem(trustDomain);
  if (tdProblem) problems.push(rejection('trustDomain', tdProblem));
  const trustedNodeAccounts = options.trustedNodeAccounts ?? DEFAULT_TRUSTED_NODE_ACCOUNTS;
  trustedNodeAccounts.forEach((a, i) => {
    const [ns, sa, extra] = a.split('/');
    if (ns === undefined || sa === undefined || extra !== undefined || spiffeSegmentProblem(ns) || spiffeSegmentProblem(sa)) {
      problems.push(rejection(`trustedNodeAccounts[${i}]`, `"${a}" must be namespace/serviceAccount`));
    }
  });
  if ((options.caCertPath === undefined) !== (options.caKeyPath === undefined)) {
    problems.push(rejection(options.caCertPath === undefined ? 'caCertPath' : 'caKeyPath', 'the CA certificate and key must be given together'));
  }

  const tokens = new TokenRegistry(options.tokens ?? []);
  let tokensText: string | undefined;
  if (options.tokensPath !== undefined) {
    const loaded = await loadTokens(options.tokensPath);
    if (loaded.ok) {
      tokensText = loaded.value.text;
      for (const e of loaded.value.entries) tokens.add(e);
    } else problems.push(...loaded.errors);
  }

  const state = new MeshState();
  let meshText: string | undefined;
  if (options.meshPath !== undefined) {
    const loaded = await loadMeshFile(options.meshPath);
    if (loaded.ok) {
      meshText = loaded.value.text;
      state.replace(loaded.value.value);
    } else problems.push(...loaded.errors);
  }

  let authority = options.authority;
  if (!authority && options.caCertPath !== undefined && options.caKeyPath !== undefined) {
    const loaded = await loadAuthority(options.caCertPath, options.caKeyPath, clock, options);
    if (loaded.ok) authority = loaded.value;
    else problems.push(...loaded.errors);
  }

  if (problems.length > 0 || !listen.ok) {
    throw new ControlPlaneError('CONFIG_INVALID', `control plane configuration is invalid: ${formatRejections(problems)}`, problems);
  }
  authority ??= await LocalCertificateAuthority.generate({
    clock,
    ...(options.defaultCertTtlSeconds !== undefined ? { defaultTtlSeconds: options.defaultCertTtlSeconds } : {}),
    ...(options.maxCertTtlSeconds !== undefined ? { maxTtlSeconds: options.maxCertTtlSeconds } : {}),
  });
  const rootCaPem = authority.rootsPem.join('');

  const servingIps = [...SERVING_IPS];
  if (isIP(listen.value.host) !== 0 && !['0.0.0.0', '::'].includes(listen.value.host) && !servingIps.includes(listen.value.host)) {
    servingIps.push(listen.value.host);
  }
  // The listen host is an IP or localhost (parseListenAddress refuses other names), and localhost is always served.
  const serving = await authority.issueServerCertificate([...SERVING_DNS_NAMES], servingIps);

  const observer = options.observer;
  const xdsAuth = options.xdsAuth ?? (options.tokensPath !== undefined || (options.tokens?.length ?? 0) > 0 ? 'required' : 'none');
  if (xdsAuth === 'none') log.warn('ADS streams are not authenticated (no tokens configured)');
  const ads = new AdsService({ state, tokens, trustDomain, clusterId: options.clusterId, auth: xdsAuth, logger, observer });
  const ca = new CaService({
    authority,
    tokens,
    state,
    trustDomain,
    clusterId: options.clusterId,
    trustedNodeAccounts,
    defaultTtlSeconds: options.defaultCertTtlSeconds,
    maxTtlSeconds: options.maxCertTtlSeconds,
    logger,
    onRequest: observer?.onCaRequest ? (r) => observer.onCaRequest?.(r) : undefined,
  });

  // Keepalive pings find dead clients; istiod's defaults are 30 s / 10 s (`pkg/keepalive/options.go`).
  const server = new grpc.Server({ 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 });
  server.addService(ads.definition, ads.implementation);
  server.addService(ca.definition, ca.implementation);
  const hostForBind = listen.value.host.includes(':') ? `[${listen.value.host}]` : listen.value.host;
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(`${hostForBind}:${listen.value.port}`, new Tls13ServerCredentials(serving.chainPem.join(''), serving.privateKeyPem), (err, p) =>
        err ? reject(err) : resolve(p),
      );
    });
  } catch (err) {
    ads.close();
    server.forceShutdown();
    throw new ControlPlaneError('LISTEN_FAILED', `cannot listen on ${options.listen ?? DEFAULT_LISTEN}: ${err instanceof Error ? err.message : String(err)}`, [], { cause: err });
  }
  const address = `${hostForBind}:${port}`;

  if (options.rootCertOutPath !== undefined) {
    try {
      await writeFileAtomically(options.rootCertOutPath, rootCaPem);
    } catch (err) {
      ads.close();
      server.forceShutdown();
      throw new ControlPlaneError('ROOT_CERT_WRITE_FAILED', `cannot write the root certificate to ${options.rootCertOutPath}: ${err instanceof Error ? err.message : String(err)}`, [], { cause: err });
    }
  }

  // === reloads ===
  const debounceMs = options.reloadDebounceMs ?? DEFAULT_RELOAD_DEBOUNCE_MS;
  const reloadMesh = serialize(async (): Promise<Result<void>> => {
    const path = options.meshPath;
    if (path === undefined) return ok(undefined);
    const loaded = await loadMeshFile(path);
    if (!loaded.ok) {
      for (const p of loaded.errors) log.error({ path, field: p.field, reason: p.reason }, 'mesh file problem');
      log.error({ path, problems: loaded.errors.length }, 'mesh file refused; still serving the last good mesh');
      observer?.onReload?.({ file: 'mesh', path, ok: false, problems: loaded.errors });
      return loaded;
    }
    if (loaded.value.text !== meshText) {
      meshText = loaded.value.text;
      state.replace(loaded.value.value);
      log.info({ path, addresses: loaded.value.value.addresses.length, policies: loaded.value.value.authorizations.length }, 'mesh file loaded');
    }
    observer?.onReload?.({ file: 'mesh', path, ok: true, problems: [] });
    return ok(undefined);
  });
  const reloadTokens = serialize(async (): Promise<Result<void>> => {
    const path = options.tokensPath;
    if (path === undefined) return ok(undefined);
    const loaded = await loadTokens(path);
    if (!loaded.ok) {
      for (const p of loaded.errors) log.error({ path, field: p.field, reason: p.reason }, 'token file problem');
      log.error({ path }, 'token file refused; still using the last good tokens');
      observer?.onReload?.({ file: 'tokens', path, ok: false, problems: loaded.errors });
      return loaded;
    }
    if (loaded.value.text !== tokensText) {
      tokensText = loaded.value.text;
      tokens.replace([...(options.tokens ?? []), ...loaded.value.entries]);
      log.info({ path, tokens: loaded.value.entries.length }, 'token file loaded');
    }
    observer?.onReload?.({ file: 'tokens', path, ok: true, problems: [] });
    return ok(undefined);
  });

  const watches: FileWatch[] = [];
  const watch = (path: string | undefined, reload: () => Promise<unknown>) => {
    if (path === undefined) return;
    const w = watchFile(path, { clock, debounceMs, logger: log, onChange: () => void reload() });
    if (w.ok) watches.push(w.value);
    else log.error({ path, problems: formatRejections(w.errors) }, 'cannot watch file; changes will not be picked up');
  };
  watch(options.meshPath, reloadMesh);
  watch(options.tokensPath, reloadTokens);

  log.info({ address, trustDomain, mesh: options.meshPath, tokens: tokens.size, xdsAuth }, 'control plane listening');

  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= (async () => {
      for (const w of watches) w.close();
      ads.close();
      await new Promise<void>((resolve) => {
        const timer = clock.setTimer(SHUTDOWN_GRACE_MS, () => {
          server.forceShutdown();
          resolve();
        });
        server.tryShutdown(() => {
          timer.cancel();
          resolve();
        });
      });
      log.info('control plane stopped');
    })();
    return closing;
  };

  return {
    address,
    host: listen.value.host,
    port,
    rootCaPem,
    trustDomain,
    state,
    tokens,
    streams: () => ads.streams(),
    subscriptions: (id) => ads.subscriptions(id),
    dropStreams: (status = { code: grpc.status.UNAVAILABLE, details: 'streams dropped by the control plane' }) => ads.dropStreams(status),
    reloadMesh,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/**
 * Server credentials that only speak TLS 1.3 (ztunnel's client refuses
 * anything older unless TLS12_ENABLED) and HTTP/2. grpc-js's createSsl has no
 * way to set the protocol floor, so we pass the TLS options ourselves.
 */
class Tls13ServerCredentials extends grpc.ServerCredentials {
  constructor(certChainPem: string, privateKeyPem: string) {
    super({ minVersion: 'TLSv1.3', requestCert: false }, { cert: Buffer.from(certChainPem), key: Buffer.from(privateKeyPem) });
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

async function loadTokens(path: string): Promise<Result<{ entries: TokenEntry[]; text: string }>> {
  const text = await readTextFile(path);
  if (!text.ok) return text;
  const parsed = parseTokenFile(text.value, path);
  if (!parsed.ok) return parsed;
  return ok({ entries: parsed.value, text: text.value });
}

async function loadAuthority(
  certPath: string,
  keyPath: string,
  clock: Clock,
  options: ControlPlaneOptions,
): Promise<Result<LocalCertificateAuthority>> {
  const [cert, key] = await Promise.all([readTextFile(certPath), readTextFile(keyPath)]);
  if (!cert.ok || !key.ok) return fail(...(cert.ok ? [] : cert.errors), ...(key.ok ? [] : key.errors));
  const loaded = await LocalCertificateAuthority.load({
    clock,
    certPem: cert.value,
    keyPem: key.value,
    ...(options.defaultCertTtlSeconds !== undefined ? { defaultTtlSeconds: options.defaultCertTtlSeconds } : {}),
    ...(options.maxCertTtlSeconds !== undefined ? { maxTtlSeconds: options.maxCertTtlSeconds } : {}),
  });
  if (!loaded.ok) {
    // Name the files, not the CA's internal field names.
    return fail(...loaded.errors.map((e) => rejection(e.field.startsWith('ca.key') ? keyPath : certPath, e.reason)));
  }
  return loaded;
}

/** Runs `fn` one at a time; a call during a run schedules exactly one more run. */
function serialize<T>(fn: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | undefined;
  let queued: Promise<T> | undefined;
  return () => {
    if (!running) {
      running = fn().finally(() => {
        running = undefined;
      });
      return running;
    }
    queued ??= running.then(
      () => undefined,
      () => undefined,
    ).then(() => {
      queued = undefined;
      running = fn().finally(() => {
        running = undefined;
      });
      return running;
    });
    return queued;
  };
}

async function writeFileAtomically(path: string, content: string): Promise<void> {
  // Create the directory too (e.g. ./.ambient on a fresh clone).
  await mkdir(dirname(path), { recursive: true });
  const tmp = join(dirname(path), `.${Buffer.from(systemRandomBytes(6)).toString('hex')}.tmp`);
  await writeFile(tmp, content, { mode: 0o644 });
  await rename(tmp, path);
}
