import { afterEach, describe, expect, it } from 'vitest';
import { loadNative, NativeError } from './native.js';

const realPlatform = process.platform;

afterEach(() => {
  Object.defineProperty(process, 'platform', { value: realPlatform });
});

describe('loadNative', () => {
  it('refuses with EUNSUPPORTED and says why off Linux', () => {
    Object.defineProperty(process, 'platform', { value: 'darwin' });
    let caught: unknown;
    try {
      loadNative();
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(NativeError);
    expect(caught).toMatchObject({ code: 'EUNSUPPORTED', syscall: 'loadNative' });
    expect((caught as Error).message).toContain('needs Linux; this is darwin');
    expect((caught as Error).message).toContain('PROXY_MODE=dedicated');
  });
});
