/**
 * The one vocabulary for addresses: a socket address is a canonical IP and a
 * port. An IPv4 peer of a dual-stack socket (reported as `::ffff:a.b.c.d`) is
 * unmapped once, where the address enters (`peerAddress`, `localAddressOf`,
 * `canonicalPeerIp`), like ztunnel's `to_canonical`; everything after that —
 * authorization, pool keys, workload lookups, logs — compares these values
 * as they are. `formatSocketAddress` is the only `ip:port` formatter.
 */
import type { Socket } from 'node:net';
import { canonicalIp } from '@ambient/control';

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
// Listen addresses

/**
 * Where a listener binds. `host` is an IP literal, or `localhost`, which means
 * 127.0.0.1 plus ::1 when IPv6 is enabled (ztunnel's `Address::Localhost`).
 * Port 0 asks the OS for a free port (tests).
 */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** `localhost:15000`, `127.0.0.1:15000`, `[::1]:15000`, `0.0.0.0:15020`, `[::]:15020`. */
export function parseListenAddress(text: string): { ok: true; value: ListenAddress } | { ok: false; reason: string } {
  const expected = 'expected "<ip>:<port>", "[<ipv6>]:<port>" or "localhost:<port>"';
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return { ok: false, reason: expected };
  const port = Number(m[3]);
  if (port > 65_535) return { ok: false, reason: `port ${port} is out of range (0-65535)` };
  const rawHost = m[1] ?? m[2] ?? '';
  if (m[2] !== undefined && rawHost === 'localhost') return { ok: true, value: { host: 'localhost', port } };
  const ip = canonicalIp(rawHost);
  if (ip === undefined || (m[1] !== undefined && !ip.includes(':')) || (m[2] !== undefined && ip.includes(':'))) {
    return { ok: false, reason: `"${rawHost}" is not an IP address; ${expected}` };
  }
  return { ok: true, value: { host: ip, port } };
}

export function formatListenAddress(a: ListenAddress): string {
  return formatSocketAddress({ ip: a.host, port: a.port });
}

/** True for localhost, 127.0.0.0/8 and ::1. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return /^127\.\d+\.\d+\.\d+$/.test(host);
}
