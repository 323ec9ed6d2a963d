import { describe, expect, it } from 'vitest';
import { originalSource } from './upstream.js';

describe('originalSource: the address ztunnel connects to an app from', () => {
  it('is the client address for in-pod (transparent) sockets, for any address of the same family', () => {
    expect(originalSource('10.10.1.10', '10.10.2.10', true)).toBe('10.10.1.10');
    expect(originalSource('fd00::1', 'fd00::2', true)).toBe('fd00::1');
  });

  it('never binds an address of the other family', () => {
    expect(originalSource('10.10.1.10', 'fd00::2', true)).toBeUndefined();
    expect(originalSource('::1', '127.0.0.1', false)).toBeUndefined();
  });

  it('without transparent sockets, keeps the client address only when both are loopback', () => {
    expect(originalSource('127.0.0.20', '127.0.0.21')).toBe('127.0.0.20');
    expect(originalSource('10.10.1.10', '10.10.2.10')).toBeUndefined();
    expect(originalSource('10.10.1.10', '127.0.0.1')).toBeUndefined();
  });
});
