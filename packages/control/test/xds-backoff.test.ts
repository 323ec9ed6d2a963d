import { describe, expect, it } from 'vitest';
import {
  INITIAL_BACKOFF_MS,
  MAX_BACKOFF_MS,
  isBenignStatus,
  planReconnect,
  withJitter,
} from '../src/xds/backoff.js';
import type { StreamEnd } from '../src/xds/backoff.js';

const OK = 0;
const CANCELLED = 1;
const UNKNOWN = 2;
const INVALID_ARGUMENT = 3;
const DEADLINE_EXCEEDED = 4;
const PERMISSION_DENIED = 7;
const INTERNAL = 13;
const UNAVAILABLE = 14;
const UNAUTHENTICATED = 16;

describe('planReconnect (ztunnel AdsClient::run_loop)', () => {
  it.each<[string, number, StreamEnd, { delayMs: number; backoffMs: number; reason: string }]>([
    ['stream ended OK: reconnect now, reset', 5_000, { kind: 'completed' }, { delayMs: 0, backoffMs: 10, reason: 'Complete' }],
    ['connection refused doubles before sleeping', 10, { kind: 'connection-failed', code: UNAVAILABLE, details: 'ECONNREFUSED' }, { delayMs: 20, backoffMs: 20, reason: 'ConnectionError' }],
    ['trailers-only Unauthenticated is a connection error', 40, { kind: 'connection-failed', code: UNAUTHENTICATED, details: 'authentication failure' }, { delayMs: 80, backoffMs: 80, reason: 'ConnectionError' }],
    ['connection error is capped at 15 s', 10_000, { kind: 'connection-failed', code: UNAVAILABLE, details: 'x' }, { delayMs: 15_000, backoffMs: 15_000, reason: 'ConnectionError' }],
    ['connection error at the cap stays at the cap', 15_000, { kind: 'connection-failed', code: UNAVAILABLE, details: 'x' }, { delayMs: 15_000, backoffMs: 15_000, reason: 'ConnectionError' }],
    ['Unknown is benign', 8_000, { kind: 'status', code: UNKNOWN, details: 'whatever' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['Cancelled is benign', 8_000, { kind: 'status', code: CANCELLED, details: '' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['DeadlineExceeded is benign', 8_000, { kind: 'status', code: DEADLINE_EXCEEDED, details: '' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['Unavailable "transport is closing" (Go) is benign', 8_000, { kind: 'status', code: UNAVAILABLE, details: 'error reading from server: transport is closing' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['Unavailable "received prior goaway" (Go) is benign', 8_000, { kind: 'status', code: UNAVAILABLE, details: 'the stream is rejected because server is draining the connection: received prior goaway' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['Unavailable "Connection dropped" (grpc-js) is benign', 8_000, { kind: 'status', code: UNAVAILABLE, details: 'Connection dropped' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['Unavailable "Stream refused by server" (grpc-js GOAWAY) is benign', 8_000, { kind: 'status', code: UNAVAILABLE, details: 'Stream refused by server' }, { delayMs: 10, backoffMs: 10, reason: 'Reconnect' }],
    ['other Unavailable doubles', 10, { kind: 'status', code: UNAVAILABLE, details: 'no healthy upstream' }, { delayMs: 20, backoffMs: 20, reason: 'Error' }],
    ['Internal doubles', 640, { kind: 'status', code: INTERNAL, details: 'boom' }, { delayMs: 1_280, backoffMs: 1_280, reason: 'Error' }],
    ['PermissionDenied doubles, capped', 12_000, { kind: 'status', code: PERMISSION_DENIED, details: 'denied' }, { delayMs: 15_000, backoffMs: 15_000, reason: 'Error' }],
    ['InvalidArgument doubles', 10, { kind: 'status', code: INVALID_ARGUMENT, details: 'bad node' }, { delayMs: 20, backoffMs: 20, reason: 'Error' }],
    ['a local setup failure backs off (not a hot loop)', 10, { kind: 'local-error', message: 'token file unreadable' }, { delayMs: 20, backoffMs: 20, reason: 'Error' }],
  ])('%s', (_name, backoff, end, expected) => {
    expect(planReconnect(backoff, end)).toEqual(expected);
  });

  it('consecutive errors wait 20, 40, 80 ms ... then 15 s forever; a benign close resets', () => {
    const delays: number[] = [];
    let backoff = INITIAL_BACKOFF_MS;
    for (let i = 0; i < 14; i++) {
      const plan = planReconnect(backoff, { kind: 'connection-failed', code: UNAVAILABLE, details: 'refused' });
      delays.push(plan.delayMs);
      backoff = plan.backoffMs;
    }
    expect(delays).toEqual([20, 40, 80, 160, 320, 640, 1280, 2560, 5120, 10240, 15000, 15000, 15000, 15000]);
    const reset = planReconnect(backoff, { kind: 'status', code: UNAVAILABLE, details: 'transport is closing' });
    expect(reset.backoffMs).toBe(INITIAL_BACKOFF_MS);
    expect(planReconnect(reset.backoffMs, { kind: 'status', code: INTERNAL, details: '' }).delayMs).toBe(20);
  });

  it('never exceeds the cap whatever the input', () => {
    for (const b of [0, 1, 10, 7_499, 7_500, 14_999, 15_000, 1e9]) {
      const plan = planReconnect(b, { kind: 'status', code: INTERNAL, details: '' });
      expect(plan.delayMs).toBeLessThanOrEqual(MAX_BACKOFF_MS);
      expect(plan.delayMs).toBeGreaterThanOrEqual(2 * INITIAL_BACKOFF_MS);
    }
  });
});

describe('isBenignStatus', () => {
  it.each<[number, string, boolean]>([
    [OK, '', false],
    [UNAVAILABLE, '', false],
    [UNAVAILABLE, 'upstream connect error', false],
    [UNAVAILABLE, 'transport is closing', true],
    [UNKNOWN, '', true],
    [INTERNAL, 'transport is closing', false],
  ])('code %i details %j -> %s', (code, details, benign) => {
    expect(isBenignStatus(code, details)).toBe(benign);
  });
});

describe('withJitter', () => {
  it('is the identity with the default fraction 0 (ztunnel uses no jitter)', () => {
    expect(withJitter(640, 0, () => 0.999)).toBe(640);
  });
  it.each<[number, number]>([
    [0, 800],
    [0.5, 1000],
    [0.999_999, 1200],
  ])('spreads by ±fraction using the injected random (%f)', (r, expected) => {
    expect(withJitter(1000, 0.2, () => r)).toBe(expected);
  });
  it('leaves an immediate reconnect immediate', () => {
    expect(withJitter(0, 0.5, () => 0.9)).toBe(0);
  });
});
