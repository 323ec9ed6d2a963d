/**
 * The bidirectional copy between the two legs of a proxied connection (the
 * application's TCP socket and an HBONE stream, or two TCP sockets), as
 * ztunnel's copy.rs does it: both directions run independently, each ends with
 * a half-close of the other side, bytes are counted for metrics, and the
 * connection is over when both directions are over or one side fails.
 *
 * Behaviour:
 * - Backpressure: a chunk read from one side is written to the other; when that
 *   write reports a full buffer the source is paused until 'drain'. Memory per
 *   direction is bounded by the destination's highWaterMark plus one chunk; an
 *   HTTP/2 stream additionally holds at most its flow-control window.
 * - Half-close: the end of one side's readable (TCP FIN, HTTP/2 END_STREAM)
 *   ends the other side's writable (FIN / empty DATA with END_STREAM); the other
 *   direction keeps flowing until it ends too.
 * - Failures: an error or abrupt close on one side (TCP RST, RST_STREAM with a
 *   code other than NO_ERROR, the HTTP/2 connection going away mid-stream, the
 *   abort signal) resets the other side: a TCP socket gets an RST
 *   (resetAndDestroy), an HTTP/2 stream gets RST_STREAM(CANCEL). RST_STREAM
 *   with NO_ERROR is treated as end-of-stream, as ztunnel does.
 * - A side that closes cleanly after its own end-of-stream while the other
 *   side has not finished sending ("peer stopped reading", e.g. RST_STREAM
 *   after END_STREAM) ends that direction without error; what the other side
 *   still sends is discarded, as ztunnel does with a broken pipe.
 * - Sockets: both sides are switched to allowHalfOpen (a TCP socket created
 *   without it would end its write side as soon as its read side ended).
 * - Linux detail worth knowing when testing: an RST arriving while the reader
 *   still has unread bytes queued is reported as those bytes and then EOF.
 * - Buffers: Node hands over the chunks its sources produce (TCP reads of up
 *   to 64 KiB, HTTP/2 DATA frames up to the frame size) and they are written
 *   through without copying, so ztunnel's adaptive 1 KiB → 16 KiB → 256 KiB
 *   buffer resizing has no equivalent here: there is no copy buffer to size.
 * - Write coalescing into TCP sockets: the chunks one event-loop turn hands a
 *   socket are written with one writev at the end of that turn (cork, then
 *   uncork from setImmediate, which runs right after the I/O callbacks of the
 *   same turn). An HTTP/2 stream delivers DATA in pieces cut at TLS record
 *   boundaries (a 16 KiB frame never fits one 16 KiB record, so every frame
 *   arrives as a large piece and a few bytes); writing each piece on its own
 *   cost two system calls per 16 KiB. HTTP/2 destinations batch by themselves
 *   (nghttp2 frames everything queued in one turn).
 *
 * Invariants:
 * - the returned promise settles exactly once, after both streams have emitted
 *   'close', and by then every listener this module added is removed;
 * - no byte is written to a side after it was ended, destroyed or reset;
 * - `onBytes` is called with exactly the bytes handed to the destination, so
 *   the totals in the result equal the sum of the callbacks per direction;
 * - no timer is created (the clock is only read for the duration); the only
 *   deferred work is one setImmediate per turn that wrote into a TCP side.
 */
import { Socket } from 'node:net';
import { addAbortSignal, type Duplex } from 'node:stream';
import type { Clock } from '@ambient/control';

/**
 * Istio's direction names, from the proxy's point of view towards side `a`
 * (the downstream): `received` = bytes read from a and written to b
 * (istio_tcp_received_bytes_total), `sent` = bytes read from b and written to a
 * (istio_tcp_sent_bytes_total).
 */
export type ByteDirection = 'received' | 'sent';

export interface ProxyBidirectionalOptions {
  /** Used only to measure the duration. */
  readonly clock?: Clock;
  /** Called for every chunk handed to a destination (live metrics). */
  readonly onBytes?: (direction: ByteDirection, bytes: number) => void;
  /** Aborting resets both sides (e.g. a policy change closing the connection). */
  readonly signal?: AbortSignal;
}

export type CopyFailureKind =
  /** The side was reset (TCP RST, RST_STREAM, its HTTP/2 connection failed). */
  | 'reset'
  /** The side closed before its end-of-stream, without an error. */
  | 'closed'
  /** Any other error emitted by the side. */
  | 'error'
  /** The abort signal fired. */
  | 'aborted';

export interface CopyFailure {
  readonly side: 'a' | 'b' | 'signal';
  readonly kind: CopyFailureKind;
  readonly message: string;
  readonly cause?: unknown;
}

export interface CopyResult {
  /** Bytes b → a (istio_tcp_sent_bytes_total). */
  readonly sent: number;
  /** Bytes a → b (istio_tcp_received_bytes_total). */
  readonly received: number;
  /** Milliseconds from start to settle; undefined without a clock. */
  readonly durationMs: number | undefined;
  /** Why the connection ended abnormally; absent when both directions ended cleanly. */
  readonly error?: CopyFailure;
}

/** RST_STREAM codes (RFC 9113 §7). */
const H2_NO_ERROR = 0;
const H2_CODE_NAMES: Readonly<Record<number, string>> = {
  0: 'NO_ERROR', 1: 'PROTOCOL_ERROR', 2: 'INTERNAL_ERROR', 3: 'FLOW_CONTROL_ERROR', 4: 'SETTINGS_TIMEOUT',
  5: 'STREAM_CLOSED', 6: 'FRAME_SIZE_ERROR', 7: 'REFUSED_STREAM', 8: 'CANCEL', 9: 'COMPRESSION_ERROR',
  10: 'CONNECT_ERROR', 11: 'ENHANCE_YOUR_CALM', 12: 'INADEQUATE_SECURITY', 13: 'HTTP_1_1_REQUIRED',
};

/** Copies a ↔ b until both directions end or one side fails; never rejects. */
export function proxyBidirectional(a: Duplex, b: Duplex, options: ProxyBidirectionalOptions = {}): Promise<CopyResult> {
  return new BidirectionalCopy(a, b, options).run();
}

interface Side {
  readonly name: 'a' | 'b';
  readonly stream: Duplex;
  /** Its readable ended cleanly (FIN / END_STREAM / RST_STREAM(NO_ERROR)). */
  readEnded: boolean;
  /** Its writable finished (our end() was flushed). */
  writeFinished: boolean;
  /** It closed before the other side ended: nothing more can be written to it, the direction into it is over. */
  writeDead: boolean;
  closed: boolean;
  /** A TCP socket: writes into it are coalesced per event-loop turn. */
  readonly coalesce: boolean;
  /** Corked until the scheduled uncork runs. */
  corked: boolean;
  readonly listeners: Array<[string, (...args: never[]) => void]>;
}

class BidirectionalCopy {
  readonly #a: Side;
  readonly #b: Side;
  readonly #options: ProxyBidirectionalOptions;
  readonly #start: number | undefined;
  #sent = 0;
  #received = 0;
  #failure: CopyFailure | undefined;
  #finishing = false;
  #settled = false;
  #resolve: (r: CopyResult) => void = () => {};
  #onAbort: (() => void) | undefined;

  constructor(a: Duplex, b: Duplex, options: ProxyBidirectionalOptions) {
    this.#a = newSide('a', a);
    this.#b = newSide('b', b);
    this.#options = options;
    this.#start = options.clock?.monotonic();
  }

  run(): Promise<CopyResult> {
    const done = new Promise<CopyResult>((resolve) => (this.#resolve = resolve));
    for (const side of [this.#a, this.#b]) {
      // Half-close needs both sides to keep their writable open after their readable ended.
      side.stream.allowHalfOpen = true;
      if (isClosed(side.stream)) side.closed = true;
    }
    this.#wire(this.#a, this.#b);
    this.#wire(this.#b, this.#a);
    // A side the caller paused (a socket held until its upstream was ready) flows from here on:
    // 'data' listeners do not restart a stream that was paused explicitly.
    for (const side of [this.#a, this.#b]) if (!side.stream.destroyed && side.stream.isPaused()) side.stream.resume();

    const signal = this.#options.signal;
    if (signal !== undefined) {
      this.#onAbort = () => this.#fail({ side: 'signal', kind: 'aborted', message: `aborted: ${describe(signal.reason)}`, cause: signal.reason });
      if (signal.aborted) this.#onAbort();
      else signal.addEventListener('abort', this.#onAbort, { once: true });
    }
    for (const side of [this.#a, this.#b]) {
      if (this.#failure !== undefined) break;
      if (side.stream.destroyed) this.#onClose(side, this.#other(side));
    }
    this.#check();
    return done;
  }

  #other(side: Side): Side {
    return side === this.#a ? this.#b : this.#a;
  }

  /** Wires `src`'s readable into `dst`'s writable, and `src`'s lifecycle events. */
  #wire(src: Side, dst: Side): void {
    const direction: ByteDirection = src.name === 'a' ? 'received' : 'sent';
    const on = (event: string, fn: (...args: never[]) => void) => {
      src.listeners.push([event, fn]);
      src.stream.on(event, fn as (...args: unknown[]) => void);
    };
    on('data', (chunk: Buffer | string) => {
      if (this.#failure !== undefined || dst.writeDead || dst.stream.destroyed || dst.stream.writableEnded) return;
      const n = typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      if (direction === 'received') this.#received += n;
      else this.#sent += n;
      this.#options.onBytes?.(direction, n);
      if (dst.coalesce && !dst.corked) {
        dst.corked = true;
        dst.stream.cork();
        setImmediate(uncork, dst);
      }
      if (!dst.stream.write(chunk)) src.stream.pause();
    });
    // `src` drained as a destination: let its source (dst) flow again.
    on('drain', () => {
      if (!dst.readEnded && !src.writeDead) dst.stream.resume();
    });
    on('end', () => this.#onEnd(src, dst));
    on('finish', () => {
      src.writeFinished = true;
      this.#check();
    });
    on('error', (err: unknown) => this.#onError(src, err));
    on('close', () => this.#onClose(src, dst));
  }

  #onEnd(side: Side, other: Side): void {
    if (this.#failure !== undefined || side.readEnded) return;
    const code = h2ResetCode(side.stream);
    if (code !== undefined && code !== H2_NO_ERROR) {
      // Node surfaces a received RST_STREAM as 'end' on some paths; it is a reset, not a FIN.
      this.#fail({ side: side.name, kind: 'reset', message: `${side.name}: stream reset by peer (${h2CodeName(code)})` });
      return;
    }
    side.readEnded = true;
    if (!other.stream.destroyed && !other.stream.writableEnded && !other.writeDead) other.stream.end();
    this.#check();
  }

  #onError(side: Side, err: unknown): void {
    if (this.#failure !== undefined || this.#finishing) return;
    const code = h2ResetCode(side.stream);
    const reset = code !== undefined || isResetError(err);
    this.#fail({
      side: side.name,
      kind: reset ? 'reset' : 'error',
      message: `${side.name}: ${code !== undefined && code !== H2_NO_ERROR ? `stream reset (${h2CodeName(code)})` : describe(err)}`,
      cause: err,
    });
  }

  #onClose(side: Side, other: Side): void {
    side.closed = true;
    if (this.#failure === undefined && !this.#finishing) {
      if (!side.readEnded) {
        const code = h2ResetCode(side.stream);
        if (code !== H2_NO_ERROR) {
          const reason = code !== undefined ? `stream reset by peer (${h2CodeName(code)})` : 'closed before end of stream';
          this.#fail({ side: side.name, kind: code !== undefined ? 'reset' : 'closed', message: `${side.name}: ${reason}` });
          return;
        }
        // RST_STREAM(NO_ERROR): end-of-stream for reading.
        this.#onEnd(side, other);
      }
      if (!other.readEnded) {
        // Closed while the other side may still send to it (the peer stopped
        // reading, e.g. RST_STREAM after its END_STREAM): that direction is over.
        side.writeDead = true;
        this.#stopReading(other);
      }
    }
    this.#check();
  }

  /** The direction out of `side` is over (its destination is gone): stop consuming it. */
  #stopReading(side: Side): void {
    side.stream.pause();
  }

  #fail(failure: CopyFailure): void {
    if (this.#failure !== undefined || this.#settled) return;
    this.#failure = failure;
    for (const side of [this.#a, this.#b]) {
      if (!side.stream.destroyed) abortiveClose(side.stream, failure.message);
    }
    this.#check();
  }

  #directionDone(src: Side, dst: Side): boolean {
    return dst.writeDead || dst.closed || (src.readEnded && dst.writeFinished);
  }

  #check(): void {
    if (this.#settled) return;
    if (this.#failure === undefined && !this.#finishing) {
      if (!this.#directionDone(this.#a, this.#b) || !this.#directionDone(this.#b, this.#a)) return;
      // Both directions are over: release both sides. A TCP socket with unread
      // bytes (a peer that kept sending after we stopped reading) gets an RST from the kernel.
      this.#finishing = true;
      for (const side of [this.#a, this.#b]) if (!side.stream.destroyed) side.stream.destroy();
    }
    if (!this.#a.closed || !this.#b.closed) return;
    this.#settle();
  }

  #settle(): void {
    this.#settled = true;
    for (const side of [this.#a, this.#b]) {
      for (const [event, fn] of side.listeners) side.stream.removeListener(event, fn as (...args: unknown[]) => void);
      side.listeners.length = 0;
    }
    if (this.#onAbort !== undefined) this.#options.signal?.removeEventListener('abort', this.#onAbort);
    const clock = this.#options.clock;
    const durationMs = clock !== undefined && this.#start !== undefined ? clock.monotonic() - this.#start : undefined;
    const base = { sent: this.#sent, received: this.#received, durationMs };
    this.#resolve(this.#failure === undefined ? base : { ...base, error: this.#failure });
  }
}

function newSide(name: 'a' | 'b', stream: Duplex): Side {
  return { name, stream, readEnded: false, writeFinished: false, writeDead: false, closed: false, coalesce: stream instanceof Socket, corked: false, listeners: [] };
}

/** Flushes what a turn wrote into a coalescing side (end() and destroy() need no uncork: end flushes, destroy discards). */
function uncork(side: Side): void {
  side.corked = false;
  if (!side.stream.destroyed && side.stream.writableCorked > 0) side.stream.uncork();
}

function isClosed(stream: Duplex): boolean {
  return (stream as Duplex & { closed?: boolean }).closed === true;
}

/** An HTTP/2 stream's RST_STREAM code once it is closed; undefined for other streams or while open. */
function h2ResetCode(stream: Duplex): number | undefined {
  if (!isHttp2Stream(stream)) return undefined;
  const s = stream as Duplex & { closed: boolean; rstCode: number | undefined };
  return s.closed && typeof s.rstCode === 'number' ? s.rstCode : undefined;
}

function isHttp2Stream(stream: Duplex): boolean {
  return 'rstCode' in stream && 'session' in stream && typeof (stream as { close?: unknown }).close === 'function';
}

function h2CodeName(code: number): string {
  return H2_CODE_NAMES[code] ?? `code ${code}`;
}

const RESET_ERRNOS = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE', 'ERR_HTTP2_STREAM_ERROR', 'ERR_HTTP2_SESSION_ERROR', 'ERR_HTTP2_GOAWAY_SESSION']);

function isResetError(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && RESET_ERRNOS.has(code);
}

/**
 * Abortive close: RST for TCP, RST_STREAM(CANCEL) for an HTTP/2 stream (Node
 * maps a destroy with an AbortError to CANCEL; `close(CANCEL)` would first send
 * END_STREAM, which the peer would read as a clean end), destroy otherwise.
 */
export function abortiveClose(stream: Duplex, reason: string): void {
  if (stream.destroyed) return;
  try {
    if (isHttp2Stream(stream)) {
      const controller = new AbortController();
      addAbortSignal(controller.signal, stream);
      controller.abort(new Error(reason));
      return;
    }
    if (stream instanceof Socket && typeof stream.resetAndDestroy === 'function' && !stream.connecting) {
      stream.resetAndDestroy();
      return;
    }
  } catch {
    // Not a TCP handle (TLS, pipe) or already gone: fall back to a plain destroy.
  }
  stream.destroy();
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}
