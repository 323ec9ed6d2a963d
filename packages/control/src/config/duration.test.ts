import { describe, expect, it } from 'vitest';
import { parseDuration } from './duration.js';

describe('parseDuration', () => {
  it.each([
    ['24h', 86_400_000],
    ['5m', 300_000],
    ['180s', 180_000],
    ['1h30m', 5_400_000],
    ['1h 30m', 5_400_000],
    ['500ms', 500],
    ['1.5s', 1_500],
    ['90', 90_000],
    ['2d', 172_800_000],
    ['250us', 0.25],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toEqual({ ok: true, ms });
  });

  it.each(['', 'h', '10x', '-5s', '5 minutes', '1h-30m', 'ms5'])('refuses %j and says what is expected', (text) => {
    const r = parseDuration(text);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toMatch(/expected a duration|empty/);
  });
});
