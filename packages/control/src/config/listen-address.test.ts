/**
 * The one listen-address parser. Cases merged from the two parsers it
 * replaced (dataplane's net/address.ts and the control plane's --listen), plus
 * the ones where they disagreed: names other than localhost and ports of more
 * than five digits are refused (the control plane's parser took them).
 */
import { describe, expect, it } from 'vitest';
import { formatRejections } from '../result.js';
import { parseListenAddress, type ListenAddress } from './listen-address.js';

describe('parseListenAddress', () => {
  it.each<[string, ListenAddress | undefined]>([
    ['localhost:15000', { host: 'localhost', port: 15000 }],
    ['127.0.0.1:15000', { host: '127.0.0.1', port: 15000 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
    ['127.0.0.1:65535', { host: '127.0.0.1', port: 65535 }],
    ['0.0.0.0:15021', { host: '0.0.0.0', port: 15021 }],
    ['[::1]:15000', { host: '::1', port: 15000 }],
    ['[::1]:15080', { host: '::1', port: 15080 }],
    ['[::]:15020', { host: '::', port: 15020 }],
    ['[0:0:0:0:0:0:0:1]:15012', { host: '::1', port: 15012 }],
    ['[2001:DB8::0001]:15008', { host: '2001:db8::1', port: 15008 }],
    ['::1:15000', undefined],
    ['::1:15080', undefined],
    ['[10.0.0.1]:1', undefined],
    ['[127.0.0.1]:1', undefined],
    ['[localhost]:1', undefined],
    ['[]:1', undefined],
    ['host:1', undefined],
    ['example.com:80', undefined],
    ['10.0.0:80', undefined],
    ['127.0.0.1', undefined],
    ['localhost', undefined],
    ['localhost:', undefined],
    [':15012', undefined],
    ['127.0.0.1:65536', undefined],
    ['127.0.0.1:70000', undefined],
    ['127.0.0.1:015012', undefined],
    ['127.0.0.1:-1', undefined],
    ['', undefined],
  ])('%j', (text, expected) => {
    const r = parseListenAddress(text, 'ZTUNNEL_STATS_ADDR');
    if (expected === undefined) expect(r.ok).toBe(false);
    else expect(r).toEqual({ ok: true, value: expected });
  });

  it.each<[string, RegExp]>([
    ['everywhere', /^"everywhere": expected <ip>:<port>, \[<ipv6>\]:<port> or localhost:<port>$/],
    ['127.0.0.1:70000', /^"127\.0\.0\.1:70000": port 70000 is out of range \(0-65535\); expected <ip>:<port>/],
    ['[10.0.0.1]:1', /^"\[10\.0\.0\.1\]:1": brackets are for IPv6 addresses only, not "10\.0\.0\.1"; expected/],
    ['[nope]:1', /^"\[nope\]:1": "nope" is not an IPv6 address; expected/],
    ['example.com:80', /^"example\.com:80": "example\.com" is not an IP address \(the only name accepted is localhost\); expected/],
  ])('refuses %j naming the setting, the value and the expected form', (text, reason) => {
    const r = parseListenAddress(text, '--listen');
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]?.field).toBe('--listen');
    expect(r.errors[0]?.reason).toMatch(reason);
    expect(formatRejections(r.errors)).toMatch(/^--listen: "/);
  });
});
