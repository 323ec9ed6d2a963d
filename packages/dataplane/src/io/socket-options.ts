/**
 * TCP socket options ztunnel sets on every connection it makes or accepts:
 * TCP_NODELAY always, and TCP keepalive (KEEPALIVE_ENABLED, KEEPALIVE_TIME 180 s).
 *
 * What Node can and cannot set: `setKeepAlive(true, ms)` sets SO_KEEPALIVE and
 * TCP_KEEPIDLE. Node 20 (libuv 1.46) has no way to set TCP_KEEPINTVL or
 * TCP_KEEPCNT, so ztunnel's KEEPALIVE_INTERVAL (180 s) and KEEPALIVE_RETRIES (9)
 * fall back to the kernel's values (net.ipv4.tcp_keepalive_intvl, default 75 s;
 * tcp_keepalive_probes, default 9). TCP_USER_TIMEOUT is off in ztunnel by
 * default and is not settable from Node either.
 */
import type { Socket } from 'node:net';

/** ztunnel's KEEPALIVE_TIME default. */
export const DEFAULT_KEEPALIVE_TIME_MS = 180_000;

export interface TcpSocketOptions {
  /** TCP_NODELAY (ztunnel: always on). */
  readonly noDelay: boolean;
  /** KEEPALIVE_ENABLED. */
  readonly keepAlive: boolean;
  /** KEEPALIVE_TIME: idle time before the first probe (TCP_KEEPIDLE). */
  readonly keepAliveTimeMs: number;
}

export const DEFAULT_TCP_SOCKET_OPTIONS: TcpSocketOptions = {
  noDelay: true,
  keepAlive: true,
  keepAliveTimeMs: DEFAULT_KEEPALIVE_TIME_MS,
};

/**
 * Applies the options to a socket. Safe before the socket is connected (Node
 * applies them once it is) and on a socket that is already closed (no-op).
 */
export function applyTcpSocketOptions(socket: Socket, options: TcpSocketOptions = DEFAULT_TCP_SOCKET_OPTIONS): void {
  if (socket.destroyed) return;
  socket.setNoDelay(options.noDelay);
  if (options.keepAlive) socket.setKeepAlive(true, Math.max(0, Math.floor(options.keepAliveTimeMs)));
  else socket.setKeepAlive(false);
}
