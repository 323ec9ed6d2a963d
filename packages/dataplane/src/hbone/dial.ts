/**
 * Dialing HBONE (ztunnel src/proxy/h2/client.rs and the pool's connection
 * spawner) as three named stages, each failing with one ProxyError code:
 *
 * 1. `connectTcp` — a TCP socket from the injected socket factory (in-pod
 *    mode makes it inside the pod's netns), TCP_NODELAY and keepalive; bounded
 *    by `connectTimeoutMs` (ztunnel: 10 s) → UPSTREAM_TIMEOUT with ztunnel's
 *    NetworkPolicy hint; any other failure → UPSTREAM_CONNECT_FAILED.
 * 2. `clientHandshake` (tls/handshake.ts) — the one TLS client path: TLS 1.3,
 *    ALPN h2, no SNI, no resumption, our full chain, the peer checked by the
 *    one PeerVerifier (expected identities, chain to our workload roots,
 *    revocation) → TLS_HANDSHAKE_FAILED / PEER_IDENTITY_INVALID /
 *    CERT_REVOKED / TLS_HANDSHAKE_TIMEOUT.
 * 3. `startHttp2` — HTTP/2 with ztunnel's client settings (4 MiB stream
 *    window, 16 MiB connection window, 1 MiB frames, 16 KiB header list, no
 *    push), the peer's SETTINGS awaited so its stream limit is known before
 *    the first stream (and a peer that refuses our certificate after the TLS
 *    1.3 handshake fails the dial, not the first stream) → H2_HANDSHAKE_FAILED.
 *
 * `dialHbone` runs 1 → 2 → 3 to a peer's HBONE port; `openInnerHbone` runs
 * 2 → 3 inside an established CONNECT stream (double HBONE) and opens its one
 * stream, so the inner tunnel's peer is checked exactly like an outer one.
 */
import { connect as h2Connect, type ClientHttp2Session } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Clock, Identity, Logger } from '@ambient/control';
import { describeError, ProxyError } from '../errors.js';
import { abortiveClose } from '../io/copy.js';
import { applyTcpSocketOptions, DEFAULT_TCP_SOCKET_OPTIONS, type TcpSocketOptions } from '../io/socket-options.js';
import { settleWithin } from '@ambient/control';
import { formatSocketAddress, type SocketAddress } from '../net/address.js';
import type { SocketFactory } from '../platform/sockets.js';
import type { RevocationSource } from '../tls/crl/manager.js';
import type { TlsMaterial } from '../tls/contexts.js';
import { clientHandshake, type ClientHandshake } from '../tls/handshake.js';
import { peerVerifier } from '../tls/peer-verifier.js';
import { classifySessionError, DEFAULT_HBONE_CLIENT_SETTINGS, HboneConnection, type HboneClientSettings, type HboneStream } from './connection.js';
import { formatAuthority, type ConnectRequestFields } from './connect-codec.js';

/** ztunnel's CONNECTION_TIMEOUT default. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;

/** Who we are and whom we expect, for one TLS handshake. */
export interface PeerExpectations {
  /** Our certificate (key, full chain, workload roots). */
  readonly material: TlsMaterial;
  /** The identities the server may prove (destination workload + service SANs, or a gateway's). */
  readonly expected: readonly Identity[];
  /** CRL_PATH's lists for the source side; absent: no revocation checks. */
  readonly revocation?: RevocationSource | undefined;
}

export interface DialHboneOptions extends PeerExpectations {
  readonly nextHop: SocketAddress;
  readonly sockets: Pick<SocketFactory, 'connect'>;
  /** Bind the TCP socket to this local address (only when it is ours and routable toward the next hop). */
  readonly sourceIp?: string | undefined;
  readonly connectTimeoutMs: number;
  readonly clock: Clock;
  readonly settings?: Partial<HboneClientSettings> | undefined;
  readonly tcp?: TcpSocketOptions | undefined;
  readonly log?: Logger | undefined;
  /** Aborting cancels the dial (it rejects with UPSTREAM_CONNECT_FAILED). */
  readonly signal?: AbortSignal | undefined;
}

/** TCP → TLS → HTTP/2 to `nextHop`; resolves with a connection ready for CONNECT streams. */
export async function dialHbone(o: DialHboneOptions): Promise<HboneConnection> {
  const settings = { ...DEFAULT_HBONE_CLIENT_SETTINGS, ...o.settings };
  const peer = formatSocketAddress(o.nextHop);
  const tcp = await connectTcp(o);
  try {
    const tls = await secure(tcp, o, settings, peer);
    return await startHttp2(tls, { nextHop: o.nextHop, clock: o.clock, settings, log: o.log, signal: o.signal, authority: `https://${peer}` });
  } catch (err) {
    tcp.destroy();
    throw err;
  }
}

export interface InnerHboneOptions extends PeerExpectations {
  /** The inner CONNECT (its authority is the final destination; x-forwarded-network is the local NETWORK). */
  readonly connect: ConnectRequestFields;
  readonly clock: Clock;
  /** Names the gateway hop in errors and logs. */
  readonly via: SocketAddress;
  readonly settings?: Partial<HboneClientSettings> | undefined;
  readonly log?: Logger | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface InnerHboneStream extends HboneStream {
  /** The inner, never-pooled connection; it closes when its one stream closes. */
  readonly connection: HboneConnection;
}

/**
 * Double HBONE: a second TLS handshake inside an established outer CONNECT
 * stream to a network gateway, checked by the same verifier against the
 * final destination's identities, then HTTP/2 and one CONNECT. Not pooled:
 * the inner connection carries exactly this stream and closes with it (which
 * ends the outer stream). On failure the outer stream is reset too.
 */
export async function openInnerHbone(outer: Duplex, o: InnerHboneOptions): Promise<InnerHboneStream> {
  const settings = { ...DEFAULT_HBONE_CLIENT_SETTINGS, ...o.settings };
  const peer = `${formatAuthority(o.connect.authority)} via ${formatSocketAddress(o.via)}`;
  let connection: HboneConnection | undefined;
  try {
    const tls = await secure(outer, o, settings, peer);
    connection = await startHttp2(tls, { nextHop: o.via, clock: o.clock, settings, log: o.log, signal: o.signal, authority: 'https://inner.hbone.invalid' });
    const opened = await connection.openStream({ connect: o.connect, ...(o.signal === undefined ? {} : { signal: o.signal }) });
    const inner = connection;
    opened.stream.once('close', () => inner.close());
    return { ...opened, connection };
  } catch (err) {
    // The outer stream is useless without its inner tunnel.
    connection?.destroy();
    abortiveClose(outer, 'inner HBONE tunnel failed');
    throw err;
  }
}

/** Stage 2 for both dials: the one TLS client path, the peer checked against `o.expected` (with revocation). */
function secure(
  transport: Duplex,
  o: PeerExpectations & { readonly clock: Clock; readonly signal?: AbortSignal | undefined },
  settings: HboneClientSettings,
  peer: string,
): Promise<ClientHandshake> {
  return clientHandshake(transport, {
    material: o.material,
    verifier: peerVerifier({ roots: o.material.roots, expect: { peer: 'server', identities: o.expected }, clock: o.clock, revocation: o.revocation }),
    clock: o.clock,
    timeoutMs: settings.handshakeTimeoutMs,
    peer,
    signal: o.signal,
  });
}

// ---------------------------------------------------------------------------
// Stage 1: TCP

function connectTcp(o: DialHboneOptions): Promise<Socket> {
  const peer = formatSocketAddress(o.nextHop);
  return settleWithin<Socket>(
    {
      clock: o.clock,
      timeoutMs: o.connectTimeoutMs,
      onTimeout: () => ({ error: new ProxyError('UPSTREAM_TIMEOUT', `connection to ${peer} timed out, maybe a NetworkPolicy is blocking HBONE port ${o.nextHop.port}`) }),
      signal: o.signal,
      onAbort: (reason) => ({ error: aborted(o.nextHop, reason) }),
    },
    (settle) => {
      const socket = o.sockets.connect({ ip: o.nextHop.ip, port: o.nextHop.port, ...(o.sourceIp === undefined ? {} : { localAddress: o.sourceIp }) });
      applyTcpSocketOptions(socket, o.tcp ?? DEFAULT_TCP_SOCKET_OPTIONS);
      const onConnect = () => settle.resolve(socket);
      const onError = (err: Error) => settle.reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE connect to ${peer} failed: ${describeError(err)}`, { cause: err }));
      socket.once('connect', onConnect);
      socket.once('error', onError);
      if (socket.destroyed) onError(new Error('the socket factory returned a closed socket'));
      else if (!socket.connecting && socket.remoteAddress !== undefined) queueMicrotask(onConnect);
      return (outcome) => {
        socket.off('connect', onConnect);
        socket.off('error', onError);
        // From here TLS (then HTTP/2) reports this socket's failures; an 'error' in between must not go unhandled.
        socket.on('error', noop);
        if (outcome === 'rejected') socket.destroy();
      };
    },
  );
}

// ---------------------------------------------------------------------------
// Stage 3: HTTP/2

interface Http2Args {
  readonly nextHop: SocketAddress;
  readonly clock: Clock;
  readonly settings: HboneClientSettings;
  readonly log: Logger | undefined;
  readonly signal: AbortSignal | undefined;
  readonly authority: string;
}

function startHttp2(tls: ClientHandshake, args: Http2Args): Promise<HboneConnection> {
  const { settings } = args;
  const { socket } = tls;
  const peer = formatSocketAddress(args.nextHop);
  let session: ClientHttp2Session | undefined;
  return settleWithin<HboneConnection>(
    {
      clock: args.clock,
      timeoutMs: settings.handshakeTimeoutMs,
      onTimeout: () => ({ error: new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer}: no SETTINGS from the peer within ${settings.handshakeTimeoutMs} ms`) }),
      signal: args.signal,
      onAbort: (reason) => ({ error: aborted(args.nextHop, reason) }),
    },
    (settle) => {
      const s = h2Connect(args.authority, {
        createConnection: () => socket,
        settings: {
          enablePush: false,
          initialWindowSize: settings.streamWindowSize,
          maxFrameSize: settings.frameSize,
          maxHeaderListSize: settings.maxHeaderListSize,
        },
        peerMaxConcurrentStreams: settings.initialPeerMaxStreams,
        maxSessionMemory: settings.maxSessionMemoryMiB,
      });
      session = s;
      let sessionError: Error | undefined;
      let socketError: Error | undefined;
      const onSocketError = (err: Error) => {
        socketError ??= err;
      };
      const onConnect = () => {
        try {
          s.setLocalWindowSize(settings.connectionWindowSize);
        } catch (err) {
          settle.reject(new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer}: cannot set the connection window: ${describeError(err)}`, { cause: err }));
        }
      };
      const onSettings = () =>
        settle.resolve(new HboneConnection({ session: s, socket, nextHop: args.nextHop, peerIdentity: tls.peer.identity, peerChain: tls.chain, clock: args.clock, settings, log: args.log }));
      const onError = (err: Error) => {
        sessionError = err;
        settle.reject(classifySessionError(err, args.nextHop, 'H2_HANDSHAKE_FAILED'));
      };
      const onClose = () => {
        if (sessionError !== undefined) return;
        // A TLS 1.3 server rejects our certificate after our side of the handshake finished: an alert, or
        // (as Node reports it) a plain close before any SETTINGS.
        if (socketError !== undefined) settle.reject(classifySessionError(socketError, args.nextHop, 'H2_HANDSHAKE_FAILED'));
        else settle.reject(new ProxyError('TLS_HANDSHAKE_FAILED', `${peer} closed the connection after the TLS handshake without sending HTTP/2 SETTINGS (most likely it refused our client certificate)`));
      };
      socket.on('error', onSocketError);
      s.once('connect', onConnect);
      s.once('remoteSettings', onSettings);
      s.on('error', onError);
      s.once('close', onClose);
      return (outcome) => {
        socket.off('error', onSocketError);
        s.off('connect', onConnect);
        s.off('remoteSettings', onSettings);
        s.off('error', onError);
        s.off('close', onClose);
        if (outcome === 'rejected') {
          s.on('error', noop);
          s.destroy();
          socket.destroy();
        }
      };
    },
  ).catch((err: unknown) => {
    if (session === undefined) socket.destroy();
    throw err instanceof ProxyError ? err : new ProxyError('H2_HANDSHAKE_FAILED', `HTTP/2 to ${peer} could not start: ${describeError(err)}`, { cause: err });
  });
}

function aborted(hop: SocketAddress, reason: unknown): ProxyError {
  return new ProxyError('UPSTREAM_CONNECT_FAILED', `HBONE dial to ${formatSocketAddress(hop)} aborted: ${describeError(reason)}`, { cause: reason });
}

function noop(): void {}
