import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HBONE_SERVER_LIMITS, http2SessionOptions, resolveHboneServerLimits, TokenBucket } from './server-limits.js';

describe('HBONE server limits', () => {
  it('defaults to ztunnel\'s settings and replaces Node\'s unsafe defaults', () => {
    const options = http2SessionOptions(DEFAULT_HBONE_SERVER_LIMITS);
    expect(options.settings).toEqual({
      maxConcurrentStreams: 200,
      initialWindowSize: 4 * 1024 * 1024,
      maxFrameSize: 1024 * 1024,
      maxHeaderListSize: 65536,
      enablePush: false,
      enableConnectProtocol: false,
      headerTableSize: 4096,
    });
    // Node's defaults: unlimited streams, 64 KiB windows, 16 KiB frames.
    expect(http2.getDefaultSettings().maxConcurrentStreams).toBe(4294967295);
    expect(options).toMatchObject({
      maxHeaderListPairs: 64,
      maxSessionMemory: 64,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: 100,
      maxOutstandingPings: 2,
      maxOutstandingSettings: 2,
    });
    expect(DEFAULT_HBONE_SERVER_LIMITS).toMatchObject({
      tlsHandshakeTimeoutMs: 10_000, firstRequestTimeoutMs: 10_000, pingIntervalMs: 10_000, pingTimeoutMs: 20_000,
      connectionWindowBytes: 16 * 1024 * 1024,
    });
  });

  it('applies overrides and reports every invalid value at once', () => {
    const ok = resolveHboneServerLimits({ maxConnections: 5, streamWindowBytes: 65535 });
    expect(ok.ok && ok.value.maxConnections).toBe(5);
    const bad = resolveHboneServerLimits({ maxConnections: 0, maxFrameBytes: 1000, streamWindowBytes: 2 ** 31, rapidReset: { burst: 0, perSecond: 1 } });
    expect(bad.ok ? [] : bad.errors.map((e) => e.field).sort()).toEqual(['maxConnections', 'maxFrameBytes', 'rapidReset', 'streamWindowBytes']);
  });
});

describe('TokenBucket', () => {
  it('allows a burst, then refills at the rate on the injected clock', () => {
    let now = 0;
    const bucket = new TokenBucket({ burst: 3, perSecond: 2 }, () => now);
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
    now += 499;
    expect(bucket.take()).toBe(false);
    now += 1;
    expect(bucket.take()).toBe(true);
    now += 60_000;
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([true, true, true, false]);
  });
});
