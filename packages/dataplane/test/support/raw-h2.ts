/**
 * A raw HTTP/2 client for abuse tests: mTLS with ALPN h2 (or plain TCP), frames
 * written byte by byte (HEADERS with an uncompressed HPACK block, CONTINUATION,
 * DATA, RST_STREAM, PING, SETTINGS), and the server's frames parsed as they
 * arrive so a test can wait for a GOAWAY, a RST_STREAM or the close.
 */
import net from 'node:net';
import tls from 'node:tls';
import type { WorkloadCertificate } from '@ambient/control';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface Frame {
  readonly type: number;
  readonly flags: number;
  readonly streamId: number;
  readonly payload: Buffer;
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(9);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([header, payload]);
}

function hpackInt(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  let v = value - max;
  while (v >= 128) {
    out.push((v % 128) + 128);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return Buffer.from(out);
}

/** An HPACK block of literal fields without indexing, new names, no Huffman. */
export function hpack(fields: ReadonlyArray<readonly [string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    const n = Buffer.from(name, 'latin1');
    const v = Buffer.from(value, 'latin1');
    parts.push(Buffer.from([0x00]), hpackInt(n.length, 7, 0), n, hpackInt(v.length, 7, 0), v);
  }
  return Buffer.concat(parts);
}

export function settings(entries: ReadonlyArray<readonly [number, number]> = [], ack = false): Buffer {
  const payload = Buffer.alloc(entries.length * 6);
  entries.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, ack ? FLAG.ACK : 0, 0, payload);
}

export function headers(streamId: number, fields: ReadonlyArray<readonly [string, string]>, opts: { endStream?: boolean; endHeaders?: boolean } = {}): Buffer {
  const flags = (opts.endStream ? FLAG.END_STREAM : 0) | (opts.endHeaders === false ? 0 : FLAG.END_HEADERS);
  return frame(FRAME.HEADERS, flags, streamId, hpack(fields));
}

export function connectHeaders(streamId: number, authority = '127.0.0.1:8080', extra: ReadonlyArray<readonly [string, string]> = []): Buffer {
  return headers(streamId, [[':method', 'CONNECT'], [':authority', authority], ...extra]);
}

export function data(streamId: number, payload: Buffer, endStream = false): Buffer {
  return frame(FRAME.DATA, endStream ? FLAG.END_STREAM : 0, streamId, payload);
}

export function rstStream(streamId: number, code: number): Buffer {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, streamId, p);
}

export function ping(opaque = 0, ack = false): Buffer {
  const p = Buffer.alloc(8);
  p.writeUInt32BE(opaque, 4);
  return frame(FRAME.PING, ack ? FLAG.ACK : 0, 0, p);
}

export interface RawH2 {
  readonly socket: net.Socket;
  readonly frames: Frame[];
  /** Resolves with the first frame (already received or future) matching `pred`; rejects if the connection closes first. */
  waitFor(pred: (f: Frame) => boolean, what: string): Promise<Frame>;
  /** Resolves when the server has closed the connection. */
  readonly closed: Promise<void>;
  write(...buffers: Buffer[]): void;
  destroy(): void;
}

/** Wraps a connected socket (TLS or not) and parses the server's HTTP/2 frames. */
export function rawH2(socket: net.Socket): RawH2 {
  const frames: Frame[] = [];
  const waiters: Array<{ pred: (f: Frame) => boolean; resolve: (f: Frame) => void; reject: (e: Error) => void; what: string }> = [];
  let buffer = Buffer.alloc(0);
  let isClosed = false;
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    buffer = Buffer.concat([buffer, chunk]);
    while (buffer.length >= 9) {
      const length = buffer.readUIntBE(0, 3);
      if (buffer.length < 9 + length) break;
      const f: Frame = { type: buffer[3] as number, flags: buffer[4] as number, streamId: buffer.readUInt32BE(5) & 0x7fffffff, payload: buffer.subarray(9, 9 + length) };
      buffer = buffer.subarray(9 + length);
      frames.push(f);
      for (const w of [...waiters]) {
        if (w.pred(f)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(f);
        }
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => {
    isClosed = true;
    for (const w of waiters.splice(0)) w.reject(new Error(`connection closed while waiting for ${w.what}`));
    resolve();
  }));
  return {
    socket,
    frames,
    closed,
    waitFor(pred, what) {
      const found = frames.find(pred);
      if (found !== undefined) return Promise.resolve(found);
      if (isClosed) return Promise.reject(new Error(`connection closed while waiting for ${what}`));
      return new Promise((resolve, reject) => waiters.push({ pred, resolve, reject, what }));
    },
    write(...buffers) {
      if (!socket.destroyed) socket.write(Buffer.concat(buffers));
    },
    destroy() {
      socket.destroy();
    },
  };
}

/** mTLS + ALPN h2 to the HBONE port, presenting `cert` (no SNI). */
export function connectTls(port: number, cert: WorkloadCertificate | undefined, options: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      ...(cert === undefined ? {} : { key: cert.privateKeyPem, cert: cert.chainPem.join('') }),
      ca: cert?.rootsPem ? [...cert.rootsPem] : [],
      minVersion: 'TLSv1.3',
      ALPNProtocols: ['h2'],
      rejectUnauthorized: false,
      ...options,
    });
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

export function connectTcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

export function goawayCode(f: Frame): number {
  return f.payload.readUInt32BE(4);
}
