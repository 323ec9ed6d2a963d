import { createStore, type Logger, type Store, type Workload } from '@ambient/control';
import { addresses, aService, aWorkload, ManualClock, vip } from '@ambient/control/testing';
import * as dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { beforeEach, describe, expect, it } from 'vitest';
import { answerData, decode, query } from '../../test/support/dns-upstream.js';
import type { DnsForwarder, ForwardOutcome, ForwardRequest } from './forwarder.js';
import { createDnsHandler, type DnsHandler } from './handler.js';
import type { DnsMetricLabels, DnsMetricsRecorder } from './metrics.js';

const client = aWorkload({
  uid: 'cluster//Pod/ns1/client',
  name: 'client',
  namespace: 'ns1',
  addresses: ['10.0.0.1'],
  canonicalName: 'client-app',
  canonicalRevision: 'v1',
});
const productpage = aService({ namespace: 'ns1', hostname: 'productpage.ns1.svc.cluster.local', vips: [vip('10.96.0.5'), vip('fd00::5')] });

interface Recorded {
  kind: 'request' | 'upstreamRequest' | 'upstreamFailure' | 'upstreamDuration';
  queryType: string;
  protocol: string;
  source: string | undefined;
  seconds?: number;
}

function recorder(into: Recorded[]): DnsMetricsRecorder {
  const push = (kind: Recorded['kind'], l: DnsMetricLabels, seconds?: number) =>
    into.push({ kind, queryType: l.queryType, protocol: l.protocol, source: l.source?.canonicalName, ...(seconds === undefined ? {} : { seconds }) });
  return {
    request: (l) => push('request', l),
    upstreamRequest: (l) => push('upstreamRequest', l),
    upstreamFailure: (l) => push('upstreamFailure', l),
    upstreamDuration: (l, s) => push('upstreamDuration', l, s),
  };
}

const logs: Array<{ level: string; obj: object; msg?: string | undefined }> = [];
const log: Logger = {
  child: () => log,
  debug: (obj, msg) => logs.push({ level: 'debug', obj, msg }),
  info: (obj, msg) => logs.push({ level: 'info', obj, msg }),
  warn: (obj, msg) => logs.push({ level: 'warn', obj, msg }),
  error: (obj, msg) => logs.push({ level: 'error', obj, msg }),
};

class FakeForwarder implements Pick<DnsForwarder, 'forward'> {
  readonly requests: ForwardRequest[] = [];
  outcome: (r: ForwardRequest) => ForwardOutcome | Promise<ForwardOutcome> = (r) => upstreamAnswer(r, ['192.0.2.7']);
  forward(r: ForwardRequest): Promise<ForwardOutcome> {
    this.requests.push(r);
    return Promise.resolve(this.outcome(r));
  }
}

function upstreamAnswer(r: ForwardRequest, ips: readonly string[], rcode = 0): ForwardOutcome {
  const server = { ip: '192.0.2.53', port: 53 };
  const response = dnsPacket.encode({
    type: 'response',
    id: 4242,
    flags: dnsPacket.AUTHORITATIVE_ANSWER | rcode,
    questions: [r.question],
    answers: ips.map((ip) => ({ type: 'A' as const, name: r.question.name, ttl: 60, data: ip })),
  });
  try {
    dnsPacket.decode(response);
    return { kind: 'response', response, rcode, answerCount: ips.length, server };
  } catch {
    // A name dns-packet cannot re-encode (a label holding "."): a real upstream echoes the question bytes it
    // received, so answer with the query itself turned into an empty response.
    const raw = Buffer.from(r.query);
    raw.writeUInt16BE(0x8400 | rcode, 2);
    return { kind: 'response', response: raw, rcode, answerCount: 0, server };
  }
}

let store: Store;
let clock: ManualClock;
let metrics: Recorded[];
let forwarder: FakeForwarder;
let handler: DnsHandler;
let localWorkload: Workload | undefined;

beforeEach(async () => {
  store = createStore();
  await store.applyAddresses(addresses([client, productpage]));
  clock = new ManualClock();
  metrics = [];
  logs.length = 0;
  forwarder = new FakeForwarder();
  localWorkload = client;
  handler = createDnsHandler({
    store,
    localWorkload: (s) => (localWorkload === undefined ? undefined : s.workload(localWorkload.uid)),
    localWorkloadWaitMs: 5_000,
    clusterDomain: 'cluster.local.',
    ipv6Enabled: true,
    preferredServiceNamespace: undefined,
    forwarder,
    clock,
    random: () => 0,
    log,
    metrics: recorder(metrics),
  });
});

const ask = async (bytes: Buffer, protocol: 'udp' | 'tcp' = 'udp') => handler({ message: bytes, protocol, source: '127.0.0.1:5555' });

describe('local answers', () => {
  it('answers A for a mesh service: authoritative, recursion available, TTL 30, question echoed as sent', async () => {
    const out = decode((await ask(query('ProductPage.ns1', 'A'))) as Buffer);
    expect(out).toMatchObject({ id: 0x1234, type: 'response', rcode: 'NOERROR', flag_aa: true, flag_ra: true, flag_rd: true });
    expect(out.questions).toEqual([{ name: 'ProductPage.ns1', type: 'A', class: 'IN' }]);
    expect(out.answers).toEqual([{ name: 'productpage.ns1', type: 'A', ttl: 30, class: 'IN', flush: false, data: '10.96.0.5' }]);
    expect(metrics).toEqual([{ kind: 'request', queryType: 'a', protocol: 'udp', source: 'client-app' }]);
    expect(forwarder.requests).toHaveLength(0);
    expect(logs).toContainEqual({ level: 'debug', obj: expect.objectContaining({ result: 'success', domain: 'productpage.ns1.', query: 'A', 'src.workload': 'client' }), msg: undefined });
  });

  it('answers AAAA with the IPv6 VIP and echoes the client EDNS', async () => {
    const out = decode((await ask(query('productpage.ns1.svc.cluster.local', 'AAAA', { edns: 1232 }), 'tcp')) as Buffer);
    expect(answerData(out)).toEqual(['fd00::5']);
    expect(out.additionals?.find((a) => a.type === 'OPT')).toMatchObject({ udpPayloadSize: 1232 });
    expect(metrics).toEqual([{ kind: 'request', queryType: 'aaaa', protocol: 'tcp', source: 'client-app' }]);
  });

  it('a CNAME first when a search domain was stripped', async () => {
    const out = decode((await ask(query('productpage.ns1.ns1.svc.cluster.local', 'A'))) as Buffer);
    expect(out.answers?.map((a) => `${a.type} ${a.name} ${'data' in a ? String(a.data) : ''}`)).toEqual([
      'CNAME productpage.ns1.ns1.svc.cluster.local productpage.ns1',
      'A productpage.ns1 10.96.0.5',
    ]);
  });

  it('dedicated mode strips the search domains it is given instead of the Kubernetes ones', async () => {
    handler = createDnsHandler({
      store,
      localWorkload: (s) => s.workload(client.uid),
      localWorkloadWaitMs: 0,
      clusterDomain: 'cluster.local',
      ipv6Enabled: true,
      searchDomains: ['corp.example'],
      preferredServiceNamespace: undefined,
      forwarder,
      clock,
      random: () => 0,
      log,
      metrics: recorder(metrics),
    });
    const viaOwnSearch = decode((await ask(query('productpage.ns1.corp.example', 'A'))) as Buffer);
    expect(viaOwnSearch.answers?.map((a) => `${a.type} ${a.name}`)).toEqual(['CNAME productpage.ns1.corp.example', 'A productpage.ns1']);
    await ask(query('productpage.ns1.ns1.svc.cluster.local', 'A'));
    expect(forwarder.requests).toHaveLength(1);
  });

  it('other types of a mesh name are forwarded', async () => {
    await ask(query('productpage.ns1.svc.cluster.local', 'TXT'));
    expect(forwarder.requests.map((r) => r.question.type)).toEqual(['TXT']);
  });
});

describe('forwarding', () => {
  it('relays the upstream answer under the client id, not authoritative, recursion available', async () => {
    const out = decode((await ask(query('www.example.com', 'A'))) as Buffer);
    expect(out).toMatchObject({ id: 0x1234, rcode: 'NOERROR', flag_aa: false, flag_ra: true });
    expect(answerData(out)).toEqual(['192.0.2.7']);
    expect(forwarder.requests[0]?.query.equals(query('www.example.com', 'A'))).toBe(true);
    expect(metrics.map((m) => m.kind)).toEqual(['request', 'upstreamRequest', 'upstreamDuration']);
  });

  it('measures the upstream duration with the clock', async () => {
    forwarder.outcome = async (r) => {
      await clock.sleep(250);
      return upstreamAnswer(r, ['192.0.2.8']);
    };
    const pending = ask(query('www.example.com', 'A'));
    await clock.advance(250);
    await pending;
    expect(metrics.find((m) => m.kind === 'upstreamDuration')?.seconds).toBe(0.25);
  });

  it('counts NXDOMAIN and empty answers as upstream failures, as ztunnel does', async () => {
    forwarder.outcome = (r) => upstreamAnswer(r, [], 3);
    const out = decode((await ask(query('nope.example', 'A'))) as Buffer);
    expect(out.rcode).toBe('NXDOMAIN');
    forwarder.outcome = (r) => upstreamAnswer(r, [], 0);
    await ask(query('empty.example', 'A'));
    expect(metrics.filter((m) => m.kind === 'upstreamFailure')).toHaveLength(2);
  });

  it('SERVFAIL when forwarding fails', async () => {
    forwarder.outcome = () => ({ kind: 'failed', reason: '192.0.2.53:53: no answer within 5000 ms', aborted: false });
    const out = decode((await ask(query('slow.example', 'A'))) as Buffer);
    expect(out).toMatchObject({ id: 0x1234, rcode: 'SERVFAIL', flag_ra: false });
    expect(out.questions).toEqual([{ name: 'slow.example', type: 'A', class: 'IN' }]);
    expect(metrics.map((m) => m.kind)).toEqual(['request', 'upstreamRequest', 'upstreamDuration', 'upstreamFailure']);
  });

  it('a relayed answer too large for the client UDP size becomes an empty truncated answer', async () => {
    forwarder.outcome = (r) => upstreamAnswer(r, Array.from({ length: 60 }, (_, i) => `198.51.100.${i}`));
    const out = decode((await ask(query('many.example', 'A'))) as Buffer);
    expect(out).toMatchObject({ flag_tc: true, rcode: 'NOERROR', answers: [] });
  });

  it('a name dns-packet cannot echo is forwarded byte for byte, never answered here', async () => {
    const header = Buffer.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    const odd = Buffer.concat([header, Buffer.from([3, 0x61, 0x2e, 0x62, 0, 0, 1, 0, 1])]);
    await ask(odd);
    expect(forwarder.requests[0]?.query.equals(odd)).toBe(true);
  });
});

describe('bad input', () => {
  it('drops what is shorter than a header', async () => {
    expect(await ask(Buffer.from([1, 2, 3]))).toBeUndefined();
    expect(logs.some((l) => l.level === 'warn' && l.msg?.includes('shorter than the 12-byte header'))).toBe(true);
  });

  it('FORMERR for a response sent as a request', async () => {
    const bytes = dnsPacket.encode({ type: 'response', id: 77, flags: 0, questions: [{ name: 'a.example', type: 'A' }] });
    const out = decode((await ask(bytes)) as Buffer);
    expect(out).toMatchObject({ id: 77, type: 'response', rcode: 'FORMERR' });
    expect(metrics).toEqual([]);
  });

  it.each([
    [1, 'IQUERY'],
    [2, 'STATUS'],
    [4, 'NOTIFY'],
    [5, 'UPDATE'],
  ])('NOTIMP for opcode %i (%s)', async (opcode, name) => {
    const out = decode((await ask(query('zone.example', 'SOA', { opcode }))) as Buffer);
    expect(out).toMatchObject({ id: 0x1234, rcode: 'NOTIMP', opcode: name });
    expect(forwarder.requests).toHaveLength(0);
  });

  it('FORMERR for a malformed query, with its id', async () => {
    const full = query('a.example', 'A');
    const out = decode((await ask(full.subarray(0, full.length - 2))) as Buffer);
    expect(out).toMatchObject({ id: 0x1234, rcode: 'FORMERR', questions: [] });
  });

  it('FORMERR without exactly one question', async () => {
    const none = dnsPacket.encode({ type: 'query', id: 9, flags: dnsPacket.RECURSION_DESIRED, questions: [] });
    const two = dnsPacket.encode({ type: 'query', id: 10, questions: [{ name: 'a.example', type: 'A' }, { name: 'b.example', type: 'A' }] });
    expect(decode((await ask(none)) as Buffer)).toMatchObject({ id: 9, rcode: 'FORMERR' });
    expect(decode((await ask(two)) as Buffer)).toMatchObject({ id: 10, rcode: 'FORMERR' });
  });

  it('never throws, and any response is a response to that message id', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 600 }),
          // Valid queries with random bytes flipped: gets past the header checks far more often.
          fc.tuple(fc.constantFrom('a.example', 'productpage.ns1', 'x.y.svc.cluster.local'), fc.constantFrom('A', 'AAAA', 'TXT', 'SRV'), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 })).map(([n, t, flips]) => {
            const q = query(n, t, { edns: 1232 });
            for (const [at, value] of flips) q[at % q.length] = value;
            return new Uint8Array(q);
          }),
        ),
        fc.constantFrom<'udp' | 'tcp'>('udp', 'tcp'),
        async (bytes, protocol) => {
          const message = Buffer.from(bytes);
          const out = await handler({ message, protocol, source: '127.0.0.1:1' });
          if (out === undefined) {
            expect(message.length).toBeLessThan(12);
            return;
          }
          const d = decode(out);
          expect(d.id).toBe(message.readUInt16BE(0));
          expect(d.type).toBe('response');
          if (protocol === 'udp') expect(out.length).toBeLessThanOrEqual(65_507);
        },
      ),
      { numRuns: 400 },
    );
    expect(logs.filter((l) => l.level === 'error')).toEqual([]);
  });
});

describe('the client pod', () => {
  it('SERVFAIL when its workload is not known within the wait, counted with unknown source', async () => {
    localWorkload = aWorkload({ uid: 'cluster//Pod/ns1/ghost', namespace: 'ns1' });
    let answered: Buffer | undefined;
    const pending = ask(query('productpage.ns1', 'A')).then((b) => (answered = b));
    await clock.advance(4_999);
    expect(answered).toBeUndefined();
    await clock.advance(1);
    await pending;
    const out = decode(answered as Buffer);
    expect(out).toMatchObject({ rcode: 'SERVFAIL', flag_aa: false });
    expect(metrics).toEqual([{ kind: 'request', queryType: 'a', protocol: 'udp', source: undefined }]);
    expect(logs.some((l) => l.level === 'warn' && l.msg?.includes('unknown source'))).toBe(true);
  });

  it('answers as soon as the workload arrives during the wait', async () => {
    const late = aWorkload({ uid: 'cluster//Pod/ns1/late', name: 'late', namespace: 'ns1', canonicalName: 'late-app' });
    localWorkload = late;
    const pending = ask(query('productpage', 'A'));
    await clock.advance(1_000);
    await store.applyAddresses(addresses([late]));
    const out = decode((await pending) as Buffer);
    expect(answerData(out)).toEqual(['10.96.0.5']);
    expect(metrics[0]?.source).toBe('late-app');
  });

  it('sends nothing once the proxy is closing', async () => {
    localWorkload = aWorkload({ uid: 'cluster//Pod/ns1/ghost', namespace: 'ns1' });
    const closing = new AbortController();
    const pending = handler({ message: query('productpage', 'A'), protocol: 'udp', source: '127.0.0.1:1', signal: closing.signal });
    closing.abort();
    expect(await pending).toBeUndefined();
    expect(clock.pendingTimers()).toEqual([]);
  });
});
