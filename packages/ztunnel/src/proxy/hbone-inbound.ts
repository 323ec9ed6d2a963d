/**
 * What happens to one HBONE CONNECT stream, in ztunnel's phases
 * (src/proxy/inbound.rs serve_connect):
 *  1. context: the local workload, the parsed authority, the inbound plan —
 *     a failure is an early deny (warn log, 400/503, no metrics);
 *  2. checks before 200: the connection is registered for policy re-checks,
 *     then L4 authorization (authz/authorize.ts, the same step 15006 and the
 *     re-checks run: 401 + DENY), then the upstream connect (503 + CONNECT).
 *     Nothing is answered, and no byte read, before both passed. A client
 *     that leaves meanwhile is recorded as CLIENT_GONE, never as a denial;
 *     every status comes from the one error table (ConnectRequest.refuse);
 *  3. 200 (with response baggage), an optional PROXY v2 header, then bytes
 *     both ways until both sides end; metrics and the access log once at the end.
 */
import type { Snapshot, Workload } from '@ambient/control';
import { identityToString } from '@ambient/control';
import { authorize, logDecision } from '../authz/authorize.js';
import type { ConnectionManager } from '../connection-manager.js';
import { ProxyError, asProxyError } from '@ambient/dataplane';
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
    req.refuse(e);
  });
}

async function serveConnect(deps: HboneInboundDeps, req: ConnectRequest): Promise<void> {
  const log = deps.log.child({ connection: req.connectionId, stream: req.streamId });
  const src = req.remote;

  // Phase 1: context. The local workload may arrive from WDS a moment after its first traffic.
  const found = await awaitWorkload(deps.store, (s) => deps.localWorkload(s, req.local.ip), deps.clock, deps.localWorkloadWaitMs, req.signal);
  if (found === undefined) {
    if (req.signal.aborted) {
      log.debug({ code: 'CLIENT_GONE' }, 'the client closed the stream while its destination workload was awaited');
      return;
    }
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
  /** Records and answers a refusal; every status comes from the error table. */
  const refuse = (err: ProxyError): void => {
    result.record(err);
    req.refuse(err);
  };
  /** Why the connection can no longer go on: a policy change or drain (the manager's reason), or the client left. */
  const interrupted = (): ProxyError | undefined => {
    if (abort.signal.aborted) {
      const reason = abort.signal.reason instanceof ProxyError ? abort.signal.reason : new ProxyError('POLICY_CHANGED', 'connection closed due to policy change');
      // No tunnel exists yet: a policy change before the 200 is answered as a denial (401).
      return reason.code === 'POLICY_CHANGED' ? new ProxyError('POLICY_DENIED', reason.message) : reason;
    }
    if (req.signal.aborted) return new ProxyError('CLIENT_GONE', 'the client closed the stream before the tunnel was established');
    return undefined;
  };
  try {
    const authz = authorize(snapshot, local, { src, dst: plan.target, srcIdentity: req.peer.identity, dstNetwork: deps.network });
    logDecision(log, authz, deps.authzInfoLogging);
    if (authz.denied !== undefined) return refuse(authz.denied);
    const gone = interrupted();
    if (gone !== undefined) return refuse(gone);

    let upstream;
    try {
      upstream = await connectUpstream({
        sockets: deps.sockets,
        clock: deps.clock,
        timeoutMs: deps.connectTimeoutMs,
        tcp: deps.tcp,
        to: plan.upstream,
        localAddress: plan.bindLoopback ? (plan.upstream.ip.includes(':') ? '::1' : '127.0.0.1') : originalSource(src.ip, plan.upstream.ip, deps.transparentSource === true),
        signal: req.signal,
      });
    } catch (err) {
      return refuse(interrupted() ?? asProxyError(err));
    }

    // Phase 3: 200, then bytes.
    const headers = deps.responseBaggage ? { baggage: encodeBaggage(baggageForWorkload(local)) } : {};
    const goneLate = interrupted();
    if (goneLate !== undefined) {
      upstream.destroy();
      return refuse(goneLate);
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
  log.warn({ src: formatSocketAddress(req.remote), dst: formatAuthority(req.request.authority), error: err.message, code: err.code }, 'connection failed');
  req.refuse(err);
}

function sourceWorkload(snapshot: Snapshot, network: string, ip: string): Workload | undefined {
  return snapshot.workloadByAddress(network, ip);
}
