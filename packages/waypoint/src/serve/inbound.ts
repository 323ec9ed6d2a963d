/**
 * The waypoint's downstream side: HBONE termination on 15008 (Istio's
 * `connect_terminate` listener) with the waypoint's own SPIFFE identity, on
 * the dataplane's HboneServer — the same mTLS acceptor (TLS 1.3, a required
 * client certificate, the one SPIFFE peer verifier, CRLs), HTTP/2 settings
 * and flood limits as ztunnel's 15008 — and, per CONNECT stream, the
 * `main_internal` dispatch:
 *
 *  1. target: from the CONNECT authority alone (targets.ts): a served service
 *     VIP:port, a bound workload's IP:port, or refused (HBONE 400 through the
 *     dataplane error table, and a "connection failed" log line);
 *  2. source: the peer certificate's identity (nothing in a request changes
 *     it) and the client's workload by its IP in workload discovery;
 *  3. 200, then the port's protocol: HTTP (HTTP/1.1, or h2c when the
 *     preface says so), detection for unknown ports and workload-addressed
 *     traffic (sniff.ts), or opaque TCP (tcp.ts);
 *  4. HTTP requests go through the pipeline (pipeline.ts).
 *
 * `startWaypointInbound` is the one entry for the composition root; the
 * handle drains (GOAWAY on the HBONE and inner HTTP/2 sessions, Connection:
 * close on HTTP/1.1, requests in flight finish) and closes.
 *
 * Invariants: no byte of a tunnel is read before its target was classified
 * and the CONNECT accepted; every tunnel is served by exactly one of the
 * HTTP/1.1 server, the HTTP/2 server or the TCP relay; after close() no
 * listener, session or timer of this module remains.
 */
import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ListenAddress, WorkloadCertificate } from '@ambient/control';
import {
  formatAuthority,
  formatSocketAddress,
  HboneServer,
  ProxyError,
  type ConnectRequest,
  type HboneServerHooks,
  type HboneServerLimits,
  type RevocationSource,
  type SocketFactory,
  type TcpSocketOptions,
  type TlsMaterialCache,
} from '@ambient/dataplane';
import { Http1Server, type Http1Limits } from './http1.js';
import { Http2Server, type Http2Limits } from './http2.js';
import { exchangeHandler, type PipelineDeps, type TunnelContext } from './pipeline.js';
import { sniffProtocol, type SniffMode } from './sniff.js';
import { classifyTarget } from './targets.js';
import { relayTcp } from './tcp.js';

export interface SniffLimits {
  /** Bytes looked at before an undecided stream is TCP (unknown ports) or HTTP/1.1 (HTTP ports). */
  readonly maxBytes: number;
  /** How long detection waits for the client's first bytes (0: indefinitely). */
  readonly timeoutMs: number;
}

/**
 * Envoy's http_inspector reads at most 64 KiB; a request line fits far
 * earlier. The time bound ends detection for server-first protocols on
 * undeclared ports (they are then relayed as TCP, as with Envoy's listener
 * filter timeout); a client that waits longer than this before its first
 * byte is also relayed as TCP, so declare HTTP ports.
 */
const DEFAULT_SNIFF_LIMITS: SniffLimits = { maxBytes: 8 * 1024, timeoutMs: 10_000 };

export interface WaypointInboundDeps extends PipelineDeps {
  readonly sockets: SocketFactory;
  /** The waypoint's own certificate (its SPIFFE identity); rejects → connections closed (fail closed). */
  readonly certificate: () => Promise<WorkloadCertificate>;
  /** The network this waypoint is on (the client's workload is looked up by IP in it). */
  readonly network: string;
  readonly tlsMaterials?: TlsMaterialCache;
  readonly revocation?: RevocationSource;
  readonly tcp?: TcpSocketOptions;
  /** HBONE (15008) limits; Istio's connect_terminate allows 100 concurrent streams per connection. */
  readonly hboneLimits?: Partial<HboneServerLimits>;
  readonly http1Limits?: Partial<Http1Limits>;
  readonly http2Limits?: Partial<Http2Limits>;
  readonly sniffLimits?: Partial<SniffLimits>;
  readonly hooks?: HboneServerHooks;
}

export interface WaypointInbound extends AsyncDisposable {
  /** The bound address (`ip:port`). */
  readonly address: string;
  readonly port: number;
  /** Graceful: stop taking tunnels, GOAWAY, Connection: close; resolves when every connection has closed. */
  drain(): Promise<void>;
  /** Force-closes everything (the drain deadline passed). */
  close(): Promise<void>;
}

/** Istio's connect_terminate: max_concurrent_streams 100 (for fairness). */
const ISTIO_HBONE_MAX_STREAMS = 100;

export async function startWaypointInbound(deps: WaypointInboundDeps, address: ListenAddress): Promise<WaypointInbound> {
  const log = deps.log.child({ component: 'inbound' });
  const sniff: SniffLimits = { ...DEFAULT_SNIFF_LIMITS, ...deps.sniffLimits };
  const http1 = new Http1Server({ clock: deps.clock, log, ...(deps.http1Limits === undefined ? {} : { limits: deps.http1Limits }) });
  const http2 = new Http2Server({
    clock: deps.clock,
    log,
    ...(deps.http2Limits === undefined ? {} : { limits: deps.http2Limits }),
    ...(deps.hboneLimits === undefined ? {} : { sessionLimits: deps.hboneLimits }),
  });

  const onConnect = (req: ConnectRequest): void => {
    const connLog = log.child({ conn: req.connectionId, stream: req.streamId, src: formatSocketAddress(req.remote), dst: formatAuthority(req.request.authority) });
    const snapshot = deps.snapshot();
    // 1. target, from the authority only.
    const target = classifyTarget({ bindings: deps.bindings(), snapshot, routes: deps.routes() }, req.request.authority);
    if (target.kind === 'refused') {
      connLog.warn({ code: target.code, error: target.reason }, 'connection failed');
      req.refuse(new ProxyError(target.code, target.reason));
      return;
    }
    // 2. source: the verified peer, and its workload by IP.
    const ctx: TunnelContext = {
      log: connLog,
      target,
      source: { identity: req.peer.identity, workload: snapshot.workloadByAddress(deps.network, req.remote.ip) },
      peerIdentity: req.peer.identity,
      downstreamLocal: formatAuthority(req.request.authority),
      downstreamRemote: formatSocketAddress(req.remote),
    };
    // 3. 200, then the protocol.
    const tunnel = req.accept();
    if (tunnel.destroyed) return;
    if (target.mode === 'tcp') {
      void relayTcp(deps, ctx, tunnel, undefined);
      return;
    }
    void serveHttpOrDetect(tunnel, ctx, target.mode === 'http' ? 'http' : 'detect');
  };

  const serveHttpOrDetect = async (tunnel: Duplex, ctx: TunnelContext, mode: SniffMode): Promise<void> => {
    let sniffed;
    try {
      sniffed = await sniffProtocol(tunnel, { clock: deps.clock, mode, maxBytes: sniff.maxBytes, timeoutMs: sniff.timeoutMs });
    } catch (err) {
      ctx.log.debug({ err: err instanceof Error ? err.message : String(err) }, 'tunnel closed during protocol detection');
      tunnel.destroy();
      return;
    }
    ctx.log.debug({ protocol: sniffed.protocol, reason: sniffed.reason, bytes: sniffed.bytes }, 'tunnel protocol');
    if (sniffed.protocol === 'tcp') {
      await relayTcp(deps, ctx, tunnel, sniffed.leftover);
      return;
    }
    if (sniffed.reason === 'eof') {
      // The client ended before a complete HTTP request line: nothing to answer.
      tunnel.destroy();
      return;
    }
    const handler = exchangeHandler(deps, ctx);
    if (sniffed.protocol === 'http2') http2.serve(tunnel, handler, ctx.log);
    else http1.serve(tunnel, handler, ctx.log);
  };

  const hbone = new HboneServer({
    clock: deps.clock,
    log,
    certificateFor: () => deps.certificate(),
    onConnect,
    limits: { maxConcurrentStreams: ISTIO_HBONE_MAX_STREAMS, ...deps.hboneLimits },
    ...(deps.tlsMaterials === undefined ? {} : { tlsMaterials: deps.tlsMaterials }),
    ...(deps.revocation === undefined ? {} : { revocation: deps.revocation }),
    ...(deps.tcp === undefined ? {} : { tcp: deps.tcp }),
    ...(deps.hooks === undefined ? {} : { hooks: deps.hooks }),
  });

  let listener: Server;
  try {
    listener = await deps.sockets.listen({ host: address.host, port: address.port, pauseOnConnect: true }, () => {});
  } catch (err) {
    await hbone.close();
    throw err;
  }
  listener.on('error', (err) => log.error({ err: err.message }, 'HBONE listener error'));
  hbone.attach(listener);
  const bound = listener.address();
  const port = typeof bound === 'object' && bound !== null ? bound.port : address.port;
  const boundAddress = formatSocketAddress({ ip: typeof bound === 'object' && bound !== null ? bound.address : address.host, port });
  log.info({ address: boundAddress }, 'waypoint HBONE listener started');

  let closed = false;
  const closeListener = () =>
    new Promise<void>((resolve) => {
      if (!listener.listening) return resolve();
      listener.close(() => resolve());
    });

  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    http1.close();
    http2.close();
    await hbone.close();
    await closeListener();
  };
  return {
    address: boundAddress,
    port,
    async drain() {
      http1.drain();
      http2.drain();
      await hbone.drain();
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
