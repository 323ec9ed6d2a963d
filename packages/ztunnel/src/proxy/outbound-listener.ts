/**
 * The two outbound front doors of a workload proxy, each read top to bottom:
 *
 * 15001 (captured traffic), `serveCaptured`:
 *   addresses (peer, SO_ORIGINAL_DST) → source workload (waits up to 5 s for
 *   the pod's own WDS entry, as ztunnel) → openOutbound (plan, track,
 *   establish) → relay; any failure closes the client.
 *
 * 15080 (SOCKS5, after the listener's handshake), `serveSocks5`:
 *   source workload → openOutbound → reply SUCCEEDED and relay, or reply the
 *   failure code the error maps to (socksReplyFor).
 */
import type { Socket } from 'node:net';
import type { Clock, Snapshot, Store, Workload } from '@ambient/control';
import type { Logger } from 'pino';
import { peerAddress, type ProxyError, type SocketAddress } from '@ambient/dataplane';
import { ReplyCode } from '../socks5/codec.js';
import type { Socks5Connection } from '../socks5/listener.js';
import { awaitWorkload } from './await-workload.js';
import { openOutbound, type OutboundDeps } from './outbound.js';

export interface OutboundFrontDeps {
  readonly outbound: OutboundDeps;
  readonly store: Store;
  readonly localWorkload: (snapshot: Snapshot) => Workload | undefined;
  readonly localWorkloadWaitMs: number;
  readonly clock: Clock;
  readonly log: Logger;
}

/** 15001: one captured connection. Never rejects. */
export async function serveCaptured(deps: OutboundFrontDeps, socket: Socket, originalDestination: (socket: Socket) => SocketAddress | undefined): Promise<void> {
  socket.on('error', () => {});
  const peer = peerAddress(socket);
  const origDst = originalDestination(socket);
  if (peer === undefined || origDst === undefined) {
    deps.log.warn({ reason: 'no peer or original destination' }, 'outbound connection refused');
    socket.destroy();
    return;
  }
  const source = await sourceWorkload(deps, socket);
  if (socket.destroyed) return;
  if (source === undefined) {
    deps.log.warn({ reason: `the local workload is not known after ${deps.localWorkloadWaitMs} ms` }, 'outbound connection refused');
    socket.destroy();
    return;
  }
  const opened = await openOutbound(deps.outbound, { socket, peer, origDst, source });
  if (!opened.ok) {
    socket.destroy();
    return;
  }
  await opened.relay();
}

/** 15080: one SOCKS5 request the listener accepted. Never rejects. */
export async function serveSocks5(deps: OutboundFrontDeps, conn: Socks5Connection): Promise<void> {
  const source = await sourceWorkload(deps, conn.socket);
  if (source === undefined) {
    conn.reply(ReplyCode.GENERAL_FAILURE);
    return;
  }
  const opened = await openOutbound(deps.outbound, { socket: conn.socket, peer: conn.peer, origDst: conn.origDst, source });
  if (!opened.ok) {
    conn.reply(socksReplyFor(opened.error));
    return;
  }
  conn.reply(ReplyCode.SUCCEEDED);
  conn.socket.resume();
  await opened.relay();
}

/** The pod's own workload, waiting up to LOCAL_WORKLOAD_WAIT for it; the wait ends early when the client goes away. */
async function sourceWorkload(deps: OutboundFrontDeps, client: Socket): Promise<Workload | undefined> {
  const known = deps.localWorkload(deps.store.snapshot());
  if (known !== undefined) return known;
  const gone = new AbortController();
  const onClose = () => gone.abort();
  client.once('close', onClose);
  try {
    const found = await awaitWorkload(deps.store, deps.localWorkload, deps.clock, deps.localWorkloadWaitMs, gone.signal);
    return found?.workload;
  } finally {
    client.off('close', onClose);
  }
}

/** The SOCKS5 reply (RFC 1928 §6) for an outbound failure. */
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
