/**
 * Inbound plaintext (15006): traffic to a pod that did not come over HBONE
 * (ztunnel src/proxy/inbound_passthrough.rs). The original destination must
 * be this workload on a legal port; authorization runs WITHOUT an identity
 * (so PeerAuthentication STRICT, sent by istiod as a static DENY with
 * `not_principals: [presence]`, refuses it), then bytes are relayed to the
 * original destination. A denial closes the connection.
 */
import type { Socket } from 'node:net';
import { authorize, logDecision } from '../authz/authorize.js';
import type { ConnectionManager } from '../connection-manager.js';
import { asProxyError } from '@ambient/dataplane';
import { awaitWorkload } from './await-workload.js';
import { relayAndRecord } from './relay.js';
import type { ConnectionResults } from '../metrics/connection-result.js';
import { destinationServiceFor } from '../inbound/plan.js';
import { isIllegalPort } from '../ports.js';
import { formatSocketAddress, peerAddress, type OriginalDestination } from '@ambient/dataplane';
import type { InboundContext } from './context.js';
import { connectUpstream, originalSource } from './upstream.js';

export interface PlaintextInboundDeps extends InboundContext {
  readonly connections: ConnectionManager;
  readonly results: ConnectionResults;
  readonly originalDestination: OriginalDestination;
}

/** Serves one accepted plaintext socket; never rejects. */
export async function servePlaintextInbound(deps: PlaintextInboundDeps, socket: Socket): Promise<void> {
  socket.on('error', () => {}); // errors are handled through the copy; never crash on a reset
  socket.pause();
  const peer = peerAddress(socket);
  const target = deps.originalDestination(socket);
  if (peer === undefined || target === undefined) {
    socket.destroy();
    return;
  }
  const log = deps.log.child({ src: formatSocketAddress(peer), dst: formatSocketAddress(target) });
  if (isIllegalPort(target.port, deps.illegalPorts)) {
    log.warn({ code: 'SELF_CALL' }, `connection failed: destination port ${target.port} is one of ztunnel's own ports`);
    socket.destroy();
    return;
  }
  const found = await awaitWorkload(deps.store, (s) => deps.localWorkload(s, target.ip), deps.clock, deps.localWorkloadWaitMs);
  if (found === undefined) {
    log.warn({ code: 'UNKNOWN_LOCAL_WORKLOAD' }, `connection failed: no workload serves ${target.ip} on this ztunnel`);
    socket.destroy();
    return;
  }
  const { workload: local, snapshot } = found;
  const result = deps.results.start({
    src: formatSocketAddress(peer),
    dst: formatSocketAddress(target),
    traffic: {
      reporter: 'destination',
      source: snapshot.workloadByAddress(deps.network, peer.ip),
      destination: local,
      // ztunnel guess_inbound_service: the first of the workload's services whose port maps to this one.
      destinationService: destinationServiceFor(local, undefined, target.port, snapshot),
      securityPolicy: 'unknown',
    },
  });
  const abort = new AbortController();
  const tracked = deps.connections.track(
    { direction: 'inbound', src: peer, originalDst: target, actualDst: target, protocol: 'TCP', srcIdentity: undefined, policyWorkloadUid: local.uid },
    (err) => abort.abort(err),
  );
  try {
    const authz = authorize(snapshot, local, { src: peer, dst: target, srcIdentity: undefined, dstNetwork: deps.network });
    logDecision(log, authz, deps.authzInfoLogging);
    if (authz.denied !== undefined) {
      result.record(authz.denied);
      socket.destroy();
      return;
    }
    let upstream;
    try {
      upstream = await connectUpstream({
        sockets: deps.sockets,
        clock: deps.clock,
        timeoutMs: deps.connectTimeoutMs,
        tcp: deps.tcp,
        to: target,
        localAddress: originalSource(peer.ip, target.ip, deps.transparentSource === true),
        signal: abort.signal,
      });
    } catch (err) {
      result.record(asProxyError(err));
      socket.destroy();
      return;
    }
    // The socket was paused on accept so nothing is read before the checks; the copy resumes it.
    await relayAndRecord(socket, upstream, result, abort.signal, deps.clock);
  } finally {
    tracked.release();
  }
}
