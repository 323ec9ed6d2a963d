/**
 * The one vocabulary for addresses: a socket address is a canonical IP and a
 * port. An IPv4 peer of a dual-stack socket (reported as `::ffff:a.b.c.d`) is
 * unmapped once, where the address enters (`peerAddress`, `localAddressOf`,
 * `canonicalPeerIp`), like ztunnel's `to_canonical`; everything after that —
 * authorization, pool keys, workload lookups, logs — compares these values
 * as they are. `formatSocketAddress` is the only `ip:port` formatter.
 */
import type { Socket } from 'node:net';
import { canonicalIp, type ListenAddress } from '@ambient/control';

export interface SocketAddress {
  /** Canonical IP text (RFC 5952 for IPv6; IPv4 never IPv4-mapped). */
  readonly ip: string;
  readonly port: number;
}

/** `ip:port`, or `[ipv6]:port`. */
export function formatSocketAddress(a: SocketAddress): string {
  return a.ip.includes(':') ? `[${a.ip}]:${a.port}` : `${a.ip}:${a.port}`;
}

/**
 * Canonical text for an IP as a socket or a peer reports it: IPv4-mapped IPv6
 * (`::ffff:10.0.0.1`, also in its hex form `::ffff:a00:1`) becomes plain IPv4.
 * Undefined when `ip` is not an IP.
 */
export function canonicalPeerIp(ip: string): string | undefined {
  // Unmap before canonicalizing: the canonical form of ::ffff:10.1.0.10 is ::ffff:a01:a, no longer recognizable.
  const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const canonical = canonicalIp(dotted?.[1] ?? ip);
  if (canonical === undefined) return undefined;
  const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(canonical);
  if (hex?.[1] !== undefined && hex[2] !== undefined) {
    const hi = Number.parseInt(hex[1], 16);
    const lo = Number.parseInt(hex[2], 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return canonical;
}

function socketAddress(ip: string | undefined, port: number | undefined): SocketAddress | undefined {
  if (ip === undefined || port === undefined) return undefined;
  const canonical = canonicalPeerIp(ip);
  return canonical === undefined ? undefined : { ip: canonical, port };
}

/** The remote end of a connected socket, unmapped; undefined once the socket is gone. */
export function peerAddress(socket: Pick<Socket, 'remoteAddress' | 'remotePort'>): SocketAddress | undefined {
  return socketAddress(socket.remoteAddress, socket.remotePort);
}

/** The local end of a connected socket, unmapped. */
export function localAddressOf(socket: Pick<Socket, 'localAddress' | 'localPort'>): SocketAddress | undefined {
  return socketAddress(socket.localAddress, socket.localPort);
}

// ---------------------------------------------------------------------------
// Listen addresses. The type and its one parser, parseListenAddress, are control's (config/listen-address.ts):
// settings are parsed there; the type is re-exported here because dataplane's servers (admin/) take it.

export type { ListenAddress } from '@ambient/control';

export function formatListenAddress(a: ListenAddress): string {
  return formatSocketAddress({ ip: a.host, port: a.port });
}

/** True for localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return /^127\.\d+\.\d+\.\d+$/.test(host);
}
