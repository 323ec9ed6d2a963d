/**
 * Reconnect policy of the delta ADS client, as a pure function: given the
 * current backoff and how the last stream ended, how long to wait before the
 * next attempt, what the backoff becomes, and which termination reason the
 * `istio_xds_connection_terminations_total` metric records.
 *
 * Follows ztunnel `xds/client.rs` (`AdsClient::run_loop`):
 * - the backoff starts at 10 ms and doubles, capped at 15 s; an error doubles it
 *   *before* sleeping, so consecutive failures wait 20 ms, 40 ms, ... 15 s;
 * - a stream that ended with status OK reconnects at once (no wait) and resets it;
 * - "benign" gRPC terminations (Unknown, Cancelled, DeadlineExceeded, Unavailable
 *   caused by the connection closing or a GOAWAY) reset it and wait the initial
 *   10 ms: these are istiod's max-connection-age rotations and rollouts;
 * - the backoff is never reset merely because a stream was established.
 */
import type { Random } from '../platform/clock.js';

export const INITIAL_BACKOFF_MS = 10;
export const MAX_BACKOFF_MS = 15_000;

/** Label values of `istio_xds_connection_terminations_total{reason}` (ztunnel `ConnectionTerminationReason`). */
export type TerminationReason = 'ConnectionError' | 'Error' | 'Reconnect' | 'Complete';

/** How one ADS stream ended. */
export type StreamEnd =
  /** The server closed the stream with status OK. */
  | { readonly kind: 'completed' }
  /**
   * The stream failed before the server's response headers arrived (connect
   * refused, TLS failure, trailers-only rejection such as Unauthenticated).
   * ztunnel's `Error::Connection`.
   */
  | { readonly kind: 'connection-failed'; readonly code: number; readonly details: string }
  /** An established stream ended with a non-OK gRPC status. ztunnel's `Error::GrpcStatus`. */
  | { readonly kind: 'status'; readonly code: number; readonly details: string }
  /**
   * We could not even start the attempt (credentials or call-metadata factory
   * failed). ztunnel reconnects from these without waiting; we back off
   * instead, because such failures (a missing token file) do not fix
   * themselves within microseconds and would otherwise spin.
   */
  | { readonly kind: 'local-error'; readonly message: string };

export interface ReconnectPlan {
  /** How long to wait before the next attempt (0: reconnect now). */
  readonly delayMs: number;
  /** The backoff to carry into the next decision. */
  readonly backoffMs: number;
  readonly reason: TerminationReason;
}

// gRPC status codes used below (google.rpc.Code).
const CANCELLED = 1;
const UNKNOWN = 2;
const DEADLINE_EXCEEDED = 4;
const UNAVAILABLE = 14;

/**
 * Unavailable details that mean "the connection went away", not "istiod
 * refused us". The first two are the Go/tonic strings ztunnel matches; the
 * others are how @grpc/grpc-js reports the same two events (a dropped
 * transport, a stream refused after GOAWAY), so the same istiod restart is
 * classified the same way on this stack.
 */
const BENIGN_UNAVAILABLE_DETAILS: readonly string[] = [
  'transport is closing',
  'received prior goaway',
  'Connection dropped',
  'Stream refused by server',
];

/** True for gRPC terminations after which ztunnel reconnects without growing the backoff. */
export function isBenignStatus(code: number, details: string): boolean {
  if (code === UNKNOWN || code === CANCELLED || code === DEADLINE_EXCEEDED) return true;
  return code === UNAVAILABLE && BENIGN_UNAVAILABLE_DETAILS.some((d) => details.includes(d));
}

function doubled(backoffMs: number): number {
  return Math.min(MAX_BACKOFF_MS, Math.max(INITIAL_BACKOFF_MS, backoffMs) * 2);
}

/** Decides the wait before the next attempt after `end`, given the current backoff. */
export function planReconnect(backoffMs: number, end: StreamEnd): ReconnectPlan {
  switch (end.kind) {
    case 'completed':
      return { delayMs: 0, backoffMs: INITIAL_BACKOFF_MS, reason: 'Complete' };
    case 'connection-failed': {
      const next = doubled(backoffMs);
      return { delayMs: next, backoffMs: next, reason: 'ConnectionError' };
    }
    case 'status': {
      if (isBenignStatus(end.code, end.details)) {
        return { delayMs: INITIAL_BACKOFF_MS, backoffMs: INITIAL_BACKOFF_MS, reason: 'Reconnect' };
      }
      const next = doubled(backoffMs);
      return { delayMs: next, backoffMs: next, reason: 'Error' };
    }
    case 'local-error': {
      const next = doubled(backoffMs);
      return { delayMs: next, backoffMs: next, reason: 'Error' };
    }
  }
}

/**
 * Optionally spreads a delay by ±`fraction` (0 ≤ fraction < 1) using the
 * injected random source. ztunnel uses no jitter, so the client's default
 * fraction is 0 and this returns `delayMs` unchanged; a fleet operator who
 * wants to avoid synchronized reconnects after an istiod restart can turn it on.
 */
export function withJitter(delayMs: number, fraction: number, random: Random): number {
  if (fraction <= 0 || delayMs <= 0) return delayMs;
  const f = Math.min(fraction, 0.99);
  const spread = (random() * 2 - 1) * f;
  return Math.max(0, Math.round(delayMs * (1 + spread)));
}
