/**
 * Carrying out an outbound plan for one application connection (ztunnel
 * src/proxy/outbound.rs proxy_to*): the pure planner decides (outbound/plan.ts),
 * this module acts — HBONE through the pool, double HBONE (outer pooled
 * tunnel to the network gateway, inner TLS + CONNECT not pooled), plain TCP,
 * or passthrough — then copies bytes both ways and records metrics and the
 * access log once. Each connection is tracked in the connection manager from
 * before its dial, so a drain waits for it and a forced drain cuts it.
 * `ready()` is called only when the upstream leg is
 * established (SOCKS5 answers success then; 15001 ignores it), and `fail()`
 * when it could not be.
 */
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Clock, Identity, Random, Store, Workload, WorkloadCertificate } from '@ambient/control';
import { identityToString } from '@ambient/control';
import type { Logger } from 'pino';
import type { ConnectionManager } from '../connection-manager.js';
import { ProxyError, asProxyError } from '@ambient/dataplane';
import { baggageForWorkload, encodeConnectRequest, newTraceparent, parseHostPort } from '@ambient/dataplane';
import { expectedIdentityVerifier, openInnerHbone } from '@ambient/dataplane';
import type { HbonePool } from '@ambient/dataplane';
import { relayAndRecord } from './relay.js';
import type { ConnectionResults } from '../metrics/connection-result.js';
import { planOutbound, type OutboundPlan } from '../outbound/plan.js';
import { formatSocketAddress, type SocketAddress, type SocketFactory } from '@ambient/dataplane';
import { connectUpstream } from './upstream.js';

export interface OutboundDeps {
  readonly store: Pick<Store, 'snapshot'>;
  readonly network: string;
  readonly illegalPorts: ReadonlySet<number>;
  readonly hbonePort: number;
  readonly pool: HbonePool;
  readonly certificateFor: (identity: Identity) => Promise<WorkloadCertificate>;
  readonly sockets: SocketFactory;
  readonly clock: Clock;
  readonly random: Random;
  readonly connectTimeoutMs: number;
  readonly results: ConnectionResults;
  /** Live connections: a drain waits for outbound ones too, and a forced drain closes them. */
  readonly connections: ConnectionManager;
  readonly log: Logger;
}

export interface OutboundConnection {
  /** The application's socket (paused or flowing; bytes are read only after the upstream is ready). */
  readonly socket: Duplex;
  readonly peer: SocketAddress;
  readonly origDst: SocketAddress;
  /** The workload sending this traffic (the proxy's workload). */
  readonly source: Workload;
  /** Upstream established: relay may start (SOCKS5 answers success). */
  ready(): void;
  /** Upstream failed: refuse the client (SOCKS5 failure reply, or close). */
  fail(err: ProxyError): void;
}

/** Plans and proxies one outbound connection; never rejects. */
export async function proxyOutbound(deps: OutboundDeps, c: OutboundConnection): Promise<void> {
  const snapshot = deps.store.snapshot();
  const plan = planOutbound({
    snapshot,
    source: c.source,
    sourceNetwork: deps.network,
    sourceIp: c.peer.ip,
    origDst: c.origDst,
    illegalPorts: deps.illegalPorts,
    random: deps.random,
    hbonePort: deps.hbonePort,
  });
  const log = deps.log.child({ src: formatSocketAddress(c.peer), dst: formatSocketAddress(c.origDst) });
  if (plan.kind === 'reject') {
    const err = new ProxyError(plan.code, plan.message);
    log.warn({ error: err.message, code: err.code }, 'connection failed');
    c.fail(err);
    return;
  }
  await carryOut(deps, c, plan, log);
}

async function carryOut(deps: OutboundDeps, c: OutboundConnection, plan: Exclude<OutboundPlan, { kind: 'reject' }>, log: Logger): Promise<void> {
  const mtls = plan.kind === 'hbone' || plan.kind === 'double-hbone';
  const destination = plan.kind === 'passthrough' ? undefined : plan.destination;
  const dst = plan.kind === 'double-hbone' ? plan.gateway : plan.nextHop;
  const result = deps.results.start({
    src: formatSocketAddress(c.peer),
    dst: formatSocketAddress(dst),
    hboneAddr: plan.kind === 'hbone' ? plan.authority : plan.kind === 'double-hbone' ? plan.innerAuthority : undefined,
    traffic: {
      reporter: 'source',
      source: c.source,
      ...(mtls ? { derivedSource: { identity: c.source.identity } } : {}),
      destination: destination?.workload,
      destinationService: destination?.service,
      securityPolicy: mtls ? 'mutual_tls' : 'unknown',
    },
  });

  // Tracked from before the dial, so a drain waits for it and a forced drain can cut it.
  // Outbound connections carry no policy here (authorization is the destination's).
  const abort = new AbortController();
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
  try {
    let upstream: Duplex;
    try {
      upstream = await establish(deps, c, plan, log);
    } catch (err) {
      const e = asProxyError(err);
      log.warn({ error: e.message, code: e.code }, 'outbound upstream failed');
      result.record(e);
      c.fail(e);
      return;
    }
    if (abort.signal.aborted) {
      upstream.destroy();
      const e = abort.signal.reason instanceof ProxyError ? abort.signal.reason : new ProxyError('DRAINING', 'closed before the upstream was established');
      result.record(e);
      c.fail(e);
      return;
    }
    c.ready();
    await relayAndRecord(c.socket, upstream, result, abort.signal, deps.clock);
  } finally {
    tracked.release();
  }
}

async function establish(deps: OutboundDeps, c: OutboundConnection, plan: Exclude<OutboundPlan, { kind: 'reject' }>, log: Logger): Promise<Duplex> {
  const srcIdentity = identityToString(c.source.identity);
  const headers = (authority: string, forwardedHost: string | undefined, network?: string) =>
    encodeConnectRequest({
      authority: authorityOf(authority),
      forwardedFor: c.peer,
      ...(forwardedHost !== undefined ? { forwardedHost } : {}),
      baggage: baggageForWorkload(c.source),
      traceparent: newTraceparent((n) => randomBytes(n)),
      ...(network !== undefined ? { forwardedNetwork: network } : {}),
    });
  switch (plan.kind) {
    case 'hbone': {
      const h = stripPseudo(headers(plan.authority, plan.destination.service?.hostname));
      const s = await deps.pool.openStream(
        { srcIdentity, dstIdentities: plan.expectedIdentities.map(identityToString), nextHop: { ip: plan.nextHop.ip, port: plan.nextHop.port }, srcIp: c.peer.ip },
        { authority: plan.authority, headers: h },
      );
      return s.stream;
    }
    case 'double-hbone': {
      const outer = await deps.pool.openStream(
        { srcIdentity, dstIdentities: plan.gatewayIdentities.map(identityToString), nextHop: { ip: plan.gateway.ip, port: plan.gateway.port }, srcIp: c.peer.ip },
        { authority: plan.innerAuthority, headers: stripPseudo(headers(plan.innerAuthority, plan.destination.service?.hostname)) },
      );
      const certificate = await deps.certificateFor(c.source.identity);
      const inner = await openInnerHbone(outer.stream, {
        certificate,
        verifyPeer: expectedIdentityVerifier(plan.finalIdentities.map(identityToString)),
        authority: plan.innerAuthority,
        network: deps.network,
        headers: stripPseudo(headers(plan.innerAuthority, plan.destination.service?.hostname, deps.network)),
        clock: deps.clock,
        via: { ip: plan.gateway.ip, port: plan.gateway.port },
        log,
      });
      return inner.stream;
    }
    case 'tcp':
    case 'passthrough':
      return connectUpstream({ sockets: deps.sockets, clock: deps.clock, timeoutMs: deps.connectTimeoutMs, to: plan.nextHop });
  }
}

/** The codec's authority type from the planner's `ip:port` / `host:port` text. */
function authorityOf(text: string) {
  const hp = parseHostPort(text);
  if (hp) return { kind: 'address' as const, ip: hp.ip, port: hp.port };
  const i = text.lastIndexOf(':');
  return { kind: 'hostname' as const, hostname: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

/** The pool sets the pseudo-headers itself; pass only regular headers. */
function stripPseudo(h: Record<string, unknown>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (!k.startsWith(':') && typeof v === 'string') out[k] = v;
  return out;
}
