import { describe, expect, it } from 'vitest';
import { backoffDelayMs, decideRetry, DEFAULT_RETRY_POLICY, NO_RETRY_POLICY, wouldRetry, type AttemptOutcome } from './retry.js';
import type { RetryPolicy } from './types.js';

const response = (status: number, grpcStatus?: number, rateLimited = false): AttemptOutcome => ({ kind: 'response', status, grpcStatus, rateLimited });
const reset = (refusedStream = false, requestSent = true): AttemptOutcome => ({ kind: 'reset', refusedStream, requestSent });
const CONNECT_FAILURE: AttemptOutcome = { kind: 'connect-failure' };
const PER_TRY_TIMEOUT: AttemptOutcome = { kind: 'per-try-timeout' };
const policy = (over: Partial<RetryPolicy>): RetryPolicy => ({ ...DEFAULT_RETRY_POLICY, ...over });

describe('DEFAULT_RETRY_POLICY (Istio 1.24+ default, §6.1)', () => {
  it('has 2 retries on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes, no codes, 25 ms', () => {
    expect(DEFAULT_RETRY_POLICY).toEqual({
      numRetries: 2,
      retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'],
      retriableStatusCodes: [],
      backoffBaseMs: 25,
      perTryTimeoutMs: 0,
    });
  });

  const cases: Array<[string, AttemptOutcome, boolean]> = [
    ['connect failure', CONNECT_FAILURE, true],
    ['REFUSED_STREAM reset', reset(true), true],
    ['other reset', reset(false), false],
    ['reset before the request was sent', reset(false, false), false],
    ['per-try timeout', PER_TRY_TIMEOUT, false],
    ['503 (no longer retried since 1.24)', response(503), false],
    ['200', response(200), false],
    ['gRPC UNAVAILABLE (14) in headers', response(200, 14), true],
    ['gRPC CANCELLED (1) in headers', response(200, 1), true],
    ['gRPC DEADLINE_EXCEEDED (4): not in the default', response(200, 4), false],
    ['gRPC INTERNAL (13): not in the default', response(200, 13), false],
  ];
  it.each(cases)('%s → retriable %s', (_label, outcome, expected) => {
    expect(wouldRetry(DEFAULT_RETRY_POLICY, outcome)).toBe(expected);
  });
});

describe('wouldRetry for Envoy retry_on values', () => {
  const cases: Array<[string[], number[], AttemptOutcome, boolean]> = [
    [['5xx'], [], response(500), true],
    [['5xx'], [], response(599), true],
    [['5xx'], [], response(499), false],
    [['5xx'], [], reset(), true],
    [['5xx'], [], CONNECT_FAILURE, true],
    [['5xx'], [], PER_TRY_TIMEOUT, true],
    [['gateway-error'], [], response(502), true],
    [['gateway-error'], [], response(500), false],
    [['gateway-error'], [], response(504), true],
    [['reset'], [], reset(), true],
    [['reset'], [], PER_TRY_TIMEOUT, true],
    [['reset'], [], response(503), false],
    [['reset-before-request'], [], reset(false, false), true],
    [['reset-before-request'], [], reset(false, true), false],
    [['reset-before-request'], [], CONNECT_FAILURE, true],
    [['retriable-4xx'], [], response(409), true],
    [['retriable-4xx'], [], response(400), false],
    [['retriable-status-codes'], [500, 502], response(502), true],
    [['retriable-status-codes'], [500, 502], response(503), false],
    [[], [503], response(503), false], // codes without the token do nothing
    [['deadline-exceeded'], [], response(200, 4), true],
    [['resource-exhausted'], [], response(200, 8), true],
    [['internal'], [], response(200, 13), true],
    [['unavailable'], [], response(200, 13), false],
    [['5xx'], [], response(503, undefined, true), false], // x-envoy-ratelimited is never retried
    [['envoy-ratelimited'], [], response(429, undefined, true), true],
    [['connect-failure'], [], reset(true), false],
    [['no-such-token'], [], response(503), false],
  ];
  it.each(cases)('retryOn %j codes %j', (retryOn, codes, outcome, expected) => {
    expect(wouldRetry(policy({ retryOn, retriableStatusCodes: codes }), outcome)).toBe(expected);
  });
});

describe('backoffDelayMs (fully jittered exponential, base 25 ms, max 250 ms)', () => {
  it('retry N waits in [0, (2^N − 1)·base), capped at 10·base', () => {
    // random just below 1 gives the top of each range
    const top = () => 0.999999;
    expect(backoffDelayMs(25, 1, top)).toBe(24);
    expect(backoffDelayMs(25, 2, top)).toBe(74);
    expect(backoffDelayMs(25, 3, top)).toBe(174);
    expect(backoffDelayMs(25, 4, top)).toBe(250);
    expect(backoffDelayMs(25, 9, top)).toBe(250);
    expect(backoffDelayMs(25, 1, () => 0)).toBe(0);
  });

  it('stops growing once the span exceeds the max (Envoy): retry 4 and retry 9 have the same range', () => {
    // 375 ms span (k = 4) frozen: random 0.5 gives 187, under the cap
    expect(backoffDelayMs(25, 4, () => 0.5)).toBe(187);
    expect(backoffDelayMs(25, 9, () => 0.5)).toBe(187);
  });

  it('uses a configured base, and the default for a non-positive one', () => {
    expect(backoffDelayMs(100, 2, () => 0.5)).toBe(150);
    expect(backoffDelayMs(0, 1, () => 0.999)).toBe(24);
  });
});

describe('decideRetry: the state machine over attempts', () => {
  /** Drives a whole request: outcomes in order, a manual clock advanced by each delay. */
  function drive(p: RetryPolicy, outcomes: AttemptOutcome[], timeoutMs: number | undefined, random = () => 0.5) {
    let now = 0;
    const trace: string[] = [];
    for (let retriesDone = 0; ; retriesDone++) {
      const outcome = outcomes[retriesDone];
      if (outcome === undefined) throw new Error('ran out of scripted outcomes');
      now += 1; // each attempt takes 1 ms on the manual clock
      const remainingMs = timeoutMs === undefined ? undefined : timeoutMs - now;
      const d = decideRetry({ policy: p, retriesDone, outcome, remainingMs, random });
      if (d.kind === 'retry') {
        trace.push(`retry after ${d.delayMs}`);
        now += d.delayMs;
        continue;
      }
      trace.push(d.kind === 'final' ? `final${d.retryLimitExceeded ? ' URX' : ''}` : `timeout after ${d.afterMs}`);
      return { trace, now };
    }
  }

  it('a success ends at once', () => {
    expect(drive(DEFAULT_RETRY_POLICY, [response(200)], undefined).trace).toEqual(['final']);
  });

  it('connect failures are retried twice with growing back-off, then give up with URX', () => {
    const { trace, now } = drive(DEFAULT_RETRY_POLICY, [CONNECT_FAILURE, CONNECT_FAILURE, CONNECT_FAILURE], undefined);
    expect(trace).toEqual(['retry after 12', 'retry after 37', 'final URX']);
    expect(now).toBe(3 + 12 + 37);
  });

  it('a retry that then succeeds ends without URX', () => {
    expect(drive(DEFAULT_RETRY_POLICY, [CONNECT_FAILURE, response(200)], undefined).trace).toEqual(['retry after 12', 'final']);
  });

  it('a non-retriable failure is final without URX (503 under the default policy)', () => {
    expect(drive(DEFAULT_RETRY_POLICY, [response(503)], undefined).trace).toEqual(['final']);
  });

  it('a retriable status exhausts the budget with URX (GEP-1731 codes)', () => {
    const p = policy({ numRetries: 1, retryOn: ['connect-failure', 'refused-stream', 'unavailable', 'cancelled', 'retriable-status-codes'], retriableStatusCodes: [503] });
    expect(drive(p, [response(503), response(503)], undefined).trace).toEqual(['retry after 12', 'final URX']);
  });

  it('no retry policy: nothing is retried and nothing is flagged', () => {
    expect(drive(NO_RETRY_POLICY, [CONNECT_FAILURE], undefined).trace).toEqual(['final']);
  });

  it('a back-off that outlasts the route timeout becomes the 504 at the timeout', () => {
    // timeout 20 ms: the first back-off (12) fits, the second (37) does not: wait the remaining 20-1-12-1=6 ms
    expect(drive(DEFAULT_RETRY_POLICY, [CONNECT_FAILURE, CONNECT_FAILURE], 20).trace).toEqual(['retry after 12', 'timeout after 6']);
    expect(decideRetry({ policy: DEFAULT_RETRY_POLICY, retriesDone: 0, outcome: CONNECT_FAILURE, remainingMs: 0, random: () => 0 })).toEqual({ kind: 'timeout', afterMs: 0 });
  });
});
