/**
 * The composition root of a waypoint: workload discovery (delta ADS, node
 * type `waypoint`), its own certificate from the Istio CA, the config source
 * (a directory of manifests or the Kubernetes API), the route compiler, the
 * HBONE listener with the request pipeline, the upstream side (HBONE pool,
 * endpoint choice, retries), telemetry, and the admin / metrics / readiness
 * servers — wired from a parsed config and injected platform pieces (clock,
 * sockets, logger, file reads). main.ts is the only caller outside tests;
 * nothing here reads process.env.
 *
 * State: one discovery snapshot and one config snapshot at a time; every
 * change to either recomputes the bindings (which services/workloads name
 * this waypoint) and recompiles the route table, synchronously, and swaps them
 * in whole. A request reads the current table once, so a change never applies
 * halfway through it; the next request of a live connection sees the new one.
 *
 * Lifecycle (Istio's waypoint pod): ready (15021) only after the first WDS
 * sync, the first config sync and the first certificate; the HBONE listener
 * starts then, never on an empty state. drain(): readiness false, GOAWAY /
 * `Connection: close`, in-flight requests get the drain duration, then
 * everything is force-closed.
 */
import {
  CertManager,
  createCertificateFetcher,
  formatRejections,
  startWorkloadDiscovery,
  systemRandomBytes,
  type Clock,
  type Env,
  type Identity,
  type Random,
  type RandomBytes,
  type ReadFile,
  type Snapshot,
  type WorkloadDiscovery,
} from '@ambient/control';
import {
  HbonePool,
  MetricsRegistry,
  Readiness,
  TlsMaterialCache,
  hboneDialer,
  startAdminServer,
  startMetricsServer,
  startReadinessServer,
  type ProcessLogger,
  type RunningServer,
  type SocketFactory,
} from '@ambient/dataplane';
import { waypointConfigDump } from './admin/config-dump.js';
import { computeBindings, type Bindings } from './bindings.js';
import { waypointHostname, type WaypointConfig } from './config/env.js';
import type { ConfigResources, ResourceId } from './resources/types.js';
import { compileRoutes, serviceLookup } from './routing/compile.js';
import type { RouteTable } from './routing/types.js';
import { startWaypointInbound, type WaypointInbound } from './serve/inbound.js';
import { startDirectorySource } from './sources/directory.js';
import { loadKubeConfig, startKubernetesSource } from './sources/kubernetes.js';
import type { ConfigSource, RouteParentStatus } from './sources/source.js';
import { accessLogFromMeshConfig, createWaypointTelemetry, httpSpanTransport, type AccessLogWriter, type WaypointTelemetry } from './telemetry/index.js';
import { UpstreamConnections } from './upstream/connections.js';
import { Forwarder } from './upstream/forwarder.js';
import { VERSION } from './version.js';

export interface WaypointDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly randomBytes?: RandomBytes;
  readonly logger: ProcessLogger;
  readonly env: Env;
  readonly readFile: ReadFile;
  readonly sockets: SocketFactory;
  /** A config source built by the caller (tests); default: the one the config names. */
  readonly configSource?: ConfigSource;
  /** Opens the access log named by WAYPOINT_ACCESS_LOG_FILE (`/dev/stdout` or a path); main.ts owns the files. */
  readonly openAccessLog?: (file: string) => AccessLogWriter;
  /** Called when /quitquitquit asks for a shutdown (main.ts exits after the drain). */
  readonly onShutdownRequested?: () => void;
}

export interface Waypoint extends AsyncDisposable {
  readonly readiness: Readiness;
  readonly registry: MetricsRegistry;
  readonly discovery: WorkloadDiscovery;
  readonly certificates: CertManager;
  readonly identity: Identity;
  /** Bound addresses by listener name (admin, stats, readiness, inbound). */
  readonly addresses: Readonly<Record<string, string>>;
  /** Resolves once the HBONE listener is up (after the first syncs and certificate). */
  readonly started: Promise<void>;
  /** The current compiled routes. */
  routes(): RouteTable;
  configDump(): unknown;
  drain(): Promise<void>;
  close(): Promise<void>;
}

export async function buildWaypoint(config: WaypointConfig, deps: WaypointDeps): Promise<Waypoint> {
  const { clock } = deps;
  const log = deps.logger.logger;
  for (const w of config.warnings) log.warn({ component: 'config' }, w);
  const randomBytes = deps.randomBytes ?? systemRandomBytes;

  const registry = new MetricsRegistry();
  const readiness = new Readiness({ log, clock });
  const releaseDiscovery = readiness.register('workload discovery');
  const releaseConfig = readiness.register('config source');
  const releaseCertificate = readiness.register('certificate');

  const identity: Identity = {
    trustDomain: config.control.trustDomain,
    namespace: config.control.podNamespace,
    serviceAccount: config.control.serviceAccount,
  };
  const self = {
    namespace: config.gateway.namespace,
    hostname: waypointHostname(config),
    podIps: config.control.instanceIp === '' ? [] : [config.control.instanceIp],
    network: config.control.network,
  };

  const discovery = await startWorkloadDiscovery({
    config: config.control,
    env: deps.env,
    nodeType: 'waypoint',
    proxyMetadata: config.control.proxyMetadata,
    clock,
    random: deps.random,
    log,
    readFile: deps.readFile,
  });
  if (!discovery.ok) throw new Error(`workload discovery: ${formatRejections(discovery.errors)}`);
  const wds = discovery.value;

  const certificates = new CertManager({ fetcher: await createCertificateFetcher(config.control, { clock: deps.clock, readFile: deps.readFile, impersonate: false }), clock, random: deps.random, log });
  const tlsMaterials = new TlsMaterialCache();

  const source = deps.configSource ?? buildSource(config, deps);
  const sourceLog = log.child({ component: 'config' });

  // ---- the state: snapshot + resources → bindings + route table -------------------------------
  let snapshot: Snapshot = wds.store.snapshot();
  let resources: ConfigResources = source.current();
  let bindings: Bindings = computeBindings(snapshot, self);
  let version = 0;
  let table: RouteTable = compile();
  const statuses = new Map<string, { route: ResourceId; parents: readonly RouteParentStatus[] }>();
  const lastReported = new Map<string, string>();

  function compile(): RouteTable {
    const result = compileRoutes({
      resources,
      services: [...bindings.services.values()],
      waypoint: config.gateway,
      lookup: serviceLookup(snapshot.services(), config.control.clusterDomain),
      domainSuffix: config.control.clusterDomain,
      version: ++version,
    });
    for (const p of result.problems) sourceLog.warn({ resource: `${p.resource.kind} ${p.resource.namespace}/${p.resource.name}`, field: p.field }, p.message);
    for (const s of result.routeStatuses) {
      const key = `${s.route.kind}/${s.route.namespace}/${s.route.name}`;
      statuses.set(key, s);
      const text = JSON.stringify(s.parents);
      if (lastReported.get(key) === text) continue;
      lastReported.set(key, text);
      source.reportRouteStatus(s.route, s.parents);
    }
    return result.table;
  }
  const recompile = (why: string) => {
    table = compile();
    log.debug({ component: 'routes', version: table.version, why }, 'route table compiled');
  };
  const unsubscribeStore = wds.store.subscribe(() => {
    snapshot = wds.store.snapshot();
    bindings = computeBindings(snapshot, self);
    recompile('workload discovery changed');
  });
  const unsubscribeSource = source.subscribe((next) => {
    resources = next;
    recompile('config changed');
  });

  // ---- upstream and telemetry ------------------------------------------------------------------
  const pool = new HbonePool({
    dial: hboneDialer({ certificateFor: (id) => certificates.fetchCertificate(id), materials: tlsMaterials, clock, connectTimeoutMs: config.connectTimeoutMs, sockets: deps.sockets, log }),
    clock,
    log,
  });
  const connections = new UpstreamConnections({
    clock,
    log,
    hbone: pool,
    localIdentity: identity,
    localIp: config.control.instanceIp,
    sockets: deps.sockets,
    connectTimeoutMs: config.connectTimeoutMs,
  });
  const forwarder = new Forwarder({
    snapshot: () => snapshot,
    connections,
    local: () => ({ network: config.control.network, workload: ownWorkload(snapshot, config) }),
    clock,
    random: deps.random,
    log,
  });
  const telemetry: WaypointTelemetry = createWaypointTelemetry({
    registry,
    istioVersion: config.istioVersion,
    clock,
    randomBytes,
    log,
    accessLog: accessLogFromMeshConfig(config.accessLog, (file) => {
      if (deps.openAccessLog === undefined) throw new Error(`WAYPOINT_ACCESS_LOG_FILE=${file}: this process cannot open access log files`);
      return deps.openAccessLog(file);
    }),
    tracing:
      config.zipkinAddress === undefined
        ? undefined
        : {
            transport: httpSpanTransport({ address: config.zipkinAddress, sockets: deps.sockets }),
            span: { serviceName: `${config.gateway.name}.${config.gateway.namespace}`, ...(config.control.instanceIp === '' ? {} : { localIp: config.control.instanceIp }) },
          },
  });

  // ---- servers -----------------------------------------------------------------------------
  const servers: RunningServer[] = [];
  const addresses: Record<string, string> = {};
  let inbound: WaypointInbound | undefined;
  let stopping: Promise<void> | undefined;

  const app: Waypoint = {
    readiness,
    registry,
    discovery: wds,
    certificates,
    identity,
    addresses,
    started: Promise.resolve(),
    routes: () => table,
    configDump: () =>
      waypointConfigDump({
        config,
        version: VERSION,
        origin: source.origin,
        snapshot,
        bindings,
        table,
        resources,
        routeStatuses: statuses,
        certificates: certificates.certificates(),
      }),
    drain: () => (stopping ??= shutdown('graceful')),
    close: () => (stopping ??= shutdown('immediate')),
    [Symbol.asyncDispose]: () => app.close(),
  };

  const admin = await startAdminServer(
    {
      log,
      clock,
      configDump: () => app.configDump(),
      logLevels: deps.logger.levels,
      shutdown: () => {
        deps.onShutdownRequested?.();
        return app.drain();
      },
      shutdownDeadlineMs: config.drainDurationMs,
      addressSetting: 'WAYPOINT_ADMIN_ADDR',
      proxyName: 'waypoint',
    },
    config.addresses.admin,
  );
  servers.push(admin);
  addresses['admin'] = hostPort(admin.address);
  const stats = await startMetricsServer({ registry, log, addressSetting: 'WAYPOINT_STATS_ADDR' }, config.addresses.stats);
  servers.push(stats);
  addresses['stats'] = hostPort(stats.address);
  const ready = await startReadinessServer({ readiness, log, addressSetting: 'WAYPOINT_READINESS_ADDR' }, config.addresses.readiness);
  servers.push(ready);
  addresses['readiness'] = hostPort(ready.address);

  const certificate = () => certificates.fetchCertificate(identity);
  const started = (async () => {
    await Promise.all([
      wds.ready.then(() => releaseDiscovery()),
      source.synced.then(() => releaseConfig()),
      certificate().then(() => releaseCertificate()),
    ]);
    if (stopping !== undefined) return;
    snapshot = wds.store.snapshot();
    bindings = computeBindings(snapshot, self);
    resources = source.current();
    recompile('first sync');
    inbound = await startWaypointInbound(
      {
        clock,
        random: deps.random,
        randomBytes,
        log,
        routes: () => table,
        snapshot: () => snapshot,
        bindings: () => bindings,
        forwarder,
        telemetry,
        identity,
        xfccClientIdentity: false,
        clusterDomain: config.control.clusterDomain,
        sockets: deps.sockets,
        certificate,
        network: config.control.network,
        tlsMaterials,
      },
      config.addresses.inbound,
    );
    addresses['inbound'] = inbound.address;
    log.info({ component: 'waypoint', gateway: `${config.gateway.namespace}/${config.gateway.name}`, identity: `spiffe://${identity.trustDomain}/ns/${identity.namespace}/sa/${identity.serviceAccount}`, addresses, source: source.origin }, 'waypoint serving');
  })();
  (app as { started: Promise<void> }).started = started;
  started.catch((err: unknown) => log.error({ component: 'waypoint', err: err instanceof Error ? err.message : String(err) }, 'starting the waypoint failed'));

  async function shutdown(mode: 'graceful' | 'immediate'): Promise<void> {
    readiness.register('draining');
    if (inbound !== undefined) {
      if (mode === 'graceful') {
        log.info({ deadlineMs: config.drainDurationMs }, 'draining: GOAWAY and Connection: close; waiting for in-flight requests');
        const timer = clock.setTimer(config.drainDurationMs, () => void inbound?.close());
        await inbound.drain().finally(() => timer.cancel());
      }
      await inbound.close();
    }
    unsubscribeStore();
    unsubscribeSource();
    await Promise.allSettled([source.close(), telemetry.close()]);
    await connections.close();
    pool.close();
    certificates.close();
    await wds.close();
    await Promise.allSettled(servers.map((s) => s.close()));
  }

  return app;
}

function buildSource(config: WaypointConfig, deps: WaypointDeps): ConfigSource {
  const logger = deps.logger.logger.child({ component: 'config' });
  if (config.configSource.kind === 'directory') return startDirectorySource({ dir: config.configSource.path, clock: deps.clock, logger });
  return startKubernetesSource({ kubeConfig: loadKubeConfig(), clock: deps.clock, logger });
}

/** The waypoint's own workload (by pod IP), for locality-preferring endpoint choice. */
function ownWorkload(snapshot: Snapshot, config: WaypointConfig) {
  return config.control.instanceIp === '' ? undefined : snapshot.workloadByAddress(config.control.network, config.control.instanceIp);
}


function hostPort(a: { readonly host: string; readonly port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}
