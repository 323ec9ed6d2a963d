/**
 * The composition root of a ztunnel: workload discovery, certificates,
 * metrics, the admin/metrics/readiness servers, and the workload proxies
 * (dedicated mode: one, for PROXY_WORKLOAD_INFO), wired from a parsed config
 * and injected platform pieces (clock, sockets, logger, file reads). main.ts
 * is the only caller outside tests; nothing here reads process.env.
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
  IstioCaClient,
  LocalCaFetcher,
  LocalCertificateAuthority,
  fail,
  formatRejections,
  ok,
  parseIdentity,
  meshToDump,
  startWorkloadDiscovery,
  type CertificateFetcher,
  type Clock,
  type Env,
  type Identity,
  type Random,
  type ReadFile,
  type Snapshot,
  type WorkloadCertificate,
  type WorkloadDiscovery,
} from '@ambient/control';
import type { Server } from 'node:net';
import { AccessLog, type ZtunnelLogger } from './access-log.js';
import { startAdminServer } from './admin/admin-server.js';
import type { RunningServer } from './admin/http-server.js';
import { startMetricsServer } from './admin/metrics-server.js';
import { Readiness } from './admin/readiness.js';
import { startReadinessServer } from './admin/readiness-server.js';
import { describeDecision, evaluate } from './authz/evaluate.js';
import type { ZtunnelConfig } from './config.js';
import { ConnectionManager } from './connection-manager.js';
import { ProxyError } from './errors.js';
import { HbonePool, hboneDialer } from './hbone/pool.js';
import { HboneServer } from './hbone/server.js';
import type { VerifyPeer } from './hbone/client.js';
import { parseTrustRoots, verifyPeerCertificate } from './tls/spiffe-verify.js';
import type { HboneLimitKind } from './hbone/server-limits.js';
import type { RefusalReason } from './metrics/components.js';
import { CertPrefetcher } from './identity/cert-prefetch.js';
import { ConnectionResults } from './metrics/connection-result.js';
import { createZtunnelMetrics, type ZtunnelMetrics } from './metrics/index.js';
import { localAddressAsOriginalDestination, peerAddress, type OriginalDestination, type SocketFactory } from './platform/sockets.js';
import type { InboundContext } from './proxy/context.js';
import { LOCAL_WORKLOAD_WAIT_MS } from './proxy/await-workload.js';
import { createHboneInboundHandler } from './proxy/hbone-inbound.js';
import { proxyOutbound, type OutboundDeps } from './proxy/outbound.js';
import { servePlaintextInbound } from './proxy/plaintext-inbound.js';
import { startSocks5Listener, type Socks5Listener } from './socks5/listener.js';
import { ReplyCode } from './socks5/codec.js';
import { VERSION } from './version.js';

export interface AppDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly logger: ZtunnelLogger;
  readonly env: Env;
  readonly readFile: ReadFile;
  readonly sockets: SocketFactory;
  /** SO_ORIGINAL_DST for captured traffic; the local address without capture. */
  readonly originalDestination?: OriginalDestination;
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

  const fetcher = await certificateFetcher(config, deps);
  const certificates = new CertManager({ fetcher, clock, random: deps.random, log });
  const prefetch = config.proxyMode === 'shared' ? new CertPrefetcher(store, config.control.nodeName, certificates) : undefined;

  const connections = new ConnectionManager(
    store,
    (snapshot, info) => {
      const w = info.policyWorkloadUid === undefined ? undefined : snapshot.workload(info.policyWorkloadUid);
      if (w === undefined) return { allow: false, reason: 'the destination workload is gone' };
      const d = evaluate(snapshot.policiesFor(w), { src: info.src, dst: info.originalDst, srcIdentity: info.srcIdentity, dstNetwork: config.control.network });
      return { allow: d.allow, reason: describeDecision(d) };
    },
    log.child({ component: 'policy' }),
  );
  const results = new ConnectionResults({ traffic: metrics.traffic, access: new AccessLog(log, deps.logger.levels), clock });
  const pool = new HbonePool({
    dial: hboneDialer({
      certificateFor: (id) => certificates.fetchCertificate(id),
      // The server's chain must verify against our workload roots and carry one of the expected SPIFFE IDs.
      verifierFor: (expected, certificate) => serverVerifier(expected, certificate, clock),
      clock,
      connectTimeoutMs: config.connectTimeoutMs,
      // Dedicated mode on a shared host: dial from the workload's own address so the peer sees it.
      bindSourceIp: config.proxyMode === 'dedicated',
      settings: {
        streamWindowSize: config.http2.streamWindowSize,
        connectionWindowSize: config.http2.connectionWindowSize,
        frameSize: config.http2.frameSize,
      },
      log: log.child({ component: 'pool' }),
    }),
    clock,
    maxStreamsPerConnection: config.pool.maxStreamsPerConnection,
    unusedReleaseTimeoutMs: config.pool.unusedReleaseTimeoutMs,
    log: log.child({ component: 'pool' }),
  });

  const servers: RunningServer[] = [];
  const addresses: Record<string, string> = {};
  let draining: Promise<void> | undefined;
  const app: App = {
    readiness,
    metrics,
    discovery: wds,
    certificates,
    addresses,
    proxiesStarted: Promise.resolve(),
    configDump: () => configDump(config, store.snapshot(), certificates, connections),
    drain: () => (draining ??= drain()),
    close: () => (draining ??= shutdown(0)),
    [Symbol.asyncDispose]: () => app.close(),
  };

  const stopAccepting: Array<() => Promise<void>> = [];
  let hboneServer: HboneServer | undefined;

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
      },
      config.addresses.admin,
    );
    servers.push(admin);
    addresses['admin'] = hostPortText(admin.address);
    const stats = await startMetricsServer({ registry: metrics.registry, log, ipv6: config.ipv6Enabled }, config.addresses.stats);
    servers.push(stats);
    addresses['stats'] = hostPortText(stats.address);
    const ready = await startReadinessServer({ readiness, log, ipv6: config.ipv6Enabled }, config.addresses.readiness);
    servers.push(ready);
    addresses['readiness'] = hostPortText(ready.address);
  }

  async function startDedicatedProxy(): Promise<void> {
    const info = config.proxyWorkloadInfo;
    if (info === undefined) throw new Error('dedicated mode needs PROXY_WORKLOAD_INFO');
    const releaseProxy = readiness.register('proxy');
    // One `component` per logger (children add theirs): repeated JSON keys confuse log parsers.
    const plog = log.child({ workload: `${info.namespace}/${info.name}` });
    const localWorkload = (snapshot: Snapshot) => snapshot.findLocalWorkload(info);
    const identityOf = (): Identity =>
      localWorkload(store.snapshot())?.identity ?? { trustDomain: config.control.trustDomain, namespace: info.namespace, serviceAccount: info.serviceAccount };
    const inbound: InboundContext = {
      store,
      localWorkload: (snapshot) => localWorkload(snapshot),
      localWorkloadWaitMs: deps.localWorkloadWaitMs ?? LOCAL_WORKLOAD_WAIT_MS,
      network: config.control.network,
      illegalPorts: config.illegalPorts,
      sockets: deps.sockets,
      clock,
      connectTimeoutMs: config.connectTimeoutMs,
      authzInfoLogging: config.authzPolicyInfoLogging,
      log: plog.child({ component: 'inbound' }),
    };

    hboneServer = new HboneServer({
      clock,
      log: plog,
      certificateFor: () => certificates.fetchCertificate(identityOf()),
      onConnect: createHboneInboundHandler({
        ...inbound,
        connections,
        results,
        responseBaggage: config.enableResponseBaggage,
        localhostAppTunnel: config.localhostAppTunnel,
      }),
      limits: {
        tlsHandshakeTimeoutMs: config.limits.tlsHandshakeTimeoutMs,
        firstRequestTimeoutMs: config.limits.h2PrefaceTimeoutMs,
        maxConnections: config.limits.maxConnections,
        streamWindowBytes: config.http2.streamWindowSize,
        connectionWindowBytes: config.http2.connectionWindowSize,
        maxFrameBytes: config.http2.frameSize,
      },
      hooks: {
        onLimit: (kind) => metrics.refusals.refused(limitReason(kind), 'inbound'),
        onConnectionOpen: (c) => openSockets.set(c.connectionId, metrics.traffic.socketOpened('destination')),
        onConnectionClose: (c) => {
          openSockets.get(c.connectionId)?.();
          openSockets.delete(c.connectionId);
        },
      },
    });
    const inboundAddr = await hboneServer.listen(config.addresses.inbound);
    addresses['inbound'] = `${inboundAddr.ip}:${inboundAddr.port}`;
    const server = hboneServer;
    stopAccepting.push(() => server.drain());

    const originalDestination = deps.originalDestination ?? localAddressAsOriginalDestination;
    const plaintext = await deps.sockets.listen(config.addresses.inboundPlaintext, (socket) => {
      socket.once('close', metrics.traffic.socketOpened('destination'));
      servePlaintextInbound({ ...inbound, connections, results, originalDestination }, socket).catch((err: unknown) => lastResort(plog, socket, err));
    });
    addresses['inboundPlaintext'] = serverAddress(plaintext);
    stopAccepting.push(() => closeServer(plaintext));

    const outboundDeps: OutboundDeps = {
      store,
      network: config.control.network,
      illegalPorts: config.illegalPorts,
      hbonePort: config.hbonePort,
      pool,
      certificateFor: (id) => certificates.fetchCertificate(id),
      sockets: deps.sockets,
      clock,
      random: deps.random,
      connectTimeoutMs: config.connectTimeoutMs,
      results,
      connections,
      log: plog.child({ component: 'outbound' }),
    };
    const sourceWorkload = () => localWorkload(store.snapshot());
    const outbound = await deps.sockets.listen(config.addresses.outbound, (socket) => {
      socket.on('error', () => {});
      socket.once('close', metrics.traffic.socketOpened('source'));
      const peer = peerAddress(socket);
      const origDst = originalDestination(socket);
      const source = sourceWorkload();
      if (peer === undefined || origDst === undefined || source === undefined) {
        socket.destroy();
        return;
      }
      proxyOutbound(outboundDeps, { socket, peer, origDst, source, ready: () => {}, fail: () => socket.destroy() }).catch((err: unknown) =>
        lastResort(plog, socket, err),
      );
    });
    addresses['outbound'] = serverAddress(outbound);
    stopAccepting.push(() => closeServer(outbound));

    if (config.addresses.socks5 !== undefined) {
      const socks: Socks5Listener = await startSocks5Listener(config.addresses.socks5, {
        clock,
        log: plog,
        handshakeTimeoutMs: config.limits.socks5HandshakeTimeoutMs,
        refusals: metrics.refusals,
        trackSocket: () => metrics.traffic.socketOpened('source'),
        resolve: async (hostname) => resolveHostname(store.snapshot(), config.control.network, hostname),
        handler: async (conn) => {
          const source = sourceWorkload();
          if (source === undefined) {
            conn.reply(ReplyCode.GENERAL_FAILURE);
            return;
          }
          await proxyOutbound(outboundDeps, {
            socket: conn.socket,
            peer: conn.peer,
            origDst: conn.origDst,
            source,
            ready: () => {
              conn.reply(ReplyCode.SUCCEEDED);
              conn.socket.resume();
            },
            fail: (err) => conn.reply(socksReplyFor(err)),
          });
        },
      });
      addresses['socks5'] = `${socks.address.ip}:${socks.address.port}`;
      stopAccepting.push(() => socks.close());
    }
    releaseProxy();
    plog.info({ component: 'proxy', addresses }, 'workload proxy started');
  }

  // istio_tcp_sockets_open{reporter="destination"}: one per HBONE connection.
  const openSockets = new Map<number, () => void>();

  async function drain(): Promise<void> {
    // Not ready from now on (the release is never called: a draining ztunnel stays unready).
    readiness.register('draining');
    log.info({ deadlineMs: config.terminationDeadlineMs }, 'draining: no new connections; waiting for open ones');
    const deadline = clock.monotonic() + config.terminationDeadlineMs;
    await Promise.allSettled(stopAccepting.map((f) => f()).map((p) => withDeadline(p, deadline)));
    // Pooled HBONE connections close once their streams end; never wait past the deadline.
    await withDeadline(pool.drain().catch(() => {}), deadline);
    while (connections.size > 0 && clock.monotonic() < deadline) {
      await clock.sleep(Math.min(50, Math.max(1, deadline - clock.monotonic())));
    }
    if (connections.size > 0) log.warn({ open: connections.size }, 'drain deadline reached; closing the remaining connections');
    await shutdown(connections.size);
  }

  async function withDeadline(p: Promise<void>, deadline: number): Promise<void> {
    const left = deadline - clock.monotonic();
    if (left <= 0) return;
    await Promise.race([p, clock.sleep(left)]);
  }

  async function shutdown(_open: number): Promise<void> {
    connections.closeAll(new ProxyError('DRAINING', 'ztunnel is shutting down'));
    await hboneServer?.close().catch(() => {});
    pool.close();
    await Promise.allSettled(stopAccepting.map((f) => f()));
    prefetch?.close();
    connections.close();
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
    if (config.proxyMode === 'dedicated') {
      await startDedicatedProxy();
    } else {
      // In-pod (shared) mode gets its pods from istio-cni over ZDS; until the
      // workload proxy manager is wired in, shared mode serves no pods.
      readiness.register('workload proxy manager');
      log.warn({ inpodUds: config.inpodUds }, 'shared (in-pod) mode: the workload proxy manager is not available in this build; no pod is served');
    }
  });
  (app as { proxiesStarted: Promise<void> }).proxiesStarted = proxiesStarted;
  proxiesStarted.catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'starting the workload proxy failed'));
  return app;
}

function serverVerifier(expected: readonly string[], certificate: WorkloadCertificate, clock: Clock): VerifyPeer {
  const identities: Identity[] = [];
  for (const e of expected) {
    const id = parseIdentity(e);
    if (id.ok) identities.push(id.value);
  }
  const roots = parseTrustRoots(certificate.rootsPem);
  return (chain) => {
    if (!roots.ok) return fail(...roots.errors);
    const verified = verifyPeerCertificate({ chain, roots: roots.value, now: clock.now(), expect: { peer: 'server', identities } });
    return verified.ok ? ok(verified.value.identity) : fail(...verified.errors);
  };
}

async function certificateFetcher(config: ZtunnelConfig, deps: AppDeps): Promise<CertificateFetcher> {
  if (config.control.fakeCa || config.control.caAddress === undefined) {
    const ca = await LocalCertificateAuthority.generate({ clock: deps.clock });
    return new LocalCaFetcher(ca, { clock: deps.clock, ttlSeconds: config.control.secretTtlSeconds });
  }
  const client = await IstioCaClient.create({
    connection: { address: config.control.caAddress, roots: config.control.caRootCa, altHostname: config.control.altCaHostname },
    auth: { token: config.control.auth, clusterId: config.control.clusterId, extraHeaders: config.control.caHeaders },
    clock: deps.clock,
    readFile: deps.readFile,
    // ztunnel asks for other workloads' identities only as a node proxy (shared mode).
    impersonate: config.proxyMode === 'shared',
    ttlSeconds: config.control.secretTtlSeconds,
  });
  if (!client.ok) throw new Error(`CA client: ${formatRejections(client.errors)}`);
  return client.value;
}

function configDump(config: ZtunnelConfig, snapshot: Snapshot, certificates: CertManager, connections: ConnectionManager): unknown {
  const mesh = meshToDump({ workloads: [...snapshot.workloads()], services: [...snapshot.services()], policies: [...snapshot.policies()] });
  return {
    ...mesh,
    certificates: certificates.certificates(),
    connections: connections.list(),
    config: { ...config, illegalPorts: [...config.illegalPorts], control: { ...config.control, auth: { kind: config.control.auth.kind } } },
    version: VERSION,
  };
}

/** SOCKS5 domain requests: a service hostname's VIP, or a workload hostname's address. */
function resolveHostname(snapshot: Snapshot, network: string, hostname: string): string | undefined {
  const svc = snapshot.serviceByHostname(hostname);
  const vip = svc?.vips.find((v) => v.network === network) ?? svc?.vips[0];
  if (vip) return vip.address;
  for (const w of snapshot.workloads()) if (w.hostname === hostname && w.addresses[0]) return w.addresses[0];
  return undefined;
}

function socksReplyFor(err: ProxyError): (typeof ReplyCode)[keyof typeof ReplyCode] {
  switch (err.code) {
    case 'POLICY_DENIED':
    case 'SELF_CALL':
      return ReplyCode.NOT_ALLOWED;
    case 'UPSTREAM_CONNECT_FAILED':
    case 'HBONE_STATUS':
      return ReplyCode.CONNECTION_REFUSED;
    case 'UPSTREAM_TIMEOUT':
    case 'NO_HEALTHY_UPSTREAM':
      return ReplyCode.HOST_UNREACHABLE;
    default:
      return ReplyCode.GENERAL_FAILURE;
  }
}

/** A handler bug must not crash the process or leak the socket: log it and close the connection. */
function lastResort(log: { error(obj: object, msg?: string): void }, socket: { destroy(): void }, err: unknown): void {
  log.error({ err: err instanceof Error ? (err.stack ?? err.message) : String(err) }, 'connection handler failed');
  socket.destroy();
}

/** Our refusal counter's reason for each HBONE server protection. */
function limitReason(kind: HboneLimitKind): RefusalReason {
  switch (kind) {
    case 'connection-cap':
      return 'connection_limit';
    case 'tls-handshake-timeout':
      return 'tls_handshake_timeout';
    case 'first-request-timeout':
    case 'keepalive-timeout':
      return 'h2_preface_timeout';
    case 'rapid-reset':
      return 'h2_rapid_reset';
    case 'continuation-flood':
      return 'h2_header_list_size';
    case 'control-frame-flood':
    case 'invalid-frames':
    case 'outbound-flood':
    case 'protocol-error':
      return 'h2_flood';
  }
}

function hostPortText(a: { readonly host: string; readonly port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

function serverAddress(server: Server): string {
  const a = server.address();
  if (a === null || typeof a === 'string') return String(a);
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

