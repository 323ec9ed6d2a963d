/**
 * The SocketFactory for capture mode: listeners, outgoing TCP sockets and UDP
 * sockets created natively (optionally inside a pod's network namespace, with
 * SO_MARK, SO_REUSEPORT and IP_TRANSPARENT) and handed to Node as descriptors,
 * plus the OriginalDestination that reads SO_ORIGINAL_DST.
 *
 * Handing an unconnected native socket to Node: `new net.Socket({ fd,
 * manualStart: true })` then `.connect({ host, port })`. Node reuses the handle
 * that wraps the fd (uv_tcp_open) for the connect, and afterConnect starts
 * reading as for any socket. The documented `readable: false, writable: false`
 * does not work for this on Node 20: the stream is created already ended and
 * afterConnect never re-opens it (the first write fails with
 * ERR_STREAM_WRITE_AFTER_END). Without `manualStart` the constructor would
 * start reading on a socket that is not connected yet. `manualStart` is the
 * (long-standing, internal) option child_process uses for its stdio sockets.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIPv6, Socket, type Server } from 'node:net';
import type { Native, NativeError } from './native.js';
import {
  localAddressAsOriginalDestination,
  netServerOptions,
  SOCKET_HIGH_WATER_MARK,
  type ConnectOptions,
  type ListenOptions,
  type OriginalDestination,
  type SocketFactory,
  type StreamBufferOptions,
  type UdpOptions,
} from '@ambient/dataplane';

export type TransparentMode = 'off' | 'best-effort' | 'required';

export interface NetnsSocketFactoryOptions {
  readonly native: Native;
  /** The namespace every socket is created in (a netns fd the caller keeps open); the current one when absent. */
  readonly netns?: number;
  /** SO_MARK on every socket (1337 in in-pod mode, so istio-cni's rules let ztunnel's own traffic through). */
  readonly mark?: number;
  /** SO_REUSEPORT on listeners (TCP, and UDP with a fixed port). */
  readonly reusePort?: boolean;
  /**
   * IP(V6)_TRANSPARENT on listeners and on outgoing sockets bound to a local
   * address (original-source spoofing, with IP_FREEBIND). 'best-effort' falls
   * back to a plain socket when the kernel says EPERM (no CAP_NET_ADMIN).
   */
  readonly transparent?: TransparentMode;
  /** Told once when 'best-effort' had to fall back. */
  readonly log?: { warn(obj: object, msg: string): void };
}

/** Node's `manualStart` socket option (see the header comment); not in @types/node. */
type FdSocketOptions = ConstructorParameters<typeof Socket>[0] & { manualStart: boolean } & StreamBufferOptions;

export function netnsSocketFactory(o: NetnsSocketFactoryOptions): SocketFactory {
  const { native } = o;
  const transparent = o.transparent ?? 'off';
  const where = o.netns === undefined ? {} : { netns: o.netns };
  const marked = o.mark === undefined ? {} : { mark: o.mark };
  let warned = false;

  /** Runs create(true) and, for 'best-effort' on EPERM, create(false). */
  function withTransparency<T>(what: string, create: (transparent: boolean) => T): T {
    if (transparent === 'off') return create(false);
    try {
      return create(true);
    } catch (err) {
      if (transparent !== 'best-effort' || (err as NativeError).code !== 'EPERM') throw err;
      if (!warned) {
        warned = true;
        o.log?.warn(
          { err: (err as Error).message },
          `IP_TRANSPARENT is not permitted (needs CAP_NET_ADMIN); ${what} without it: original source addresses cannot be preserved`,
        );
      }
      return create(false);
    }
  }

  return {
    listen(options: ListenOptions, onConnection: (socket: Socket) => void): Promise<Server> {
      return new Promise((resolve, reject) => {
        const backlog = options.backlog ?? 1024;
        let fd: number;
        try {
          fd = withTransparency('listening', (t) =>
            native.tcpListener({
              ...where,
              ...marked,
              host: options.host,
              port: options.port,
              backlog,
              reusePort: o.reusePort === true,
              transparent: t,
            }),
          );
        } catch (err) {
          reject(err as Error);
          return;
        }
        const server = createServer(netServerOptions(options), onConnection);
        const onError = (err: Error) => {
          server.close();
          reject(err);
        };
        server.once('error', onError);
        server.listen({ fd, backlog }, () => {
          server.off('error', onError);
          resolve(server);
        });
      });
    },

    connect(options: ConnectOptions): Socket {
      const family = isIPv6(options.ip) ? 6 : 4;
      let fd: number;
      try {
        const local = options.localAddress;
        fd =
          local === undefined
            ? native.tcpSocket({ ...where, ...marked, family })
            : withTransparency('connecting', (t) =>
                native.tcpSocket({
                  ...where,
                  ...marked,
                  family,
                  transparent: t,
                  freebind: t,
                  bind: { ip: local, port: 0 },
                }),
              );
      } catch (err) {
        return failedSocket(err as Error);
      }
      let socket: Socket;
      try {
        const fdOptions: FdSocketOptions = { fd, manualStart: true, allowHalfOpen: false, highWaterMark: SOCKET_HIGH_WATER_MARK };
        socket = new Socket(fdOptions);
      } catch (err) {
        native.closeFd(fd);
        return failedSocket(err as Error);
      }
      socket.setNoDelay(true);
      return socket.connect({ host: options.ip, port: options.port });
    },

    udp(options: UdpOptions): Promise<UdpSocket> {
      return new Promise((resolve, reject) => {
        let fd: number;
        try {
          fd = native.udpSocket({
            ...where,
            ...marked,
            host: options.host,
            port: options.port,
            reusePort: o.reusePort === true && options.port !== 0,
          });
        } catch (err) {
          reject(err as Error);
          return;
        }
        const socket = createSocket({ type: isIPv6(options.host) ? 'udp6' : 'udp4' });
        const onError = (err: Error) => {
          socket.close();
          reject(err);
        };
        socket.once('error', onError);
        socket.bind({ fd }, () => {
          socket.off('error', onError);
          resolve(socket);
        });
      });
    },
  };
}

/** Never throw from connect(): fail the way a refused connection does, asynchronously. */
function failedSocket(err: Error): Socket {
  const socket = new Socket();
  process.nextTick(() => socket.destroy(err));
  return socket;
}

/** The descriptor behind a Node TCP socket (libuv exposes it as handle.fd on Linux). */
function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } | null })._handle;
  const fd = handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/**
 * SO_ORIGINAL_DST (IP6T_SO_ORIGINAL_DST for IPv6 connections), falling back,
 * like ztunnel, to the address the client connected to when the connection was
 * not redirected (or the option cannot be read).
 */
export function nativeOriginalDestination(native: Native): OriginalDestination {
  return (socket) => {
    const fd = socketFd(socket);
    if (fd !== undefined) {
      try {
        const dst = native.originalDestination(fd);
        if (dst !== undefined) return dst;
      } catch {
        // e.g. EBADF on a socket that closed meanwhile: the local address is still the best answer
      }
    }
    return localAddressAsOriginalDestination(socket);
  };
}
