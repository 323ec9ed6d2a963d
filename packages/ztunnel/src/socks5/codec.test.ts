import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeConnectRequest,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  MAX_GREETING_BYTES,
  MAX_REQUEST_BYTES,
  parseGreeting,
  parseReply,
  parseRequest,
  ReplyCode,
} from './codec.js';

const bytes = (...b: number[]) => Uint8Array.from(b);

describe('parseGreeting', () => {
  it.each<[string, Uint8Array, unknown]>([
    ['no auth offered', bytes(5, 1, 0), { status: 'ok', value: { methods: [0] }, length: 3 }],
    ['no auth among others', bytes(5, 3, 2, 0, 1), { status: 'ok', value: { methods: [2, 0, 1] }, length: 5 }],
    ['empty', bytes(), { status: 'incomplete' }],
    ['version only', bytes(5), { status: 'incomplete' }],
    ['methods missing', bytes(5, 2, 0), { status: 'incomplete' }],
    ['SOCKS4', bytes(4, 1, 0, 80), { status: 'error', answer: undefined }],
    ['HTTP', Buffer.from('GET / HTTP/1.1\r\n'), { status: 'error', answer: undefined }],
    ['no methods', bytes(5, 0), { status: 'error', answer: 'no-acceptable-method' }],
    ['username/password only', bytes(5, 1, 2), { status: 'error', answer: 'no-acceptable-method' }],
  ])('%s', (_name, input, expected) => {
    expect(parseGreeting(input)).toMatchObject(expected as object);
  });

  it('ignores bytes after the greeting (a pipelined request)', () => {
    const buf = Buffer.concat([encodeGreeting(), encodeConnectRequest({ kind: 'ip', ip: '10.0.0.1' }, 80)]);
    expect(parseGreeting(buf)).toMatchObject({ status: 'ok', length: 3 });
  });
});

describe('parseRequest', () => {
  it.each<[string, Uint8Array, unknown]>([
    ['IPv4', encodeConnectRequest({ kind: 'ip', ip: '10.1.2.3' }, 8080), { status: 'ok', value: { address: { kind: 'ip', ip: '10.1.2.3' }, port: 8080 }, length: 10 }],
    ['IPv6', encodeConnectRequest({ kind: 'ip', ip: 'fd00::1' }, 443), { status: 'ok', value: { address: { kind: 'ip', ip: 'fd00::1' }, port: 443 }, length: 22 }],
    ['IPv4-mapped IPv6 becomes IPv4', encodeConnectRequest({ kind: 'ip', ip: '::ffff:10.0.0.9' }, 80), { status: 'ok', value: { address: { kind: 'ip', ip: '10.0.0.9' } } }],
    ['domain', encodeConnectRequest({ kind: 'domain', name: 'helloworld.default.svc.cluster.local' }, 5000), { status: 'ok', value: { address: { kind: 'domain', name: 'helloworld.default.svc.cluster.local' }, port: 5000 } }],
    ['IP literal sent as a domain', encodeConnectRequest({ kind: 'domain', name: '127.0.0.1' }, 80), { status: 'ok', value: { address: { kind: 'ip', ip: '127.0.0.1' } } }],
    ['truncated address', encodeConnectRequest({ kind: 'ip', ip: '10.1.2.3' }, 80).subarray(0, 7), { status: 'incomplete' }],
    ['truncated domain', encodeConnectRequest({ kind: 'domain', name: 'example.com' }, 80).subarray(0, 9), { status: 'incomplete' }],
    ['BIND', bytes(5, 2, 0, 1, 10, 0, 0, 1, 0, 80), { status: 'error', answer: ReplyCode.COMMAND_NOT_SUPPORTED, reason: expect.stringContaining('BIND') }],
    ['UDP ASSOCIATE', bytes(5, 3, 0, 1, 0, 0, 0, 0, 0, 0), { status: 'error', answer: ReplyCode.COMMAND_NOT_SUPPORTED }],
    ['wrong version', bytes(4, 1, 0, 1, 10, 0, 0, 1, 0, 80), { status: 'error', answer: ReplyCode.GENERAL_FAILURE }],
    ['unknown address type', bytes(5, 1, 0, 9, 1, 2, 3, 4, 0, 80), { status: 'error', answer: ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED }],
    ['empty domain', bytes(5, 1, 0, 3, 0, 0, 80), { status: 'error', answer: ReplyCode.HOST_UNREACHABLE }],
    ['domain with a NUL byte', bytes(5, 1, 0, 3, 3, 0x61, 0, 0x62, 0, 80), { status: 'error', answer: ReplyCode.HOST_UNREACHABLE, reason: expect.stringContaining('0x00') }],
    ['domain with an empty label', encodeConnectRequest({ kind: 'domain', name: 'a..b' }, 80), { status: 'error', answer: ReplyCode.HOST_UNREACHABLE }],
    ['port 0', encodeConnectRequest({ kind: 'ip', ip: '10.1.2.3' }, 0), { status: 'error', answer: ReplyCode.NOT_ALLOWED }],
  ])('%s', (_name, input, expected) => {
    expect(parseRequest(input)).toMatchObject(expected as object);
  });
});

describe('encoders', () => {
  it('encodes method selection and replies as RFC 1928 lays them out', () => {
    expect([...encodeMethodSelection(0)]).toEqual([5, 0]);
    expect([...encodeMethodSelection(0xff)]).toEqual([5, 0xff]);
    expect([...encodeReply(ReplyCode.SUCCEEDED)]).toEqual([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    expect([...encodeReply(ReplyCode.HOST_UNREACHABLE, { ip: '10.0.0.1', port: 15001 })]).toEqual([5, 4, 0, 1, 10, 0, 0, 1, 0x3a, 0x99]);
    expect(encodeReply(ReplyCode.SUCCEEDED, { ip: '::1', port: 1 })).toHaveLength(22);
  });

  it('round-trips replies', () => {
    expect(parseReply(encodeReply(ReplyCode.CONNECTION_REFUSED, { ip: 'fd00::2', port: 8080 }))).toEqual({
      status: 'ok',
      value: { code: 5, bound: { ip: 'fd00::2', port: 8080 } },
      length: 22,
    });
  });
});

describe('properties', () => {
  it('never throws on arbitrary bytes, and never claims more bytes than given or than the protocol allows', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), (buf) => {
        const g = parseGreeting(buf);
        const r = parseRequest(buf);
        if (g.status === 'ok') expect(g.length).toBeLessThanOrEqual(Math.min(buf.length, MAX_GREETING_BYTES));
        if (r.status === 'ok') expect(r.length).toBeLessThanOrEqual(Math.min(buf.length, MAX_REQUEST_BYTES));
        if (g.status === 'error') expect(g.reason).not.toBe('');
        if (r.status === 'error') expect(r.reason).not.toBe('');
      }),
      { numRuns: 2000 },
    );
  });

  it('is incomplete on every strict prefix of a valid request, and ok on the whole', () => {
    const address = fc.oneof(
      fc.ipV4().map((ip) => ({ kind: 'ip' as const, ip })),
      fc.ipV6().map((ip) => ({ kind: 'ip' as const, ip })),
      fc.domain().filter((d) => d.length <= 255).map((name) => ({ kind: 'domain' as const, name })),
    );
    fc.assert(
      fc.property(address, fc.integer({ min: 1, max: 65535 }), (addr, port) => {
        const buf = encodeConnectRequest(addr, port);
        const whole = parseRequest(buf);
        expect(whole).toMatchObject({ status: 'ok', length: buf.length, value: { port } });
        for (let i = 0; i < buf.length; i++) expect(parseRequest(buf.subarray(0, i)).status).toBe('incomplete');
      }),
      { numRuns: 300 },
    );
  });
});
