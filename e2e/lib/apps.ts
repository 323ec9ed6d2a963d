/**
 * The applications of the test cluster, as sockets the test process opens
 * inside pod namespaces:
 * - an echo server that first writes one JSON line saying who it is and
 *   which peer address it sees, then echoes every byte back;
 * - a client that connects, reads that line, sends a payload and reads it
 *   back (one "exchange"), and a long-lived variant for drain/policy tests;
 * - a DNS client (UDP or TCP) and a fake upstream DNS server.
 * Every server registers its cleanup; every client operation has a deadline.
 */
import type { Socket as UdpSocket } from 'node:dgram';
import type { Server, Socket } from 'node:net';
import * as dnsPacket from 'dns-packet';
import { registerCleanup } from './cleanup.js';
import { connectFrom, listenIn, udpIn } from './netns-sockets.js';
import type { Netns } from './topology.js';

export interface Greeting {
  /** The server app's name. */
  readonly server: string;
  /** The client address the server app sees (remoteAddress). */
  readonly peer: string;
  readonly peerPort: number;
  /** The server's own address for this connection (localAddress). */
  readonly local: string;
  readonly localPort: number;
}

export class EchoServer {
  readonly #sockets = new Set<Socket>();
  /** Every peer address seen, in order. */
  readonly peers: string[] = [];

  private constructor(
    readonly name: string,
    readonly port: number,
    private readonly server: Server,
  ) {}

  static async start(name: string, netns: Netns, port: number, host = '0.0.0.0'): Promise<EchoServer> {
    // Connections can arrive before the constructor ran: park them until it did.
    const pending: Socket[] = [];
    const holder: { echo?: EchoServer } = {};
    const server = await listenIn(netns, host, port, (s) => (holder.echo ? holder.echo.accept(s) : pending.push(s)));
    const echo = new EchoServer(name, port, server);
    holder.echo = echo;
    for (const s of pending) echo.accept(s);
    registerCleanup({ what: `echo server ${name}:${port}`, run: () => echo.close(), scope: netns.name });
    return echo;
  }

  accept(s: Socket): void {
    this.#sockets.add(s);
    s.on('close', () => this.#sockets.delete(s));
    s.on('error', () => undefined);
    this.peers.push(s.remoteAddress ?? '?');
    const greeting: Greeting = {
      server: this.name,
      peer: s.remoteAddress ?? '',
      peerPort: s.remotePort ?? 0,
      local: s.localAddress ?? '',
      localPort: s.localPort ?? 0,
    };
    s.write(`${JSON.stringify(greeting)}\n`);
    s.pipe(s);
  }

  get openConnections(): number {
    return this.#sockets.size;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Reads from `socket` until `done(buffered)` says so; rejects on close, error or deadline. */
function readUntil(socket: Socket, done: (buf: string) => boolean, timeoutMs: number, what: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const finish = (err?: Error) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('close', onClose);
      socket.off('error', onError);
      if (err) reject(err);
      else resolve(buf);
    };
    const onData = (d: Buffer) => {
      buf += d.toString('utf8');
      if (done(buf)) finish();
    };
    const onClose = () => finish(new Error(`connection closed while waiting for ${what} (got ${JSON.stringify(buf.slice(0, 200))})`));
    const onError = (err: Error) => finish(new Error(`${(err as NodeJS.ErrnoException).code ?? err.message} while waiting for ${what}`));
    const timer = setTimeout(() => finish(new Error(`no ${what} within ${timeoutMs} ms (got ${JSON.stringify(buf.slice(0, 200))})`)), timeoutMs);
    socket.on('data', onData);
    socket.on('close', onClose);
    socket.on('error', onError);
    if (socket.destroyed) onClose();
  });
}

export interface ExchangeResult {
  readonly greeting: Greeting;
  readonly echoed: string;
  /** The client socket's own address (before capture: the pod IP). */
  readonly clientAddress: string;
}

/** Connects from `from` to host:port, reads the greeting, sends `payload`, reads it back, closes. */
export async function exchange(from: Netns, host: string, port: number, payload = 'ping', timeoutMs = 5_000): Promise<ExchangeResult> {
  const conn = await LongConnection.open(from, host, port, timeoutMs);
  try {
    const echoed = await conn.ping(payload, timeoutMs);
    return { greeting: conn.greeting, echoed, clientAddress: conn.clientAddress };
  } finally {
    conn.close();
  }
}

/** Tries an exchange; resolves with the result or the error (for counting successes under churn). */
export async function tryExchange(from: Netns, host: string, port: number, payload = 'ping', timeoutMs = 5_000): Promise<ExchangeResult | Error> {
  try {
    return await exchange(from, host, port, payload, timeoutMs);
  } catch (err) {
    return err instanceof Error ? err : new Error(String(err));
  }
}

/** A connection kept open: ping() sends and waits for the echo; `closed` resolves when it ends. */
export class LongConnection {
  readonly closed: Promise<string>;

  private constructor(
    private readonly socket: Socket,
    readonly greeting: Greeting,
    readonly clientAddress: string,
  ) {
    this.closed = new Promise((resolve) => {
      let reason = 'closed';
      socket.on('error', (err) => (reason = (err as NodeJS.ErrnoException).code ?? err.message));
      socket.on('end', () => (reason = 'end'));
      socket.on('close', () => resolve(reason));
    });
  }

  static async open(from: Netns, host: string, port: number, timeoutMs = 5_000): Promise<LongConnection> {
    const socket = await connectFrom(from, host, port, timeoutMs);
    socket.on('error', () => undefined);
    try {
      const line = await readUntil(socket, (b) => b.includes('\n'), timeoutMs, `the greeting of ${host}:${port}`);
      const greeting = JSON.parse(line.slice(0, line.indexOf('\n'))) as Greeting;
      return new LongConnection(socket, greeting, socket.localAddress ?? '');
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  get isOpen(): boolean {
    return !this.socket.destroyed && this.socket.writable;
  }

  async ping(payload: string, timeoutMs = 5_000): Promise<string> {
    const reading = readUntil(this.socket, (b) => b.length >= Buffer.byteLength(payload), timeoutMs, `the echo of ${payload.length} bytes`);
    this.socket.write(payload);
    return reading;
  }

  close(): void {
    this.socket.destroy();
  }
}

// === DNS ===

type DnsAnswer = dnsPacket.Answer;

export interface DnsResult {
  readonly rcode: string;
  readonly answers: readonly DnsAnswer[];
  readonly flags: number;
  /** The address the answer came from (UDP). */
  readonly from?: string;
}

let dnsId = 1;

const RCODES = ['NOERROR', 'FORMERR', 'SERVFAIL', 'NXDOMAIN', 'NOTIMP', 'REFUSED'];
function rcodeOf(p: dnsPacket.Packet): string {
  const code = (p.flags ?? 0) & 0xf;
  return RCODES[code] ?? `RCODE${code}`;
}

/** A DNS query from inside `from` to server:port (what a pod's resolver does). */
export async function dnsQuery(
  from: Netns,
  server: string,
  name: string,
  type: 'A' | 'AAAA' | 'TXT' | 'SRV' = 'A',
  options: { tcp?: boolean; port?: number; timeoutMs?: number } = {},
): Promise<DnsResult> {
  const port = options.port ?? 53;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const id = (dnsId = (dnsId % 65_000) + 1);
  const query: dnsPacket.Packet = { type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] };
  if (options.tcp === true) {
    const socket = await connectFrom(from, server, port, timeoutMs);
    try {
      socket.write(dnsPacket.streamEncode(query));
      const data = await new Promise<Buffer>((resolve, reject) => {
        let buf = Buffer.alloc(0);
        const timer = setTimeout(() => reject(new Error(`no TCP DNS answer for ${name} within ${timeoutMs} ms`)), timeoutMs);
        socket.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
            clearTimeout(timer);
            resolve(buf);
          }
        });
        socket.on('error', (err) => {
          clearTimeout(timer);
          reject(err);
        });
        socket.on('close', () => {
          clearTimeout(timer);
          reject(new Error(`TCP DNS connection closed before an answer for ${name}`));
        });
      });
      const p = dnsPacket.streamDecode(data);
      return { rcode: rcodeOf(p), answers: p.answers ?? [], flags: p.flags ?? 0 };
    } finally {
      socket.destroy();
    }
  }
  const socket = await udpIn(from, '0.0.0.0', 0);
  try {
    const answer = new Promise<{ msg: Buffer; from: string }>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no DNS answer for ${name} (${type}) from ${server}:${port} within ${timeoutMs} ms`)), timeoutMs);
      socket.on('message', (msg, rinfo) => {
        const decoded = dnsPacket.decode(msg);
        if (decoded.id !== id) return;
        clearTimeout(timer);
        resolve({ msg, from: `${rinfo.address}:${rinfo.port}` });
      });
    });
    socket.send(dnsPacket.encode(query), port, server);
    const { msg, from: src } = await answer;
    const p = dnsPacket.decode(msg);
    return { rcode: rcodeOf(p), answers: p.answers ?? [], flags: p.flags ?? 0, from: src };
  } finally {
    socket.close();
  }
}

/** The A/AAAA addresses of an answer, sorted. */
export function addressesOf(result: DnsResult): string[] {
  return result.answers.flatMap((a) => (a.type === 'A' || a.type === 'AAAA' ? [a.data] : [])).sort();
}

/** An upstream DNS server (the cluster's "real" resolver): A records from a table, NXDOMAIN otherwise. */
export class FakeDnsServer {
  /** Every query received: name, type and the source address (who forwarded it). */
  readonly queries: Array<{ name: string; type: string; from: string }> = [];

  private constructor(
    private readonly socket: UdpSocket,
    private readonly records: ReadonlyMap<string, readonly string[]>,
  ) {
    socket.on('message', (msg, rinfo) => this.#answer(msg, rinfo.address, rinfo.port));
  }

  static async start(netns: Netns, host: string, records: ReadonlyMap<string, readonly string[]>, port = 53): Promise<FakeDnsServer> {
    const socket = await udpIn(netns, host, port);
    const server = new FakeDnsServer(socket, records);
    registerCleanup({ what: `fake DNS ${host}:${port}`, run: () => server.close(), scope: netns.name });
    return server;
  }

  #answer(msg: Buffer, address: string, port: number): void {
    let q: dnsPacket.Packet;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (question === undefined) return;
    const name = question.name.toLowerCase().replace(/\.$/, '');
    this.queries.push({ name, type: question.type, from: address });
    const ips = question.type === 'A' ? this.records.get(name) : undefined;
    const reply: dnsPacket.Packet = {
      type: 'response',
      id: q.id ?? 0,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (ips === undefined && !this.records.has(name) ? 3 : 0),
      questions: [question],
      answers: (ips ?? []).map((ip) => ({ type: 'A' as const, name: question.name, ttl: 60, class: 'IN' as const, data: ip })),
    };
    this.socket.send(dnsPacket.encode(reply), port, address);
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}
