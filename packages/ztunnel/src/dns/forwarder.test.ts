import type { Logger } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import * as dnsPacket from 'dns-packet';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerA, answerData, decode, query, startFakeUpstream, udpClient, type FakeUpstream, type UdpClient } from '../../test/support/dns-upstream.js';
import { nodeSocketFactory } from '@ambient/dataplane';
import { createForwarder, type DnsForwarder, type ForwardOutcome, type ForwarderOptions } from './forwarder.js';
import type { Nameserver } from './resolv-conf.js';

const quiet: Logger = { child: () => quiet, debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
const question = { name: 'www.example.com', type: 'A' as const, class: 'IN' as const };
const clientQuery = query('www.example.com', 'A');

let clock: ManualClock;
let upstream: FakeUpstream;
const cleanup: Array<() => Promise<unknown> | unknown> = [];

beforeEach(async () => {
  clock = new ManualClock();
  upstream = await startFakeUpstream();
  cleanup.push(() => upstream.close());
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function forwarder(over: Partial<ForwarderOptions> = {}): DnsForwarder {
  let n = 0;
  const f = createForwarder({
    sockets: nodeSocketFactory,
    nameservers: [ns(upstream)],
    clock,
    random: () => ((n++ * 0.37) % 1),
    log: quiet,
    ...over,
  });
  cleanup.push(() => f.close());
  return f;
}

const ns = (u: FakeUpstream): Nameserver => ({ ip: '127.0.0.1', port: u.port });

function answered(o: ForwardOutcome): Extract<ForwardOutcome, { kind: 'response' }> {
  if (o.kind !== 'response') throw new Error(`expected an answer, got: ${o.reason}`);
  return o;
}

describe('UDP', () => {
  it('sends the client query under its own id and returns the matching answer', async () => {
    const f = forwarder();
    const out = answered(await f.forward({ query: clientQuery, question, protocol: 'udp' }));
    const [sent] = upstream.queries;
    expect(sent?.protocol).toBe('udp');
    expect(sent?.raw.subarray(2).equals(clientQuery.subarray(2))).toBe(true);
    expect(decode(out.response).id).toBe(sent?.packet.id);
    expect(answerData(decode(out.response))).toEqual(['192.0.2.1']);
    expect(out).toMatchObject({ rcode: 0, answerCount: 1, server: ns(upstream) });
    expect(f.inFlight).toBe(0);
  });

  it('ignores answers from another address, with another id, or for another question', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder();
    const pending = f.forward({ query: clientQuery, question, protocol: 'udp' });
    const sent = await upstream.nextQuery();
    const id = sent.packet.id ?? 0;
    const spoofer: UdpClient = await udpClient();
    cleanup.push(() => spoofer.close());
    // Right id and question, wrong source port: an off-path spoof.
    await spoofer.send(dnsPacket.encode(answerA(sent, ['203.0.113.66'])), sent.fromPort);
    // Right source, wrong id; right source, wrong question.
    await upstream.sendUdp(dnsPacket.encode({ ...answerA(sent, ['203.0.113.67']), id: (id + 1) & 0xffff }), sent.fromPort);
    await upstream.sendUdp(dnsPacket.encode({ ...answerA(sent, ['203.0.113.68']), questions: [{ name: 'other.example', type: 'A' }] }), sent.fromPort);
    await upstream.sendUdp(dnsPacket.encode(answerA(sent, ['192.0.2.99'])), sent.fromPort);
    const out = answered(await pending);
    expect(answerData(decode(out.response))).toEqual(['192.0.2.99']);
  });

  it('fails after the timeout when the upstream is silent, releasing the socket', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder({ timeoutMs: 2_000 });
    const pending = f.forward({ query: clientQuery, question, protocol: 'udp' });
    await upstream.nextQuery();
    await clock.advance(1_999);
    expect(f.inFlight).toBe(1);
    await clock.advance(1);
    expect(await pending).toEqual({ kind: 'failed', reason: `127.0.0.1:${upstream.port}: no answer within 2000 ms`, aborted: false });
    expect(clock.pendingTimers()).toEqual([]);
    expect(f.inFlight).toBe(0);
  });

  it('moves on to the next nameserver after SERVFAIL or a timeout', async () => {
    const second = await startFakeUpstream((q) => answerA(q, ['192.0.2.2']));
    cleanup.push(() => second.close());
    upstream.answer((q) => answerA(q, [], 2));
    const f = forwarder({ nameservers: [ns(upstream), ns(second)] });
    const out = answered(await f.forward({ query: clientQuery, question, protocol: 'udp' }));
    expect(out.server).toEqual(ns(second));
    expect(answerData(decode(out.response))).toEqual(['192.0.2.2']);

    upstream.answer(() => 'drop');
    const pending = f.forward({ query: clientQuery, question, protocol: 'udp' });
    await upstream.nextQuery(2);
    await clock.advance(5_000);
    expect(answered(await pending).server).toEqual(ns(second));
  });

  it('returns NXDOMAIN as an answer (it is not a reason to ask another server)', async () => {
    upstream.answer((q) => answerA(q, [], 3));
    const out = answered(await forwarder().forward({ query: clientQuery, question, protocol: 'udp' }));
    expect(out).toMatchObject({ rcode: 3, answerCount: 0 });
  });

  it('relays a truncated answer as is (the client retries over TCP)', async () => {
    upstream.answer((q) => ({ ...answerA(q, []), flags: dnsPacket.TRUNCATED_RESPONSE }));
    const out = answered(await forwarder().forward({ query: clientQuery, question, protocol: 'udp' }));
    expect(decode(out.response).flag_tc).toBe(true);
    expect(upstream.queries.map((q) => q.protocol)).toEqual(['udp']);
  });
});

describe('TCP', () => {
  it('forwards over TCP when the client asked over TCP', async () => {
    const out = answered(await forwarder().forward({ query: clientQuery, question, protocol: 'tcp' }));
    expect(upstream.queries.map((q) => q.protocol)).toEqual(['tcp']);
    expect(answerData(decode(out.response))).toEqual(['192.0.2.1']);
  });

  it('fails when the nameserver refuses the connection', async () => {
    const closed = await startFakeUpstream();
    const port = closed.port;
    await closed.close();
    const out = await forwarder({ nameservers: [{ ip: '127.0.0.1', port }] }).forward({ query: clientQuery, question, protocol: 'tcp' });
    expect(out).toMatchObject({ kind: 'failed', aborted: false });
    expect(out.kind === 'failed' && out.reason).toMatch(/ECONNREFUSED/);
  });

  it('times out a silent TCP upstream', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder();
    const pending = f.forward({ query: clientQuery, question, protocol: 'tcp' });
    await upstream.nextQuery();
    await clock.advance(5_000);
    expect(await pending).toMatchObject({ kind: 'failed', reason: expect.stringContaining('no answer within 5000 ms') });
  });
});

describe('limits and shutdown', () => {
  it('fails at once beyond the in-flight limit', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder({ maxInFlight: 1 });
    const first = f.forward({ query: clientQuery, question, protocol: 'udp' });
    await upstream.nextQuery();
    expect(await f.forward({ query: clientQuery, question, protocol: 'udp' })).toEqual({
      kind: 'failed',
      reason: '1 forwarded queries are already in flight (limit 1)',
      aborted: false,
    });
    expect(upstream.queries).toHaveLength(1);
    f.close();
    expect(await first).toMatchObject({ kind: 'failed', aborted: true });
  });

  it('close() aborts outstanding queries and refuses new ones', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder();
    const pending = f.forward({ query: clientQuery, question, protocol: 'tcp' });
    await upstream.nextQuery();
    f.close();
    expect(await pending).toMatchObject({ kind: 'failed', aborted: true });
    expect(await f.forward({ query: clientQuery, question, protocol: 'udp' })).toMatchObject({ kind: 'failed', aborted: true });
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('the request signal aborts one query', async () => {
    upstream.answer(() => 'drop');
    const f = forwarder();
    const abort = new AbortController();
    const pending = f.forward({ query: clientQuery, question, protocol: 'udp', signal: abort.signal });
    await upstream.nextQuery();
    abort.abort();
    expect(await pending).toMatchObject({ kind: 'failed', aborted: true });
  });

  it('fails without nameservers', async () => {
    expect(await forwarder({ nameservers: [] }).forward({ query: clientQuery, question, protocol: 'udp' })).toEqual({
      kind: 'failed',
      reason: 'no upstream nameservers are configured',
      aborted: false,
    });
  });
});
