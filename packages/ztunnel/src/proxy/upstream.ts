/**
 * Connecting to an upstream over plain TCP with a deadline from the injected
 * clock: resolves with the connected socket, or rejects with a ProxyError
 * (UPSTREAM_CONNECT_FAILED / UPSTREAM_TIMEOUT) and leaves no socket behind.
 */
import type { Socket } from 'node:net';
import { settleWithin, type Clock } from '@ambient/control';
import { applyTcpSocketOptions, describeError, formatSocketAddress, ProxyError, type SocketAddress, type SocketFactory, type TcpSocketOptions } from '@ambient/dataplane';

export interface UpstreamConnectOptions {
  readonly sockets: SocketFactory;
  readonly clock: Clock;
  readonly timeoutMs: number;
  readonly to: SocketAddress;
  readonly localAddress?: string | undefined;
  readonly signal?: AbortSignal;
  /** TCP_NODELAY and keepalive (KEEPALIVE_*); default ztunnel's. */
  readonly tcp?: TcpSocketOptions | undefined;
}

export function connectUpstream(o: UpstreamConnectOptions): Promise<Socket> {
  const target = formatSocketAddress(o.to);
  return settleWithin<Socket>(
    {
      clock: o.clock,
      timeoutMs: o.timeoutMs,
      onTimeout: () => ({ error: new ProxyError('UPSTREAM_TIMEOUT', `connect to ${target} timed out after ${o.timeoutMs} ms`) }),
      signal: o.signal,
      onAbort: () => ({ error: new ProxyError('UPSTREAM_CONNECT_FAILED', `connect to ${target} cancelled`) }),
    },
    (settle) => {
      const socket = o.sockets.connect(o.localAddress === undefined ? { ip: o.to.ip, port: o.to.port } : { ip: o.to.ip, port: o.to.port, localAddress: o.localAddress });
      applyTcpSocketOptions(socket, o.tcp);
      const onConnect = () => settle.resolve(socket);
      const onError = (e: Error) => settle.reject(new ProxyError('UPSTREAM_CONNECT_FAILED', `connect to ${target} failed: ${describeError(e)}`, { cause: e }));
      socket.once('connect', onConnect);
      socket.once('error', onError);
      return (outcome) => {
        socket.off('connect', onConnect);
        socket.off('error', onError);
        if (outcome === 'rejected') socket.destroy();
      };
    },
  );
}

/**
 * The local address to connect to an app from, so the app sees the real
 * client (ztunnel binds the client's address with IP_TRANSPARENT, on both
 * 15008 and 15006). `transparent`: the socket factory binds non-local
 * addresses (in-pod sockets with IP_TRANSPARENT/IP_FREEBIND), so any client
 * address of the upstream's family works. Without it we can still do that
 * when both addresses are loopback (dev, tests, quick start).
 */
export function originalSource(clientIp: string, upstreamIp: string, transparent = false): string | undefined {
  const sameFamily = clientIp.includes(':') === upstreamIp.includes(':');
  if (!sameFamily) return undefined;
  if (transparent) return clientIp;
  const loopback = (ip: string) => ip.startsWith('127.') || ip === '::1';
  return loopback(clientIp) && loopback(upstreamIp) ? clientIp : undefined;
}
