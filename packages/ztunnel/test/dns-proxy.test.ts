/**
 * The DNS proxy over real UDP and TCP sockets on loopback: local answers,
 * the error codes for bad input, forwarding to a real (fake) upstream
 * server, the istio_dns_* metrics, the TCP request timeout, the limits, and
 * close() releasing every socket and timer.
 */
import { createServer, type AddressInfo } from 'node:net';
import { createSocket } from 'node:dgram';
import { createStore, type Logger, type Store } from '@ambient/control';
import { addresses, aService, aServiceRef, aWorkload, ManualClock, vip } from '@ambient/control/testing';
import * as dnsPacket from 'dns-packet';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createDnsMetrics, startDnsProxy, type DnsProxy, type DnsProxyOptions } from '../src/dns/index.js';
import { MetricsRegistry } from '@ambient/dataplane';
import { nodeSocketFactory, type SocketFactory } from '@ambient/dataplane';
import { answerA, answerData, decode, query, startFakeUpstream, tcpClient, udpClient, type FakeUpstream, type UdpClient } from './support/dns-upstream.js';

const client = aWorkload({
  uid: 'Kubernetes//Pod/ns1/sleep-1',
  name: 'sleep-1',
  namespace: 'ns1',
  addresses: ['10.0.0.1'],
  canonicalName: 'sleep',
  canonicalRevision: 'v1',
});
const productpage = aService({ namespace: 'ns1', hostname: 'productpage.ns1.svc.cluster.local', vips: [vip('10.96.0.5'), vip('fd00::5')] });
const reviews = aService({ namespace: 'ns2', hostname: 'reviews.ns2.svc.cluster.local', vips: ['10.96.1.1', '10.96.1.2', '10.96.1.3'].map((ip) => vip(ip)) });
const headless = aService({ namespace: 'ns1', hostname: 'db.ns1.svc.cluster.local' });
const dbPods = ['10.1.0.1', '10.1.0.2'].map((ip, i) =>
  aWorkload({ uid: `Kubernetes//Pod/ns1/db-${i}`, namespace: 'ns1', addresses: [ip], services: [aServiceRef('ns1/db.ns1.svc.cluster.local')] }),
);

interface LogLine {
  level: string;
  obj: Record<string, unknown>;
  msg: string | undefined;
}

let lines: LogLine[];
function logger(): Logger {
  const make = (bindings: Record<string, unknown>): Logger => ({
    child: (b) => make({ ...bindings, ...b }),
    debug: (obj, msg) => lines.push({ level: 'debug', obj: { ...bindings, ...obj }, msg }),
    info: (obj, msg) => lines.push({ level: 'info', obj: { ...bindings, ...obj }, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: { ...bindings, ...obj }, msg }),
    error: (obj, msg) => lines.push({ level: 'error', obj: { ...bindings, ...obj }, msg }),
  });
  return make({});
}

let store: Store;
let clock: ManualClock;
let registry: MetricsRegistry;
let upstream: FakeUpstream;
const cleanup: Array<() => Promise<unknown> | unknown> = [];

beforeEach(async () => {
  lines = [];
  store = createStore();
  await store.applyAddresses(addresses([client, productpage, reviews, headless, ...dbPods]));
  clock = new ManualClock();
  registry = new MetricsRegistry();
  upstream = await startFakeUpstream();
  cleanup.push(() => upstream.close());
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function start(over: Partial<DnsProxyOptions> = {}): Promise<DnsProxy> {
  const proxy = await startDnsProxy({
    sockets: nodeSocketFactory,
    address: { host: '127.0.0.1', port: 0 },
    store,
    localWorkload: (s) => s.workload(client.uid),
    ipv6Enabled: true,
    nameservers: [{ ip: '127.0.0.1', port: upstream.port }],
    clock,
    random: Math.random,
    log: logger(),
    metrics: createDnsMetrics(registry.sub('istio')),
    ...over,
  });
  cleanup.push(() => proxy.close());
  return proxy;
}

function portOf(proxy: DnsProxy): number {
  const a = proxy.addresses[0];
  if (a === undefined) throw new Error('the proxy has no address');
  return a.port;
}

async function udp(): Promise<UdpClient> {
  const c = await udpClient();
  cleanup.push(() => c.close());
  return c;
}

async function tcp(port: number) {
  const c = await tcpClient(port);
  cleanup.push(() => c.close());
  return c;
}

describe('answers from the mesh', () => {
  it('A and AAAA over UDP: authoritative, recursion available, TTL 30', async () => {
    const proxy = await start();
    const c = await udp();
    const a = decode(await c.ask(query('productpage', 'A'), portOf(proxy)));
    expect(a).toMatchObject({ id: 0x1234, rcode: 'NOERROR', flag_aa: true, flag_ra: true });
    expect(a.answers).toEqual([{ name: 'productpage', type: 'A', ttl: 30, class: 'IN', flush: false, data: '10.96.0.5' }]);
    const aaaa = decode(await c.ask(query('productpage.ns1.svc.cluster.local', 'AAAA'), portOf(proxy)));
    expect(aaaa.answers?.map((r) => [r.type, (r as { ttl?: number }).ttl, 'data' in r ? r.data : ''])).toEqual([['AAAA', 30, 'fd00::5']]);
  });

  it('several pipelined queries on one TCP connection, each answered', async () => {
    const proxy = await start();
    const c = await tcp(portOf(proxy));
    const frames = [query('reviews.ns2', 'A', { id: 1 }), query('db', 'A', { id: 2 }), query('productpage.ns1.ns1.svc.cluster.local', 'A', { id: 3 })].map((q) => {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(q.length, 0);
      return Buffer.concat([prefix, q]);
    });
    c.writeRaw(Buffer.concat(frames));
    const replies = new Map<number, ReturnType<typeof decode>>();
    for (let i = 0; i < 3; i++) {
      const r = decode(await c.next());
      replies.set(r.id ?? -1, r);
    }
    expect(answerData(replies.get(1)).sort()).toEqual(['10.96.1.1', '10.96.1.2', '10.96.1.3']);
    expect(answerData(replies.get(2)).sort()).toEqual(['10.1.0.1', '10.1.0.2']);
    expect(replies.get(3)?.answers?.map((r) => `${r.type} ${r.name}`)).toEqual(['CNAME productpage.ns1.ns1.svc.cluster.local', 'A productpage.ns1']);
    expect(replies.get(3)?.flag_aa).toBe(true);
  });

  it('load-balances: the VIP order varies between answers', async () => {
    const proxy = await start();
    const c = await udp();
    const orders = new Set<string>();
    for (let i = 0; i < 30 && orders.size < 2; i++) {
      const r = decode(await c.ask(query('reviews.ns2.svc.cluster.local', 'A', { id: i }), portOf(proxy)));
      orders.add(answerData(r).join(','));
    }
    expect(orders.size).toBeGreaterThan(1);
  });

  it('a known name without an address of that family: NOERROR, empty, authoritative', async () => {
    const proxy = await start({ ipv6Enabled: false });
    const c = await udp();
    const r = decode(await c.ask(query('productpage', 'AAAA'), portOf(proxy)));
    expect(r).toMatchObject({ rcode: 'NOERROR', flag_aa: true, answers: [] });
  });

  it('SERVFAIL when the client pod is not in workload discovery', async () => {
    const proxy = await start({ localWorkload: () => undefined, localWorkloadWaitMs: 1_000 });
    const c = await udp();
    const reply = c.next();
    await c.send(query('productpage', 'A'), portOf(proxy));
    await clock.advance(1_000);
    expect(decode((await reply) as Buffer)).toMatchObject({ rcode: 'SERVFAIL' });
  });
});

describe('bad input', () => {
  it.each(['udp', 'tcp'] as const)('NOTIMP for UPDATE and NOTIFY, FORMERR for a response or garbage (%s)', async (protocol) => {
    const proxy = await start();
    const ask =
      protocol === 'udp'
        ? await (async () => {
            const c = await udp();
            return (b: Buffer) => c.ask(b, portOf(proxy));
          })()
        : await (async () => {
            const c = await tcp(portOf(proxy));
            return (b: Buffer) => c.ask(b);
          })();
    expect(decode(await ask(query('zone.example', 'SOA', { opcode: 5, id: 11 })))).toMatchObject({ id: 11, rcode: 'NOTIMP', opcode: 'UPDATE' });
    expect(decode(await ask(query('zone.example', 'SOA', { opcode: 4, id: 12 })))).toMatchObject({ id: 12, rcode: 'NOTIMP', opcode: 'NOTIFY' });
    const response = dnsPacket.encode({ type: 'response', id: 13, questions: [{ name: 'productpage', type: 'A' }] });
    expect(decode(await ask(response))).toMatchObject({ id: 13, rcode: 'FORMERR' });
    const garbage = Buffer.concat([Buffer.from([0, 14, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Buffer.from([60, 1, 2])]);
    expect(decode(await ask(garbage))).toMatchObject({ id: 14, rcode: 'FORMERR' });
    // Still serving afterwards.
    expect(decode(await ask(query('productpage', 'A', { id: 15 })))).toMatchObject({ id: 15, rcode: 'NOERROR' });
    expect(upstream.queries).toEqual([]);
  });

  it('drops a datagram shorter than a header, with a log line, and keeps serving', async () => {
    const proxy = await start();
    const c = await udp();
    await c.send(Buffer.from([1, 2, 3]), portOf(proxy));
    expect(decode(await c.ask(query('productpage', 'A', { id: 21 }), portOf(proxy))).id).toBe(21);
    expect(lines.some((l) => l.level === 'warn' && l.msg === 'dropped a DNS message shorter than the 12-byte header')).toBe(true);
  });

  it('random datagrams get a response for their id or nothing, and the proxy keeps answering', async () => {
    // The upstream refuses everything (an error response needs no question), so forwarded fuzz is answered SERVFAIL at once.
    upstream.answer((q) => {
      const raw = Buffer.alloc(12);
      raw.writeUInt16BE(q.packet.id ?? 0, 0);
      raw.writeUInt16BE(0x8005, 2);
      return { raw };
    });
    const proxy = await start();
    const c = await udp();
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 12, maxLength: 300 }), async (bytes) => {
        const message = Buffer.from(bytes);
        message[2] = (message[2] ?? 0) & 0x7f; // a query, so that every one is answered
        const reply = decode(await c.ask(message, portOf(proxy)));
        expect(reply.id).toBe(message.readUInt16BE(0));
        expect(reply.type).toBe('response');
      }),
      { numRuns: 100 },
    );
    expect(answerData(decode(await c.ask(query('productpage', 'A', { id: 22 }), portOf(proxy))))[0]).toBe('10.96.0.5');
  });

  it('closes a TCP connection announcing an oversize message', async () => {
    const proxy = await start({ limits: { maxTcpMessageBytes: 512 } });
    const c = await tcp(portOf(proxy));
    c.writeRaw(Buffer.from([0x02, 0x01, 0, 0]));
    await c.closed();
    expect(lines.some((l) => l.level === 'warn' && l.obj['reason'] === 'DNS message of 513 bytes exceeds the 512-byte limit')).toBe(true);
  });

  it('answers at most maxQueriesPerTcpConnection queries of a connection at once, even pipelined in one write', async () => {
    upstream.answer(() => 'drop');
    const proxy = await start({ limits: { maxQueriesPerTcpConnection: 1, upstreamTimeoutMs: 1_000 } });
    const c = await tcp(portOf(proxy));
    const framed = (q: Buffer) => Buffer.concat([Buffer.from([q.length >> 8, q.length & 0xff]), q]);
    c.writeRaw(Buffer.concat([framed(query('one.example', 'A', { id: 61 })), framed(query('two.example', 'A', { id: 62 }))]));
    await upstream.nextQuery(1);
    await clock.flush();
    expect(upstream.queries.map((q) => q.packet.questions?.[0]?.name)).toEqual(['one.example']);
    await clock.advance(1_000);
    expect(decode(await c.next())).toMatchObject({ id: 61, rcode: 'SERVFAIL' });
    expect((await upstream.nextQuery(2)).packet.questions?.[0]?.name).toBe('two.example');
    await clock.advance(1_000);
    expect(decode(await c.next())).toMatchObject({ id: 62, rcode: 'SERVFAIL' });
  });

  it('refuses TCP connections beyond the limit', async () => {
    const proxy = await start({ limits: { maxTcpConnections: 1 } });
    const first = await tcp(portOf(proxy));
    const second = await tcp(portOf(proxy));
    await second.closed();
    expect(decode(await first.ask(query('productpage', 'A', { id: 31 }))).id).toBe(31);
    expect(lines.some((l) => l.level === 'warn' && l.msg === 'refused a DNS TCP connection: too many connections open')).toBe(true);
  });
});

describe('TCP request timeout', () => {
  it('closes a connection 5 s after its last request, not before', async () => {
    const proxy = await start();
    const c = await tcp(portOf(proxy));
    let closed = false;
    void c.closed().then(() => (closed = true));
    await clock.advance(4_000);
    expect(decode(await c.ask(query('productpage', 'A', { id: 41 }))).id).toBe(41);
    await clock.advance(4_999);
    expect(closed).toBe(false);
    await clock.advance(1);
    await c.closed();
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('a partial message does not keep the connection open', async () => {
    const proxy = await start();
    const c = await tcp(portOf(proxy));
    c.writeRaw(Buffer.from([0, 30, 1, 2, 3]));
    await clock.advance(5_000);
    await c.closed();
  });
});

describe('forwarding', () => {
  it('external names go upstream over UDP and the answer comes back under the client id', async () => {
    upstream.answer((q) => answerA(q, ['93.184.216.34']));
    const proxy = await start();
    const c = await udp();
    const r = decode(await c.ask(query('example.com', 'A', { id: 0xbeef }), portOf(proxy)));
    expect(r).toMatchObject({ id: 0xbeef, rcode: 'NOERROR', flag_aa: false, flag_ra: true });
    expect(answerData(r)).toEqual(['93.184.216.34']);
    const sent = upstream.queries[0];
    expect(sent?.protocol).toBe('udp');
    expect(sent?.packet.questions).toEqual([{ name: 'example.com', type: 'A', class: 'IN' }]);
    expect(sent?.packet.id).not.toBe(0xbeef);
  });

  it('other types of mesh names go upstream too, over TCP when the client used TCP', async () => {
    upstream.answer((q) => ({ ...answerA(q, []), answers: [{ type: 'TXT', name: 'productpage.ns1.svc.cluster.local', data: 'hello' }] }));
    const proxy = await start();
    const c = await tcp(portOf(proxy));
    const r = decode(await c.ask(query('productpage.ns1.svc.cluster.local', 'TXT')));
    expect(r.answers?.[0]).toMatchObject({ type: 'TXT' });
    expect(upstream.queries.map((q) => [q.protocol, q.packet.questions?.[0]?.type])).toEqual([['tcp', 'TXT']]);
  });

  it('NXDOMAIN from upstream reaches the client', async () => {
    upstream.answer((q) => answerA(q, [], 3));
    const proxy = await start();
    const c = await udp();
    expect(decode(await c.ask(query('nope.invalid', 'A'), portOf(proxy)))).toMatchObject({ rcode: 'NXDOMAIN' });
  });

  it('upstream timeout: SERVFAIL, counted as an upstream failure', async () => {
    upstream.answer(() => 'drop');
    const proxy = await start({ limits: { upstreamTimeoutMs: 2_000 } });
    const c = await udp();
    const reply = c.next();
    await c.send(query('slow.example', 'A', { id: 51 }), portOf(proxy));
    await upstream.nextQuery();
    await clock.advance(2_000);
    expect(decode((await reply) as Buffer)).toMatchObject({ id: 51, rcode: 'SERVFAIL', flag_ra: false });
    const text = await registry.encode('prometheus');
    const labels = 'request_query_type="a",request_protocol="udp",source_canonical_service="sleep",source_canonical_revision="v1"';
    expect(text).toContain(`istio_dns_upstream_requests_total{${labels}} 1`);
    expect(text).toContain(`istio_dns_upstream_failures_total{${labels}} 1`);
    expect(text).toContain(`istio_dns_upstream_request_duration_seconds_bucket{${labels},le="5"} 1`);
    expect(text).toContain(`istio_dns_upstream_request_duration_seconds_bucket{${labels},le="1"} 0`);
    const access = lines.find((l) => l.level === 'debug' && typeof l.obj['result'] === 'string' && l.obj['result'].startsWith('forwarding failed'));
    expect(access?.obj).toMatchObject({ scope: 'dns', 'src.workload': 'sleep-1', 'src.namespace': 'ns1', query: 'A', domain: 'slow.example.' });
  });
});

describe('metrics', () => {
  it('counts requests by type, protocol and the client canonical service', async () => {
    const proxy = await start();
    const c = await udp();
    const t = await tcp(portOf(proxy));
    await c.ask(query('productpage', 'A'), portOf(proxy));
    await c.ask(query('productpage', 'A'), portOf(proxy));
    await t.ask(query('productpage', 'AAAA'));
    await c.ask(query('example.com', 'SRV'), portOf(proxy));
    await c.ask(query('zone.example', 'SOA', { opcode: 5 }), portOf(proxy));
    const text = await registry.encode('prometheus');
    const l = (type: string, proto: string) =>
      `{request_query_type="${type}",request_protocol="${proto}",source_canonical_service="sleep",source_canonical_revision="v1"}`;
    expect(text).toContain(`istio_dns_requests_total${l('a', 'udp')} 2`);
    expect(text).toContain(`istio_dns_requests_total${l('aaaa', 'tcp')} 1`);
    expect(text).toContain(`istio_dns_requests_total${l('srv', 'udp')} 1`);
    expect(text).toContain(`istio_dns_upstream_requests_total${l('srv', 'udp')} 1`);
    expect(text).not.toContain('request_query_type="soa"');
    expect(text).not.toContain(`istio_dns_upstream_requests_total${l('a', 'udp')}`);
  });
});

describe('listeners', () => {
  it('localhost binds 127.0.0.1 and ::1 on one port when IPv6 is enabled', async () => {
    const proxy = await start({ address: { host: 'localhost', port: 0 } });
    expect(proxy.addresses.map((a) => a.ip)).toEqual(['127.0.0.1', '::1']);
    expect(new Set(proxy.addresses.map((a) => a.port)).size).toBe(1);
    const c6 = await udpClient('udp6');
    cleanup.push(() => c6.close());
    expect(answerData(decode(await c6.ask(query('productpage', 'A'), portOf(proxy))))[0]).toBe('10.96.0.5');
  });

  it('localhost without IPv6 binds 127.0.0.1 only', async () => {
    const proxy = await start({ address: { host: 'localhost', port: 0 }, ipv6Enabled: false });
    expect(proxy.addresses.map((a) => a.ip)).toEqual(['127.0.0.1']);
  });

  it('a pod without IPv6 on lo keeps its IPv4 listener', async () => {
    const noV6: SocketFactory = {
      ...nodeSocketFactory,
      listen: (o, cb) => (o.host === '::1' ? Promise.reject(Object.assign(new Error('bind EADDRNOTAVAIL'), { code: 'EADDRNOTAVAIL' })) : nodeSocketFactory.listen(o, cb)),
    };
    const proxy = await start({ sockets: noV6, address: { host: 'localhost', port: 0 } });
    expect(proxy.addresses.map((a) => a.ip)).toEqual(['127.0.0.1']);
    expect(lines.some((l) => l.level === 'warn' && String(l.msg).includes('IPv6 loopback is not available'))).toBe(true);
  });

  it('fails to start, leaving nothing bound, when the port is taken', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise((resolve) => taken.close(resolve)));
    const port = (taken.address() as AddressInfo).port;
    await expect(start({ address: { host: '127.0.0.1', port } })).rejects.toThrow(/EADDRINUSE/);
  });
});

describe('close()', () => {
  it('releases both ports, every connection and timer, and answers nothing after', async () => {
    upstream.answer(() => 'drop');
    const proxy = await start();
    const port = portOf(proxy);
    const c = await udp();
    const t = await tcp(port);
    // One query stuck upstream, one TCP connection idle.
    const late = new AbortController();
    const reply = c.next(late.signal);
    await c.send(query('slow.example', 'A'), port);
    await upstream.nextQuery();
    await proxy.close();
    await proxy.close();
    await t.closed();
    expect(clock.pendingTimers()).toEqual([]);
    // Both ports are free again.
    const server = createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', resolve));
    await new Promise((resolve) => server.close(resolve));
    const sock = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, '127.0.0.1', () => resolve());
    });
    await new Promise<void>((resolve) => sock.close(() => resolve()));
    late.abort();
    expect(await reply).toBeUndefined();
  });
});
