/**
 * One outbound application connection (ztunnel src/proxy/outbound.rs
 * proxy_to*), as stages read top to bottom:
 *
 * 1. plan      — the pure planner (outbound/plan.ts) decides: HBONE through
 *                the pool, double HBONE (outer pooled tunnel to the network
 *                gateway, inner TLS + CONNECT never pooled), plain TCP, or
 *                passthrough; or a refusal;
 * 2. track     — the connection enters the connection manager before its
 *                dial, so a drain waits for it and a forced drain cuts it;
 * 3. establish — the upstream leg, returned as a value or a ProxyError;
 * 4. relay     — the caller answers its client from the outcome (SOCKS5
 *                replies success or a failure code; 15001 just closes on
 *                failure), then calls `relay()`, which copies both ways and
 *                records metrics and the access log once.
 *
 * `openOutbound` never rejects: every failure is an `{ ok: false, error }`
 * already recorded (metrics, access log) and released.
 */
import type { Duplex } from 'node:stream';
import type { Clock, Identity, RandomBytes, Random, Store, Workload, WorkloadCertificate } from '@ambient/control';
import type { Logger } from 'pino';
import type { ConnectionManager } from '../connection-manager.js';
import {
  asProxyError,
  baggageForWorkload,
  formatAuthority,
  formatSocketAddress,
  newTraceparent,
  openInnerHbone,
  ProxyError,
  type ConnectRequestFields,
  type HboneAuthority,
  type HbonePool,
  type RevocationSource,
  type SocketAddress,
  type SocketFactory,
  type TcpSocketOptions,
  type TlsMaterialCache,
} from '@ambient/dataplane';
import { relayAndRecord } from './relay.js';
import type { ConnectionResults } from '../metrics/connection-result.js';
import { planOutbound, type OutboundPlan } from '../outbound/plan.js';
import { connectUpstream } from './upstream.js';

export interface OutboundDeps {
  readonly store: Pick<Store, 'snapshot'>;
  readonly network: string;
  readonly illegalPorts: ReadonlySet<number>;
  readonly hbonePort: number;
  readonly pool: HbonePool;
  /** Our certificate for the inner handshake of double HBONE. */
  readonly certificateFor: (identity: Identity) => Promise<WorkloadCertificate>;
  /** The TLS materials the pool and the HBONE server share (one SecureContext per certificate). */
  readonly materials: TlsMaterialCache;
  /** CRL_PATH's lists for the source side: inner tunnels refuse revoked peers too. */
  readonly revocation: RevocationSource | undefined;
  readonly sockets: SocketFactory;
  readonly clock: Clock;
  readonly random: Random;
  /** Trace ids for `traceparent`. */
  readonly randomBytes: RandomBytes;
  readonly connectTimeoutMs: number;
  /** TCP_NODELAY and keepalive for upstream sockets (KEEPALIVE_*). */
  readonly tcp: TcpSocketOptions;
  readonly results: ConnectionResults;
  /** Live connections: a drain waits for outbound ones too, and a forced drain closes them. */
  readonly connections: ConnectionManager;
  readonly log: Logger;
}

export interface OutboundConnection {
  /** The application's socket (paused or flowing; bytes are read only by `relay()`). */
  readonly socket: Duplex;
  readonly peer: SocketAddress;
  readonly origDst: SocketAddress;
  /** The workload sending this traffic (the proxy's workload). */
  readonly source: Workload;
}

/** The outcome of stages 1-3. On `ok`, the caller must call `relay()` exactly once. */
export type OutboundOpened =
  | { readonly ok: true; relay(): Promise<void> }
  | { readonly ok: false; readonly error: ProxyError };

type RoutedPlan = Exclude<OutboundPlan, { kind: 'reject' }>;

/** Stages 1-3: plan, track, establish. Never rejects. */
export async function openOutbound(deps: OutboundDeps, c: OutboundConnection): Promise<OutboundOpened> {
  const log = deps.log.child({ src: formatSocketAddress(c.peer), dst: formatSocketAddress(c.origDst) });
  // 1. plan
  const plan = planOutbound({
    snapshot: deps.store.snapshot(),
    source: c.source,
    sourceNetwork: deps.network,
    sourceIp: c.peer.ip,
    origDst: c.origDst,
    illegalPorts: deps.illegalPorts,
    random: deps.random,
    hbonePort: deps.hbonePort,
  });
  if (plan.kind === 'reject') {
    const error = new ProxyError(plan.code, plan.message);
    log.warn({ error: error.message, code: error.code }, 'connection failed');
    return { ok: false, error };
  }

  // 2. track (metrics result + connection manager), before any dial
  const mtls = plan.kind === 'hbone' || plan.kind === 'double-hbone';
  const destination = plan.kind === 'passthrough' ? undefined : plan.destination;
  const dst = plan.kind === 'double-hbone' ? plan.gateway : plan.nextHop;
  const result = deps.results.start({
    src: formatSocketAddress(c.peer),
    dst: formatSocketAddress(dst),
    hboneAddr: plan.kind === 'hbone' ? formatAuthority(plan.authority) : plan.kind === 'double-hbone' ? formatAuthority(plan.innerAuthority) : undefined,
    traffic: {
      reporter: 'source',
      source: c.source,
      ...(mtls ? { derivedSource: { identity: c.source.identity } } : {}),
      destination: destination?.workload,
      destinationService: destination?.service,
      securityPolicy: mtls ? 'mutual_tls' : 'unknown',
    },
  });
  const abort = new AbortController();
  // Outbound connections carry no policy here (authorization is the destination's).
  const tracked = deps.connections.track(
    {
      direction: 'outbound',
      src: c.peer,
      originalDst: c.origDst,
      actualDst: dst,
      protocol: mtls ? 'HBONE' : 'TCP',
      srcIdentity: mtls ? c.source.identity : undefined,
      policyWorkloadUid: undefined,
    },
    (err) => abort.abort(err),
  );
  const failed = (error: ProxyError): OutboundOpened => {
    result.record(error);
    tracked.release();
    return { ok: false, error };
  };

  // 3. establish
  let upstream: Duplex;
  try {
    upstream = await establish(deps, c, plan, abort.signal, log);
  } catch (err) {
    const e = asProxyError(err);
    log.warn({ error: e.message, code: e.code }, 'outbound upstream failed');
    return failed(e);
  }
  if (abort.signal.aborted) {
    upstream.destroy();
    return failed(abort.signal.reason instanceof ProxyError ? abort.signal.reason : new ProxyError('DRAINING', 'closed before the upstream was established'));
  }

  // 4. relay (the caller's turn to answer its client first)
  let relayed: Promise<void> | undefined;
  return {
    ok: true,
    relay: () =>
      (relayed ??= relayAndRecord(c.socket, upstream, result, abort.signal, deps.clock).finally(() => tracked.release())),
  };
}

/** The CONNECT a plan sends: structured; the codec writes the headers. */
function connectFields(deps: OutboundDeps, c: OutboundConnection, authority: HboneAuthority, forwardedHost: string | undefined, forwardedNetwork?: string): ConnectRequestFields {
  return {
    authority,
    forwardedFor: c.peer,
    ...(forwardedHost !== undefined ? { forwardedHost } : {}),
    baggage: baggageForWorkload(c.source),
    traceparent: newTraceparent(deps.randomBytes),
    ...(forwardedNetwork !== undefined ? { forwardedNetwork } : {}),
  };
}

async function establish(deps: OutboundDeps, c: OutboundConnection, plan: RoutedPlan, signal: AbortSignal, log: Logger): Promise<Duplex> {
  const srcIdentity = c.source.identity;
  switch (plan.kind) {
    case 'hbone': {
      const s = await deps.pool.openStream(
        { srcIdentity, dstIdentities: plan.expectedIdentities, nextHop: plan.nextHop, srcIp: c.peer.ip },
        { connect: connectFields(deps, c, plan.authority, plan.destination.service?.hostname), signal },
      );
      return s.stream;
    }
    case 'double-hbone': {
      const hostname = plan.destination.service?.hostname;
      const outer = await deps.pool.openStream(
        { srcIdentity, dstIdentities: plan.gatewayIdentities, nextHop: plan.gateway, srcIp: c.peer.ip },
        { connect: connectFields(deps, c, plan.innerAuthority, hostname), signal },
      );
      // The inner handshake is checked by the same verifier as any outer one: the final identities, revocation.
      const certificate = await deps.certificateFor(srcIdentity).catch((err: unknown) => {
        throw new ProxyError('CERT_UNAVAILABLE', `no certificate for the inner tunnel: ${asProxyError(err).message}`, { cause: err });
      });
      const inner = await openInnerHbone(outer.stream, {
        material: deps.materials.get(certificate),
        expected: plan.finalIdentities,
        revocation: deps.revocation,
        connect: connectFields(deps, c, plan.innerAuthority, hostname, deps.network),
        clock: deps.clock,
        via: plan.gateway,
        log,
        signal,
      });
      return inner.stream;
    }
    case 'tcp':
    case 'passthrough':
      return connectUpstream({ sockets: deps.sockets, clock: deps.clock, timeoutMs: deps.connectTimeoutMs, to: plan.nextHop, signal, tcp: deps.tcp });
  }
}
