/**
 * HTTP/2 with prior knowledge (h2c) inside a tunnel: one node:http2 server
 * session per tunnel (`performServerHandshake` on the tunnel stream), each
 * stream adapted to the pipeline's exchange (exchange.ts).
 *
 * Limits are the HBONE server's (dataplane server-limits: windows, frame size,
 * session memory, invalid-frame and rejected-stream budgets, no push, the
 * rapid-reset and control-frame token buckets) with the inner HTTP's own
 * header limits (Envoy's 60 KiB / 100 headers) and Istio's 100 concurrent
 * streams; a session with no stream for `idleTimeoutMs` (Envoy's 1 h idle
 * timeout) is closed with GOAWAY.
 *
 * gRPC works both ways: request bodies stream as they arrive, responses
 * stream back with their trailers (trailers-only responses are HEADERS with
 * END_STREAM). Drain sends GOAWAY: streams in flight finish, new ones are
 * refused by the client.
 *
 * Invariants: every session is in #sessions until its 'close'; its timers
 * are cancelled then; a stream is answered at most once.
 */
import http2, { type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Clock, Logger, Timer } from '@ambient/control';
import { http2SessionOptions, resolveHboneServerLimits, TokenBucket, type HboneServerLimits } from '@ambient/dataplane';
import { L7Error } from './errors.js';
import { BodyMeter, headerBytesOf, type DownstreamRequest, type DownstreamResponse, type ExchangeEnd } from './exchange.js';
import type { ExchangeHandler } from './http1.js';
import type { RawHeaders } from '../upstream/types.js';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_CANCEL, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_NO_ERROR } = http2.constants;

export interface Http2Limits {
  readonly maxConcurrentStreams: number;
  readonly maxRequestHeadersBytes: number;
  readonly maxRequestHeaders: number;
  /** A session with no open stream is closed after this (0: never). */
  readonly idleTimeoutMs: number;
}

const DEFAULT_HTTP2_LIMITS: Http2Limits = {
  maxConcurrentStreams: 100,
  maxRequestHeadersBytes: 60 * 1024,
  maxRequestHeaders: 100,
  idleTimeoutMs: 60 * 60 * 1000,
};

/** Headers HTTP/2 forbids (RFC 9113 8.2.2); never sent on a response. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

interface Session {
  readonly session: ServerHttp2Session;
  readonly tunnel: Duplex;
  readonly log: Logger;
  streams: number;
  idle: Timer | undefined;
  ending: boolean;
  readonly resets: TokenBucket;
  readonly controlFrames: TokenBucket;
}

export interface Http2ServerOptions {
  readonly clock: Clock;
  readonly log: Logger;
  readonly limits?: Partial<Http2Limits>;
  /** Overrides of the HBONE server's HTTP/2 limits for the inner sessions. */
  readonly sessionLimits?: Partial<HboneServerLimits>;
}

export class Http2Server {
  readonly limits: Http2Limits;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #hbone: HboneServerLimits;
  readonly #options: ReturnType<typeof http2SessionOptions>;
  readonly #sessions = new Set<Session>();
  #draining = false;

  constructor(options: Http2ServerOptions) {
    this.limits = { ...DEFAULT_HTTP2_LIMITS, ...options.limits };
    const resolved = resolveHboneServerLimits({
      ...options.sessionLimits,
      maxConcurrentStreams: this.limits.maxConcurrentStreams,
      maxHeaderListBytes: this.limits.maxRequestHeadersBytes,
      // Pseudo-headers count as pairs in Node's limit.
      maxHeaderListPairs: this.limits.maxRequestHeaders + 5,
    });
    if (!resolved.ok) throw new TypeError(`inner HTTP/2 limits: ${resolved.errors.map((e) => `${e.field}: ${e.reason}`).join('; ')}`);
    this.#hbone = resolved.value;
    const base = http2SessionOptions(resolved.value);
    // Responses carry the application's headers, not only a CONNECT status.
    this.#options = { ...base, maxSendHeaderBlockLength: 64 * 1024 };
    this.#clock = options.clock;
    this.#log = options.log;
  }

  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** Serves one tunnel whose bytes start with the HTTP/2 connection preface. */
  serve(tunnel: Duplex, handler: ExchangeHandler, log: Logger): void {
    let session: ServerHttp2Session;
    try {
      session = http2.performServerHandshake(tunnel, this.#options);
    } catch (err) {
      log.warn({ err: err instanceof Error ? err.message : String(err) }, 'inner HTTP/2 session setup failed');
      tunnel.destroy();
      return;
    }
    const s: Session = {
      session, tunnel, log, streams: 0, idle: undefined, ending: false,
      resets: new TokenBucket(this.#hbone.rapidReset, () => this.#clock.monotonic()),
      controlFrames: new TokenBucket(this.#hbone.controlFrames, () => this.#clock.monotonic()),
    };
    this.#sessions.add(s);
    session.on('error', (err: Error & { code?: string }) => log.debug({ err: err.message, code: err.code }, 'inner HTTP/2 session error'));
    const onControlFrame = () => {
      if (!s.controlFrames.take()) this.#terminate(s, 'the client sent PING/SETTINGS frames faster than the control-frame budget');
    };
    session.on('ping', onControlFrame);
    session.on('remoteSettings', onControlFrame);
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) =>
      this.#onStream(s, handler, stream, headers, flags, rawHeaders),
    );
    session.once('close', () => {
      s.idle?.cancel();
      s.idle = undefined;
      this.#sessions.delete(s);
      if (!tunnel.destroyed) tunnel.destroy();
    });
    tunnel.once('close', () => {
      if (!session.destroyed) session.destroy();
    });
    try {
      session.setLocalWindowSize(this.#hbone.connectionWindowBytes);
    } catch {
      // the session already failed; its 'close' cleans up
    }
    this.#armIdle(s);
    if (this.#draining) this.#goaway(s);
  }

  /** GOAWAY on every session: streams in flight finish. */
  drain(): void {
    this.#draining = true;
    for (const s of this.#sessions) this.#goaway(s);
  }

  close(): void {
    this.#draining = true;
    for (const s of [...this.#sessions]) {
      s.ending = true;
      s.session.destroy();
      s.tunnel.destroy();
    }
  }

  // ---------------------------------------------------------------------------

  #goaway(s: Session): void {
    if (s.session.closed || s.session.destroyed) return;
    try {
      s.session.close();
    } catch {
      s.session.destroy();
    }
  }

  #terminate(s: Session, reason: string): void {
    if (s.ending) return;
    s.ending = true;
    s.log.warn({ reason }, 'inner HTTP/2 limit reached; closing the session');
    s.session.destroy(new Error(reason), NGHTTP2_ENHANCE_YOUR_CALM);
  }

  #armIdle(s: Session): void {
    s.idle?.cancel();
    s.idle = undefined;
    if (this.limits.idleTimeoutMs <= 0) return;
    s.idle = this.#clock.setTimer(this.limits.idleTimeoutMs, () => {
      s.idle = undefined;
      if (s.streams === 0) {
        s.log.debug({ idleTimeoutMs: this.limits.idleTimeoutMs }, 'closing an idle inner HTTP/2 session');
        this.#goaway(s);
      }
    });
  }

  #onStream(s: Session, handler: ExchangeHandler, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]): void {
    s.streams++;
    s.idle?.cancel();
    s.idle = undefined;
    const createdAt = this.#clock.monotonic();
    let answered = false;
    stream.on('error', (err: Error) => s.log.debug({ stream: stream.id, err: err.message }, 'inner HTTP/2 stream error'));
    stream.once('close', () => {
      s.streams--;
      if (stream.rstCode !== NGHTTP2_NO_ERROR && !answered && this.#clock.monotonic() - createdAt < this.#hbone.prematureResetMs && !s.resets.take()) {
        this.#terminate(s, 'the client reset streams faster than the rapid-reset budget');
      }
      if (s.streams === 0 && !this.#draining) this.#armIdle(s);
    });
    const response = new Http2Response(stream, () => {
      answered = true;
    });
    const parsed = parseStream(headers, flags, rawHeaders, stream, this.limits);
    if (parsed instanceof L7Error) {
      handler.refuse(parsed.request, response, parsed);
      return;
    }
    handler.handle(parsed, response);
  }
}

/** An L7Error carrying what is known of the refused request. */
class RefusedStream extends L7Error {
  constructor(
    err: L7Error,
    readonly request: DownstreamRequest,
  ) {
    super(err.code, err.message);
  }
}

function single(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function parseStream(
  headers: IncomingHttpHeaders,
  flags: number,
  raw: readonly string[],
  stream: ServerHttp2Stream,
  limits: Http2Limits,
): DownstreamRequest | RefusedStream {
  const method = single(headers[':method']) ?? '';
  const target = single(headers[':path']) ?? '';
  let authority = single(headers[':authority']);
  const regular: Array<readonly [string, string]> = [];
  let pseudoBytes = 0;
  let count = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    if (name.charCodeAt(0) === 0x3a) {
      pseudoBytes += name.length + value.length;
      continue;
    }
    count++;
    if (name === 'host') {
      authority ??= value;
      continue;
    }
    regular.push([name, value]);
  }
  const partial: DownstreamRequest = {
    httpVersion: 'HTTP/2', method, target, authority, headers: [], headerBytes: 0, body: undefined,
  };
  const refuse = (err: L7Error) => {
    // Nothing of this request will be read.
    stream.resume();
    return new RefusedStream(err, partial);
  };
  if (count > limits.maxRequestHeaders) return refuse(new L7Error('TOO_MANY_HEADERS', `more than ${limits.maxRequestHeaders} request headers`));
  if (method === 'CONNECT') return refuse(new L7Error('ROUTE_NOT_FOUND', 'CONNECT is not routed inside a waypoint tunnel'));
  if (authority === undefined || authority === '') return refuse(new L7Error('MISSING_HOST', 'the request has no :authority or Host'));
  if (!(target.startsWith('/') || (target === '*' && method === 'OPTIONS'))) {
    return refuse(new L7Error('INVALID_URL', `the :path "${target.slice(0, 200)}" must start with "/" (or be "*" with OPTIONS)`));
  }
  const hasBody = (flags & NGHTTP2_FLAG_END_STREAM) === 0;
  const meter = hasBody ? new BodyMeter() : undefined;
  if (meter !== undefined) stream.pipe(meter);
  return {
    httpVersion: 'HTTP/2',
    method,
    target,
    authority,
    headers: regular,
    headerBytes: pseudoBytes + headerBytesOf(regular),
    body: meter,
  };
}

/** Response headers as node:http2 takes them: lower-case, duplicates as arrays, no connection-specific fields. */
function responseHeaders(status: number, headers: RawHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = { ':status': status };
  for (const [rawName, value] of headers) {
    const name = rawName.toLowerCase();
    if (CONNECTION_SPECIFIC.has(name) || name.charCodeAt(0) === 0x3a) continue;
    if (name === 'te' && value.toLowerCase() !== 'trailers') continue;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [String(prev), value];
  }
  return out;
}

function trailerHeaders(trailers: RawHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [rawName, value] of trailers) {
    const name = rawName.toLowerCase();
    if (CONNECTION_SPECIFIC.has(name) || name.charCodeAt(0) === 0x3a) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [String(prev), value];
  }
  return out;
}

class Http2Response implements DownstreamResponse {
  readonly #stream: ServerHttp2Stream;
  readonly #gone = new AbortController();
  /** nghttp2 resets a stream whose framing breaks; that is the client going away (clientGone). */
  readonly requestFailure: AbortSignal = new AbortController().signal;
  readonly #onAnswer: () => void;
  readonly done: Promise<ExchangeEnd>;
  #headBytes = 0;
  #bodyBytes = 0;
  #trailerBytes = 0;
  #trailers: OutgoingHttpHeaders = {};
  #ended = false;
  #reset = false;

  constructor(stream: ServerHttp2Stream, onAnswer: () => void) {
    this.#stream = stream;
    this.#onAnswer = onAnswer;
    stream.on('wantTrailers', () => {
      try {
        stream.sendTrailers(this.#trailers);
      } catch {
        stream.close(NGHTTP2_CANCEL);
      }
    });
    this.done = new Promise((resolve) => {
      stream.once('close', () => {
        const complete = this.#ended && stream.rstCode === NGHTTP2_NO_ERROR;
        if (!complete && !this.#reset) this.#gone.abort(new Error('the client went away'));
        resolve(complete ? 'complete' : this.#reset ? 'reset' : 'client-gone');
      });
    });
  }

  get headersSent(): boolean {
    return this.#stream.headersSent;
  }

  get clientGone(): AbortSignal {
    return this.#gone.signal;
  }

  respond(status: number, headers: RawHeaders, endStream: boolean): void {
    if (this.#reset || this.#stream.headersSent || this.#stream.destroyed || this.#stream.closed) return;
    this.#onAnswer();
    const out = responseHeaders(status, headers);
    this.#headBytes = 7 + 3 + headerBytesOf(headers);
    try {
      this.#stream.respond(out, { endStream, waitForTrailers: !endStream });
      if (endStream) this.#ended = true;
    } catch (err) {
      this.#stream.destroy(err instanceof Error ? err : new Error(String(err)));
    }
  }

  write(chunk: Buffer): boolean {
    if (this.#reset || this.#stream.destroyed) return true;
    this.#bodyBytes += chunk.length;
    return this.#stream.write(chunk);
  }

  drain(): Promise<void> {
    const stream = this.#stream;
    if (stream.destroyed || !stream.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        stream.off('drain', done);
        stream.off('close', done);
        resolve();
      };
      stream.once('drain', done);
      stream.once('close', done);
    });
  }

  end(trailers: RawHeaders): void {
    if (this.#reset || this.#ended || this.#stream.destroyed) return;
    this.#ended = true;
    this.#trailers = trailerHeaders(trailers);
    this.#trailerBytes += headerBytesOf(trailers);
    this.#stream.end();
  }

  reset(): void {
    if (this.#reset) return;
    this.#reset = true;
    if (!this.#stream.destroyed && !this.#stream.closed) this.#stream.close(NGHTTP2_CANCEL);
  }

  closeAfter(): void {}

  bytesSent(): number {
    return this.#headBytes + this.#bodyBytes + this.#trailerBytes;
  }

  bodyBytesSent(): number {
    return this.#bodyBytes;
  }
}
