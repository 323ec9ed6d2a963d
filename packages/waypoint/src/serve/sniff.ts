/**
 * Protocol detection inside a tunnel, as Envoy's http_inspector does on the
 * waypoint's `main_internal` listener: the first bytes the client sends say
 * whether it speaks HTTP/2 with prior knowledge (the 24-byte connection
 * preface), HTTP/1.x (a request line `METHOD SP target SP HTTP/1.d CRLF`) or
 * something else (opaque TCP). `classifyPrefix` is the pure decision;
 * `sniffProtocol` reads from a stream until it can decide, bounded in bytes
 * and in time (the injected Clock), and puts every byte it read back
 * (`unshift`), so the server that takes the stream over sees it from its
 * first byte.
 *
 * Two modes:
 * - `detect` (ports of unknown protocol, workload-addressed traffic): HTTP/2,
 *   HTTP/1 or TCP; undecided at the byte limit, at the deadline or at EOF → TCP;
 * - `http` (ports declared HTTP/HTTP2/gRPC, Envoy's AUTO codec): the HTTP/2
 *   preface, else HTTP/1 (which then answers 400 to anything that is not HTTP).
 *
 * Invariants: never loses a byte: whatever was read is unshifted before the
 * promise settles, except at EOF (a stream cannot take data back after its
 * 'end'), where the bytes come back in `leftover`; leaves no timer or
 * listener behind.
 */
import type { Readable } from 'node:stream';
import type { Clock } from '@ambient/control';

export type SniffedProtocol = 'http1' | 'http2' | 'tcp';
export type SniffMode = 'detect' | 'http';

export interface SniffOptions {
  readonly clock: Clock;
  readonly mode: SniffMode;
  /** Undecided after this many bytes → TCP (detect) / HTTP/1 (http). */
  readonly maxBytes: number;
  /** Undecided after this long → TCP (detect) / HTTP/1 (http). 0 waits for the client indefinitely. */
  readonly timeoutMs: number;
}

export interface SniffResult {
  readonly protocol: SniffedProtocol;
  /** Why detection stopped. */
  readonly reason: 'matched' | 'byte-limit' | 'timeout' | 'eof';
  /** Bytes looked at (put back into the stream, or in `leftover`). */
  readonly bytes: number;
  /** reason `eof` only: the bytes the client sent before it ended (the stream has ended and is empty). */
  readonly leftover: Buffer | undefined;
}

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const HTTP1_VERSION = Buffer.from('HTTP/1.', 'latin1');
const SP = 0x20;
const CR = 0x0d;
const LF = 0x0a;

/** RFC 9110 tchar, as a lookup table. */
const TCHAR = new Uint8Array(128);
for (const c of "!#$%&'*+-.^_`|~") TCHAR[c.charCodeAt(0)] = 1;
for (let c = 0x30; c <= 0x39; c++) TCHAR[c] = 1;
for (let c = 0x41; c <= 0x5a; c++) TCHAR[c] = 1;
for (let c = 0x61; c <= 0x7a; c++) TCHAR[c] = 1;

/** Longest method token we wait for (Envoy's llhttp knows none longer than 11; extension methods stay short). */
const MAX_METHOD = 32;

/**
 * Decides from the bytes seen so far; undefined: more bytes are needed.
 * `mode` http never answers tcp.
 */
export function classifyPrefix(bytes: Uint8Array, mode: SniffMode): SniffedProtocol | undefined {
  const prefaceLength = Math.min(bytes.length, PREFACE.length);
  let isPrefacePrefix = true;
  for (let i = 0; i < prefaceLength; i++) {
    if (bytes[i] !== PREFACE[i]) {
      isPrefacePrefix = false;
      break;
    }
  }
  if (isPrefacePrefix) return bytes.length >= PREFACE.length ? 'http2' : undefined;
  if (mode === 'http') return 'http1';
  return classifyRequestLine(bytes);
}

/** `METHOD SP request-target SP HTTP/1.d CRLF` → http1; a violation → tcp; a valid prefix → undefined. */
function classifyRequestLine(b: Uint8Array): SniffedProtocol | undefined {
  let i = 0;
  // method
  while (i < b.length && b[i] !== SP) {
    const c = b[i] as number;
    if (c >= 128 || TCHAR[c] !== 1 || i >= MAX_METHOD) return 'tcp';
    i++;
  }
  if (i >= b.length) return undefined;
  if (i === 0) return 'tcp';
  i++; // SP
  // request-target: visible ASCII
  const targetStart = i;
  while (i < b.length && b[i] !== SP) {
    const c = b[i] as number;
    if (c <= 0x20 || c >= 0x7f) return 'tcp';
    i++;
  }
  if (i >= b.length) return undefined;
  if (i === targetStart) return 'tcp';
  i++; // SP
  // HTTP/1.d
  for (let k = 0; k < HTTP1_VERSION.length; k++, i++) {
    if (i >= b.length) return undefined;
    if (b[i] !== HTTP1_VERSION[k]) return 'tcp';
  }
  if (i >= b.length) return undefined;
  const digit = b[i] as number;
  if (digit < 0x30 || digit > 0x39) return 'tcp';
  i++;
  if (i >= b.length) return undefined;
  if (b[i] !== CR) return 'tcp';
  i++;
  if (i >= b.length) return undefined;
  return b[i] === LF ? 'http1' : 'tcp';
}

/**
 * Reads from `stream` until the protocol is known, then puts the bytes back.
 * Rejects only if the stream fails or closes before anything can be decided
 * and nothing can be put back (the caller then drops the tunnel).
 */
export function sniffProtocol(stream: Readable, options: SniffOptions): Promise<SniffResult> {
  const undecided: SniffedProtocol = options.mode === 'http' ? 'http1' : 'tcp';
  return new Promise<SniffResult>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    let settled = false;
    const timer = options.timeoutMs > 0 ? options.clock.setTimer(options.timeoutMs, () => finish(undecided, 'timeout')) : undefined;

    const cleanup = () => {
      timer?.cancel();
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onClose);
    };
    const putBack = () => {
      if (length > 0) stream.unshift(chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, length));
    };
    function finish(protocol: SniffedProtocol, reason: SniffResult['reason']): void {
      if (settled) return;
      settled = true;
      cleanup();
      if (reason === 'eof') {
        resolve({ protocol, reason, bytes: length, leftover: length === 0 ? undefined : Buffer.concat(chunks, length) });
        return;
      }
      try {
        putBack();
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
        return;
      }
      resolve({ protocol, reason, bytes: length, leftover: undefined });
    }
    function onReadable(): void {
      let chunk: Buffer | null;
      while (!settled && (chunk = stream.read() as Buffer | null) !== null) {
        chunks.push(chunk);
        length += chunk.length;
        const seen = chunks.length === 1 ? chunk : Buffer.concat(chunks, length);
        const verdict = classifyPrefix(seen.length > options.maxBytes ? seen.subarray(0, options.maxBytes) : seen, options.mode);
        if (verdict !== undefined) return finish(verdict, 'matched');
        if (length >= options.maxBytes) return finish(undecided, 'byte-limit');
      }
    }
    function onEnd(): void {
      finish(undecided, 'eof');
    }
    function onError(err: Error): void {
      if (settled) return;
      settled = true;
      cleanup();
      reject(err);
    }
    function onClose(): void {
      if (settled) return;
      settled = true;
      cleanup();
      reject(new Error('the tunnel closed during protocol detection'));
    }
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('error', onError);
    stream.once('close', onClose);
  });
}
