/**
 * The composition root of a ztunnel: workload discovery, certificates,
 * metrics, the admin/metrics/readiness servers, and the workload proxies
 * (dedicated mode: one, for PROXY_WORKLOAD_INFO; shared/in-pod mode: one per
 * pod, started by the workload proxy manager from istio-cni's ZDS messages),
 * wired from a parsed config and injected platform pieces (clock, sockets,
 * in-pod platform, logger, file reads). main.ts is the only caller outside
 * tests; nothing here reads process.env.
 *
 * Lifecycle (ztunnel app.rs / drain.rs):
 * - not ready until the first full xDS sync ("state manager"); the data-plane
 *   listeners start only after it, so traffic is never served on an empty
 *   policy state;
 * - drain(): readiness goes false, listeners stop accepting, HBONE sessions
 *   get GOAWAY, open connections get until the termination deadline, then
 *   are force-closed; then everything else is closed.
 */
import {
  CertManager,
  createCertificateFetcher,
  formatRejections,
  meshToDump,
  startWorkloadDiscovery,
  systemRandomBytes,
  type Clock,
  type Env,
  type Random,
  type RandomBytes,
  type ReadFile,
  type Snapshot,
  type WorkloadDiscovery,
} from '@ambient/control';
import { AccessLog } from './access-log.js';
import type { ProcessLogger } from '@ambient/dataplane';
import { startAdminServer } from '@ambient/dataplane';
import type { RunningServer } from '@ambient/dataplane';
import { startMetricsServer } from '@ambient/dataplane';
import { Readiness } from '@ambient/dataplane';
import { startReadinessServer } from '@ambient/dataplane';
import type { ZtunnelConfig } from './config.js';
import { CrlManager, createCrlMetrics, TlsMaterialCache } from '@ambient/dataplane';
import { CertPrefetcher } from './identity/cert-prefetch.js';
import { retiringSockets, type InpodPlatform } from './inpod/platform.js';
import { WorkloadProxyManager } from './inpod/workload-proxy-manager.js';
import { DEFAULT_RESOLV_CONF, createDnsMetrics, loadResolvConf } from './dns/index.js';
import { ConnectionResults } from './metrics/connection-result.js';
import { createZtunnelMetrics, type ZtunnelMetrics } from './metrics/index.js';
import { localAddressAsOriginalDestination, type OriginalDestination, type SocketFactory } from '@ambient/dataplane';
import { LOCAL_WORKLOAD_WAIT_MS } from './proxy/await-workload.js';
import { startWorkloadProxy, type ProxyShared, type WorkloadProxy } from './workload-proxy.js';
import { VERSION } from './version.js';

export interface AppDeps {
  readonly clock: Clock;
  readonly random: Random;
  /** Trace ids (default node:crypto's randomBytes through control's seam). */
  readonly randomBytes?: RandomBytes;
  readonly logger: ProcessLogger;
  readonly env: Env;
  readonly readFile: ReadFile;
  readonly sockets: SocketFactory;
  /** SO_ORIGINAL_DST for captured traffic; the local address without capture. */
  readonly originalDestination?: OriginalDestination;
  /** The socket factory binds non-local addresses (dedicated mode under capture): apps see the client's own IP. */
  readonly transparentSource?: boolean;
  /** Shared (in-pod) mode: ZDS transport, network namespaces and per-pod socket factories (the native module). */
  readonly inpod?: InpodPlatform;
  /** How long inbound connections wait for their local workload (default ztunnel's 5 s; tests shorten it). */
  readonly localWorkloadWaitMs?: number;
  /** Called when /quitquitquit asks for a shutdown (main.ts exits the process after the drain). */
  readonly onShutdownRequested?: () => void;
}

export interface App extends AsyncDisposable {
  readonly readiness: Readiness;
  readonly metrics: ZtunnelMetrics;
  readonly discovery: WorkloadDiscovery;
  readonly certificates: CertManager;
  /** Bound addresses, by listener name (admin, stats, readiness, inbound, inboundPlaintext, outbound, socks5). */
  readonly addresses: Readonly<Record<string, string>>;
  /** Resolves once the data-plane listeners are up (after the first sync). */
  readonly proxiesStarted: Promise<void>;
  configDump(): unknown;
  /** Graceful drain within the termination deadline, then close. Idempotent. */
  drain(): Promise<void>;
  /** Immediate close. */
  close(): Promise<void>;
}

export async function buildApp(config: ZtunnelConfig, deps: AppDeps): Promise<App> {
  const { clock } = deps;
  const log = deps.logger.logger;
  for (const w of config.warnings) log.warn({ component: 'config' }, w);

  const metrics = createZtunnelMetrics({ istioVersion: config.istioVersion });
  const readiness = new Readiness({ log, clock });
  const releaseStateManager = readiness.register('state manager');

  const discovery = await startWorkloadDiscovery({
    config: config.control,
    env: deps.env,
    nodeType: 'ztunnel',
    proxyMetadata: config.control.proxyMetadata,
    clock,
    random: deps.random,
    log,
    readFile: deps.readFile,
    events: metrics.xds,
  });
  if (!discovery.ok) throw new Error(`workload discovery: ${formatRejections(discovery.errors)}`);
  const wds = discovery.value;
  const store = wds.store;

  const fetcher = await createCertificateFetcher(config.control, { clock: deps.clock, readFile: deps.readFile, impersonate: config.proxyMode === 'shared' });
  const certificates = new CertManager({ fetcher, clock, random: deps.random, log });
  // CRL_PATH: peers' chains are checked against the CRLs on both sides; reloads close revoked live connections.
  const crlMetrics = createCrlMetrics(metrics.registry.sub('istio'));
  const crl = config.crlPath === undefined ? undefined : await CrlManager.start({ path: config.crlPath, readFile: deps.readFile, clock, log, metrics: crlMetrics });
  const prefetch = config.proxyMode === 'shared' ? new CertPrefetcher(store, config.control.nodeName, certificates) : undefined;

  const results = new ConnectionResults({ traffic: metrics.traffic, access: new AccessLog(log, deps.logger.levels), clock });
  // The DNS proxy's upstreams are ztunnel's own resolv.conf nameservers (search list ignored in shared mode).
  let dns: ProxyShared['dns'];
  if (config.dnsProxy) {
    const resolvConf = await loadResolvConf(DEFAULT_RESOLV_CONF, async (p) => {
      const data = await deps.readFile(p);
      return typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
    }).catch((err: unknown) => {
      log.warn({ component: 'dns', err: err instanceof Error ? err.message : String(err) }, `cannot read ${DEFAULT_RESOLV_CONF}: names the mesh does not know get SERVFAIL`);
      return { nameservers: [], search: [], warnings: [] };
    });
    for (const w of resolvConf.warnings) log.warn({ component: 'dns' }, w);
    dns = {
      metrics: createDnsMetrics(metrics.registry.sub('istio')),
      nameservers: resolvConf.nameservers,
      // A dedicated-mode proxy runs in its workload's own namespace, whose search list is the workload's.
      ...(config.proxyMode === 'dedicated' ? { searchDomains: resolvConf.search } : {}),
    };
  }
  const shared: ProxyShared = {
    dns,
    config,
    clock,
    random: deps.random,
    store,
    certificates,
    metrics,
    results,
    log,
    localWorkloadWaitMs: deps.localWorkloadWaitMs ?? LOCAL_WORKLOAD_WAIT_MS,
    crl,
    tlsMaterials: new TlsMaterialCache(),
    randomBytes: deps.randomBytes ?? systemRandomBytes,
  };

  const servers: RunningServer[] = [];
  const addresses: Record<string, string> = {};
  let draining: Promise<void> | undefined;
  let dedicated: WorkloadProxy | undefined;
  let manager: WorkloadProxyManager | undefined;
  let selfProxy: WorkloadProxy | undefined;
  const app: App = {
    readiness,
    metrics,
    discovery: wds,
    certificates,
    addresses,
    proxiesStarted: Promise.resolve(),
    configDump: () => configDump(config, store.snapshot(), certificates, dedicated, manager),
    drain: () => (draining ??= shutdown('graceful')),
    close: () => (draining ??= shutdown('immediate')),
    [Symbol.asyncDispose]: () => app.close(),
  };

  async function startServers(): Promise<void> {
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
        shutdownDeadlineMs: config.terminationDeadlineMs,
        ipv6: config.ipv6Enabled,
        addressSetting: 'ZTUNNEL_ADMIN_ADDR',
        proxyName: 'ztunnel',
      },
      config.addresses.admin,
    );
    servers.push(admin);
    addresses['admin'] = hostPortText(admin.address);
    const stats = await startMetricsServer({ registry: metrics.registry, log, ipv6: config.ipv6Enabled, addressSetting: 'ZTUNNEL_STATS_ADDR' }, config.addresses.stats);
    servers.push(stats);
    addresses['stats'] = hostPortText(stats.address);
    const ready = await startReadinessServer({ readiness, log, ipv6: config.ipv6Enabled, addressSetting: 'ZTUNNEL_READINESS_ADDR' }, config.addresses.readiness);
    servers.push(ready);
    addresses['readiness'] = hostPortText(ready.address);
  }

  async function startDedicatedProxy(): Promise<void> {
    const info = config.proxyWorkloadInfo;
    if (info === undefined) throw new Error('dedicated mode needs PROXY_WORKLOAD_INFO');
    const releaseProxy = readiness.register('proxy');
    dedicated = await startWorkloadProxy(shared, {
      info,
      sockets: deps.sockets,
      originalDestination: deps.originalDestination ?? localAddressAsOriginalDestination,
      addresses: {
        inbound: config.addresses.inbound,
        inboundPlaintext: config.addresses.inboundPlaintext,
        outbound: config.addresses.outbound,
        socks5: config.addresses.socks5,
        dns: config.addresses.dnsProxy,
      },
      // Dedicated mode on a shared host: dial from the workload's own address so the peer sees it.
      bindSourceIp: true,
      transparentSource: deps.transparentSource === true,
      // One `component` per logger (children add theirs): repeated JSON keys confuse log parsers.
      log: log.child({ workload: `${info.namespace}/${info.name}` }),
    });
    Object.assign(addresses, dedicated.addresses);
    releaseProxy();
    log.info({ component: 'proxy', addresses }, 'workload proxy started');
  }

  /**
   * ztunnel's self-proxy (shared mode, when POD_NAME, POD_NAMESPACE and SERVICE_ACCOUNT are set): an HBONE
   * listener in ztunnel's own namespace with ztunnel's identity, so mesh clients can reach its endpoints
   * (metrics) over mTLS with policies enforced. No transparent source: the connection to ztunnel's own
   * port comes from ztunnel's address.
   */
  async function startSelfProxy(): Promise<void> {
    const info = config.ztunnelWorkload;
    if (info === undefined) return;
    log.info({ identity: `spiffe://${config.control.trustDomain}/ns/${info.namespace}/sa/${info.serviceAccount}` }, 'creating the ztunnel self-proxy listener');
    selfProxy = await startWorkloadProxy(shared, {
      info,
      sockets: deps.sockets,
      originalDestination: localAddressAsOriginalDestination,
      addresses: { inbound: config.addresses.inbound, inboundPlaintext: config.addresses.inboundPlaintext, outbound: config.addresses.outbound },
      hboneOnly: true,
      bindSourceIp: false,
      log: log.child({ workload: `${info.namespace}/${info.name}`, proxy: 'self' }),
    });
    addresses['selfInbound'] = selfProxy.addresses['inbound'] ?? '';
  }

  function startWorkloadProxyManager(): void {
    const inpod = deps.inpod;
    if (inpod === undefined) {
      readiness.register('workload proxy manager');
      log.error({ inpodUds: config.inpodUds }, 'shared (in-pod) mode needs the native capture module, which is not available: no pod is served');
      return;
    }
    manager = new WorkloadProxyManager({
      uds: config.inpodUds,
      connect: (path) => inpod.connect(path),
      identifyNetns: (fd) => inpod.identifyNetns(fd),
      closeFd: (fd) => inpod.closeFd(fd),
      readiness,
      metrics: metrics.workloadManager,
      clock,
      random: deps.random,
      log,
      startProxy: async (uid, info, netns) => {
        let retired = false;
        const sockets = retiringSockets(inpod.socketsFor(netns.fd), () => retired);
        const proxy = await startWorkloadProxy(shared, {
          info,
          sockets,
          originalDestination: inpod.originalDestination,
          // Inside the pod's namespace: ztunnel's fixed in-pod ports, on every address of the pod.
          addresses: {
            inbound: { host: inpodAny(config), port: config.hbonePort },
            inboundPlaintext: { host: inpodAny(config), port: 15006 },
            outbound: { host: inpodAny(config), port: 15001 },
            dns: config.addresses.dnsProxy,
          },
          bindSourceIp: false,
          // ENABLE_ORIG_SRC unset (best effort) or true: upstream sockets in the pod bind the client's address.
          transparentSource: config.requireOriginalSource !== false,
          backlog: config.inpodPortReuse ? 128 : 1024,
          log: log.child({ workload: `${info.namespace}/${info.name}`, uid }),
        });
        return {
          drain: async (mode) => {
            try {
              await proxy.drain(mode);
            } finally {
              retired = true;
            }
          },
          connections: () => proxy.connections.dump(),
        };
      },
    });
    manager.start();
  }

  async function shutdown(mode: 'graceful' | 'immediate'): Promise<void> {
    // Not ready from now on (the release is never called: a draining ztunnel stays unready).
    readiness.register('draining');
    const deadline = clock.monotonic() + (mode === 'graceful' ? config.terminationDeadlineMs : 0);
    if (mode === 'graceful') log.info({ deadlineMs: config.terminationDeadlineMs }, 'draining: no new connections; waiting for open ones');
    await Promise.allSettled([dedicated?.drain(mode, deadline), manager?.drain(mode), selfProxy?.drain(mode, deadline)]);
    prefetch?.close();
    crl?.close();
    certificates.close();
    await wds.close();
    await Promise.allSettled(servers.map((s) => s.close()));
    metrics.close();
  }

  await startServers();

  // Data-plane proxies start only after the first full sync (fail closed on an empty policy state).
  const proxiesStarted = wds.ready.then(async () => {
    releaseStateManager();
    // Closed or draining before the first sync: never bind listeners nobody will close.
    if (!config.enableProxy || draining !== undefined) return;
    if (config.proxyMode === 'dedicated') await startDedicatedProxy();
    else {
      // In-pod (shared) mode gets its pods from istio-cni over ZDS.
      startWorkloadProxyManager();
      await startSelfProxy();
    }
  });
  (app as { proxiesStarted: Promise<void> }).proxiesStarted = proxiesStarted;
  proxiesStarted.catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'starting the workload proxy failed'));
  return app;
}


function configDump(
  config: ZtunnelConfig,
  snapshot: Snapshot,
  certificates: CertManager,
  dedicated: WorkloadProxy | undefined,
  manager: WorkloadProxyManager | undefined,
): unknown {
  const mesh = meshToDump({ workloads: [...snapshot.workloads()], services: [...snapshot.services()], policies: [...snapshot.policies()] });
  return {
    ...mesh,
    certificates: certificates.certificates(),
    ...(manager === undefined ? {} : { workloadState: manager.dump() }),
    ...(dedicated === undefined ? {} : { connections: dedicated.connections.dump() }),
    config: { ...config, illegalPorts: [...config.illegalPorts], control: { ...config.control, auth: { kind: config.control.auth.kind } } },
    version: VERSION,
  };
}

/** In-pod listeners bind the wildcard address inside the pod's namespace (dual-stack unless IPv6 is off). */
function inpodAny(config: ZtunnelConfig): string {
  return config.ipv6Enabled ? '::' : '0.0.0.0';
}





function hostPortText(a: { readonly host: string; readonly port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}



