/**
 * The load generator, in the manner of `fortio load -qps R -c C -uniform
 * -nocatchup`: C keep-alive HTTP/1.1 connections, each sending one request at
 * a time on a uniform schedule of R/C requests per second (connections
 * staggered by 1/R), never bursting to catch up after a late response.
 * Latency is measured from sending the request to the last byte of the
 * response (as fortio does) into an HDR histogram. Also a single-stream bulk
 * push for throughput. Every phase is bounded in requests, bytes and time.
 */
import { once } from 'node:events';
import { createHistogram } from 'node:perf_hooks';
import type { Socket } from 'node:net';
import type { Dialer } from './connect.js';

export interface RateOptions {
  readonly rps: number;
  readonly connections: number;
  /** Load at the full rate before the window opens (not recorded). */
  readonly warmupMs: number;
  readonly durationMs: number;
  /** A response slower than this fails the phase (a stall). */
  readonly requestTimeoutMs: number;
  readonly hostHeader: string;
}

export interface RateResult {
  /** Requests sent in the window and answered. */
  readonly requests: number;
  readonly windowSeconds: number;
  readonly achievedRps: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Requests sent more than one interval late (their slot was skipped: no catch-up). */
  readonly skippedSlots: number;
  readonly errors: readonly string[];
}

const nowNs = () => Number(process.hrtime.bigint());
const sleepMs = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One keep-alive HTTP/1.1 connection with at most one request in flight. */
class HttpConnection {
  #buf: Buffer = Buffer.alloc(0);
  #pending: { resolve: () => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | undefined;
  #closed: Error | undefined;
  readonly #request: Buffer;

  constructor(private readonly socket: Socket, host: string, private readonly timeoutMs: number) {
    this.#request = Buffer.from(`GET /bench HTTP/1.1\r\nHost: ${host}\r\nUser-Agent: ztunnel-bench\r\nAccept: */*\r\n\r\n`);
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.#onData(d));
    socket.on('error', (e) => this.#fail(e));
    socket.on('close', () => this.#fail(new Error('connection closed by the peer')));
    socket.resume();
  }

  request(): Promise<void> {
    if (this.#closed !== undefined) return Promise.reject(this.#closed);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(new Error(`no complete response within ${this.timeoutMs} ms (stall)`)), this.timeoutMs);
      this.#pending = { resolve, reject, timer };
      this.socket.write(this.#request);
    });
  }

  #onData(d: Buffer): void {
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
    const headerEnd = this.#buf.indexOf('\r\n\r\n');
    if (headerEnd < 0) return;
    const head = this.#buf.subarray(0, headerEnd).toString('latin1');
    const status = /^HTTP\/1\.1 (\d{3}) /.exec(head)?.[1];
    const length = /\r\ncontent-length: *(\d+)/i.exec(head)?.[1];
    if (length === undefined) return this.#fail(new Error(`response without content-length: ${head.split('\r\n')[0]}`));
    const total = headerEnd + 4 + Number(length);
    if (this.#buf.length < total) return;
    if (this.#buf.length > total) return this.#fail(new Error('bytes after the response (protocol error)'));
    this.#buf = Buffer.alloc(0);
    const p = this.#pending;
    this.#pending = undefined;
    if (p === undefined) return this.#fail(new Error('response without a request'));
    clearTimeout(p.timer);
    if (status !== '200') p.reject(new Error(`HTTP status ${status ?? '?'}`));
    else p.resolve();
  }

  #fail(e: Error): void {
    if (this.#closed === undefined) this.#closed = e;
    const p = this.#pending;
    this.#pending = undefined;
    if (p !== undefined) {
      clearTimeout(p.timer);
      p.reject(e);
    }
    this.socket.destroy();
  }

  close(): void {
    this.#fail(new Error('closed by the load generator'));
  }
}

export async function runFixedRate(
  dial: Dialer,
  o: RateOptions,
  window: { onStart(): void; onEnd(): void },
): Promise<RateResult> {
  const conns = await Promise.all(Array.from({ length: o.connections }, async () => new HttpConnection(await dial('http'), o.hostHeader, o.requestTimeoutMs)));
  const histogram = createHistogram({ lowest: 1, highest: 60e9, figures: 3 });
  const errors: string[] = [];
  let requests = 0;
  let skippedSlots = 0;
  const intervalNs = (1e9 * o.connections) / o.rps;
  const start = nowNs() + 5e6;
  const windowStart = start + o.warmupMs * 1e6;
  const windowEnd = windowStart + o.durationMs * 1e6;
  let windowTimer: NodeJS.Timeout | undefined;
  let windowState: 'before' | 'open' | 'closed' = 'before';
  const openWindow = () => {
    if (windowState !== 'before') return;
    windowState = 'open';
    window.onStart();
    windowTimer = setTimeout(closeWindow, o.durationMs);
  };
  const closeWindow = () => {
    openWindow();
    if (windowState !== 'open') return;
    windowState = 'closed';
    clearTimeout(windowTimer);
    window.onEnd();
  };
  const openTimer = setTimeout(openWindow, (windowStart - nowNs()) / 1e6);

  const drive = async (conn: HttpConnection, index: number): Promise<void> => {
    let due = start + (index * 1e9) / o.rps;
    // Bounded: at most (warmup + duration) / interval + 1 iterations.
    const maxIterations = Math.ceil((windowEnd - start) / intervalNs) + 1;
    for (let i = 0; i < maxIterations && due < windowEnd; i++) {
      for (let now = nowNs(); due > now; now = nowNs()) await sleepMs(Math.max(1, Math.floor((due - now) / 1e6)));
      const sent = nowNs();
      try {
        await conn.request();
      } catch (e) {
        errors.push(`connection ${index}: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      const done = nowNs();
      if (sent >= windowStart && sent < windowEnd) {
        histogram.record(Math.max(1, done - sent));
        requests++;
      }
      due += intervalNs;
      if (done > due + intervalNs) {
        skippedSlots += Math.floor((done - due) / intervalNs);
        due = done;
      }
    }
  };

  try {
    await Promise.all(conns.map((c, i) => drive(c, i)));
  } finally {
    for (const c of conns) c.close();
    clearTimeout(openTimer);
    // Ends the window when the last slot finished before the timer (or every connection failed early).
    closeWindow();
  }
  const windowSeconds = o.durationMs / 1000;
  const ms = (ns: number) => ns / 1e6;
  return {
    requests,
    windowSeconds,
    achievedRps: requests / windowSeconds,
    p50Ms: ms(histogram.percentile(50)),
    p90Ms: ms(histogram.percentile(90)),
    p99Ms: ms(histogram.percentile(99)),
    maxMs: ms(histogram.max),
    skippedSlots,
    errors,
  };
}

export interface StreamResult {
  readonly bytes: number;
  readonly seconds: number;
  readonly megabytesPerSecond: number;
  readonly error: string | undefined;
}

/**
 * Pushes up to `maxBytes` (or for at most `maxMs`) over one connection to the
 * sink, half-closes, and waits for the sink's byte count: the stream is timed
 * until the last byte reached the app. A count that differs from what was sent
 * is reported as an error (bytes lost or invented on the way).
 */
export async function pushStream(dial: Dialer, o: { maxBytes: number; maxMs: number; chunkBytes?: number }): Promise<StreamResult> {
  const socket = await dial('sink');
  const chunk = Buffer.alloc(o.chunkBytes ?? 256 * 1024, 0x5a);
  let closed: Error | undefined;
  socket.on('error', (e) => (closed = e));
  socket.on('close', () => (closed ??= new Error('connection closed before the count arrived')));
  const reply: Buffer[] = [];
  socket.on('data', (d: Buffer) => reply.push(d));
  const ended = once(socket, 'end').then(() => Buffer.concat(reply));
  ended.catch(() => {});
  socket.resume();

  const start = performance.now();
  const deadline = start + o.maxMs;
  let sent = 0;
  let error: string | undefined;
  try {
    const maxWrites = Math.ceil(o.maxBytes / chunk.length);
    for (let i = 0; i < maxWrites && performance.now() < deadline; i++) {
      if (closed !== undefined) throw closed;
      const piece = o.maxBytes - sent < chunk.length ? chunk.subarray(0, o.maxBytes - sent) : chunk;
      sent += piece.length;
      if (!socket.write(piece)) await drainOrClose(socket, deadline);
    }
    socket.end();
    const count = await withTimeout(ended, 30_000, 'the sink did not answer with its count within 30 s after the end of the stream');
    const seconds = (performance.now() - start) / 1000;
    const received = count.length === 8 ? Number(count.readBigUInt64BE()) : -1;
    if (received !== sent) error = `sent ${sent} bytes, the app received ${received}`;
    return { bytes: received, seconds, megabytesPerSecond: received / 1e6 / seconds, error };
  } catch (e) {
    return { bytes: sent, seconds: (performance.now() - start) / 1000, megabytesPerSecond: NaN, error: e instanceof Error ? e.message : String(e) };
  } finally {
    socket.destroy();
  }
}

function drainOrClose(socket: Socket, deadline: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error('write stalled: no drain before the phase deadline')), Math.max(1, deadline - performance.now() + 30_000));
    const onDrain = () => finish(undefined);
    const onClose = () => finish(new Error('connection closed while writing'));
    const finish = (e: Error | undefined) => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      socket.off('close', onClose);
      if (e === undefined) resolve();
      else reject(e);
    };
    socket.on('drain', onDrain);
    socket.on('close', onClose);
  });
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(what)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
