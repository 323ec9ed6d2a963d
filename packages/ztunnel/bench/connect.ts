/**
 * How the load generator reaches the app on each path: a plain TCP connect
 * (direct, or to the client-side HAProxy) or a SOCKS5 CONNECT through the
 * client ztunnel. Every connect is bounded in time; sockets have Nagle off.
 */
import { connect, type Socket } from 'node:net';

export interface Endpoint {
  readonly ip: string;
  readonly port: number;
}

/** Opens a socket to whatever the path's entry is and resolves once bytes can flow to the app. */
export type Dialer = (port: 'http' | 'sink') => Promise<Socket>;

const CONNECT_TIMEOUT_MS = 10_000;

export function tcpConnect(to: Endpoint, localAddress: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: to.ip, port: to.port, localAddress, noDelay: true });
    const timer = setTimeout(() => fail(new Error(`connect to ${to.ip}:${to.port} timed out`)), CONNECT_TIMEOUT_MS);
    const fail = (err: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(err);
    };
    socket.once('error', fail);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', fail);
      resolve(socket);
    });
  });
}

/** SOCKS5 (RFC 1928) no-auth CONNECT to an IPv4 destination; rejects with the reply code on refusal. */
export async function socks5Connect(proxy: Endpoint, dst: Endpoint, localAddress: string): Promise<Socket> {
  const socket = await tcpConnect(proxy, localAddress);
  const reader = new ExactReader(socket);
  const timer = setTimeout(() => socket.destroy(new Error(`SOCKS5 handshake with ${proxy.ip}:${proxy.port} timed out`)), CONNECT_TIMEOUT_MS);
  try {
    socket.write(Buffer.from([5, 1, 0]));
    const method = await reader.read(2);
    if (method[0] !== 5 || method[1] !== 0) throw new Error(`SOCKS5: server chose method ${method[1]}`);
    const ip = dst.ip.split('.').map(Number);
    socket.write(Buffer.from([5, 1, 0, 1, ...ip, dst.port >> 8, dst.port & 255]));
    const head = await reader.read(4);
    if (head[1] !== 0) throw new Error(`SOCKS5 CONNECT to ${dst.ip}:${dst.port} refused with reply code ${head[1]}`);
    const atyp = head[3];
    const addrLen = atyp === 1 ? 4 : atyp === 4 ? 16 : (await reader.read(1))[0] ?? 0;
    await reader.read(addrLen + 2);
    reader.release();
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads exact byte counts from a socket, then hands the socket back with any surplus unshifted. */
class ExactReader {
  #buf = Buffer.alloc(0);
  #want: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined;
  readonly #onData = (d: Buffer) => {
    this.#buf = Buffer.concat([this.#buf, d]);
    this.#deliver();
  };
  readonly #onClose = () => this.#want?.reject(new Error(`SOCKS5: connection closed during the handshake`));

  constructor(private readonly socket: Socket) {
    socket.on('data', this.#onData);
    socket.on('close', this.#onClose);
    socket.on('error', () => {});
  }

  read(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.#want = { n, resolve, reject };
      this.#deliver();
    });
  }

  #deliver(): void {
    const w = this.#want;
    if (w === undefined || this.#buf.length < w.n) return;
    this.#want = undefined;
    const out = this.#buf.subarray(0, w.n);
    this.#buf = this.#buf.subarray(w.n);
    w.resolve(out);
  }

  release(): void {
    this.socket.off('data', this.#onData);
    this.socket.off('close', this.#onClose);
    this.socket.pause();
    if (this.#buf.length > 0) this.socket.unshift(this.#buf);
  }
}
