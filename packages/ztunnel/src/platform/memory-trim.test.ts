import { ManualClock } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { startMemoryTrim } from './memory-trim.js';

describe('startMemoryTrim', () => {
  it('trims once per interval until stopped, and never when the interval is 0', async () => {
    const clock = new ManualClock();
    let trims = 0;
    const t = startMemoryTrim(clock, () => trims++, 10_000);
    await clock.advance(9_999);
    expect(trims).toBe(0);
    await clock.advance(1);
    expect(trims).toBe(1);
    await clock.advance(20_000);
    expect(trims).toBe(3);
    t.stop();
    await clock.advance(60_000);
    expect(trims).toBe(3);

    const off = startMemoryTrim(clock, () => trims++, 0);
    await clock.advance(60_000);
    expect(trims).toBe(3);
    off.stop();
  });
});
