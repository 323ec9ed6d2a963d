/**
 * Envoy's retry decision, as a pure state machine the upstream side drives with its Clock
 * (Envoy source/common/router/retry_state_impl.cc; Istio's policies in route/retry/retry.go).
 *
 * After each attempt the upstream side calls decideRetry with the policy, how many retries were
 * already made, what happened, and how much of the route timeout is left:
 * - 'retry': start attempt N+1 after `delayMs` (0 = now);
 * - 'final': the outcome stands — forward the response, or turn the failure into its local reply
 *   (UF 503, UR/UC 503, UT 504) — and when `retryLimitExceeded` also record URX, which Envoy sets
 *   when an outcome it would have retried meets an exhausted retry budget;
 * - 'timeout': the backoff would outlast the route timeout; Envoy keeps waiting and its global
 *   timer answers 504 UT when the timeout expires, i.e. `afterMs` from now.
 *
 * Which outcomes are retriable (wouldRetryFromReset / wouldRetryFromHeaders):
 * - connect-failure: connect failure or connect timeout; refused-stream: an HTTP/2 REFUSED_STREAM
 *   reset; reset: any reset or per-try timeout; reset-before-request: a reset before the request
 *   was sent; 5xx: any 5xx response, any reset, a per-try timeout; gateway-error: 502/503/504,
 *   any reset, a per-try timeout; retriable-4xx: 409; retriable-status-codes: the policy's codes;
 *   cancelled (1), deadline-exceeded (4), resource-exhausted (8), internal (13), unavailable (14):
 *   that gRPC status in the response headers (a trailers-only response), not in trailers;
 * - a response carrying `x-envoy-ratelimited` is never retried unless `envoy-ratelimited` is listed.
 * Unknown retryOn tokens are ignored.
 *
 * Backoff is Envoy's JitteredExponentialBackOffStrategy: base B (25 ms default), max 10·B; retry N
 * waits min(random in [0, (2^N − 1)·B), 10·B), and once (2^N − 1)·B exceeds the max the span stops
 * growing (Envoy stops incrementing its counter). Retries count against the route timeout.
 */
import type { Random } from '@ambient/control';
import type { RetryPolicy } from './types.js';

/** Envoy's default retry back-off base interval. */
export const DEFAULT_BACKOFF_BASE_MS = 25;

/**
 * Istio's default HTTP retry policy (no route retry, no meshConfig.defaultHttpRetryPolicy):
 * 2 retries on connect-failure, refused-stream, unavailable, cancelled and retriable-status-codes,
 * with no status codes since Istio 1.24; 25 ms base back-off; no per-try timeout.
 */
export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  numRetries: 2,
  retryOn: Object.freeze(['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes']),
  retriableStatusCodes: Object.freeze([]),
  backoffBaseMs: DEFAULT_BACKOFF_BASE_MS,
  perTryTimeoutMs: 0,
});

/** No retry policy at all (Istio's `attempts: 0`). */
export const NO_RETRY_POLICY: RetryPolicy = Object.freeze({
  numRetries: 0,
  retryOn: Object.freeze([]),
  retriableStatusCodes: Object.freeze([]),
  backoffBaseMs: DEFAULT_BACKOFF_BASE_MS,
  perTryTimeoutMs: 0,
});

export type AttemptOutcome =
  /** TCP/TLS/HBONE connect failed or timed out (UF). */
  | { readonly kind: 'connect-failure' }
  /** The upstream reset the stream or closed the connection before response headers (UR/UC). */
  | { readonly kind: 'reset'; readonly refusedStream: boolean; readonly requestSent: boolean }
  /** The per-try timeout fired before response headers (UT). */
  | { readonly kind: 'per-try-timeout' }
  /** Response headers arrived. */
  | {
      readonly kind: 'response';
      readonly status: number;
      /** grpc-status from the response *headers* (trailers-only responses); undefined otherwise. */
      readonly grpcStatus: number | undefined;
      /** `x-envoy-ratelimited` was present. */
      readonly rateLimited: boolean;
    };

export type RetryDecision =
  | { readonly kind: 'retry'; readonly delayMs: number }
  | { readonly kind: 'final'; readonly retryLimitExceeded: boolean }
  | { readonly kind: 'timeout'; readonly afterMs: number };

const FINAL: RetryDecision = Object.freeze({ kind: 'final', retryLimitExceeded: false });
const FINAL_URX: RetryDecision = Object.freeze({ kind: 'final', retryLimitExceeded: true });

const GRPC_RETRY_ON: ReadonlyMap<string, number> = new Map([
  ['cancelled', 1],
  ['deadline-exceeded', 4],
  ['resource-exhausted', 8],
  ['internal', 13],
  ['unavailable', 14],
]);

/** Whether Envoy would retry this outcome under the policy (ignoring the retry budget). */
export function wouldRetry(policy: RetryPolicy, outcome: AttemptOutcome): boolean {
  const on = policy.retryOn;
  switch (outcome.kind) {
    case 'connect-failure':
      return on.includes('connect-failure') || on.includes('reset') || on.includes('5xx') || on.includes('gateway-error') || on.includes('reset-before-request');
    case 'reset':
      if (on.includes('reset') || on.includes('5xx') || on.includes('gateway-error')) return true;
      if (!outcome.requestSent && on.includes('reset-before-request')) return true;
      return outcome.refusedStream && on.includes('refused-stream');
    case 'per-try-timeout':
      return on.includes('reset') || on.includes('5xx') || on.includes('gateway-error');
    case 'response': {
      if (outcome.rateLimited) return on.includes('envoy-ratelimited');
      const s = outcome.status;
      if (s >= 500 && s <= 599 && on.includes('5xx')) return true;
      if ((s === 502 || s === 503 || s === 504) && on.includes('gateway-error')) return true;
      if (s === 409 && on.includes('retriable-4xx')) return true;
      if (on.includes('retriable-status-codes') && policy.retriableStatusCodes.includes(s)) return true;
      if (outcome.grpcStatus !== undefined) {
        for (const token of on) {
          if (GRPC_RETRY_ON.get(token) === outcome.grpcStatus) return true;
        }
      }
      return false;
    }
  }
}

/**
 * The back-off before retry number `retryNumber` (1-based), fully jittered:
 * min(floor(random · span), 10·base) with span = (2^k − 1)·base, k = retryNumber until the span first
 * exceeds the max, then frozen there (Envoy's JitteredExponentialBackOffStrategy).
 */
export function backoffDelayMs(baseMs: number, retryNumber: number, random: Random): number {
  const base = baseMs > 0 ? baseMs : DEFAULT_BACKOFF_BASE_MS;
  const max = 10 * base;
  let span = base;
  for (let k = 1; k <= retryNumber; k++) {
    span = (2 ** k - 1) * base;
    if (span > max) break;
  }
  return Math.min(Math.floor(random() * span), max);
}

export interface RetryInput {
  readonly policy: RetryPolicy;
  /** Retries already made (0 after the first attempt). */
  readonly retriesDone: number;
  readonly outcome: AttemptOutcome;
  /** Milliseconds left of the route timeout; undefined when the route has no timeout. */
  readonly remainingMs: number | undefined;
  readonly random: Random;
}

/** What to do after an attempt (see the module comment). */
export function decideRetry(input: RetryInput): RetryDecision {
  const { policy, retriesDone, outcome, remainingMs } = input;
  if (!wouldRetry(policy, outcome)) return FINAL;
  if (retriesDone >= policy.numRetries) return FINAL_URX;
  const delayMs = backoffDelayMs(policy.backoffBaseMs, retriesDone + 1, input.random);
  if (remainingMs !== undefined && delayMs >= remainingMs) return { kind: 'timeout', afterMs: Math.max(0, remainingMs) };
  return { kind: 'retry', delayMs };
}
