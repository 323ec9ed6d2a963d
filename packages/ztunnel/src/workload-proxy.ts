/**
 * One workload's proxy (ztunnel's `ProxyFactory::new_proxies_from_factory`):
 * the HBONE inbound (15008), plaintext inbound (15006), outbound (15001) and
 * optional SOCKS5 (15080) listeners, its own HBONE connection pool and its own
 * connection manager, all on one socket factory. In dedicated mode there is
 * one, in the ztunnel's own network namespace; in shared (in-pod) mode there
 * is one per pod, on a socket factory that makes every socket inside that
 * pod's network namespace with SO_MARK. What all proxies share (the store,
 * certificates, metrics, access log) comes in `ProxyShared`.
 *
 * Invariants:
 * - a proxy either starts with every listener bound, or fails and leaves
 *   nothing bound (a pod whose listeners cannot be bound stays pending);
 * - drain() stops accepting first, then ends connections (graceful: within
 *   the deadline; immediate: at once), and is idempotent;
 * - the pool and the connection manager belong to this proxy only, so two
 *   pods never share an upstream connection and draining one pod never
 *   touches another's traffic.
 */
import type { CertManager, Clock, Identity, Random, RandomBytes, Snapshot, Store, WorkloadInfo } from '@ambient/control';
import type { Server } from 'node:net';
import type { Logger } from 'pino';
import { authorize } from './authz/authorize.js';
import type { ZtunnelConfig } from './config.js';
import { ConnectionManager } from './connection-manager.js';
import { ProxyError } from '@ambient/dataplane';
import { HbonePool, hboneDialer } from '@ambient/dataplane';
import { HboneServer } from '@ambient/dataplane';
import type { HboneLimitKind } from '@ambient/dataplane';
import type { ConnectionResults } from './metrics/connection-result.js';
import type { RefusalReason } from './metrics/components.js';
import type { ZtunnelMetrics } from './metrics/index.js';
import { startDnsProxy, type DnsMetricsRecorder, type Nameserver } from './dns/index.js';
import { applyTcpSocketOptions, formatSocketAddress, type OriginalDestination, type SocketFactory } from '@ambient/dataplane';
import type { InboundContext } from './proxy/context.js';
import { createHboneInboundHandler } from './proxy/hbone-inbound.js';
import type { OutboundDeps } from './proxy/outbound.js';
import { serveCaptured, serveSocks5, type OutboundFrontDeps } from './proxy/outbound-listener.js';
import { servePlaintextInbound } from './proxy/plaintext-inbound.js';
import { startSocks5Listener } from './socks5/listener.js';
import type { CrlManager, ListenAddress, TlsMaterialCache } from '@ambient/dataplane';

/** What every workload proxy of one ztunnel shares (ztunnel's ProxyInputs, minus the per-pod parts). */
export interface ProxyShared {
  readonly config: ZtunnelConfig;
  readonly clock: Clock;
  readonly random: Random;
  readonly store: Store;
  readonly certificates: CertManager;
  readonly metrics: ZtunnelMetrics;
  readonly results: ConnectionResults;
  readonly log: Logger;
  readonly localWorkloadWaitMs: number;
  /** The DNS proxy's shared parts (absent when ISTIO_META_DNS_CAPTURE=false). */
  readonly dns?: { readonly metrics: DnsMetricsRecorder; readonly nameservers: readonly Nameserver[]; readonly searchDomains?: readonly string[] } | undefined;
  /** CRL_PATH's revocation lists (absent when unset): inbound and pooled outbound connections are checked and re-checked on reloads. */
  readonly crl?: CrlManager | undefined;
  /** One TLS material (SecureContext) per certificate, shared by the HBONE server, the pool and inner tunnels. */
  readonly tlsMaterials: TlsMaterialCache;
  readonly randomBytes: RandomBytes;
}

export interface WorkloadProxySpec {
  readonly info: WorkloadInfo;
  readonly sockets: SocketFactory;
  readonly originalDestination: OriginalDestination;
  readonly addresses: {
    readonly inbound: ListenAddress;
    readonly inboundPlaintext: ListenAddress;
    readonly outbound: ListenAddress;
    readonly socks5?: ListenAddress | undefined;
    /** The DNS proxy (UDP + TCP), when shared.dns is set. */
    readonly dns?: ListenAddress | undefined;
  };
  /** Dial HBONE from the workload's own address (dedicated mode sharing a host's loopback). */
  readonly bindSourceIp: boolean;
  /** The factory binds non-local addresses (in-pod IP_TRANSPARENT): apps see the client's own IP. */
  readonly transparentSource?: boolean;
  /**
   * Only the HBONE inbound listener (ztunnel's self-proxy in shared mode: mesh clients reach ztunnel's own
   * endpoints, e.g. metrics, over HBONE with ztunnel's identity and its policies enforced).
   */
  readonly hboneOnly?: boolean;
  /** SO_REUSEPORT listeners are created with backlog 128 (ztunnel's in-pod listeners). */
  readonly backlog?: number;
  readonly log: Logger;
}

export type DrainMode = 'graceful' | 'immediate';

export interface WorkloadProxy {
  readonly info: WorkloadInfo;
  /** Bound addresses by listener name (inbound, inboundPlaintext, outbound, socks5). */
  readonly addresses: Readonly<Record<string, string>>;
  readonly connections: ConnectionManager;
  /** Graceful: stop accepting, GOAWAY, wait for connections until `deadline` (monotonic ms), then force. Idempotent. */
  drain(mode: DrainMode, deadline?: number): Promise<void>;
}

export async function startWorkloadProxy(shared: ProxyShared, spec: WorkloadProxySpec): Promise<WorkloadProxy> {
  const { config, clock, store, certificates, metrics, results } = shared;
  const { info } = spec;
  const plog = spec.log;
  const localWorkload = (snapshot: Snapshot) => snapshot.findLocalWorkload(info);
  const identityOf = (): Identity =>
    localWorkload(store.snapshot())?.identity ?? { trustDomain: config.control.trustDomain, namespace: info.namespace, serviceAccount: info.serviceAccount };

  const connections = new ConnectionManager(
    store,
    (snapshot, c) => {
      const w = c.policyWorkloadUid === undefined ? undefined : snapshot.workload(c.policyWorkloadUid);
      if (w === undefined) return { allow: false, reason: 'the destination workload is gone' };
      const a = authorize(snapshot, w, { src: c.src, dst: c.originalDst, srcIdentity: c.srcIdentity, dstNetwork: config.control.network }, 'POLICY_CHANGED');
      return { allow: a.denied === undefined, reason: a.reason };
    },
    plog.child({ component: 'policy' }),
  );
  const pool = new HbonePool({
    dial: hboneDialer({
      certificateFor: (id) => certificates.fetchCertificate(id),
      materials: shared.tlsMaterials,
      revocation: shared.crl?.source('source'),
      clock,
      connectTimeoutMs: config.connectTimeoutMs,
      bindSourceIp: spec.bindSourceIp,
      tcp: config.socket.tcp,
      // The pod's factory: in-pod mode dials from inside the pod's namespace with SO_MARK.
      sockets: spec.sockets,
      settings: {
        streamWindowSize: config.http2.streamWindowSize,
        connectionWindowSize: config.http2.connectionWindowSize,
        frameSize: config.http2.frameSize,
      },
      log: plog.child({ component: 'pool' }),
    }),
    clock,
    maxStreamsPerConnection: config.pool.maxStreamsPerConnection,
    unusedReleaseTimeoutMs: config.pool.unusedReleaseTimeoutMs,
    log: plog.child({ component: 'pool' }),
    revocation: shared.crl?.source('source'),
  });

  const inbound: InboundContext = {
    store,
    localWorkload: (snapshot) => localWorkload(snapshot),
    localWorkloadWaitMs: shared.localWorkloadWaitMs,
    network: config.control.network,
    illegalPorts: config.illegalPorts,
    sockets: spec.sockets,
    transparentSource: spec.transparentSource === true,
    clock,
    connectTimeoutMs: config.connectTimeoutMs,
    tcp: config.socket.tcp,
    authzInfoLogging: config.authzPolicyInfoLogging,
    log: plog.child({ component: 'inbound' }),
  };
  // istio_tcp_sockets_open{reporter="destination"}: one per HBONE connection.
  const openSockets = new Map<number, () => void>();
  const hboneServer = new HboneServer({
    clock,
    log: plog,
    certificateFor: () => certificates.fetchCertificate(identityOf()),
    tlsMaterials: shared.tlsMaterials,
    revocation: shared.crl?.source('destination'),
    tcp: config.socket.tcp,
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

  const addresses: Record<string, string> = {};
  // An accept error (EMFILE, ...) on a listener is logged; it must never be an unhandled 'error' event.
  const watchErrors = (server: Server, name: string) => server.on('error', (err) => plog.error({ err: err.message, listener: name }, 'listener error'));
  const stopAccepting: Array<() => Promise<void>> = [];
  const backlog = spec.backlog === undefined ? {} : { backlog: spec.backlog };
  const abort = async (err: unknown): Promise<never> => {
    await Promise.allSettled(stopAccepting.map((f) => f()));
    await hboneServer.close().catch(() => {});
    pool.close();
    connections.close();
    throw err;
  };

  try {
    const hboneListener = await spec.sockets.listen({ ...spec.addresses.inbound, ...backlog, pauseOnConnect: true }, () => {});
    watchErrors(hboneListener, 'HBONE');
    hboneServer.attach(hboneListener);
    addresses['inbound'] = serverAddress(hboneListener);
    stopAccepting.push(() => closeServer(hboneListener));
    stopAccepting.push(() => hboneServer.drain());

    // The self-proxy (hboneOnly) serves ztunnel's own endpoints over HBONE and nothing else.
    if (spec.hboneOnly !== true) {
      const plaintext = await spec.sockets.listen({ ...spec.addresses.inboundPlaintext, ...backlog }, (socket) => {
        applyTcpSocketOptions(socket, config.socket.tcp);
        socket.once('close', metrics.traffic.socketOpened('destination'));
        servePlaintextInbound({ ...inbound, connections, results, originalDestination: spec.originalDestination }, socket).catch((err: unknown) =>
          lastResort(plog, socket, err),
        );
      });
      watchErrors(plaintext, 'plaintext inbound');
      addresses['inboundPlaintext'] = serverAddress(plaintext);
      stopAccepting.push(() => closeServer(plaintext));

      const outboundDeps: OutboundDeps = {
        store,
        network: config.control.network,
        illegalPorts: config.illegalPorts,
        hbonePort: config.hbonePort,
        pool,
        certificateFor: (id) => certificates.fetchCertificate(id),
        materials: shared.tlsMaterials,
        revocation: shared.crl?.source('source'),
        sockets: spec.sockets,
        clock,
        random: shared.random,
        randomBytes: shared.randomBytes,
        connectTimeoutMs: config.connectTimeoutMs,
        tcp: config.socket.tcp,
        results,
        connections,
        log: plog.child({ component: 'outbound' }),
      };
      const front: OutboundFrontDeps = {
        outbound: outboundDeps,
        store,
        localWorkload,
        localWorkloadWaitMs: shared.localWorkloadWaitMs,
        clock,
        log: plog.child({ component: 'outbound' }),
      };
      const outbound = await spec.sockets.listen({ ...spec.addresses.outbound, ...backlog }, (socket) => {
        applyTcpSocketOptions(socket, config.socket.tcp);
        socket.once('close', metrics.traffic.socketOpened('source'));
        serveCaptured(front, socket, spec.originalDestination).catch((err: unknown) => lastResort(plog, socket, err));
      });
      watchErrors(outbound, 'outbound');
      addresses['outbound'] = serverAddress(outbound);
      stopAccepting.push(() => closeServer(outbound));

      if (spec.addresses.socks5 !== undefined) {
        const socks = await startSocks5Listener(spec.addresses.socks5, {
          sockets: spec.sockets,
          clock,
          log: plog,
          handshakeTimeoutMs: config.limits.socks5HandshakeTimeoutMs,
          refusals: metrics.refusals,
          trackSocket: () => metrics.traffic.socketOpened('source'),
          resolve: async (hostname) => resolveHostname(store.snapshot(), config.control.network, hostname),
          handler: (conn) => serveSocks5(front, conn),
        });
        addresses['socks5'] = formatSocketAddress(socks.address);
        stopAccepting.push(() => socks.close());
      }
      const dnsAddress = spec.addresses.dns;
      if (shared.dns !== undefined && dnsAddress !== undefined) {
        const dns = await startDnsProxy({
          sockets: spec.sockets,
          address: dnsAddress,
          store,
          localWorkload: (snapshot) => localWorkload(snapshot),
          localWorkloadWaitMs: shared.localWorkloadWaitMs,
          clusterDomain: config.clusterDomain,
          ipv6Enabled: config.ipv6Enabled,
          nameservers: shared.dns.nameservers,
          ...(shared.dns.searchDomains === undefined ? {} : { searchDomains: shared.dns.searchDomains }),
          clock,
          random: shared.random,
          log: plog.child({ component: 'dns' }),
          metrics: shared.dns.metrics,
        });
        addresses['dns'] = dns.addresses.map((a) => formatSocketAddress(a)).join(',');
        stopAccepting.push(() => dns.close());
      }
    }
  } catch (err) {
    return abort(err);
  }

  let drained: Promise<void> | undefined;
  async function drain(mode: DrainMode, deadline: number): Promise<void> {
    await Promise.allSettled(stopAccepting.map((f) => withDeadline(f(), deadline)));
    if (mode === 'graceful') {
      // Pooled HBONE connections close once their streams end; never wait past the deadline.
      await withDeadline(pool.drain().catch(() => {}), deadline);
      while (connections.size > 0 && clock.monotonic() < deadline) {
        await clock.sleep(Math.min(50, Math.max(1, deadline - clock.monotonic())));
      }
      if (connections.size > 0) plog.warn({ open: connections.size }, 'drain deadline reached; closing the remaining connections');
    }
    connections.closeAll(new ProxyError('DRAINING', mode === 'graceful' ? 'ztunnel is shutting down' : 'the workload proxy was removed'));
    await hboneServer.close().catch(() => {});
    pool.close();
    connections.close();
  }
  async function withDeadline(p: Promise<void>, deadline: number): Promise<void> {
    const left = deadline - clock.monotonic();
    if (left <= 0) return;
    await Promise.race([p, clock.sleep(left)]);
  }

  return {
    info,
    addresses,
    connections,
    drain: (mode, deadline) => (drained ??= drain(mode, deadline ?? clock.monotonic() + (mode === 'graceful' ? config.terminationDeadlineMs : 0))),
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

function serverAddress(server: Server): string {
  const a = server.address();
  if (a === null || typeof a === 'string') return String(a);
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
