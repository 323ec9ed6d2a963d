import { describe, expect, it } from 'vitest';
import { parseMaxOpenFiles, systemProcessProbe } from './process.js';

describe('parseMaxOpenFiles', () => {
  it('reads the soft limit', () => {
    const limits = [
      'Limit                     Soft Limit           Hard Limit           Units',
      'Max processes             63382                63382                processes',
      'Max open files            1024                 1048576              files',
    ].join('\n');
    expect(parseMaxOpenFiles(limits)).toBe(1024);
  });

  it('handles unlimited and missing lines', () => {
    expect(parseMaxOpenFiles('Max open files            unlimited            unlimited            files')).toBe(Number.MAX_SAFE_INTEGER);
    expect(parseMaxOpenFiles('nothing here')).toBeUndefined();
  });
});

describe.runIf(process.platform === 'linux')('systemProcessProbe (Linux)', () => {
  it('counts open descriptors below the soft limit', () => {
    const open = systemProcessProbe.openFds();
    const max = systemProcessProbe.maxFds();
    expect(open).toBeGreaterThan(2); // stdin, stdout, stderr at least
    expect(max).toBeGreaterThan(open ?? 0);
  });
});
