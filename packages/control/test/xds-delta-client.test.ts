/**
 * The delta ADS client against a real grpc-js server on 127.0.0.1, scripted
 * step by step (test/xds-scripted-server.ts), with a manual clock for backoff.
 */
import { create } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import type { Any } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../src/testing/manual-clock.js';
import type { TerminationReason } from '../src/xds/backoff.js';
import { DeltaXdsClient, XdsError } from '../src/xds/delta-client.js';
import type { DeltaXdsClientOptions, Logger, XdsHandler, XdsResource } from '../src/xds/delta-client.js';
import { buildNode } from '../src/xds/node.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/xds/type-urls.js';
import { Inbox, ScriptedAdsServer, resource } from './xds-scripted-server.js';
import type { ScriptedStream } from './xds-scripted-server.js';

const ADDR = ADDRESS_TYPE_URL;
const AUTHZ = AUTHORIZATION_TYPE_URL;

function payload(typeUrl: string, size = 3): Any {
  return create(AnySchema, { typeUrl, value: new Uint8Array(size).fill(7) });
}

/** A handler that applies everything except names listed in `bad`, atomically, and records each call. */
class FakeHandler implements XdsHandler {
  readonly applied = new Map<string, string>();
  readonly calls: Array<{ resources: string[]; removed: string[] }> = [];
  bad = new Map<string, string>();
  throwNext: Error | undefined;

  constructor(
    readonly typeUrl: string,
    readonly onDemand = false,
  ) {}

  async handle(resources: XdsResource[], removed: string[]) {
    this.calls.push({ resources: resources.map((r) => r.name), removed });
    // Apply on a later turn, like a real store, so "notified before applied" would show.
    await new Promise((resolve) => setImmediate(resolve));
    if (this.throwNext) {
      const e = this.throwNext;
      this.throwNext = undefined;
      throw e;
    }
    const rejected: Array<{ name: string; reason: string }> = [];
    for (const r of resources) {
      const reason = this.bad.get(r.name);
      if (reason !== undefined) rejected.push({ name: r.name, reason });
      else this.applied.set(r.name, r.version);
    }
    for (const name of removed) this.applied.delete(name);
    return { rejected };
  }
}

const nodeResult = buildNode({
  nodeType: 'ztunnel',
  env: { POD_NAME: 'zt-1', POD_NAMESPACE: 'istio-system', NODE_NAME: 'n1', INSTANCE_IP: '10.0.0.2' },
});
if (!nodeResult.ok) throw new Error('node fixture must build');
const node = nodeResult.value;

interface Harness {
  server: ScriptedAdsServer;
  client: DeltaXdsClient;
  clock: ManualClock;
  addr: FakeHandler;
  authz: FakeHandler;
  terminations: Inbox<TerminationReason>;
  messages: Array<[string, number]>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  // Client first (it cancels its stream), then the server, which fails the
  // test if any stream or request was never consumed by the script.
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  options: { onDemandAddresses?: boolean; server?: ScriptedAdsServer; overrides?: Partial<DeltaXdsClientOptions> } = {},
): Promise<Harness> {
  const server = options.server ?? (await ScriptedAdsServer.start());
  cleanups.push(() => server.close());
  const clock = new ManualClock();
  const addr = new FakeHandler(ADDR, options.onDemandAddresses ?? false);
  const authz = new FakeHandler(AUTHZ);
  const terminations = new Inbox<TerminationReason>();
  const messages: Array<[string, number]> = [];
  const client = new DeltaXdsClient({
    target: server.target,
    credentials: grpc.credentials.createInsecure(),
    callMetadata: () => {
      const md = new grpc.Metadata();
      md.set('authorization', 'Bearer test-token');
      md.set('clusterid', 'Kubernetes');
      return md;
    },
    node,
    handlers: [addr, authz],
    clock,
    log: pino({ level: 'silent' }),
    events: {
      onTermination: (r) => terminations.push(r),
      onMessage: (t, b) => messages.push([t, b]),
    },
    ...options.overrides,
  });
  cleanups.push(() => client.close());
  return { server, client, clock, addr, authz, terminations, messages };
}

/** Consumes the two initial requests of a new stream and returns them by type. */
async function initialRequests(stream: ScriptedStream) {
  const first = await stream.nextRequest();
  const second = await stream.nextRequest();
  const byType = new Map([first, second].map((r) => [r.typeUrl, r]));
  const addr = byType.get(ADDR);
  const authz = byType.get(AUTHZ);
  if (!addr || !authz) throw new Error(`expected one initial request per type, got ${first.typeUrl}, ${second.typeUrl}`);
  return { first, second, addr, authz };
}

function isSettled(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  // Two macrotask turns let the then-callbacks run.
  return new Promise((resolve) => setImmediate(() => setImmediate(() => resolve(settled))));
}

describe('DeltaXdsClient: subscription, ACK and NACK', () => {
  it('opens one stream with one initial wildcard request per type, node and auth metadata on it', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    expect(stream.metadata.get('authorization')).toEqual(['Bearer test-token']);
    expect(stream.metadata.get('clusterid')).toEqual(['Kubernetes']);
    const { first, second, addr, authz } = await initialRequests(stream);
    expect(first.node?.id).toBe('ztunnel~10.0.0.2~zt-1.istio-system~istio-system.svc.cluster.local');
    expect(first.node?.metadata).toMatchObject({ NAME: 'zt-1', NAMESPACE: 'istio-system', INSTANCE_IPS: '10.0.0.2' });
    expect(second.node).toBeUndefined();
    for (const r of [addr, authz]) {
      expect(r.resourceNamesSubscribe).toEqual([]);
      expect(r.resourceNamesUnsubscribe).toEqual([]);
      expect(r.initialResourceVersions).toEqual({});
      expect(r.responseNonce).toBe('');
      expect(r.errorDetail).toBeUndefined();
    }
  });

  it('hands each response to its handler, ACKs it, and is ready only after both types were ACKed', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);

    const n1 = stream.send(ADDR, [resource('default/pod-a', 'v1', payload(ADDR, 5)), resource('default/pod-b', 'v1', payload(ADDR, 2))]);
    await stream.expectAck(ADDR, n1);
    expect(h.addr.applied).toEqual(new Map([['default/pod-a', 'v1'], ['default/pod-b', 'v1']]));
    expect(h.messages).toEqual([[ADDR, 7]]);
    expect(await isSettled(h.client.ready)).toBe(false);
    expect(h.client.snapshot().awaitingFirstAck).toEqual([AUTHZ]);

    const n2 = stream.send(AUTHZ, []);
    await stream.expectAck(AUTHZ, n2);
    await h.client.ready;
    expect(h.client.snapshot()).toMatchObject({
      state: 'connected',
      ready: true,
      awaitingFirstAck: [],
      knownVersions: { [ADDR]: { 'default/pod-a': 'v1', 'default/pod-b': 'v1' }, [AUTHZ]: {} },
    });
  });

  it('NACKs naming each bad resource, applies the good ones, and does not become ready on a NACK', async () => {
    const h = await setup();
    h.addr.bad.set('bad-1', 'addresses[0]: must be 4 or 16 bytes, got 5');
    h.addr.bad.set('bad-2', 'uid: must not be empty');
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);

    const a = stream.send(AUTHZ, []);
    await stream.expectAck(AUTHZ, a);
    const n = stream.send(ADDR, [
      resource('good', 'v1', payload(ADDR)),
      resource('bad-1', 'v1', payload(ADDR)),
      resource('bad-2', 'v7', payload(ADDR)),
    ]);
    const nack = await stream.expectNack(ADDR, n);
    expect(nack.message).toBe('bad-1: addresses[0]: must be 4 or 16 bytes, got 5; bad-2: uid: must not be empty');
    expect(nack.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(h.addr.applied).toEqual(new Map([['good', 'v1']]));
    expect(h.client.snapshot().knownVersions[ADDR]).toEqual({ good: 'v1' });
    expect(await isSettled(h.client.ready)).toBe(false);

    h.addr.bad.clear();
    const n2 = stream.send(ADDR, [resource('bad-1', 'v2', payload(ADDR))]);
    await stream.expectAck(ADDR, n2);
    await h.client.ready;
  });

  it('applies removals and forgets their versions', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    const n1 = stream.send(ADDR, [resource('a', '1', payload(ADDR)), resource('b', '1', payload(ADDR))]);
    await stream.expectAck(ADDR, n1);
    const n2 = stream.send(ADDR, [resource('c', '1', payload(ADDR))], ['a', 'never-known']);
    await stream.expectAck(ADDR, n2);
    expect(h.addr.calls.at(-1)).toEqual({ resources: ['c'], removed: ['a', 'never-known'] });
    expect(h.addr.applied).toEqual(new Map([['b', '1'], ['c', '1']]));
    expect(h.client.snapshot().knownVersions[ADDR]).toEqual({ b: '1', c: '1' });
  });

  it('NACKs a response for a type it has no handler for', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    const n = stream.send('type.googleapis.com/envoy.config.cluster.v3.Cluster', []);
    const nack = await stream.expectNack('type.googleapis.com/envoy.config.cluster.v3.Cluster', n);
    expect(nack.message).toBe('no handler registered for type URL type.googleapis.com/envoy.config.cluster.v3.Cluster');
  });

  it('NACKs and records nothing when a handler fails outright', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    h.addr.throwNext = new Error('store is broken');
    const n = stream.send(ADDR, [resource('a', '1', payload(ADDR))], []);
    const nack = await stream.expectNack(ADDR, n);
    expect(nack.message).toBe('handler failed, nothing applied: store is broken');
    expect(h.client.snapshot().knownVersions[ADDR]).toEqual({});
  });
});

describe('DeltaXdsClient: reconnect', () => {
  it('reconnects after a stream error, echoing accepted versions and leaving rejected ones out (F-04)', async () => {
    const h = await setup();
    h.addr.bad.set('bad', 'cannot decode');
    h.client.start();
    const s1 = await h.server.nextStream();
    await initialRequests(s1);
    const n1 = s1.send(ADDR, [resource('foo0', '0.0.1', payload(ADDR)), resource('bad', '9.9.9', payload(ADDR))]);
    await s1.expectNack(ADDR, n1);
    const n2 = s1.send(AUTHZ, [resource('ns/deny-all', 'p1', payload(AUTHZ))]);
    await s1.expectAck(AUTHZ, n2);

    s1.fail(grpc.status.INTERNAL, 'istiod exploded');
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([20]);
    await h.clock.advance(20);

    const s2 = await h.server.nextStream();
    const { first, addr, authz } = await initialRequests(s2);
    expect(first.node?.id).toBe(node.id);
    expect(addr.initialResourceVersions).toEqual({ foo0: '0.0.1' });
    expect(authz.initialResourceVersions).toEqual({ 'ns/deny-all': 'p1' });
    // The last good state kept serving across the disconnect.
    expect(h.addr.applied).toEqual(new Map([['foo0', '0.0.1']]));
    expect(h.authz.applied).toEqual(new Map([['ns/deny-all', 'p1']]));
  });

  it('a stream that ends OK reconnects at once; a benign status after 10 ms; errors double from 20 ms', async () => {
    const h = await setup();
    h.client.start();

    // Stream ended OK: no timer at all.
    const s1 = await h.server.nextStream();
    await initialRequests(s1);
    s1.sendHeaders();
    s1.end();
    expect(await h.terminations.next('termination')).toBe('Complete');
    expect(h.clock.pendingTimers()).toEqual([]);

    // Unavailable "Connection dropped"-class close: reset, 10 ms.
    const s2 = await h.server.nextStream();
    await initialRequests(s2);
    s2.sendHeaders();
    s2.fail(grpc.status.UNAVAILABLE, 'transport is closing');
    expect(await h.terminations.next('termination')).toBe('Reconnect');
    expect(h.clock.pendingTimers()).toEqual([10]);
    await h.clock.advance(9);
    expect(h.server.streamCount).toBe(2);
    await h.clock.advance(1);

    // Other errors on an established stream: 20 ms, then 40 ms.
    const s3 = await h.server.nextStream();
    await initialRequests(s3);
    s3.sendHeaders();
    s3.fail(grpc.status.INTERNAL, 'boom');
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([20]);
    await h.clock.advance(20);

    const s4 = await h.server.nextStream();
    await initialRequests(s4);
    s4.sendHeaders();
    s4.fail(grpc.status.PERMISSION_DENIED, 'denied');
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([40]);
    await h.clock.advance(40);

    // Rejected before any response headers (trailers-only): a connection error, still doubling.
    const s5 = await h.server.nextStream();
    await initialRequests(s5);
    s5.fail(grpc.status.UNAUTHENTICATED, 'authentication failure');
    expect(await h.terminations.next('termination')).toBe('ConnectionError');
    expect(h.clock.pendingTimers()).toEqual([80]);
    await h.clock.advance(80);

    // A benign close resets the backoff to its initial value.
    const s6 = await h.server.nextStream();
    await initialRequests(s6);
    s6.sendHeaders();
    s6.fail(grpc.status.CANCELLED, 'max connection age');
    expect(await h.terminations.next('termination')).toBe('Reconnect');
    expect(h.clock.pendingTimers()).toEqual([10]);
    await h.clock.advance(10);
    const s7 = await h.server.nextStream();
    await initialRequests(s7);
    s7.sendHeaders();
    s7.fail(grpc.status.INTERNAL, 'boom');
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([20]);
  });

  it('starts with istiod unreachable: not ready, doubling backoff, ready once istiod appears (F-01)', async () => {
    // Reserve a port, then free it so connecting is refused.
    const placeholder = await ScriptedAdsServer.start();
    const port = Number(placeholder.target.split(':')[1]);
    await placeholder.close();

    const clock = new ManualClock();
    const addr = new FakeHandler(ADDR);
    const authz = new FakeHandler(AUTHZ);
    const terminations = new Inbox<TerminationReason>();
    const client = new DeltaXdsClient({
      target: `127.0.0.1:${port}`,
      credentials: grpc.credentials.createInsecure(),
      callMetadata: () => new grpc.Metadata(),
      node,
      handlers: [addr, authz],
      clock,
      log: pino({ level: 'silent' }),
      events: { onTermination: (r) => terminations.push(r) },
    });
    cleanups.push(() => client.close());
    client.start();

    const delays: number[] = [];
    for (let i = 0; i < 3; i++) {
      expect(await terminations.next('termination')).toBe('ConnectionError');
      delays.push(...clock.pendingTimers());
      if (i < 2) await clock.advance(clock.pendingTimers()[0] ?? 0);
    }
    expect(delays).toEqual([20, 40, 80]);
    expect(await isSettled(client.ready)).toBe(false);

    const server = await ScriptedAdsServer.start({ port });
    cleanups.push(() => server.close());
    await clock.advance(80);
    const stream = await server.nextStream();
    await initialRequests(stream);
    await stream.expectAck(ADDR, stream.send(ADDR, []));
    await stream.expectAck(AUTHZ, stream.send(AUTHZ, []));
    await client.ready;
  });

  it('backs off when the call metadata cannot be produced, then recovers', async () => {
    let failures = 1;
    const h = await setup({
      overrides: {
        callMetadata: () => {
          if (failures-- > 0) throw new Error('token file unreadable');
          return new grpc.Metadata();
        },
      },
    });
    h.client.start();
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([20]);
    expect(h.server.streamCount).toBe(0);
    await h.clock.advance(20);
    const stream = await h.server.nextStream();
    await initialRequests(stream);
  });
});

describe('DeltaXdsClient: on-demand', () => {
  it('subscribes to nothing for an on-demand type and is ready once the wildcard types are ACKed', async () => {
    const h = await setup({ onDemandAddresses: true });
    h.client.start();
    const stream = await h.server.nextStream();
    const { addr, authz } = await initialRequests(stream);
    expect(addr.resourceNamesSubscribe).toEqual(['*']);
    expect(addr.resourceNamesUnsubscribe).toEqual(['*']);
    expect(authz.resourceNamesSubscribe).toEqual([]);
    await stream.expectAck(AUTHZ, stream.send(AUTHZ, []));
    await h.client.ready;
  });

  it('demand() subscribes once per name, and resolves after the handler applied a response naming it or removing it', async () => {
    const h = await setup({ onDemandAddresses: true });
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);

    const seenAtResolve: Array<string | undefined> = [];
    const d1 = h.client.demand(ADDR, '/10.0.0.5').then(() => seenAtResolve.push(h.addr.applied.get('/10.0.0.5')));
    const d2 = h.client.demand(ADDR, '/10.0.0.5').then(() => seenAtResolve.push(h.addr.applied.get('/10.0.0.5')));
    const sub = await stream.nextRequest();
    expect(sub).toMatchObject({ typeUrl: ADDR, resourceNamesSubscribe: ['/10.0.0.5'], responseNonce: '' });
    expect(await isSettled(d1)).toBe(false);

    const n = stream.send(ADDR, [resource('/10.0.0.5', 'v3', payload(ADDR))]);
    await stream.expectAck(ADDR, n);
    await Promise.all([d1, d2]);
    expect(seenAtResolve).toEqual(['v3', 'v3']);

    const gone = h.client.demand(ADDR, 'default/missing.default.svc.cluster.local');
    expect((await stream.nextRequest()).resourceNamesSubscribe).toEqual(['default/missing.default.svc.cluster.local']);
    await stream.expectAck(ADDR, stream.send(ADDR, [], ['default/missing.default.svc.cluster.local']));
    await gone;
  });

  it('re-subscribes demanded names through initial_resource_versions after a reconnect', async () => {
    const h = await setup({ onDemandAddresses: true });
    h.client.start();
    const s1 = await h.server.nextStream();
    await initialRequests(s1);
    const have = h.client.demand(ADDR, 'uid-have');
    await s1.nextRequest();
    await s1.expectAck(ADDR, s1.send(ADDR, [resource('uid-have', 'v1', payload(ADDR))]));
    await have;
    const pending = h.client.demand(ADDR, 'uid-pending');
    await s1.nextRequest();

    s1.sendHeaders();
    s1.fail(grpc.status.UNAVAILABLE, 'transport is closing');
    expect(await h.terminations.next('termination')).toBe('Reconnect');
    await h.clock.advance(10);
    const s2 = await h.server.nextStream();
    const { addr } = await initialRequests(s2);
    expect(addr.resourceNamesSubscribe).toEqual(['*']);
    expect(addr.initialResourceVersions).toEqual({ 'uid-have': 'v1', 'uid-pending': '' });
    await s2.expectAck(ADDR, s2.send(ADDR, [resource('uid-pending', 'v1', payload(ADDR))]));
    await pending;
  });

  it('rejects demands that cannot be served and honours an abort signal', async () => {
    const h = await setup({ onDemandAddresses: true });
    await expect(h.client.demand(AUTHZ, 'ns/p')).rejects.toMatchObject({ code: 'NOT_ON_DEMAND' });
    await expect(h.client.demand('type.googleapis.com/x', 'a')).rejects.toMatchObject({ code: 'UNKNOWN_TYPE' });
    const ac = new AbortController();
    const d = h.client.demand(ADDR, 'a', ac.signal);
    ac.abort(new Error('caller gave up'));
    await expect(d).rejects.toThrow('caller gave up');
  });
});

describe('DeltaXdsClient: close', () => {
  it('close() cancels the stream, rejects pending demands, and stops reconnecting', async () => {
    const h = await setup({ onDemandAddresses: true });
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    const d = h.client.demand(ADDR, 'never-answered').then(
      () => 'resolved',
      (e: unknown) => e,
    );
    await stream.nextRequest();

    await h.client.close();
    await stream.closed;
    const outcome = await d;
    expect(outcome).toBeInstanceOf(XdsError);
    expect(outcome).toMatchObject({ code: 'CLOSED' });
    await expect(h.client.demand(ADDR, 'x')).rejects.toMatchObject({ code: 'CLOSED' });
    expect(h.client.snapshot().state).toBe('closed');
    expect(h.clock.pendingTimers()).toEqual([]);
    await h.clock.advance(60_000);
    expect(h.server.streamCount).toBe(1);
  });

  it('close() during backoff cancels the timer; Symbol.asyncDispose closes too', async () => {
    const h = await setup();
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    stream.sendHeaders();
    stream.fail(grpc.status.INTERNAL, 'boom');
    expect(await h.terminations.next('termination')).toBe('Error');
    expect(h.clock.pendingTimers()).toEqual([20]);
    await h.client[Symbol.asyncDispose]();
    expect(h.clock.pendingTimers()).toEqual([]);
    await h.clock.advance(1_000);
    expect(h.server.streamCount).toBe(1);
  });

  it('leaves no sockets or timers behind, across reconnects', async () => {
    const server = await ScriptedAdsServer.start();
    const baseline = countHandles();
    const h = await setup({ server });
    h.client.start();
    const s1 = await h.server.nextStream();
    await initialRequests(s1);
    s1.sendHeaders();
    s1.end();
    const s2 = await h.server.nextStream();
    await initialRequests(s2);
    await s2.expectAck(ADDR, s2.send(ADDR, []));
    // The server stays up: only the client's own teardown can bring the count back.
    await h.client.close();
    await eventually(() => {
      const now = countHandles();
      return now.sockets <= baseline.sockets && now.timers <= baseline.timers;
    }, 'client sockets and timers return to the baseline');
  });
});

describe('DeltaXdsClient: logging', () => {
  it('logs through a child logger with component xds and logs state transitions', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const capture = (bindings: Record<string, unknown>): Logger => {
      const entry = (level: string) => (obj: object, msg?: string) => lines.push({ ...bindings, ...obj, level, msg });
      return {
        child: (b) => capture({ ...bindings, ...b }),
        debug: entry('debug'),
        info: entry('info'),
        warn: entry('warn'),
        error: entry('error'),
      };
    };
    const h = await setup({ overrides: { log: capture({}) } });
    h.client.start();
    const stream = await h.server.nextStream();
    await initialRequests(stream);
    await stream.expectAck(ADDR, stream.send(ADDR, []));
    expect(lines.every((l) => l['component'] === 'xds')).toBe(true);
    const transitions = lines.filter((l) => l['from'] !== undefined).map((l) => l['msg']);
    expect(transitions).toEqual(['idle -> connecting', 'connecting -> connected']);
  });
});

/** Open TCP sockets and pending timers in this process. */
function countHandles(): { sockets: number; timers: number } {
  const info = process.getActiveResourcesInfo();
  return {
    sockets: info.filter((r) => r === 'TCPSocketWrap').length,
    timers: info.filter((r) => r === 'Timeout').length,
  };
}

/** Polls `cond` on real time, bounded; a guard for asynchronous socket teardown, not a sleep. */
async function eventually(cond: () => boolean, what: string, timeoutMs = 2_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`not true within ${timeoutMs} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
