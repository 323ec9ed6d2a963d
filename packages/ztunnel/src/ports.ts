/**
 * ztunnel's own well-known ports, and the rule that keeps traffic from being
 * sent back into ztunnel's listeners ("self calls"), which could loop or
 * trampoline a client into ports it must not reach directly.
 *
 * ztunnel (src/config.rs) bans the ports of its inbound HBONE (15008),
 * inbound plaintext (15006) and outbound (15001) listeners, plus SOCKS5
 * (15080) when that listener is enabled. The three listeners apply the set
 * differently (reference ztunnel.md section 2):
 * - outbound (15001/SOCKS5): a loopback original destination on a banned
 *   port is refused (`isSelfCall`);
 * - inbound plaintext (15006): a banned original destination port is refused
 *   whatever the IP (`isIllegalPort`);
 * - inbound HBONE (15008): a banned resolved target port is refused with 503
 *   (`isIllegalPort`, applied after port resolution).
 */
import { canonicalPeerIp } from '@ambient/dataplane';

const OUTBOUND_PORT = 15001;
const INBOUND_PLAINTEXT_PORT = 15006;
export const HBONE_PORT = 15008;
const SOCKS5_PORT = 15080;

export interface ListenerPorts {
  readonly outbound: number;
  readonly inboundPlaintext: number;
  readonly hbone: number;
  /** The SOCKS5 listener's port, or undefined when SOCKS5 is off. */
  readonly socks5: number | undefined;
}

const DEFAULT_LISTENER_PORTS: ListenerPorts = {
  outbound: OUTBOUND_PORT,
  inboundPlaintext: INBOUND_PLAINTEXT_PORT,
  hbone: HBONE_PORT,
  socks5: undefined,
};

/**
 * The destination ports no client may reach through ztunnel: the ports of its
 * traffic listeners, plus SOCKS5's when `socks5Enabled` (ztunnel's
 * `illegal_ports`). `listeners` overrides individual listener ports.
 */
export function illegalPorts(options: {
  readonly socks5Enabled: boolean;
  readonly listeners?: Partial<ListenerPorts>;
}): ReadonlySet<number> {
  const ports = { ...DEFAULT_LISTENER_PORTS, ...options.listeners };
  const out = new Set<number>([ports.outbound, ports.inboundPlaintext, ports.hbone]);
  if (options.socks5Enabled) out.add(ports.socks5 ?? SOCKS5_PORT);
  return out;
}

export function isIllegalPort(port: number, illegal: ReadonlySet<number>): boolean {
  return illegal.has(port);
}

/**
 * Outbound rule: a call to this host (loopback, or the unspecified address,
 * which the kernel also delivers locally) on one of ztunnel's own ports.
 * ztunnel checks loopback only; also refusing 0.0.0.0 and :: is stricter and
 * costs nothing, as no application legitimately dials them.
 */
export function isSelfCall(ip: string, port: number, illegal: ReadonlySet<number>): boolean {
  return illegal.has(port) && isLocalHostAddress(ip);
}

/** 127.0.0.0/8, ::1, their IPv4-mapped forms, and the unspecified addresses. */
export function isLocalHostAddress(ip: string): boolean {
  const canonical = canonicalPeerIp(ip);
  if (canonical === undefined) return false;
  if (canonical.includes(':')) return canonical === '::1' || canonical === '::';
  return canonical.startsWith('127.') || canonical === '0.0.0.0';
}

