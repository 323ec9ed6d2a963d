/**
 * Opaque TCP through the waypoint (Istio's `inbound-vip|<port>|tcp|<host>`
 * and `direct-tcp` chains: tcp_proxy): the tunnel's bytes go to one endpoint
 * of the TCPRoute's backends (weighted) when a TCPRoute is attached to the
 * port, else of the service itself on the same port, or to the addressed
 * workload for workload-addressed traffic. One connect attempt (tcp_proxy's
 * default); no endpoint → UH, a failed connect → UF, and the tunnel is
 * closed. Then bytes both ways with half-close (dataplane copy) and one
 * TcpConnectionRecord at the end (istio_tcp_connections_opened_total at the
 * start).
 *
 * Invariants: exactly one tcpOpened (only when an upstream was reached) and
 * one tcpFinished per tunnel; the tunnel is always closed when this returns.
 */
import { Duplex, Readable } from 'node:stream';
import { serviceKey, type Service } from '@ambient/control';
import { proxyBidirectional } from '@ambient/dataplane';
import { pickWeighted } from '../routing/weighted.js';
import type { EnvoyResponseFlag, PeerInfo, TcpConnectionRecord } from '../telemetry/types.js';
import type { ChosenEndpoint } from '../upstream/types.js';
import { asL7Error, L7Error, localReplyOf } from './errors.js';
import { resolveBackend, type PipelineDeps, type PipelineUpstreamTarget, type TunnelContext } from './pipeline.js';

interface TcpPlan {
  readonly target: PipelineUpstreamTarget | undefined;
  readonly routeName: string | undefined;
  readonly reason: string;
}

function planTcp(deps: PipelineDeps, ctx: TunnelContext): TcpPlan {
  const t = ctx.target;
  if (t.kind === 'workload') {
    if (t.service === undefined || t.servicePort === undefined) return { target: undefined, routeName: undefined, reason: `workload ${t.workload.uid} has no service port targeting ${t.port}` };
    return { target: { service: t.service, servicePort: t.servicePort.servicePort, workload: t.workload }, routeName: undefined, reason: '' };
  }
  const routes = deps.routes().portRoutes({ namespace: t.service.namespace, hostname: t.service.hostname }, t.port.servicePort);
  const backends = routes?.tcpBackends;
  if (backends === undefined || backends.length === 0) return { target: { service: t.service, servicePort: t.port.servicePort }, routeName: undefined, reason: '' };
  const backend = pickWeighted(backends, deps.random);
  if (backend === undefined) return { target: undefined, routeName: undefined, reason: 'every TCPRoute backend has weight 0' };
  if (backend.invalid !== undefined) return { target: undefined, routeName: undefined, reason: `TCPRoute backend not served: ${backend.invalid.message}` };
  const service = resolveBackend(deps.snapshot(), backend.target, deps.clusterDomain);
  if (service === undefined || !service.ports.some((p) => p.servicePort === backend.port)) {
    return { target: undefined, routeName: undefined, reason: `TCPRoute backend ${backend.target.namespace}/${backend.target.name}:${backend.port} is not a known service port` };
  }
  return { target: { service, servicePort: backend.port }, routeName: undefined, reason: '' };
}

function tcpClusterName(deps: PipelineDeps, target: PipelineUpstreamTarget): string {
  if (target.workload !== undefined) return 'encap';
  const served = deps.bindings().services.has(serviceKey(target.service));
  return served ? `inbound-vip|${target.servicePort}|tcp|${target.service.hostname}` : `outbound|${target.servicePort}||${target.service.hostname}`;
}

/** Relays one opaque TCP tunnel; `leftover` are bytes the client sent before detection ended at EOF. */
export async function relayTcp(deps: PipelineDeps, ctx: TunnelContext, tunnel: Duplex, leftover: Buffer | undefined): Promise<void> {
  const startMs = deps.clock.now();
  const t0 = deps.clock.monotonic();
  const flags: EnvoyResponseFlag[] = [];
  let destination: PeerInfo = { identity: undefined, workload: undefined };
  let destinationService: Service | undefined;
  let upstreamHost: string | undefined;
  let upstreamCluster: string | undefined;
  let received = 0;
  let sent = 0;
  let termination: string | undefined;
  const abort = new AbortController();
  const onClose = () => abort.abort(new Error('the tunnel closed'));
  tunnel.once('close', onClose);
  const noteEndpoint = (endpoint: ChosenEndpoint | undefined) => {
    if (endpoint === undefined) return;
    destination = { identity: endpoint.identity, workload: endpoint.workload };
    destinationService = endpoint.service;
    upstreamHost = endpoint.address;
  };
  const plan = planTcp(deps, ctx);
  try {
    if (plan.target === undefined) {
      const reply = localReplyOf(new L7Error('CLUSTER_NOT_FOUND', plan.reason));
      flags.push(...reply.flags);
      termination = plan.reason;
      ctx.log.warn({ reason: plan.reason }, 'TCP tunnel has nowhere to go; closing it');
      tunnel.destroy();
      return;
    }
    destinationService = plan.target.service;
    upstreamCluster = tcpClusterName(deps, plan.target);
    const outcome = await deps.forwarder.openTcp(plan.target, abort.signal);
    if (outcome.kind === 'failure') {
      noteEndpoint(outcome.endpoint);
      const reply = localReplyOf(outcome.error);
      flags.push(...reply.flags);
      termination = outcome.error.message;
      ctx.log[reply.logLevel]({ code: outcome.error.code, err: outcome.error.message }, 'TCP upstream connect failed; closing the tunnel');
      tunnel.destroy();
      return;
    }
    noteEndpoint(outcome.endpoint);
    const upstream = outcome.stream;
    if (tunnel.destroyed) {
      upstream.destroy();
      return;
    }
    try {
      deps.telemetry.tcpOpened(ctx.source, destination, destinationService);
    } catch (err) {
      ctx.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'telemetry failed on a TCP open');
    }
    // After an EOF during detection the tunnel's readable side is over: its bytes come from `leftover`.
    const downstream = leftover === undefined ? tunnel : Duplex.from({ readable: Readable.from([leftover]), writable: tunnel });
    const result = await proxyBidirectional(downstream, upstream, { clock: deps.clock });
    if (downstream !== tunnel && !tunnel.destroyed) tunnel.destroy();
    received += result.received;
    sent += result.sent;
    if (result.error !== undefined) termination = `${result.error.side}: ${result.error.kind}: ${result.error.message}`;
  } catch (err) {
    const e = asL7Error(err);
    ctx.log.error({ err: e.message }, 'TCP relay failed unexpectedly');
    termination = e.message;
    tunnel.destroy();
  } finally {
    tunnel.off('close', onClose);
    const record: TcpConnectionRecord = {
      kind: 'tcp',
      startMs,
      durationMs: Math.max(0, deps.clock.monotonic() - t0),
      bytesReceived: received,
      bytesSent: sent,
      flags,
      source: ctx.source,
      destination,
      destinationService,
      upstreamHost,
      upstreamCluster,
      downstreamLocal: ctx.downstreamLocal,
      downstreamRemote: ctx.downstreamRemote,
      routeName: plan.routeName,
      connectionTerminationDetails: termination,
    };
    try {
      deps.telemetry.tcpFinished(record);
    } catch (err) {
      ctx.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'telemetry failed on a TCP record');
    }
  }
}
