/**
 * The waypoint's L7 errors: one closed set of codes and the ONE table that
 * says, for each, what the client sees (HTTP status and Envoy's local-reply
 * body), what telemetry records (Envoy response flag and
 * %RESPONSE_CODE_DETAILS%) and how loudly we log it. Every local reply the
 * waypoint sends — no route, no upstream, timeouts, malformed HTTP, header
 * limits — is built from this table (`localReplyOf`); nothing else picks a
 * status or a body for an error.
 *
 * The values follow Envoy's router and HTTP connection manager as Istio's
 * waypoint runs them (Envoy `stream_info.h` ResponseCodeDetailValues,
 * `router.cc` onUpstreamReset / onUpstreamTimeout, `http1/codec_impl.cc`
 * sendProtocolError, `http/utility.cc` resetReasonToString):
 * - upstream resets before the response: 503 (502 for a protocol error) with
 *   `upstream connect error or disconnect/reset before headers. [retried and
 *   the latest ]reset reason: <reason>[, transport failure reason: <why>]` and
 *   details `upstream_reset_before_response_started{<reason_with_underscores>[|<why>]}`;
 *   after the response started there is no reply (the stream is reset) and
 *   the details say `upstream_reset_after_response_started{…}`;
 * - codec errors: the status's reason phrase as the body ("Bad Request",
 *   "Request Header Fields Too Large", "Upgrade Required", "Not Implemented"
 *   for a transfer coding other than chunked), flag DPE;
 * - 404 NR (`route_not_found`) and 403 `upgrade_failed` have empty bodies.
 *
 * Invariant: ERROR_TABLE has exactly one entry per L7ErrorCode (the Record type
 * enforces it), and `localReplyOf` is total.
 */
import type { EnvoyResponseFlag } from '../telemetry/types.js';

export type L7ErrorCode =
  // Routing (router filter).
  | 'ROUTE_NOT_FOUND' //                   routes attached, none matched
  | 'CLUSTER_NOT_FOUND' //                 the chosen backend is not a known service (500: Istio sets
  //                                        cluster_not_found_response_code INTERNAL_SERVER_ERROR for Gateway API routes)
  | 'NO_HEALTHY_UPSTREAM' //               the backend service has no usable endpoint
  | 'DIRECT_RESPONSE' //                   a route answers itself (all-zero weights, invalid backends)
  // Upstream resets before the response started, one per Envoy reset reason.
  | 'UPSTREAM_LOCAL_CONNECTION_FAILURE'
  | 'UPSTREAM_REMOTE_CONNECTION_FAILURE' // connect refused / HBONE CONNECT refused
  | 'UPSTREAM_CONNECTION_TIMEOUT' //       connect timeout (meshConfig.connectTimeout)
  | 'UPSTREAM_CONNECTION_TERMINATION' //   the connection closed under the request
  | 'UPSTREAM_LOCAL_RESET'
  | 'UPSTREAM_LOCAL_REFUSED_STREAM'
  | 'UPSTREAM_OVERFLOW' //                 circuit breaker / pool overflow
  | 'UPSTREAM_REMOTE_RESET' //             RST_STREAM from the backend
  | 'UPSTREAM_REMOTE_REFUSED_STREAM' //    RST_STREAM REFUSED_STREAM
  | 'UPSTREAM_CONNECT_ERROR' //            the upstream CONNECT failed
  | 'UPSTREAM_PROTOCOL_ERROR' //           the backend spoke broken HTTP (502)
  // Timeouts.
  | 'UPSTREAM_REQUEST_TIMEOUT' //          route timeout (covers all attempts)
  | 'UPSTREAM_PER_TRY_TIMEOUT' //          the last attempt's per-try timeout
  // The downstream request (HTTP connection manager and codec).
  | 'DOWNSTREAM_PROTOCOL_ERROR' //         malformed HTTP/1.1 (bad chunk, bare LF, obs-fold, CL+TE, bad tokens, …)
  | 'INVALID_URL' //                       request target neither origin-form, absolute-form nor `OPTIONS *`
  | 'INVALID_SCHEME' //                    absolute-form with a scheme other than http/https
  | 'MISSING_HOST' //                      no Host / :authority, or more than one Host
  | 'INVALID_TRANSFER_ENCODING' //         a Transfer-Encoding other than exactly `chunked` (501)
  | 'CONTENT_LENGTH_AND_CHUNKED' //        Content-Length and Transfer-Encoding together (smuggling)
  | 'CONNECTION_HEADER_REJECTED' //        Connection nominates a header that may not be hop-by-hop
  | 'HEADERS_TOO_LARGE' //                 request line + headers above the size limit (431)
  | 'TOO_MANY_HEADERS' //                  more header lines than the count limit (431)
  | 'LOW_VERSION' //                       HTTP/1.0 or 0.9 (Envoy's default accept_http_10: false → 426)
  | 'PATH_NORMALIZATION_FAILED' //         the path cannot be normalized (RFC 3986)
  | 'UPGRADE_FAILED' //                    an Upgrade other than websocket
  | 'REQUEST_HEADER_TIMEOUT' //            headers not complete within the headers timeout
  | 'REQUEST_TIMEOUT' //                   the whole request not received within the request timeout
  | 'STREAM_IDLE_TIMEOUT'
  | 'DOWNSTREAM_REMOTE_DISCONNECT' //      the client went away before the response completed (no reply)
  | 'DOWNSTREAM_REMOTE_RESET' //           the client reset its HTTP/2 stream (no reply)
  | 'INTERNAL'; //                         a bug on our side; never a silent hang

type LogLevel = 'debug' | 'info' | 'warn' | 'error';

interface ErrorRow {
  /** The local reply's status; 0 when nothing is answered (the client is gone). */
  readonly status: number;
  readonly flag: EnvoyResponseFlag | undefined;
  /** %RESPONSE_CODE_DETAILS% (for upstream resets: the reset reason, formatted by `details`). */
  readonly details: string;
  /** Envoy's reset reason (resetReasonToString) for upstream resets. */
  readonly resetReason?: string;
  /** The local reply's body ('' for none). */
  readonly body: string;
  readonly logLevel: LogLevel;
}

const UPSTREAM_RESET_BODY = 'upstream connect error or disconnect/reset before headers. ';

function reset(reason: string, flag: EnvoyResponseFlag, status = 503): ErrorRow {
  return { status, flag, details: 'upstream_reset_before_response_started', resetReason: reason, body: '', logLevel: 'debug' };
}

function codec(status: number, details: string, body: string): ErrorRow {
  return { status, flag: 'DPE', details, body, logLevel: 'debug' };
}

const ERROR_TABLE: Readonly<Record<L7ErrorCode, ErrorRow>> = {
  ROUTE_NOT_FOUND: { status: 404, flag: 'NR', details: 'route_not_found', body: '', logLevel: 'debug' },
  CLUSTER_NOT_FOUND: { status: 500, flag: 'NC', details: 'cluster_not_found', body: '', logLevel: 'warn' },
  NO_HEALTHY_UPSTREAM: { status: 503, flag: 'UH', details: 'no_healthy_upstream', body: 'no healthy upstream', logLevel: 'debug' },
  DIRECT_RESPONSE: { status: 500, flag: undefined, details: 'direct_response', body: '', logLevel: 'debug' },

  UPSTREAM_LOCAL_CONNECTION_FAILURE: reset('local connection failure', 'UF'),
  UPSTREAM_REMOTE_CONNECTION_FAILURE: reset('remote connection failure', 'UF'),
  UPSTREAM_CONNECTION_TIMEOUT: reset('connection timeout', 'UF'),
  UPSTREAM_CONNECTION_TERMINATION: reset('connection termination', 'UC'),
  UPSTREAM_LOCAL_RESET: reset('local reset', 'LR'),
  UPSTREAM_LOCAL_REFUSED_STREAM: reset('local refused stream reset', 'LR'),
  UPSTREAM_OVERFLOW: reset('overflow', 'UO'),
  UPSTREAM_REMOTE_RESET: reset('remote reset', 'UR'),
  UPSTREAM_REMOTE_REFUSED_STREAM: reset('remote refused stream reset', 'UR'),
  UPSTREAM_CONNECT_ERROR: reset('remote error with CONNECT request', 'UR'),
  UPSTREAM_PROTOCOL_ERROR: reset('protocol error', 'UPE', 502),

  UPSTREAM_REQUEST_TIMEOUT: { status: 504, flag: 'UT', details: 'response_timeout', body: 'upstream request timeout', logLevel: 'debug' },
  UPSTREAM_PER_TRY_TIMEOUT: { status: 504, flag: 'UT', details: 'upstream_per_try_timeout', body: 'upstream request timeout', logLevel: 'debug' },

  DOWNSTREAM_PROTOCOL_ERROR: codec(400, 'http1.codec_error', 'Bad Request'),
  INVALID_URL: codec(400, 'http1.invalid_url', 'Bad Request'),
  INVALID_SCHEME: codec(400, 'http1.invalid_scheme', 'Bad Request'),
  MISSING_HOST: codec(400, 'missing_host_header', 'Bad Request'),
  INVALID_TRANSFER_ENCODING: codec(501, 'http1.invalid_transfer_encoding', 'Not Implemented'),
  CONTENT_LENGTH_AND_CHUNKED: codec(400, 'http1.content_length_and_chunked_not_allowed', 'Bad Request'),
  CONNECTION_HEADER_REJECTED: codec(400, 'http1.connection_header_rejected', 'Bad Request'),
  HEADERS_TOO_LARGE: codec(431, 'http1.headers_too_large', 'Request Header Fields Too Large'),
  TOO_MANY_HEADERS: codec(431, 'http1.too_many_headers', 'Request Header Fields Too Large'),
  LOW_VERSION: codec(426, 'low_version', 'Upgrade Required'),
  PATH_NORMALIZATION_FAILED: { status: 400, flag: undefined, details: 'path_normalization_failed', body: '', logLevel: 'debug' },
  UPGRADE_FAILED: { status: 403, flag: undefined, details: 'upgrade_failed', body: '', logLevel: 'debug' },
  REQUEST_HEADER_TIMEOUT: { status: 408, flag: undefined, details: 'request_header_timeout', body: 'request header timeout', logLevel: 'debug' },
  REQUEST_TIMEOUT: { status: 408, flag: undefined, details: 'request_overall_timeout', body: 'request timeout', logLevel: 'debug' },
  STREAM_IDLE_TIMEOUT: { status: 408, flag: 'SI', details: 'stream_idle_timeout', body: 'stream timeout', logLevel: 'debug' },
  DOWNSTREAM_REMOTE_DISCONNECT: { status: 0, flag: 'DC', details: 'downstream_remote_disconnect', body: '', logLevel: 'debug' },
  DOWNSTREAM_REMOTE_RESET: { status: 0, flag: 'DR', details: 'http2.remote_reset', body: '', logLevel: 'debug' },
  INTERNAL: { status: 500, flag: undefined, details: 'internal_error', body: '', logLevel: 'error' },
};

export interface L7ErrorOptions {
  readonly cause?: unknown;
  /** UPSTREAM_TRANSPORT_FAILURE_REASON (a TLS or connect error), appended to the body and the details. */
  readonly transportFailureReason?: string | undefined;
  /** The request was retried before this failure ("retried and the latest reset reason: …"). */
  readonly retried?: boolean | undefined;
  /** Retries were exhausted (adds URX to the flags). */
  readonly retryLimitExceeded?: boolean | undefined;
  /** DIRECT_RESPONSE only: the route's status and body. */
  readonly status?: number | undefined;
  readonly body?: string | undefined;
}

/** One L7 failure. `message` is for our logs; what the client sees comes from the table. */
export class L7Error extends Error {
  readonly transportFailureReason: string | undefined;
  readonly retried: boolean;
  readonly retryLimitExceeded: boolean;
  readonly status: number | undefined;
  readonly body: string | undefined;

  constructor(
    readonly code: L7ErrorCode,
    message: string,
    options: L7ErrorOptions = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'L7Error';
    this.transportFailureReason = options.transportFailureReason;
    this.retried = options.retried === true;
    this.retryLimitExceeded = options.retryLimitExceeded === true;
    this.status = options.status;
    this.body = options.body;
  }
}

/** Any thrown value as an L7Error (unknown errors become INTERNAL, keeping the cause). */
export function asL7Error(err: unknown): L7Error {
  if (err instanceof L7Error) return err;
  return new L7Error('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}

/** What the waypoint answers (or records, when nothing can be answered) for an error. */
export interface LocalReply {
  /** 0: no reply (the client is gone, or the response had started). */
  readonly status: number;
  readonly body: string;
  readonly flags: readonly EnvoyResponseFlag[];
  readonly details: string;
  readonly logLevel: LogLevel;
  readonly transportFailureReason: string | undefined;
}

/**
 * The reply for `err`. `responseStarted`: the downstream response headers were
 * already sent, so nothing is answered and an upstream reset is reported as
 * `upstream_reset_after_response_started{…}`.
 */
export function localReplyOf(err: L7Error, responseStarted = false): LocalReply {
  const row = ERROR_TABLE[err.code];
  const why = err.transportFailureReason;
  const flags: EnvoyResponseFlag[] = row.flag === undefined ? [] : [row.flag];
  if (err.retryLimitExceeded) flags.push('URX');
  let details = row.details;
  let body = err.code === 'DIRECT_RESPONSE' ? err.body ?? row.body : row.body;
  let status = err.code === 'DIRECT_RESPONSE' ? err.status ?? row.status : row.status;
  if (row.resetReason !== undefined) {
    const prefix = responseStarted ? 'upstream_reset_after_response_started' : row.details;
    details = `${prefix}{${row.resetReason}${why === undefined || why === '' ? '' : `|${why}`}}`.replace(/\s/g, '_');
    body = `${UPSTREAM_RESET_BODY}${err.retried ? 'retried and the latest ' : ''}reset reason: ${row.resetReason}${why === undefined || why === '' ? '' : `, transport failure reason: ${why}`}`;
  }
  if (responseStarted) {
    status = 0;
    body = '';
  }
  return { status, body, flags, details, logLevel: row.logLevel, transportFailureReason: why };
}
