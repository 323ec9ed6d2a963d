/**
 * SOCKS5 (RFC 1928) as ztunnel's 15080 listener speaks it: no authentication,
 * CONNECT only, to an IPv4, IPv6 or domain-name destination. Pure parsing of
 * the client's greeting and request (never throws, whatever the bytes: every
 * refusal says why and which reply code to send) and encoding of the
 * server's method selection and reply.
 */
import { canonicalIp, ipFromBytes, ipToBytes } from '@ambient/control';
import { canonicalPeerIp } from '@ambient/dataplane';

const SOCKS_VERSION = 0x05;
export const METHOD_NO_AUTH = 0x00;
export const METHOD_NONE_ACCEPTABLE = 0xff;
const CMD_CONNECT = 0x01;
const ATYP_IPV4 = 0x01;
const ATYP_DOMAIN = 0x03;
const ATYP_IPV6 = 0x04;

/** Reply codes (RFC 1928 section 6). */
export const ReplyCode = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;
export type ReplyCode = (typeof ReplyCode)[keyof typeof ReplyCode];

/** Greeting: VER NMETHODS METHODS[1..255] — at most 257 bytes. */
export const MAX_GREETING_BYTES = 2 + 255;
/** Request: VER CMD RSV ATYP ADDR(<=1+255) PORT — at most 262 bytes. */
export const MAX_REQUEST_BYTES = 4 + 1 + 255 + 2;

export type SocksAddress = { readonly kind: 'ip'; readonly ip: string } | { readonly kind: 'domain'; readonly name: string };

export interface SocksGreeting {
  readonly methods: readonly number[];
}

export interface SocksRequest {
  readonly address: SocksAddress;
  readonly port: number;
}

export type Parsed<T> =
  | { readonly status: 'incomplete' }
  | { readonly status: 'ok'; readonly value: T; readonly length: number }
  | {
      readonly status: 'error';
      readonly reason: string;
      /**
       * What to answer before closing: a reply code (request phase), the
       * "no acceptable methods" selection (greeting phase), or nothing (the
       * peer does not speak SOCKS5).
       */
      readonly answer: ReplyCode | 'no-acceptable-method' | undefined;
    };

/** Parses the client greeting at the start of `buf`. */
export function parseGreeting(buf: Uint8Array): Parsed<SocksGreeting> {
  if (buf.length < 1) return { status: 'incomplete' };
  if (buf[0] !== SOCKS_VERSION) {
    return { status: 'error', reason: `unsupported SOCKS version ${buf[0]} (only 5 is supported)`, answer: undefined };
  }
  if (buf.length < 2) return { status: 'incomplete' };
  const n = buf[1] ?? 0;
  if (n === 0) return { status: 'error', reason: 'the greeting offers no authentication methods', answer: 'no-acceptable-method' };
  if (buf.length < 2 + n) return { status: 'incomplete' };
  const methods = Array.from(buf.subarray(2, 2 + n));
  if (!methods.includes(METHOD_NO_AUTH)) {
    return {
      status: 'error',
      reason: `only "no authentication" (0) is supported; the client offered ${methods.join(', ')}`,
      answer: 'no-acceptable-method',
    };
  }
  return { status: 'ok', value: { methods }, length: 2 + n };
}

/** Parses a CONNECT request at the start of `buf`. */
export function parseRequest(buf: Uint8Array): Parsed<SocksRequest> {
  if (buf.length < 1) return { status: 'incomplete' };
  if (buf[0] !== SOCKS_VERSION) {
    return { status: 'error', reason: `unsupported SOCKS version ${buf[0]} in the request`, answer: ReplyCode.GENERAL_FAILURE };
  }
  if (buf.length < 2) return { status: 'incomplete' };
  if (buf[1] !== CMD_CONNECT) {
    const name = buf[1] === 0x02 ? ' (BIND)' : buf[1] === 0x03 ? ' (UDP ASSOCIATE)' : '';
    return { status: 'error', reason: `unsupported command ${buf[1]}${name}; only CONNECT is supported`, answer: ReplyCode.COMMAND_NOT_SUPPORTED };
  }
  if (buf.length < 4) return { status: 'incomplete' };
  // buf[2] is RSV; ignored, as ztunnel does.
  const atyp = buf[3];
  let address: SocksAddress;
  let at: number;
  if (atyp === ATYP_IPV4 || atyp === ATYP_IPV6) {
    const size = atyp === ATYP_IPV4 ? 4 : 16;
    if (buf.length < 4 + size + 2) return { status: 'incomplete' };
    const ip = ipFromBytes(buf.subarray(4, 4 + size));
    if (ip === undefined) return { status: 'error', reason: 'malformed address', answer: ReplyCode.GENERAL_FAILURE };
    address = { kind: 'ip', ip: canonicalPeerIp(ip) ?? ip };
    at = 4 + size;
  } else if (atyp === ATYP_DOMAIN) {
    if (buf.length < 5) return { status: 'incomplete' };
    const len = buf[4] ?? 0;
    if (buf.length < 5 + len + 2) return { status: 'incomplete' };
    const raw = buf.subarray(5, 5 + len);
    const problem = hostnameProblem(raw);
    if (problem !== undefined) return { status: 'error', reason: problem, answer: ReplyCode.HOST_UNREACHABLE };
    const name = Buffer.from(raw).toString('latin1');
    const literal = canonicalIp(name);
    address = literal === undefined ? { kind: 'domain', name } : { kind: 'ip', ip: canonicalPeerIp(literal) ?? literal };
    at = 5 + len;
  } else {
    return { status: 'error', reason: `unsupported address type ${atyp}`, answer: ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED };
  }
  const port = ((buf[at] ?? 0) << 8) | (buf[at + 1] ?? 0);
  if (port === 0) return { status: 'error', reason: 'destination port 0 is not allowed', answer: ReplyCode.NOT_ALLOWED };
  return { status: 'ok', value: { address, port }, length: at + 2 };
}

/** Why `raw` is not a usable DNS name, or undefined. */
function hostnameProblem(raw: Uint8Array): string | undefined {
  if (raw.length === 0) return 'empty destination hostname';
  for (const b of raw) {
    const ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b === 0x2d || b === 0x2e || b === 0x5f || b === 0x3a;
    if (!ok) return `destination hostname contains byte 0x${b.toString(16).padStart(2, '0')}; expected letters, digits, "-", "_" and "."`;
  }
  const name = Buffer.from(raw).toString('latin1');
  if (name.includes(':')) return canonicalIp(name) === undefined ? `"${name}" is neither a hostname nor an IP address` : undefined;
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.');
  if (labels.some((l) => l.length === 0 || l.length > 63)) return `"${name}" is not a valid hostname (empty or over-long label)`;
  return undefined;
}


/** The server's method selection: `05 00` (no auth) or `05 FF` (none acceptable). */
export function encodeMethodSelection(method: typeof METHOD_NO_AUTH | typeof METHOD_NONE_ACCEPTABLE): Buffer {
  return Buffer.from([SOCKS_VERSION, method]);
}

/** The server's reply to a request; the bound address defaults to 0.0.0.0:0 (as ztunnel sends). */
export function encodeReply(code: ReplyCode, bound: { readonly ip: string; readonly port: number } = { ip: '0.0.0.0', port: 0 }): Buffer {
  const ip = canonicalIp(bound.ip) ?? '0.0.0.0';
  const addr = ipToBytes(ip);
  const out = Buffer.alloc(4 + addr.length + 2);
  out[0] = SOCKS_VERSION;
  out[1] = code;
  out[2] = 0;
  out[3] = addr.length === 4 ? ATYP_IPV4 : ATYP_IPV6;
  out.set(addr, 4);
  out.writeUInt16BE(bound.port & 0xffff, 4 + addr.length);
  return out;
}

/** A client greeting (tests and SOCKS clients). */
export function encodeGreeting(methods: readonly number[] = [METHOD_NO_AUTH]): Buffer {
  return Buffer.from([SOCKS_VERSION, methods.length, ...methods]);
}

/** A client CONNECT request (tests and SOCKS clients). */
export function encodeConnectRequest(address: SocksAddress, port: number): Buffer {
  let addr: Buffer;
  if (address.kind === 'domain') {
    const name = Buffer.from(address.name, 'latin1');
    addr = Buffer.concat([Buffer.from([ATYP_DOMAIN, name.length]), name]);
  } else {
    const bytes = ipToBytes(address.ip);
    addr = Buffer.concat([Buffer.from([bytes.length === 4 ? ATYP_IPV4 : ATYP_IPV6]), Buffer.from(bytes)]);
  }
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  return Buffer.concat([Buffer.from([SOCKS_VERSION, CMD_CONNECT, 0]), addr, p]);
}

/** A reply as a client reads it (tests). */
export function parseReply(buf: Uint8Array): Parsed<{ code: number; bound: { ip: string; port: number } }> {
  if (buf.length < 4) return { status: 'incomplete' };
  const size = buf[3] === ATYP_IPV4 ? 4 : buf[3] === ATYP_IPV6 ? 16 : -1;
  if (buf[0] !== SOCKS_VERSION || size < 0) return { status: 'error', reason: 'not a SOCKS5 reply', answer: undefined };
  if (buf.length < 4 + size + 2) return { status: 'incomplete' };
  const ip = ipFromBytes(buf.subarray(4, 4 + size)) ?? '';
  const port = ((buf[4 + size] ?? 0) << 8) | (buf[5 + size] ?? 0);
  return { status: 'ok', value: { code: buf[1] ?? 0, bound: { ip, port } }, length: 4 + size + 2 };
}
