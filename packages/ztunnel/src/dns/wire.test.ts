import * as dnsPacket from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { decode, query } from '../../test/support/dns-upstream.js';
import {
  decodeMessage,
  encodeResponse,
  frameTcp,
  matchUpstreamResponse,
  peekHeader,
  queryTypeLabel,
  RCODE,
  relayedResponse,
  TcpFrameReader,
  udpResponseLimit,
  withId,
  type ResponseSpec,
} from './wire.js';

const spec = (over: Partial<ResponseSpec> = {}): ResponseSpec => ({
  id: 7,
  opcode: 0,
  rcode: RCODE.NOERROR,
  authoritative: true,
  recursionDesired: true,
  recursionAvailable: true,
  checkingDisabled: false,
  questions: [{ name: 'big.example', type: 'A', class: 'IN' }],
  answers: [],
  ...over,
});

describe('decodeMessage', () => {
  it('decodes a query with its EDNS payload size', () => {
    const r = decodeMessage(query('Foo.Example', 'AAAA', { edns: 1232 }));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.message.questions).toEqual([{ name: 'Foo.Example', type: 'AAAA', class: 'IN' }]);
    expect(r.message.edns).toEqual({ udpPayloadSize: 1232, version: 0, dnssecOk: false });
    expect(r.message.verbatim).toBe(true);
  });

  it('reports truncated input instead of throwing', () => {
    const full = query('foo.example', 'A');
    expect(decodeMessage(full.subarray(0, full.length - 3))).toMatchObject({ ok: false });
    expect(decodeMessage(Buffer.alloc(5))).toEqual({ ok: false, reason: '5 bytes is shorter than a DNS header' });
  });

  it('flags a question whose name does not survive dns-packet (a label holding a dot)', () => {
    // header, then the one label "a.b" (3 bytes), root, type A, class IN
    const header = Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    const q = Buffer.concat([header, Buffer.from([3, 0x61, 0x2e, 0x62, 0, 0, 1, 0, 1])]);
    const r = decodeMessage(q);
    expect(r.ok && r.message.verbatim).toBe(false);
  });
});

describe('encodeResponse', () => {
  const answers = Array.from({ length: 100 }, (_, i) => ({ type: 'A' as const, name: 'big.example', ttl: 30, class: 'IN' as const, data: `240.0.0.${i}` }));

  it('keeps everything when it fits', () => {
    const out = decode(encodeResponse(spec({ answers: answers.slice(0, 3) }), 512));
    expect(out.answers).toHaveLength(3);
    expect(out.flag_tc).toBe(false);
    expect(out.flag_aa).toBe(true);
    expect(out.flag_ra).toBe(true);
    expect(out.id).toBe(7);
  });

  it('drops trailing answers and sets TC to stay within the UDP limit', () => {
    const bytes = encodeResponse(spec({ answers }), 512);
    const out = decode(bytes);
    expect(bytes.length).toBeLessThanOrEqual(512);
    expect(out.flag_tc).toBe(true);
    expect(out.answers?.length).toBeGreaterThan(10);
    expect(out.answers?.length).toBeLessThan(100);
    expect(out.questions).toEqual([{ name: 'big.example', type: 'A', class: 'IN' }]);
  });

  it('puts the opcode and rcode in the header and echoes EDNS', () => {
    const out = decode(encodeResponse(spec({ opcode: 5, rcode: RCODE.NOTIMP, authoritative: false, edns: { udpPayloadSize: 100, version: 0, dnssecOk: true } }), 512));
    expect(out.opcode).toBe('UPDATE');
    expect(out.rcode).toBe('NOTIMP');
    const opt = out.additionals?.find((a) => a.type === 'OPT');
    expect(opt).toMatchObject({ udpPayloadSize: 512, flag_do: true });
  });
});

describe('relayedResponse', () => {
  it('restores the client id, clears AA and sets RA, and keeps every other byte', () => {
    const upstream = dnsPacket.encode({ type: 'response', id: 999, flags: dnsPacket.AUTHORITATIVE_ANSWER | 3, questions: [{ name: 'x.example', type: 'A' }] });
    const out = relayedResponse(upstream, 0x1234, 512);
    expect(out).toBeDefined();
    const d = decode(out as Buffer);
    expect(d.id).toBe(0x1234);
    expect(d.flag_aa).toBe(false);
    expect(d.flag_ra).toBe(true);
    expect(d.rcode).toBe('NXDOMAIN');
    expect((out as Buffer).subarray(4).equals(upstream.subarray(4))).toBe(true);
  });

  it('refuses what exceeds the limit', () => {
    const upstream = Buffer.alloc(600);
    expect(relayedResponse(upstream, 1, 512)).toBeUndefined();
  });
});

describe('matchUpstreamResponse', () => {
  const question = { name: 'x.example', type: 'A' as const, class: 'IN' as const };
  const response = (id: number, name = 'X.Example', rcode = 0) =>
    dnsPacket.encode({ type: 'response', id, flags: rcode, questions: [{ name, type: 'A' }], answers: [{ type: 'A', name, data: '1.2.3.4' }] });

  it('accepts our id and question (any case) and counts the answers', () => {
    expect(matchUpstreamResponse(response(5), 5, question)).toEqual({ ok: true, rcode: 0, answerCount: 1 });
  });

  it('rejects another id, another question, or a query', () => {
    expect(matchUpstreamResponse(response(6), 5, question).ok).toBe(false);
    expect(matchUpstreamResponse(response(5, 'y.example'), 5, question).ok).toBe(false);
    expect(matchUpstreamResponse(withId(query('x.example', 'A'), 5), 5, question).ok).toBe(false);
  });

  it('accepts an error without a question section as that error', () => {
    const refused = dnsPacket.encode({ type: 'response', id: 5, flags: RCODE.REFUSED });
    expect(matchUpstreamResponse(refused, 5, question)).toEqual({ ok: true, rcode: RCODE.REFUSED, answerCount: 0 });
  });

  it('does not need to understand the records it relays', () => {
    const good = response(5);
    const garbledTail = Buffer.concat([good.subarray(0, good.length - 4), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff])]);
    expect(matchUpstreamResponse(garbledTail, 5, question)).toMatchObject({ ok: true });
  });
});

describe('queryTypeLabel (hickory names, lower case)', () => {
  it.each([
    ['A', 'a'],
    ['AAAA', 'aaaa'],
    ['SRV', 'srv'],
    ['PTR', 'ptr'],
    ['UNKNOWN_65', 'https'],
    ['UNKNOWN_64', 'svcb'],
    ['UNKNOWN_65280', 'unknown'],
    ['SPF', 'unknown'],
    [undefined, 'unknown'],
  ])('%s -> %s', (type, label) => expect(queryTypeLabel(type)).toBe(label));
});

describe('udpResponseLimit', () => {
  it('is 512 without EDNS, the EDNS size otherwise (never below 512)', () => {
    expect(udpResponseLimit(undefined)).toBe(512);
    expect(udpResponseLimit({ udpPayloadSize: 1232, version: 0, dnssecOk: false })).toBe(1232);
    expect(udpResponseLimit({ udpPayloadSize: 100, version: 0, dnssecOk: false })).toBe(512);
  });
});

describe('TcpFrameReader', () => {
  it('splits messages across and within chunks', () => {
    const a = frameTcp(Buffer.from('hello')) as Buffer;
    const b = frameTcp(Buffer.from('dns!')) as Buffer;
    const reader = new TcpFrameReader(100);
    const stream = Buffer.concat([a, b]);
    expect(reader.push(stream.subarray(0, 3)).messages).toEqual([]);
    expect(reader.push(stream.subarray(3)).messages.map(String)).toEqual(['hello', 'dns!']);
    expect(reader.buffered).toBe(0);
  });

  it('reports an oversize or empty frame once and then ignores the stream', () => {
    const reader = new TcpFrameReader(10);
    expect(reader.push(Buffer.from([0, 11, 1, 2])).error).toBe('DNS message of 11 bytes exceeds the 10-byte limit');
    expect(reader.push(frameTcp(Buffer.from('ok')) as Buffer)).toEqual({ messages: [] });
    expect(new TcpFrameReader(10).push(Buffer.from([0, 0])).error).toBe('empty DNS message');
  });
});

describe('peekHeader', () => {
  it('reads id, QR, opcode and counts', () => {
    expect(peekHeader(query('a.example', 'A', { opcode: 5 }))).toMatchObject({ id: 0x1234, response: false, opcode: 5, questionCount: 1, recursionDesired: true });
  });
});
