/**
 * The SOCKS5 listener (127.0.0.1:15080 with UNSTABLE_ENABLE_SOCKS5=true):
 * accepts, negotiates (no-auth, CONNECT) within a bounded time and size,
 * resolves a domain destination through an injected resolver, then hands
 * `{socket, origDst, peer}` to the outbound handler. It is the
 * original-destination source for traffic that was not captured (tests, the
 * quick start), as in ztunnel.
 *
 * Unlike ztunnel (which answers success before connecting), the handler
 * decides the reply: it calls `reply(SUCCEEDED)` once the upstream is
 * connected and only then relays, or `reply(<failure>)`, which answers and
 * closes. Bytes the client sent early (after its request, before our reply)
 * stay in the socket's read buffer for the handler. Sockets allow half-open
 * connections: propagating a client's FIN is the relay's job.
 *
 * The listener is made by the injected SocketFactory (the workload proxy's,
 * as for 15001/15006/15008), with allowHalfOpen.
 *
 * Invariants:
 * - A socket's handshake is one settleWithin (control/platform/settle.ts):
 *   it ends once — with a request, a refusal, the client leaving, the
 *   deadline, or `close()` — and then its timer is cancelled, its listeners
 *   removed and the socket is out of `handshaking`, synchronously.
 * - The handler sees a socket only after a complete, valid request; at most
 *   one reply is ever written per connection.
 * - No error event on an accepted socket is ever unhandled.
 */
import type { AddressInfo, Server, Socket } from 'node:net';
import { canonicalIp, settleWithin, type Clock, type Logger, type Settler } from '@ambient/control';
import {
  canonicalPeerIp,
  describeError,
  formatSocketAddress as formatAddr,
  type ListenAddress,
  type SocketAddress,
  type SocketFactory,
} from '@ambient/dataplane';
import type { RefusalRecorder } from '../metrics/components.js';
import {
  encodeMethodSelection,
  encodeReply,
  METHOD_NO_AUTH,
  METHOD_NONE_ACCEPTABLE,
  parseGreeting,
  parseRequest,
  ReplyCode,
  type SocksRequest,
} from './codec.js';

/** A negotiated SOCKS5 connection, waiting for the handler's reply. */
export interface Socks5Connection {
  /** Paused; early client bytes (if any) are still unread. */
  readonly socket: Socket;
  /** The destination the client asked for (a domain already resolved). */
  readonly origDst: SocketAddress;
  /** The client's address. */
  readonly peer: SocketAddress;
  /** The hostname the client asked for, when it sent a domain. */
  readonly hostname: string | undefined;
  /**
   * Answers the client. SUCCEEDED: the socket is then the handler's to relay.
   * Any other code: the reply is written and the connection closed. Only the
   * first call has an effect.
   */
  reply(code: ReplyCode, bound?: SocketAddress): void;
}

type Socks5Handler = (conn: Socks5Connection) => void | Promise<void>;

/** Resolves a hostname for a client; undefined when it has no address. */
type Socks5Resolver = (hostname: string, peer: SocketAddress) => Promise<string | undefined>;

export interface Socks5ListenerOptions {
  /** Makes the listener (the workload proxy's socket factory). */
  readonly sockets: SocketFactory;
  readonly clock: Pick<Clock, 'setTimer'>;
  readonly log: Logger;
  readonly handler: Socks5Handler;
  readonly resolve: Socks5Resolver;
  /** Greeting + request (+ resolution) must finish within this (default 10 s). */
  readonly handshakeTimeoutMs?: number;
  /** ztunnel_connections_refused_total{listener="socks5"}. */
  readonly refusals?: RefusalRecorder;
  /** Called per accepted socket (istio_tcp_sockets_open{reporter="source"}); the result is called once when it closes. */
  readonly trackSocket?: () => () => void;
}

export interface Socks5Listener {
  readonly address: SocketAddress;
  /** Stops accepting and drops connections still negotiating; handed-over sockets are the handler's. */
  close(): Promise<void>;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;

export async function startSocks5Listener(addr: ListenAddress, o: Socks5ListenerOptions): Promise<Socks5Listener> {
  const log = o.log.child({ component: 'socks5' });
  /** Sockets still negotiating, with how to drop each. */
  const handshaking = new Map<Socket, () => void>();
  let closing = false;
  const host = addr.host === 'localhost' ? '127.0.0.1' : addr.host;
  let server: Server;
  try {
    // Half-close is the relay's business: a client FIN must not end our side.
    server = await o.sockets.listen({ host, port: addr.port, allowHalfOpen: true }, (socket) => {
      if (closing) {
        socket.destroy();
        return;
      }
      negotiate(socket, o, log, handshaking);
    });
  } catch (err) {
    const hint = (err as NodeJS.ErrnoException).code === 'EADDRINUSE' ? '; another process is using the port: stop it or move the listener with ZTUNNEL_SOCKS5_ADDR' : '';
    throw new Error(`socks5 listener: cannot listen on ${formatAddr({ ip: host, port: addr.port })}: ${describeError(err)}${hint}`, { cause: err });
  }
  server.on('error', (err) => log.error({ err }, 'SOCKS5 listener error'));
  const bound = server.address() as AddressInfo;
  log.info({ address: formatAddr({ ip: bound.address, port: bound.port }) }, 'listener established');

  let closed: Promise<void> | undefined;
  return {
    address: { ip: bound.address, port: bound.port },
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing = true;
        server.close();
        for (const drop of [...handshaking.values()]) drop();
        resolve();
      });
      return closed;
    },
  };
}

type Phase = 'greeting' | 'request' | 'resolving';

/** How a handshake ended. */
type Handshake =
  /** A complete, valid request (a domain already resolved): the handler's turn. */
  | { readonly kind: 'request'; readonly origDst: SocketAddress; readonly hostname: string | undefined }
  /** Refused: `answer` (if any) is written, then the connection closed. */
  | { readonly kind: 'refuse'; readonly answer?: Buffer }
  /** The client ended or closed, or close() dropped it. */
  | { readonly kind: 'gone' };

function negotiate(socket: Socket, o: Socks5ListenerOptions, log: Logger, handshaking: Map<Socket, () => void>): void {
  const untrack = o.trackSocket?.();
  socket.once('close', () => untrack?.());
  // Errors after the handover are the handler's to act on; this only keeps them from crashing the process.
  socket.on('error', (err) => log.debug({ err: err.message }, 'SOCKS5 socket error'));

  const peerIp = socket.remoteAddress === undefined ? undefined : canonicalIp(socket.remoteAddress);
  const peerPort = socket.remotePort;
  if (peerIp === undefined || peerPort === undefined) {
    socket.destroy();
    return;
  }
  const peer: SocketAddress = { ip: canonicalPeerIp(peerIp) ?? peerIp, port: peerPort };
  const plog = log.child({ peer: formatAddr({ ip: peer.ip, port: peer.port }) });

  let phase: Phase = 'greeting';
  const timeoutMs = o.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const onTimeout = (): { value: Handshake } => {
    plog.warn({ phase, timeoutMs }, `SOCKS5 handshake not completed within ${timeoutMs}ms (${phase}); closing`);
    o.refusals?.refused('socks5_handshake_timeout', 'socks5');
    return { value: phase === 'resolving' ? { kind: 'refuse', answer: encodeReply(ReplyCode.HOST_UNREACHABLE) } : { kind: 'refuse' } };
  };

  const handshake = settleWithin<Handshake>({ clock: o.clock, timeoutMs, onTimeout }, (settle) => {
    let buffered: Buffer = Buffer.alloc(0);
    const protocolError = (reason: string) => {
      plog.warn({ phase, reason }, `SOCKS5 ${phase} refused: ${reason}`);
      o.refusals?.refused('socks5_protocol_error', 'socks5');
    };
    const onData = (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      if (phase === 'greeting') {
        const g = parseGreeting(buffered);
        if (g.status === 'incomplete') return;
        if (g.status === 'error') {
          protocolError(g.reason);
          settle.resolve(g.answer === 'no-acceptable-method' ? { kind: 'refuse', answer: encodeMethodSelection(METHOD_NONE_ACCEPTABLE) } : { kind: 'refuse' });
          return;
        }
        socket.write(encodeMethodSelection(METHOD_NO_AUTH));
        buffered = buffered.subarray(g.length);
        phase = 'request';
      }
      if (phase === 'request') {
        const r = parseRequest(buffered);
        if (r.status === 'incomplete') return;
        if (r.status === 'error') {
          protocolError(r.reason);
          settle.resolve({ kind: 'refuse', answer: encodeReply(typeof r.answer === 'number' ? r.answer : ReplyCode.GENERAL_FAILURE) });
          return;
        }
        socket.pause();
        socket.off('data', onData);
        const early = buffered.subarray(r.length);
        buffered = Buffer.alloc(0);
        if (early.length > 0) socket.unshift(early);
        void destination(r.value, settle);
      }
    };
    const onEnd = () => {
      plog.debug({ phase }, 'SOCKS5 client closed during the handshake');
      settle.resolve({ kind: 'gone' });
    };
    const onClose = () => settle.resolve({ kind: 'gone' });
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onClose);
    handshaking.set(socket, () => settle.resolve({ kind: 'gone' }));
    return () => {
      handshaking.delete(socket);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
    };
  });

  /** Settles the handshake with the request's destination, resolving a domain first (within the same deadline). */
  const destination = async (req: SocksRequest, settle: Settler<Handshake>): Promise<void> => {
    if (req.address.kind !== 'domain') {
      settle.resolve({ kind: 'request', origDst: { ip: req.address.ip, port: req.port }, hostname: undefined });
      return;
    }
    const hostname = req.address.name;
    phase = 'resolving';
    let resolved: string | undefined;
    try {
      resolved = await o.resolve(hostname, peer);
    } catch (err) {
      plog.warn({ hostname, err: err instanceof Error ? err.message : String(err) }, `SOCKS5: resolving ${hostname} failed`);
    }
    if (settle.settled) return; // timed out or closed meanwhile
    const canonical = resolved === undefined ? undefined : canonicalIp(resolved);
    if (canonical === undefined) {
      plog.warn({ hostname }, `SOCKS5: ${hostname} has no address; answering host unreachable`);
      settle.resolve({ kind: 'refuse', answer: encodeReply(ReplyCode.HOST_UNREACHABLE) });
      return;
    }
    settle.resolve({ kind: 'request', origDst: { ip: canonicalPeerIp(canonical) ?? canonical, port: req.port }, hostname });
  };

  void handshake.then((h) => {
    switch (h.kind) {
      case 'gone':
        socket.destroy();
        return;
      case 'refuse':
        if (h.answer === undefined) socket.destroy();
        else socket.end(h.answer, () => socket.destroy());
        return;
      case 'request':
        return handOver(socket, peer, h.origDst, h.hostname, o, plog);
    }
  });
}

/** Gives a negotiated connection to the handler; answers general failure if it throws before replying. */
async function handOver(socket: Socket, peer: SocketAddress, origDst: SocketAddress, hostname: string | undefined, o: Socks5ListenerOptions, plog: Logger): Promise<void> {
  let replied = false;
  const conn: Socks5Connection = {
    socket,
    origDst,
    peer,
    hostname,
    reply(code, bound) {
      if (replied || socket.destroyed) return;
      replied = true;
      if (code === ReplyCode.SUCCEEDED) socket.write(encodeReply(code, bound));
      else socket.end(encodeReply(code, bound), () => socket.destroy());
    },
  };
  const dst = formatAddr(origDst);
  plog.debug({ dst, hostname }, 'SOCKS5 request accepted');
  try {
    await o.handler(conn);
  } catch (err) {
    plog.error({ err, dst }, 'SOCKS5 handler failed');
    if (!replied) conn.reply(ReplyCode.GENERAL_FAILURE);
    else socket.destroy();
  }
}
