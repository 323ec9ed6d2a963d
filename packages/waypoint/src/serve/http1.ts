/**
 * HTTP/1.1 inside a tunnel: one node:http server (llhttp in strict mode)
 * shared by every tunnel, fed with the tunnel stream (`emit('connection')`).
 * It adapts node's request/response objects to the pipeline's exchange
 * (exchange.ts) and enforces what Envoy's HTTP/1 codec and connection manager
 * do before a request reaches the router:
 *
 * - malformed HTTP — conflicting Content-Length / Transfer-Encoding, bad
 *   chunk sizes, bare LF, obs-fold, invalid header names or values, a bad
 *   request line — is answered 400 "Bad Request" (flag DPE) and the
 *   connection closed; llhttp's strict mode detects it, this file maps it.
 *   An error in a body whose headers were already routed aborts that request
 *   upstream (the backend never sees a complete request) and answers 400 if
 *   no response started;
 * - request line + headers above `maxRequestHeadersBytes` (Envoy's
 *   max_request_headers_kb, 60 KiB) or more than `maxRequestHeaders` lines
 *   (max_headers_count, 100) → 431; HTTP/1.0 → 426 (accept_http_10 off);
 *   no Host or two Hosts → 400; `*` only with OPTIONS; absolute-form targets
 *   (http/https) take their authority from the target (RFC 9112 3.2.2);
 * - `Expect: 100-continue` is answered 100 at once (Envoy's default, not
 *   proxied) and the Expect header is not forwarded;
 * - Upgrade: websocket goes to the pipeline's upgrade path; an h2c upgrade
 *   without a body is ignored as Envoy does (answered over HTTP/1.1, then the
 *   connection closes); other upgrades are refused 403 (upgrade_failed);
 *   CONNECT is not routed (404);
 * - duplicate header lines stay separate (rawHeaders);
 * - timeouts on the injected Clock: request headers (from a request's first
 *   byte to its last header), whole request (optional, off like Envoy's),
 *   idle connection (no request in flight; Envoy's 1 h);
 * - drain: responses carry `Connection: close`, idle connections close,
 *   requests in flight finish.
 *
 * Node 20 corrupts the first bytes of string writes on an Http2Stream (the
 * string's backing store is released before nghttp2 sends it), and node:http
 * writes its heads as strings: every tunnel stream handed to the server first
 * gets `bufferOnlyWrites`, which turns string chunks into Buffers.
 *
 * Invariants: a tunnel is served by at most one parser; every timer belongs
 * to one connection and is cancelled when it closes; at most one response is
 * written per request, and a connection answered with a protocol error is
 * closed after the answer.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Duplex, Readable } from 'node:stream';
import type { Clock, Logger, Timer } from '@ambient/control';
import { L7Error, type L7ErrorCode } from './errors.js';
import { BodyMeter, headerBytesOf, type DownstreamRequest, type DownstreamResponse, type ExchangeEnd } from './exchange.js';
import type { RawHeaders } from '../upstream/types.js';

export interface Http1Limits {
  /** Request line + header block, bytes (Envoy max_request_headers_kb: 60 KiB). */
  readonly maxRequestHeadersBytes: number;
  /** Header lines per request (Envoy max_headers_count: 100). */
  readonly maxRequestHeaders: number;
  /** From a request's first byte to its complete header block (0: none). */
  readonly requestHeadersTimeoutMs: number;
  /** From the request head to its last body byte (0: none, Envoy's default). */
  readonly requestTimeoutMs: number;
  /** A connection with no request in flight is closed after this (Envoy's HTTP idle_timeout, 1 h; 0: never). */
  readonly idleTimeoutMs: number;
}

const DEFAULT_HTTP1_LIMITS: Http1Limits = {
  maxRequestHeadersBytes: 60 * 1024,
  maxRequestHeaders: 100,
  // Envoy leaves it off in a waypoint; a Node server must bound slow header senders (Node's and Envoy's edge value).
  requestHeadersTimeoutMs: 60_000,
  requestTimeoutMs: 0,
  idleTimeoutMs: 60 * 60 * 1000,
};

/** What the HTTP server hands to the pipeline. */
export interface ExchangeHandler {
  /** A well-formed request. */
  handle(request: DownstreamRequest, response: DownstreamResponse): void;
  /** A request refused before routing: answer `error` through the error table and record it. */
  refuse(request: DownstreamRequest, response: DownstreamResponse, error: L7Error): void;
  /** A WebSocket upgrade (Upgrade: websocket): the raw tunnel after the request head, and the bytes read past it. */
  upgrade(request: DownstreamRequest, socket: Duplex, head: Buffer): void;
}

interface Connection {
  readonly tunnel: Duplex;
  readonly handler: ExchangeHandler;
  readonly log: Logger;
  active: number;
  idle: Timer | undefined;
  headers: Timer | undefined;
  upgraded: boolean;
  closed: boolean;
  /** The response of the request being received (a body parse error fails it). */
  current: Http1Response | undefined;
  readonly onData: () => void;
}

const STRICT_TARGET_PREFIX = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

/** Replaces a stream's string writes by Buffer writes (see the module comment). Idempotent. */
export function bufferOnlyWrites(stream: Duplex): void {
  const s = stream as Duplex & {
    __bufferOnly?: true;
    _write: (chunk: unknown, encoding: BufferEncoding, cb: (err?: Error | null) => void) => void;
    _writev?: (chunks: Array<{ chunk: unknown; encoding: BufferEncoding }>, cb: (err?: Error | null) => void) => void;
  };
  if (s.__bufferOnly === true) return;
  s.__bufferOnly = true;
  const write = s._write;
  const writev = s._writev;
  s._write = function (chunk, encoding, cb) {
    write.call(this, typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk, 'buffer' as BufferEncoding, cb);
  };
  if (writev !== undefined) {
    s._writev = function (chunks, cb) {
      const asBuffers = chunks.map((c) => (typeof c.chunk === 'string' ? { chunk: Buffer.from(c.chunk, c.encoding), encoding: 'buffer' as BufferEncoding } : c)) as typeof chunks & { allBuffers?: boolean };
      asBuffers.allBuffers = true;
      writev.call(this, asBuffers, cb);
    };
  }
}

export interface Http1ServerOptions {
  readonly clock: Clock;
  readonly log: Logger;
  readonly limits?: Partial<Http1Limits>;
}

/** The server for every HTTP/1.1 tunnel of one waypoint listener. */
export class Http1Server {
  readonly limits: Http1Limits;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #server: http.Server;
  readonly #connections = new Map<Duplex, Connection>();
  #draining = false;

  constructor(options: Http1ServerOptions) {
    this.limits = { ...DEFAULT_HTTP1_LIMITS, ...options.limits };
    this.#clock = options.clock;
    this.#log = options.log;
    this.#server = http.createServer({
      maxHeaderSize: this.limits.maxRequestHeadersBytes,
      requireHostHeader: false, // answered by us, through the error table
      joinDuplicateHeaders: false,
      insecureHTTPParser: false,
      keepAlive: false,
      // Our timers run on the Clock; node's would call setTimeout on the tunnel stream.
      requestTimeout: 0,
      headersTimeout: 0,
      keepAliveTimeout: 0,
      connectionsCheckingInterval: 2 ** 31 - 1,
    });
    this.#server.timeout = 0;
    this.#server.maxHeadersCount = this.limits.maxRequestHeaders + 1;
    this.#server.on('request', (req: IncomingMessage, res: ServerResponse) => this.#onRequest(req, res));
    this.#server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => this.#onClientError(err, socket));
    this.#server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.#onUpgrade(req, socket, head));
    this.#server.on('connect', (req: IncomingMessage, socket: Duplex) => this.#onConnectMethod(req, socket));
  }

  /** Open HTTP/1.1 tunnels. */
  get connectionCount(): number {
    return this.#connections.size;
  }

  /** Serves one tunnel (its bytes start with an HTTP/1.x request, or are refused as malformed). */
  serve(tunnel: Duplex, handler: ExchangeHandler, log: Logger): void {
    bufferOnlyWrites(tunnel);
    const conn: Connection = {
      tunnel, handler, log,
      active: 0, idle: undefined, headers: undefined, upgraded: false, closed: false, current: undefined,
      onData: () => this.#armHeadersTimer(conn),
    };
    this.#connections.set(tunnel, conn);
    tunnel.on('data', conn.onData);
    tunnel.once('close', () => this.#onClosed(conn));
    this.#armIdle(conn);
    this.#server.emit('connection', tunnel);
  }

  /** Stops keeping connections alive: idle ones close now, busy ones after their response (Connection: close). */
  drain(): void {
    this.#draining = true;
    for (const conn of this.#connections.values()) if (conn.active === 0 && !conn.upgraded) this.#closeIdle(conn);
  }

  /** Destroys every tunnel. */
  close(): void {
    this.#draining = true;
    for (const conn of [...this.#connections.values()]) conn.tunnel.destroy();
  }

  // ---------------------------------------------------------------------------

  #armIdle(conn: Connection): void {
    conn.idle?.cancel();
    conn.idle = undefined;
    if (this.limits.idleTimeoutMs <= 0 || conn.closed) return;
    conn.idle = this.#clock.setTimer(this.limits.idleTimeoutMs, () => {
      conn.idle = undefined;
      if (conn.active === 0 && !conn.upgraded) {
        conn.log.debug({ idleTimeoutMs: this.limits.idleTimeoutMs }, 'closing an idle HTTP/1.1 connection');
        this.#closeIdle(conn);
      }
    });
  }

  /** The first byte of a request (no request in flight on this connection) starts the headers timer. */
  #armHeadersTimer(conn: Connection): void {
    if (conn.active > 0 || conn.headers !== undefined || this.limits.requestHeadersTimeoutMs <= 0) return;
    conn.idle?.cancel();
    conn.idle = undefined;
    conn.headers = this.#clock.setTimer(this.limits.requestHeadersTimeoutMs, () => {
      conn.headers = undefined;
      if (conn.active > 0 || conn.closed) return;
      this.#refuseRaw(conn, 'REQUEST_HEADER_TIMEOUT', `request headers not complete within ${this.limits.requestHeadersTimeoutMs} ms`);
    });
  }

  #closeIdle(conn: Connection): void {
    if (conn.closed) return;
    conn.tunnel.end();
  }

  #onClosed(conn: Connection): void {
    conn.closed = true;
    conn.idle?.cancel();
    conn.headers?.cancel();
    conn.idle = undefined;
    conn.headers = undefined;
    conn.tunnel.off('data', conn.onData);
    this.#connections.delete(conn.tunnel);
  }

  #startRequest(conn: Connection): void {
    conn.active++;
    conn.headers?.cancel();
    conn.headers = undefined;
    conn.idle?.cancel();
    conn.idle = undefined;
  }

  #endRequest(conn: Connection): void {
    conn.active = Math.max(0, conn.active - 1);
    if (conn.active > 0 || conn.closed || conn.upgraded) return;
    if (this.#draining) this.#closeIdle(conn);
    else this.#armIdle(conn);
  }

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const conn = this.#connections.get(req.socket as Duplex);
    if (conn === undefined) {
      res.destroy();
      return;
    }
    this.#startRequest(conn);
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      this.#endRequest(conn);
    };
    res.once('close', end);
    const response = new Http1Response(res, req, () => this.#draining);
    const parsed = parseRequest(req, this.limits, false);
    if (parsed instanceof L7Error) {
      response.closeAfter();
      conn.handler.refuse(partialRequest(req), response, parsed);
      return;
    }
    const request = parsed;
    response.body = request.body;
    if (this.limits.requestTimeoutMs > 0 && request.body !== undefined) {
      const timer = this.#clock.setTimer(this.limits.requestTimeoutMs, () => {
        if (req.complete) return;
        conn.log.debug({ requestTimeoutMs: this.limits.requestTimeoutMs }, 'request not received in time');
        response.failRequest(new L7Error('REQUEST_TIMEOUT', `the request was not received within ${this.limits.requestTimeoutMs} ms`));
      });
      const cancel = () => timer.cancel();
      req.once('end', cancel);
      res.once('close', cancel);
    }
    // Until the request is received, a body parse error fails it (aborted upstream, 400 if no response started).
    conn.current = response;
    const release = () => {
      if (conn.current === response) conn.current = undefined;
    };
    req.once('end', release);
    res.once('close', release);
    conn.handler.handle(request, response);
  }

  #onClientError(err: Error & { code?: string }, socket: Duplex): void {
    const conn = this.#connections.get(socket);
    const reason = (err as { reason?: string }).reason ?? err.message;
    const code = clientErrorCode(err.code, reason);
    if (conn === undefined || code === undefined) {
      socket.destroy();
      return;
    }
    const active = conn.current;
    const error = new L7Error(code, `malformed HTTP/1.1 request: ${err.code ?? ''} ${reason}`);
    if (active !== undefined) {
      active.failRequest(error);
      return;
    }
    this.#refuseRaw(conn, code, error.message);
  }

  /** Answers on a connection that has no response object (parse errors, header timeout), then closes it. */
  #refuseRaw(conn: Connection, code: L7ErrorCode, message: string): void {
    if (conn.closed || !conn.tunnel.writable) {
      conn.tunnel.destroy();
      return;
    }
    this.#startRequest(conn);
    const response = new RawHttp1Response(conn.tunnel, this.#clock);
    void response.done.then(() => this.#endRequest(conn));
    conn.handler.refuse(emptyRequest(), response, new L7Error(code, message));
  }

  #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const conn = this.#connections.get(socket);
    if (conn === undefined) {
      socket.destroy();
      return;
    }
    conn.upgraded = true;
    conn.idle?.cancel();
    conn.headers?.cancel();
    conn.tunnel.off('data', conn.onData);
    const parsed = parseRequest(req, this.limits, true);
    const response = new RawHttp1Response(socket, this.#clock);
    if (parsed instanceof L7Error) {
      conn.handler.refuse(partialRequest(req), response, parsed);
      return;
    }
    const upgrade = headerValue(req.rawHeaders, 'upgrade')?.toLowerCase();
    if (upgrade === 'h2c' && parsed.body === undefined && !hasBody(req)) {
      // Envoy ignores an h2c upgrade and answers over HTTP/1.1 (curl --http2 on http://); we then close.
      this.#serveIgnoringUpgrade(conn, req, socket, parsed);
      return;
    }
    if (upgrade !== 'websocket') {
      conn.handler.refuse(parsed, response, new L7Error('UPGRADE_FAILED', `upgrade to "${upgrade ?? ''}" is not supported (only websocket)`));
      return;
    }
    conn.handler.upgrade(parsed, socket, head);
  }

  /** An Upgrade the waypoint does not take (h2c): the request is served as plain HTTP/1.1 on the raw tunnel, then it closes. */
  #serveIgnoringUpgrade(conn: Connection, req: IncomingMessage, socket: Duplex, request: DownstreamRequest): void {
    const res = new http.ServerResponse(req);
    res.assignSocket(socket as Parameters<ServerResponse['assignSocket']>[0]);
    res.shouldKeepAlive = false;
    res.once('finish', () => {
      res.detachSocket(socket as Parameters<ServerResponse['detachSocket']>[0]);
      socket.end();
    });
    const response = new Http1Response(res, req, () => true);
    response.closeAfter();
    conn.handler.handle(request, response);
  }

  #onConnectMethod(req: IncomingMessage, socket: Duplex): void {
    const conn = this.#connections.get(socket);
    if (conn === undefined) {
      socket.destroy();
      return;
    }
    conn.upgraded = true;
    conn.tunnel.off('data', conn.onData);
    conn.handler.refuse(partialRequest(req), new RawHttp1Response(socket, this.#clock), new L7Error('ROUTE_NOT_FOUND', 'CONNECT is not routed inside a waypoint tunnel'));
  }
}

// ---------------------------------------------------------------------------
// Requests

/** llhttp / node error codes → our codes; undefined: the connection is just gone. */
function clientErrorCode(code: string | undefined, reason: string): L7ErrorCode | undefined {
  switch (code) {
    case 'HPE_INVALID_TRANSFER_ENCODING':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      // llhttp says which: both headers at once, or a coding list it cannot frame.
      if (reason.includes('Content-Length')) return /Duplicate/i.test(reason) ? 'DOWNSTREAM_PROTOCOL_ERROR' : 'CONTENT_LENGTH_AND_CHUNKED';
      return 'INVALID_TRANSFER_ENCODING';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ERR_STREAM_DESTROYED':
      return undefined;
    case 'HPE_HEADER_OVERFLOW':
      return 'HEADERS_TOO_LARGE';
    case 'HPE_INVALID_URL':
      return 'INVALID_URL';
    default:
      return 'DOWNSTREAM_PROTOCOL_ERROR';
  }
}

/** Content-Length > 0 or any Transfer-Encoding. */
function hasBody(req: IncomingMessage): boolean {
  const cl = headerValue(req.rawHeaders, 'content-length');
  return headerValue(req.rawHeaders, 'transfer-encoding') !== undefined || (cl !== undefined && Number(cl) > 0);
}

function headerValue(raw: readonly string[], lowerName: string): string | undefined {
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === lowerName) return raw[i + 1];
  return undefined;
}

/**
 * The request as the pipeline sees it, or the codec error that refuses it.
 * `upgrade`: the upgrade path (its body, if any, is part of the relayed bytes).
 */
function parseRequest(req: IncomingMessage, limits: Http1Limits, upgrade: boolean): DownstreamRequest | L7Error {
  if (req.httpVersionMajor !== 1 || req.httpVersionMinor !== 1) {
    return new L7Error('LOW_VERSION', `HTTP/${req.httpVersion} is not accepted (HTTP/1.1 only, as Envoy's accept_http_10 default)`);
  }
  const raw = req.rawHeaders;
  if (raw.length / 2 > limits.maxRequestHeaders) {
    return new L7Error('TOO_MANY_HEADERS', `more than ${limits.maxRequestHeaders} request headers`);
  }
  let host: string | undefined;
  let hosts = 0;
  let transferEncoding: string | undefined;
  let contentLength = 0;
  const headers: Array<readonly [string, string]> = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.length === 4 || name.length === 14 || name.length === 17 ? name.toLowerCase() : '';
    if (lower === 'host') {
      hosts++;
      host = value;
      continue;
    }
    if (lower === 'transfer-encoding') transferEncoding = transferEncoding === undefined ? value : `${transferEncoding}, ${value}`;
    else if (lower === 'content-length') contentLength = Number(value);
    headers.push([name, value]);
  }
  if (hosts > 1) return new L7Error('MISSING_HOST', 'more than one Host header (RFC 9112 3.2)');
  // Envoy frames only `chunked`: any other coding (or a list) is refused, never guessed at.
  const chunked = transferEncoding !== undefined;
  if (transferEncoding !== undefined && transferEncoding.trim().toLowerCase() !== 'chunked') {
    return new L7Error('INVALID_TRANSFER_ENCODING', `Transfer-Encoding "${transferEncoding.slice(0, 100)}" is not supported (only chunked)`);
  }
  let target = req.url ?? '';
  let authority = host;
  if (target.startsWith('/')) {
    // origin-form
  } else if (target === '*') {
    if (req.method !== 'OPTIONS') return new L7Error('INVALID_URL', `the asterisk-form target is only allowed with OPTIONS, not ${req.method ?? ''}`);
  } else if (STRICT_TARGET_PREFIX.test(target)) {
    let url: URL;
    try {
      url = new URL(target);
    } catch {
      return new L7Error('INVALID_URL', `the absolute-form target "${target.slice(0, 200)}" is not a valid URL`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') return new L7Error('INVALID_SCHEME', `scheme "${url.protocol.slice(0, -1)}" in the request target (http or https expected)`);
    if (url.username !== '' || url.password !== '') return new L7Error('INVALID_URL', 'userinfo in the request target');
    authority = url.host;
    target = `${url.pathname}${url.search}`;
  } else {
    return new L7Error('INVALID_URL', `the request target "${target.slice(0, 200)}" is neither origin-form, absolute-form nor "*"`);
  }
  if (authority === undefined || authority === '') return new L7Error('MISSING_HOST', 'the request has no Host header');
  const method = req.method ?? '';
  const hasBody = !upgrade && (chunked || contentLength > 0);
  const meter = hasBody ? new BodyMeter() : undefined;
  if (meter !== undefined) req.pipe(meter);
  else if (!upgrade) req.resume();
  return {
    httpVersion: 'HTTP/1.1',
    method,
    target,
    authority,
    headers,
    headerBytes: 7 + method.length + 5 + target.length + 10 + authority.length + headerBytesOf(headers),
    body: meter,
  };
}

/** What is known of a refused request, for its record. */
function partialRequest(req: IncomingMessage): DownstreamRequest {
  const authority = headerValue(req.rawHeaders, 'host');
  return {
    httpVersion: 'HTTP/1.1',
    method: req.method ?? '',
    target: req.url ?? '',
    authority,
    headers: [],
    headerBytes: 0,
    body: undefined,
  };
}

function emptyRequest(): DownstreamRequest {
  return { httpVersion: 'HTTP/1.1', method: '', target: '', authority: undefined, headers: [], headerBytes: 0, body: undefined };
}

// ---------------------------------------------------------------------------
// Responses

function lowerFlat(headers: RawHeaders): string[] {
  const flat: string[] = [];
  for (const [name, value] of headers) flat.push(name.toLowerCase(), value);
  return flat;
}

/** A node:http ServerResponse as a DownstreamResponse. */
class Http1Response implements DownstreamResponse {
  readonly #res: ServerResponse;
  readonly #req: IncomingMessage;
  readonly #gone = new AbortController();
  readonly done: Promise<ExchangeEnd>;
  #headBytes = 0;
  #bodyBytes = 0;
  #trailerBytes = 0;
  #reset = false;
  #closeAfter = false;
  readonly #draining: () => boolean;
  readonly #failure = new AbortController();
  /** The request body's meter (destroyed with the error when the request fails). */
  body: Readable | undefined;

  constructor(res: ServerResponse, req: IncomingMessage, draining: () => boolean) {
    this.#res = res;
    this.#req = req;
    this.#draining = draining;
    this.done = new Promise((resolve) => {
      res.once('finish', () => resolve('complete'));
      res.once('close', () => {
        if (res.writableFinished) return;
        if (!this.#reset) this.#gone.abort(new Error('the client went away'));
        resolve(this.#reset ? 'reset' : 'client-gone');
      });
    });
  }

  get headersSent(): boolean {
    return this.#res.headersSent;
  }

  get clientGone(): AbortSignal {
    return this.#gone.signal;
  }

  get requestFailure(): AbortSignal {
    return this.#failure.signal;
  }

  /** The request failed after it was handed over: its body fails with `err`, the pipeline answers or resets. */
  failRequest(err: L7Error): void {
    if (this.#failure.signal.aborted) return;
    this.#closeAfter = true;
    this.#req.unpipe();
    if (this.body !== undefined && !this.body.destroyed) this.body.destroy(err);
    this.#failure.abort(err);
  }

  respond(status: number, headers: RawHeaders, endStream: boolean): void {
    if (this.#reset || this.#res.headersSent || this.#res.destroyed) return;
    if (this.#closeAfter || this.#draining()) this.#res.shouldKeepAlive = false;
    this.#headBytes = 7 + 3 + headerBytesOf(headers);
    this.#res.writeHead(status, lowerFlat(headers));
    if (endStream) this.#res.end();
  }

  write(chunk: Buffer): boolean {
    if (this.#reset || this.#res.destroyed) return true;
    this.#bodyBytes += chunk.length;
    return this.#res.write(chunk);
  }

  drain(): Promise<void> {
    if (this.#res.destroyed || !this.#res.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#res.off('drain', done);
        this.#res.off('close', done);
        resolve();
      };
      this.#res.once('drain', done);
      this.#res.once('close', done);
    });
  }

  end(trailers: RawHeaders): void {
    if (this.#reset || this.#res.destroyed || this.#res.writableEnded) return;
    if (trailers.length > 0 && this.#res.chunkedEncoding) {
      this.#res.addTrailers(trailers.map(([n, v]) => [n.toLowerCase(), v] as [string, string]));
      this.#trailerBytes += headerBytesOf(trailers);
    }
    this.#res.end();
  }

  reset(): void {
    if (this.#reset) return;
    this.#reset = true;
    this.#res.destroy();
    this.#req.socket?.destroy();
  }

  closeAfter(): void {
    this.#closeAfter = true;
  }

  bytesSent(): number {
    return this.#headBytes + this.#bodyBytes + this.#trailerBytes;
  }

  bodyBytesSent(): number {
    return this.#bodyBytes;
  }
}

/**
 * A response written straight onto the tunnel (no node:http response object:
 * parse errors, header timeouts, refused upgrades). Always closes the
 * connection after the answer; `respond` with a 101 keeps the tunnel for the
 * upgraded protocol (the caller relays it).
 */
export class RawHttp1Response implements DownstreamResponse {
  readonly #socket: Duplex;
  readonly #clock: Clock;
  readonly #gone = new AbortController();
  readonly requestFailure: AbortSignal = new AbortController().signal;
  readonly done: Promise<ExchangeEnd>;
  #resolve!: (end: ExchangeEnd) => void;
  #headersSent = false;
  #headBytes = 0;
  #bytes = 0;
  #finished = false;

  constructor(socket: Duplex, clock: Clock) {
    this.#socket = socket;
    this.#clock = clock;
    this.done = new Promise((resolve) => {
      this.#resolve = resolve;
    });
    socket.once('close', () => {
      if (this.#finished) return;
      this.#gone.abort(new Error('the client went away'));
      this.#resolve('client-gone');
    });
  }

  get headersSent(): boolean {
    return this.#headersSent;
  }

  get clientGone(): AbortSignal {
    return this.#gone.signal;
  }

  respond(status: number, headers: RawHeaders, endStream: boolean): void {
    if (this.#headersSent || this.#socket.destroyed) return;
    this.#headersSent = true;
    const upgrading = status === 101;
    let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`;
    let hasDate = false;
    for (const [name, value] of headers) {
      const lower = name.toLowerCase();
      if (lower === 'date') hasDate = true;
      if (!upgrading && lower === 'connection') continue;
      head += `${lower}: ${value}\r\n`;
    }
    if (!hasDate) head += `date: ${new Date(this.#clock.now()).toUTCString()}\r\n`;
    if (!upgrading) head += 'connection: close\r\n';
    head += '\r\n';
    this.#headBytes += 10 + headerBytesOf(headers);
    this.#socket.write(Buffer.from(head, 'latin1'));
    if (endStream) this.end([]);
  }

  write(chunk: Buffer): boolean {
    if (this.#socket.destroyed) return true;
    this.#bytes += chunk.length;
    return this.#socket.write(chunk);
  }

  drain(): Promise<void> {
    if (this.#socket.destroyed || !this.#socket.writableNeedDrain) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#socket.off('drain', done);
        this.#socket.off('close', done);
        resolve();
      };
      this.#socket.once('drain', done);
      this.#socket.once('close', done);
    });
  }

  end(_trailers: RawHeaders = []): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#socket.destroyed) {
      this.#resolve('client-gone');
      return;
    }
    this.#socket.end(() => this.#resolve('complete'));
  }

  reset(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#socket.destroy();
    this.#resolve('reset');
  }

  closeAfter(): void {}

  bytesSent(): number {
    return this.#headBytes + this.#bytes;
  }

  bodyBytesSent(): number {
    return this.#bytes;
  }

  /** After a 101: the tunnel now carries the upgraded protocol; this response is over. */
  upgraded(): Duplex {
    this.#finished = true;
    this.#resolve('complete');
    return this.#socket;
  }
}
