import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { GrpcFrameCounter } from './grpc-frames.js';

function frame(len: number): Buffer {
  const b = Buffer.alloc(5 + len, 7);
  b[0] = 0;
  b.writeUInt32BE(len, 1);
  return b;
}

describe('GrpcFrameCounter', () => {
  it('counts messages however the stream is cut', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 20 }), fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 10 }), (lengths, cuts) => {
        const all = Buffer.concat(lengths.map(frame));
        const counter = new GrpcFrameCounter();
        let at = 0;
        let i = 0;
        while (at < all.length) {
          const n = cuts[i++ % cuts.length] as number;
          counter.push(all.subarray(at, at + n));
          at += n;
        }
        expect(counter.count).toBe(lengths.length);
      }),
    );
  });

  it('counts a message once its 5-byte prefix is complete', () => {
    const c = new GrpcFrameCounter();
    c.push(frame(10).subarray(0, 4));
    expect(c.count).toBe(0);
    c.push(frame(10).subarray(4, 5));
    expect(c.count).toBe(1);
  });
});
