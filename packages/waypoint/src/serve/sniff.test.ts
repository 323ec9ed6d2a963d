import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { classifyPrefix, sniffProtocol } from './sniff.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const PREFACE = 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n';

describe('classifyPrefix', () => {
  it.each([
    ['GET / HTTP/1.1\r\n', 'http1'],
    ['OPTIONS * HTTP/1.1\r\nHost: a\r\n', 'http1'],
    ['PROPFIND /x HTTP/1.0\r\n', 'http1'],
    [PREFACE, 'http2'],
    ['\x16\x03\x01\x02\x00', 'tcp'],
    ['SSH-2.0-OpenSSH\r\n', 'tcp'],
    ['GET / HTTP/2.0\r\n', 'tcp'],
    ['GET /\r\n', 'tcp'],
    ['GET / HTTP/1.1\n', 'tcp'],
    [' GET / HTTP/1.1\r\n', 'tcp'],
    ['GET  / HTTP/1.1\r\n', 'tcp'],
  ])('%j → %s', (input, out) => {
    expect(classifyPrefix(b(input), 'detect')).toBe(out);
  });

  it('waits for more on a valid prefix', () => {
    expect(classifyPrefix(b('GE'), 'detect')).toBeUndefined();
    expect(classifyPrefix(b('GET /path HTTP/1.'), 'detect')).toBeUndefined();
    expect(classifyPrefix(b('PRI * HTTP/2'), 'detect')).toBeUndefined();
  });

  it('on an HTTP port, anything but the HTTP/2 preface is HTTP/1.1', () => {
    expect(classifyPrefix(b('\x16\x03\x01'), 'http')).toBe('http1');
    expect(classifyPrefix(b('PRI * HT'), 'http')).toBeUndefined();
    expect(classifyPrefix(b(PREFACE), 'http')).toBe('http2');
  });
});

describe('sniffProtocol', () => {
  const clock = new ManualClock({ now: 0 });
  const opts = { clock, mode: 'detect' as const, maxBytes: 64, timeoutMs: 1000 };

  it('decides across chunks and puts every byte back', async () => {
    const s = new PassThrough();
    const p = sniffProtocol(s, opts);
    s.write('GET /lo');
    s.write('ng HTTP/1.1\r\nHost: x\r\n');
    const r = await p;
    expect(r).toMatchObject({ protocol: 'http1', reason: 'matched', leftover: undefined });
    expect(s.read()?.toString()).toBe('GET /long HTTP/1.1\r\nHost: x\r\n');
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('gives up at the byte limit (TCP)', async () => {
    const s = new PassThrough();
    const p = sniffProtocol(s, opts);
    s.write(`GET /${'a'.repeat(100)}`);
    expect(await p).toMatchObject({ protocol: 'tcp', reason: 'byte-limit' });
    expect(s.read()?.length).toBe(105);
  });

  it('gives up at the deadline (TCP; a server-first protocol)', async () => {
    const s = new PassThrough();
    const p = sniffProtocol(s, opts);
    await clock.advance(1000);
    expect(await p).toMatchObject({ protocol: 'tcp', reason: 'timeout', bytes: 0 });
  });

  it('hands back the bytes of a client that ended early', async () => {
    const s = new PassThrough();
    const p = sniffProtocol(s, opts);
    s.end('GET');
    const r = await p;
    expect(r).toMatchObject({ protocol: 'tcp', reason: 'eof' });
    expect(r.leftover?.toString()).toBe('GET');
  });

  it('rejects when the stream fails first', async () => {
    const s = new PassThrough();
    const p = sniffProtocol(s, opts);
    s.destroy(new Error('reset'));
    await expect(p).rejects.toThrow('reset');
    expect(clock.pendingTimers()).toEqual([]);
  });
});
