/**
 * What happens to one HBONE CONNECT stream, in ztunnel's phases
 * (src/proxy/inbound.rs serve_connect):
 *  1. context: the local workload, the parsed authority, the inbound plan —
 *     a failure is an early deny (warn log, 400/503, no metrics);
 *  2. checks before 200: the connection is registered for policy re-checks,
 *     then L4 authorization (401 + DENY), then the upstream connect (503 +
 *     CONNECT). Nothing is answered, and no byte read, before both passed;
 *  3. 200 (with response baggage), an optional PROXY v2 header, then bytes
 *     both ways until both sides end; metrics and the access log once at the end.
 */
import type { Snapshot, Workload } from '@ambient/control';
import { identityToString } from '@ambient/control';
import { evaluate, describeDecision } from '../authz/evaluate.js';
import type { ConnectionManager } from '../connection-manager.js';
import { ERROR_DISPOSITIONS, ProxyError, asProxyError } from '@ambient/dataplane';
import { baggageForWorkload, encodeBaggage, formatAuthority } from '@ambient/dataplane';
import type { ConnectHandler, ConnectRequest } from '@ambient/dataplane';
import { planInbound } from '../inbound/plan.js';
import { awaitWorkload } from './await-workload.js';
import { relayAndRecord } from './relay.js';
import { encodeProxyV2 } from '@ambient/dataplane';
import type { ConnectionResults } from '../metrics/connection-result.js';
import type { DerivedWorkload } from '../metrics/traffic.js';
import { formatSocketAddress } from '@ambient/dataplane';
import type { InboundContext } from './context.js';
import { connectUpstream, originalSource } from './upstream.js';

export interface HboneInboundDeps extends InboundContext {
  readonly connections: ConnectionManager;
  readonly results: ConnectionResults;
  /** ENABLE_RESPONSE_BAGGAGE. */
  readonly responseBaggage: boolean;
  readonly localhostAppTunnel: boolean;
}

export function createHboneInboundHandler(deps: HboneInboundDeps): ConnectHandler {
  return (req) => serveConnect(deps, req).catch((err: unknown) => {
    // Last resort: never leave a stream unanswered or crash the process.
    const e = asProxyError(err);
    deps.log.error({ err: e.message, code: e.code }, 'inbound HBONE handler failed');
    req.reject(ERROR_DISPOSITIONS[e.code].httpStatus ?? 503, e.message);
  });
}

async function serveConnect(deps: HboneInboundDeps, req: ConnectRequest): Promise<void> {
  const log = deps.log.child({ connection: req.connectionId, stream: req.streamId });
  const src = req.remote;

  // Phase 1: context. The local workload may arrive from WDS a moment after its first traffic.
  const found = await awaitWorkload(deps.store, (s) => deps.localWorkload(s, req.local.ip), deps.clock, deps.localWorkloadWaitMs, req.signal);
  if (found === undefined) {
    return earlyDeny(req, log, new ProxyError('UNKNOWN_LOCAL_WORKLOAD', `no workload serves ${req.local.ip} on this ztunnel (not in workload discovery after ${deps.localWorkloadWaitMs} ms)`));
  }
  const { workload: local, snapshot } = found;
  const plan = planInbound({
    snapshot,
    localWorkload: local,
    localIp: req.local.ip,
    network: deps.network,
    authority: req.request.authority,
    illegalPorts: deps.illegalPorts,
    forwardedHost: req.request.forwardedHost,
    localhostAppTunnel: deps.localhostAppTunnel,
  });
  if (plan.kind === 'reject') return earlyDeny(req, log, new ProxyError(plan.code, plan.message));

  // Metrics context: the source from WDS by IP unless the request came through a
  // network gateway (x-forwarded-network differs), in which case baggage describes it.
  const fromGateway = req.request.forwardedNetwork !== undefined && req.request.forwardedNetwork.toLowerCase() !== deps.network.toLowerCase();
  const source = fromGateway ? undefined : sourceWorkload(snapshot, deps.network, src.ip);
  const b = req.request.baggage;
  const derivedSource: DerivedWorkload = {
    identity: req.peer.identity,
    ...(fromGateway
      ? {
          ...(b.workloadName !== undefined ? { workloadName: b.workloadName } : {}),
          ...(b.serviceName !== undefined ? { app: b.serviceName } : {}),
          ...(b.serviceVersion !== undefined ? { revision: b.serviceVersion } : {}),
          ...(b.namespace !== undefined ? { namespace: b.namespace } : {}),
          ...(b.clusterId !== undefined ? { clusterId: b.clusterId } : {}),
          ...(b.region !== undefined ? { region: b.region } : {}),
          ...(b.zone !== undefined ? { zone: b.zone } : {}),
        }
      : {}),
  };
  const result = deps.results.start({
    src: formatSocketAddress(src),
    dst: formatSocketAddress(plan.target),
    hboneAddr: formatAuthority(req.request.authority),
    traffic: {
      reporter: 'destination',
      source,
      derivedSource,
      destination: local,
      destinationService: plan.destinationService,
      securityPolicy: 'mutual_tls',
    },
  });

  // Phase 2: checks before 200. Register first, so a racing policy update is seen.
  const abort = new AbortController();
  const tracked = deps.connections.track(
    { direction: 'inbound', src, originalDst: plan.target, actualDst: plan.upstream, protocol: 'HBONE', srcIdentity: req.peer.identity, policyWorkloadUid: local.uid },
    (err) => abort.abort(err),
  );
  try {
    const conn = { src, dst: plan.target, srcIdentity: req.peer.identity, dstNetwork: deps.network };
    const decision = evaluate(snapshot.policiesFor(local), conn);
    if (deps.authzInfoLogging || decision.dryRun.length > 0) log.info({ decision: describeDecision(decision) }, 'authorization decision');
    if (!decision.allow) {
      const err = new ProxyError('POLICY_DENIED', `connection denied: ${describeDecision(decision)}`);
      result.record(err);
      req.reject(401, err.message);
      return;
    }
    if (abort.signal.aborted || req.signal.aborted) {
      result.record(abort.signal.reason ?? new ProxyError('INTERNAL', 'client went away'));
      req.reject(401, 'connection closed due to policy change');
      return;
    }

    let upstream;
    try {
      upstream = await connectUpstream({
        sockets: deps.sockets,
        clock: deps.clock,
        timeoutMs: deps.connectTimeoutMs,
        to: plan.upstream,
        localAddress: plan.bindLoopback ? (plan.upstream.ip.includes(':') ? '::1' : '127.0.0.1') : originalSource(src.ip, plan.upstream.ip, deps.transparentSource === true),
        signal: req.signal,
      });
    } catch (err) {
      const e = asProxyError(err);
      result.record(e);
      req.reject(503, e.message);
      return;
    }

    // Phase 3: 200, then bytes.
    const headers = deps.responseBaggage ? { baggage: encodeBaggage(baggageForWorkload(local)) } : {};
    if (req.signal.aborted || abort.signal.aborted) {
      upstream.destroy();
      result.record(abort.signal.reason ?? new ProxyError('INTERNAL', 'client went away before the tunnel was established'));
      req.reject(503, 'connection closed');
      return;
    }
    const tunnel = req.accept(headers);
    if (plan.proxyProtocol) {
      upstream.write(encodeProxyV2({ src, dst: plan.tunnelTarget ?? plan.target, peerIdentity: identityToString(req.peer.identity) }));
    }
    await relayAndRecord(tunnel, upstream, result, abort.signal, deps.clock);
  } finally {
    tracked.release();
  }
}

function earlyDeny(req: ConnectRequest, log: InboundContext['log'], err: ProxyError): void {
  const d = ERROR_DISPOSITIONS[err.code];
  log.warn({ src: formatSocketAddress(req.remote), dst: formatAuthority(req.request.authority), error: err.message, code: err.code }, 'connection failed');
  req.reject(d.httpStatus ?? 503, err.message);
}

function sourceWorkload(snapshot: Snapshot, network: string, ip: string): Workload | undefined {
  return snapshot.workloadByAddress(network, ip);
}
