/**
 * The socket seam. Everything the proxy does with the network goes through
 * these small interfaces, so that in-pod mode (sockets created inside a pod's
 * network namespace, with SO_MARK and SO_REUSEPORT, by the capture issue's
 * native module) and tests can supply their own, and nothing else in the
 * package calls `net.createServer` / `net.connect` directly.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { localAddressOf, type SocketAddress } from '../net/address.js';
import { createServer, connect as netConnect, isIPv6, type NetConnectOpts, type Server, type ServerOpts, type Socket } from 'node:net';

/**
 * Stream buffer limit of every proxied TCP socket (Node 20's default is 16 KiB;
 * Node 22 made it 64 KiB). With write coalescing (io/copy.ts) it bounds how
 * much one writev carries before back-pressure pauses the source: one 64 KiB
 * TCP read's worth of TLS records instead of 16 KiB, a quarter of the system
 * calls per byte. Memory per direction stays bounded by it plus one chunk.
 */
export const SOCKET_HIGH_WATER_MARK = 64 * 1024;

/**
 * `highWaterMark` for sockets made by net.connect / new net.Socket: Node hands
 * these options to stream.Duplex, which honours it, but @types/node leaves it
 * out of the connect and constructor option types.
 */
export interface StreamBufferOptions {
  readonly highWaterMark: number;
}

const connectWithBuffers = netConnect as (options: NetConnectOpts & StreamBufferOptions) => Socket;

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  readonly backlog?: number;
  /** Accepted sockets start paused (the HBONE listener: no byte may be read before TLS takes over). */
  readonly pauseOnConnect?: boolean;
  /**
   * Accepted sockets stay writable after the peer's FIN instead of Node
   * ending our side too (the SOCKS5 listener: propagating a client's FIN is
   * the relay's job). Default false, as in net.createServer.
   */
  readonly allowHalfOpen?: boolean;
}

/** The net.createServer options of every factory's listeners (this one and the in-pod one), from ListenOptions. */
export function netServerOptions(options: ListenOptions): ServerOpts {
  return { noDelay: true, pauseOnConnect: options.pauseOnConnect === true, allowHalfOpen: options.allowHalfOpen === true, highWaterMark: SOCKET_HIGH_WATER_MARK };
}

export interface ConnectOptions {
  readonly ip: string;
  readonly port: number;
  /** Bind the local side (original-source preservation, or a chosen loopback address). */
  readonly localAddress?: string;
}

export interface UdpOptions {
  /** Address to bind; port 0 for an ephemeral port (DNS forwarder sockets). */
  readonly host: string;
  readonly port: number;
}

/** Creates listening servers and outgoing TCP sockets for one proxy (one pod in shared mode). */
export interface SocketFactory {
  /** A bound, listening server; rejects with the bind error (e.g. EADDRINUSE). */
  listen(options: ListenOptions, onConnection: (socket: Socket) => void): Promise<Server>;
  /** An outgoing TCP socket (not yet connected when returned). */
  connect(options: ConnectOptions): Socket;
  /** A bound UDP socket (the DNS proxy's listener, DNS forwarder sockets); rejects with the bind error. */
  udp(options: UdpOptions): Promise<UdpSocket>;
}

/** Where a captured connection was going: SO_ORIGINAL_DST in capture mode, the local address otherwise. */
export type OriginalDestination = (socket: Socket) => SocketAddress | undefined;

/** ztunnel's fallback when there is no redirection: the address the client connected to. */
export const localAddressAsOriginalDestination: OriginalDestination = (socket) => localAddressOf(socket);

export const nodeSocketFactory: SocketFactory = {
  listen(options, onConnection) {
    return new Promise((resolve, reject) => {
      const server = createServer(netServerOptions(options), onConnection);
      const onError = (err: Error) => reject(err);
      server.once('error', onError);
      server.listen({ host: options.host, port: options.port, backlog: options.backlog ?? 1024, exclusive: true }, () => {
        server.off('error', onError);
        resolve(server);
      });
    });
  },
  connect(options) {
    const socket = connectWithBuffers(
      options.localAddress === undefined
        ? { host: options.ip, port: options.port, noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK }
        : { host: options.ip, port: options.port, localAddress: options.localAddress, noDelay: true, highWaterMark: SOCKET_HIGH_WATER_MARK },
    );
    return socket;
  },
  udp(options) {
    return new Promise((resolve, reject) => {
      const socket = createSocket({ type: isIPv6(options.host) ? 'udp6' : 'udp4' });
      const onError = (err: Error) => {
        socket.close();
        reject(err);
      };
      socket.once('error', onError);
      socket.bind({ address: options.host, port: options.port, exclusive: true }, () => {
        socket.off('error', onError);
        resolve(socket);
      });
    });
  },
};

