/**
 * Test support for the DNS proxy: a real upstream DNS server on 127.0.0.1
 * (UDP and TCP on one port) whose answers each test scripts, and dns-packet
 * clients that query over UDP or TCP. Everything opened here is closed by
 * the returned `close()`.
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, connect as netConnect, type AddressInfo, type Server, type Socket } from 'node:net';
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet } from 'dns-packet';

export type Decoded = DecodedPacket & { readonly opcode?: string; readonly rcode?: string };

export interface ReceivedQuery {
  readonly protocol: 'udp' | 'tcp';
  readonly packet: Decoded;
  readonly raw: Buffer;
  /** The sender's port. */
  readonly fromPort: number;
}

/** What the fake answers: a packet (its id is set to the query's), raw bytes, or nothing. */
export type UpstreamReply = Packet | { readonly raw: Buffer } | 'drop';

export interface FakeUpstream {
  readonly port: number;
  readonly queries: ReceivedQuery[];
  /** Replaces the answering function. */
  answer(fn: (q: ReceivedQuery) => UpstreamReply): void;
  /** Resolves with the `n`th query received (1-based). */
  nextQuery(n?: number): Promise<ReceivedQuery>;
  /** Sends a datagram to `port` on 127.0.0.1 from the upstream's UDP socket (spoofing tests). */
  sendUdp(bytes: Buffer, port: number): Promise<void>;
  close(): Promise<void>;
}

/** A packet answering `q` with A records (id, question and RD copied). */
export function answerA(q: ReceivedQuery, ips: readonly string[], rcode = 0): Packet {
  const question = q.packet.questions?.[0];
  return {
    type: 'response',
    id: q.packet.id ?? 0,
    flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | dnsPacket.AUTHORITATIVE_ANSWER | rcode,
    questions: question === undefined ? [] : [question],
    answers: question === undefined ? [] : ips.map((ip) => ({ type: 'A' as const, name: question.name, ttl: 60, data: ip })),
  };
}

export async function startFakeUpstream(answer: (q: ReceivedQuery) => UpstreamReply = (q) => answerA(q, ['192.0.2.1'])): Promise<FakeUpstream> {
  let respond = answer;
  const queries: ReceivedQuery[] = [];
  const waiters: Array<() => void> = [];
  const connections = new Set<Socket>();
  const record = (q: ReceivedQuery) => {
    queries.push(q);
    for (const w of waiters.splice(0)) w();
  };
  const encode = (q: ReceivedQuery, reply: Exclude<UpstreamReply, 'drop'>): Buffer =>
    'raw' in reply ? reply.raw : dnsPacket.encode({ ...reply, id: reply.id ?? q.packet.id ?? 0 });

  /** Records the query and encodes the scripted reply; a query it cannot decode or answer is dropped. */
  const reply = (raw: Buffer, protocol: 'udp' | 'tcp', fromPort: number): Buffer | undefined => {
    try {
      const q: ReceivedQuery = { protocol, packet: dnsPacket.decode(raw) as Decoded, raw: Buffer.from(raw), fromPort };
      record(q);
      const r = respond(q);
      return r === 'drop' ? undefined : encode(q, r);
    } catch {
      return undefined;
    }
  };

  const tcp: Server = createServer((socket) => {
    connections.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => connections.delete(socket));
    let buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 2 && buffer.length >= 2 + buffer.readUInt16BE(0)) {
        const raw = buffer.subarray(2, 2 + buffer.readUInt16BE(0));
        buffer = buffer.subarray(2 + raw.length);
        const bytes = reply(raw, 'tcp', socket.remotePort ?? 0);
        if (bytes === undefined) continue;
        const prefix = Buffer.alloc(2);
        prefix.writeUInt16BE(bytes.length, 0);
        socket.write(Buffer.concat([prefix, bytes]));
      }
    });
  });
  await new Promise<void>((resolve) => tcp.listen(0, '127.0.0.1', resolve));
  const port = (tcp.address() as AddressInfo).port;
  const udp: UdpSocket = createSocket('udp4');
  await new Promise<void>((resolve, reject) => {
    udp.once('error', reject);
    udp.bind(port, '127.0.0.1', () => {
      udp.off('error', reject);
      resolve();
    });
  });
  udp.on('message', (raw, from) => {
    const bytes = reply(raw, 'udp', from.port);
    if (bytes !== undefined) udp.send(bytes, from.port, from.address);
  });

  return {
    port,
    queries,
    answer(fn) {
      respond = fn;
    },
    nextQuery(n = queries.length + 1) {
      return new Promise((resolve) => {
        const check = () => {
          const q = queries[n - 1];
          if (q !== undefined) resolve(q);
          else waiters.push(check);
        };
        check();
      });
    },
    sendUdp(bytes, to) {
      return new Promise((resolve) => udp.send(bytes, to, '127.0.0.1', () => resolve()));
    },
    async close() {
      for (const c of connections) c.destroy();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
      await new Promise<void>((resolve) => udp.close(() => resolve()));
    },
  };
}

/** A UDP DNS client socket on 127.0.0.1; `ask` sends and resolves with the next datagram. */
export interface UdpClient {
  readonly port: number;
  ask(bytes: Buffer, to: number, host?: string): Promise<Buffer>;
  send(bytes: Buffer, to: number, host?: string): Promise<void>;
  /** Resolves with the next datagram, or undefined when none arrives before `signal` aborts. */
  next(signal?: AbortSignal): Promise<Buffer | undefined>;
  close(): Promise<void>;
}

export async function udpClient(family: 'udp4' | 'udp6' = 'udp4'): Promise<UdpClient> {
  const socket = createSocket(family);
  await new Promise<void>((resolve) => socket.bind(0, family === 'udp4' ? '127.0.0.1' : '::1', resolve));
  const inbox: Buffer[] = [];
  const waiters: Array<(b: Buffer) => void> = [];
  socket.on('message', (msg) => {
    const w = waiters.shift();
    if (w) w(msg);
    else inbox.push(msg);
  });
  const next = (signal?: AbortSignal) =>
    new Promise<Buffer | undefined>((resolve) => {
      const queued = inbox.shift();
      if (queued) return resolve(queued);
      const w = (b: Buffer) => resolve(b);
      waiters.push(w);
      signal?.addEventListener('abort', () => {
        const i = waiters.indexOf(w);
        if (i >= 0) waiters.splice(i, 1);
        resolve(undefined);
      });
    });
  const send = (bytes: Buffer, to: number, host = family === 'udp4' ? '127.0.0.1' : '::1') =>
    new Promise<void>((resolve, reject) => socket.send(bytes, to, host, (err) => (err ? reject(err) : resolve())));
  return {
    port: (socket.address() as AddressInfo).port,
    async ask(bytes, to, host) {
      const reply = next();
      await send(bytes, to, host);
      return (await reply) as Buffer;
    },
    send,
    next,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

/** A TCP DNS client connection; `ask` sends one framed message and resolves with the next framed reply. */
export interface TcpClient {
  readonly socket: Socket;
  ask(bytes: Buffer): Promise<Buffer>;
  /** Writes raw bytes (no framing). */
  writeRaw(bytes: Buffer): void;
  next(): Promise<Buffer>;
  /** Resolves when the server closes the connection. */
  closed(): Promise<void>;
  close(): void;
}

export async function tcpClient(port: number, host = '127.0.0.1'): Promise<TcpClient> {
  const socket = netConnect({ host, port });
  socket.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const inbox: Buffer[] = [];
  const waiters: Array<(b: Buffer) => void> = [];
  let buffer = Buffer.alloc(0);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 2 && buffer.length >= 2 + buffer.readUInt16BE(0)) {
      const msg = Buffer.from(buffer.subarray(2, 2 + buffer.readUInt16BE(0)));
      buffer = buffer.subarray(2 + msg.length);
      const w = waiters.shift();
      if (w) w(msg);
      else inbox.push(msg);
    }
  });
  const next = () =>
    new Promise<Buffer>((resolve) => {
      const queued = inbox.shift();
      if (queued) resolve(queued);
      else waiters.push(resolve);
    });
  return {
    socket,
    ask(bytes) {
      const reply = next();
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(bytes.length, 0);
      socket.write(Buffer.concat([prefix, bytes]));
      return reply;
    },
    writeRaw: (bytes) => socket.write(bytes),
    next,
    closed: () => closed,
    close: () => socket.destroy(),
  };
}

/** An encoded query for one question. */
export function query(name: string, type: string, over: Partial<Packet> & { opcode?: number; edns?: number } = {}): Buffer {
  const { opcode = 0, edns, ...rest } = over;
  const packet: Packet = {
    type: 'query',
    id: 0x1234,
    flags: dnsPacket.RECURSION_DESIRED | (opcode << 11),
    questions: [{ name, type: type as 'A', class: 'IN' }],
    ...(edns === undefined
      ? {}
      : { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] }),
    ...rest,
  };
  return dnsPacket.encode(packet);
}

/** The answer records' data as text (OPT records have none). */
export function answerData(p: { readonly answers?: readonly Answer[] | undefined } | undefined): string[] {
  return (p?.answers ?? []).map((a) => ('data' in a ? String(a.data) : ''));
}

export function decode(bytes: Buffer): Decoded {
  return dnsPacket.decode(bytes) as Decoded;
}
