/**
 * The HBONE server's limits: ztunnel's HTTP/2 settings (ztunnel.md 3.2) plus
 * the protections ztunnel lacks and a Node server needs (reliability.md 1.3,
 * 2.1, 3.4): handshake and first-request timeouts, a global connection cap,
 * rapid-reset and control-frame flood budgets, and Node's http2 session
 * options set deliberately instead of left at their defaults (unlimited
 * concurrent streams, 64 KiB windows). Pure: no I/O, no timers.
 */
import type { ServerSessionOptions } from 'node:http2';
import { fail, ok, type Rejection, type Result } from '@ambient/control';

/** What a limit protects against; the label of the limit counter. */
export type HboneLimitKind =
  | 'connection-cap' //          global connection cap reached, new connection refused
  | 'tls-handshake-timeout' //   TLS not done within tlsHandshakeTimeoutMs (slowloris)
  | 'first-request-timeout' //   no HTTP/2 preface + first HEADERS within firstRequestTimeoutMs
  | 'keepalive-timeout' //       PING not answered within pingTimeoutMs
  | 'rapid-reset' //             client resets streams faster than the rapid-reset budget (CVE-2023-44487)
  | 'control-frame-flood' //     PING/SETTINGS frames faster than the control-frame budget (CVE-2019-9512/9515)
  | 'invalid-frames' //          Node's maxSessionInvalidFrames (incl. empty DATA floods, CVE-2019-9518)
  | 'continuation-flood' //      HEADERS followed by too many CONTINUATION frames (CVE-2024-27983 class)
  | 'outbound-flood' //          nghttp2 refused to queue more outbound frames (the peer does not read)
  | 'protocol-error'; //         any other HTTP/2 session error caused by the peer (incl. Node's
  //                             maxSessionRejectedStreams and streams beyond the advertised limit)

export interface TokenBudget {
  /** Events allowed at once. */
  readonly burst: number;
  /** Refill rate per second. */
  readonly perSecond: number;
}

export interface HboneServerLimits {
  readonly tlsHandshakeTimeoutMs: number;
  /** From the end of the TLS handshake to the first CONNECT HEADERS. */
  readonly firstRequestTimeoutMs: number;
  /** Open connections (any phase) across the server. */
  readonly maxConnections: number;
  readonly maxConcurrentStreams: number;
  /** HTTP2_STREAM_WINDOW_SIZE. */
  readonly streamWindowBytes: number;
  /** HTTP2_CONNECTION_WINDOW_SIZE. */
  readonly connectionWindowBytes: number;
  /** HTTP2_FRAME_SIZE. */
  readonly maxFrameBytes: number;
  /** Decoded header list, RFC 9113 accounting (name + value + 32 per field). */
  readonly maxHeaderListBytes: number;
  readonly maxHeaderListPairs: number;
  /** Node maxSessionMemory, in MiB. */
  readonly maxSessionMemoryMb: number;
  readonly maxSessionInvalidFrames: number;
  readonly maxSessionRejectedStreams: number;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  /** Client resets of streams younger than `prematureResetMs` (or not yet answered). */
  readonly rapidReset: TokenBudget;
  readonly prematureResetMs: number;
  /** PING and SETTINGS frames received from the client. */
  readonly controlFrames: TokenBudget;
}

export const DEFAULT_HBONE_SERVER_LIMITS: HboneServerLimits = {
  tlsHandshakeTimeoutMs: 10_000,
  firstRequestTimeoutMs: 10_000,
  maxConnections: 16_384,
  maxConcurrentStreams: 200, // hyper's default, as ztunnel
  streamWindowBytes: 4 * 1024 * 1024,
  connectionWindowBytes: 16 * 1024 * 1024,
  maxFrameBytes: 1024 * 1024,
  maxHeaderListBytes: 64 * 1024, // ztunnel's server max_header_list_size
  maxHeaderListPairs: 64, // a CONNECT carries ~7 fields; Node's default is 128
  maxSessionMemoryMb: 64,
  maxSessionInvalidFrames: 100, // Node default 1000
  maxSessionRejectedStreams: 100,
  pingIntervalMs: 10_000,
  pingTimeoutMs: 20_000,
  rapidReset: { burst: 200, perSecond: 100 },
  prematureResetMs: 1_000,
  controlFrames: { burst: 100, perSecond: 20 },
};

const MAX_WINDOW = 2 ** 31 - 1;

/** Merges overrides onto the defaults and validates the result (every problem at once). */
export function resolveHboneServerLimits(overrides: Partial<HboneServerLimits> = {}): Result<HboneServerLimits> {
  const limits: HboneServerLimits = { ...DEFAULT_HBONE_SERVER_LIMITS, ...overrides };
  const errors: Rejection[] = [];
  const positive = (field: keyof HboneServerLimits, max = Number.MAX_SAFE_INTEGER) => {
    const v = limits[field];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) errors.push({ field, reason: `must be an integer from 1 to ${max}, got ${String(v)}` });
  };
  positive('tlsHandshakeTimeoutMs');
  positive('firstRequestTimeoutMs');
  positive('maxConnections');
  positive('maxConcurrentStreams', 2 ** 32 - 1);
  positive('streamWindowBytes', MAX_WINDOW);
  positive('connectionWindowBytes', MAX_WINDOW);
  positive('maxHeaderListBytes', 2 ** 32 - 1);
  positive('maxHeaderListPairs');
  positive('maxSessionMemoryMb');
  positive('maxSessionInvalidFrames');
  positive('maxSessionRejectedStreams');
  positive('pingIntervalMs');
  positive('pingTimeoutMs');
  positive('prematureResetMs');
  if (!Number.isInteger(limits.maxFrameBytes) || limits.maxFrameBytes < 16_384 || limits.maxFrameBytes > 16_777_215) {
    errors.push({ field: 'maxFrameBytes', reason: `must be from 16384 to 16777215 (RFC 9113 6.5.2), got ${limits.maxFrameBytes}` });
  }
  for (const field of ['rapidReset', 'controlFrames'] as const) {
    const b = limits[field];
    if (!(b.burst >= 1) || !(b.perSecond > 0)) errors.push({ field, reason: `burst must be >= 1 and perSecond > 0, got ${JSON.stringify(b)}` });
  }
  return errors.length > 0 ? fail(...errors) : ok(limits);
}

/** Node's session options, with one Node 20 supports but @types/node does not declare. */
export type HboneSessionOptions = ServerSessionOptions & { readonly maxOutstandingSettings: number };

/** Node http2 session options for the HBONE server. */
export function http2SessionOptions(limits: HboneServerLimits): HboneSessionOptions {
  return {
    settings: {
      maxConcurrentStreams: limits.maxConcurrentStreams,
      initialWindowSize: limits.streamWindowBytes,
      maxFrameSize: limits.maxFrameBytes,
      maxHeaderListSize: limits.maxHeaderListBytes,
      enablePush: false,
      enableConnectProtocol: false,
      headerTableSize: 4096,
    },
    maxHeaderListPairs: limits.maxHeaderListPairs,
    maxSessionMemory: limits.maxSessionMemoryMb,
    maxSessionInvalidFrames: limits.maxSessionInvalidFrames,
    maxSessionRejectedStreams: limits.maxSessionRejectedStreams,
    // We send one keepalive PING at a time and SETTINGS only once.
    maxOutstandingPings: 2,
    maxOutstandingSettings: 2,
    // Entries per SETTINGS frame (RFC 9113 defines 6; Node's default is 32).
    maxSettings: 16,
    // Responses to CONNECT carry :status and baggage only.
    maxSendHeaderBlockLength: 16 * 1024,
    // The client's limit on streams we may open: we open none (no push).
    peerMaxConcurrentStreams: 100,
    unknownProtocolTimeout: limits.tlsHandshakeTimeoutMs,
  };
}

/**
 * A token bucket on an injected monotonic clock: `take()` spends one token and
 * says whether one was available; tokens refill continuously up to `burst`.
 */
export class TokenBucket {
  #tokens: number;
  #last: number;

  constructor(
    private readonly budget: TokenBudget,
    private readonly now: () => number,
  ) {
    this.#tokens = budget.burst;
    this.#last = now();
  }

  take(): boolean {
    const t = this.now();
    this.#tokens = Math.min(this.budget.burst, this.#tokens + ((t - this.#last) / 1000) * this.budget.perSecond);
    this.#last = t;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
