/**
 * The HBONE connection pool with real TLS 1.3 + HTTP/2 against a local HBONE
 * server: reuse, stream limits (ours and the peer's), one dial per key under
 * concurrency, dial failures, idle release and keepalive through a ManualClock,
 * GOAWAY, key isolation (never sharing a connection across source identities),
 * drain and close.
 */
import { Socket } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { identityToString, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { ProxyError } from '../src/errors.js';
import type { HboneStreamRequest, HboneClientSettings } from '../src/hbone/connection.js';
import { HbonePool, hboneDialer, type PoolDialer, type PoolKey, type PooledStream } from '../src/hbone/pool.js';
import { nodeSocketFactory, type SocketFactory } from '../src/platform/sockets.js';
import { id } from '../src/testing/certs.js';
import { issueCertificate, newTestCa, startMiniHboneServer, type MiniHboneServer } from './support/mini-hbone-server.js';
import { eventually, startFreezableRelay } from './support/net-fixtures.js';

const ALICE_URI = 'spiffe://cluster.local/ns/apps/sa/alice';
const BOB_URI = 'spiffe://cluster.local/ns/apps/sa/bob';
const SERVER_URI = 'spiffe://cluster.local/ns/backend/sa/server';
const ALICE = id(ALICE_URI);
const BOB = id(BOB_URI);
const SERVER_ID = id(SERVER_URI);
const SERVICE_SAN = id('spiffe://cluster.local/ns/backend/sa/service-account-of-svc');

/** The CONNECT of every stream here: an address authority, no HBONE headers. */
const TO_APP: HboneStreamRequest = { connect: { authority: { kind: 'address', ip: '10.1.0.1', port: 80 } } };

let clock: ManualClock;
let ca: LocalCertificateAuthority;
let certs: Map<string, WorkloadCertificate>;
let serverCert: WorkloadCertificate;

const cleanups: Array<() => unknown> = [];
function defer(fn: () => unknown): void {
  cleanups.push(fn);
}

beforeAll(async () => {
  clock = new ManualClock({ now: Date.now() });
  ca = await newTestCa(clock);
  certs = new Map();
  for (const uri of [ALICE_URI, BOB_URI]) certs.set(uri, await issueCertificate(ca, uri, clock));
  serverCert = await issueCertificate(ca, SERVER_URI, clock);
});

afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
  expect(clock.pendingTimers()).toEqual([]);
});

async function server(options: { maxConcurrentStreams?: number } = {}): Promise<MiniHboneServer> {
  const srv = await startMiniHboneServer({ certificate: serverCert, ...options });
  defer(() => srv.close());
  return srv;
}

/** The production dialer, counting dials, with an optional socket factory (default: plain sockets). */
function dialer(options: { sockets?: Pick<SocketFactory, 'connect'>; settings?: Partial<HboneClientSettings> } = {}): PoolDialer & { dials: PoolKey[] } {
  const real = hboneDialer({
    clock,
    certificateFor: async (identity) => {
      const cert = certs.get(identityToString(identity));
      if (cert === undefined) throw new Error('no such test identity');
      return cert;
    },
    sockets: options.sockets ?? nodeSocketFactory,
    ...(options.settings === undefined ? {} : { settings: options.settings }),
  });
  const dials: PoolKey[] = [];
  return Object.assign((key: PoolKey, signal: AbortSignal) => {
    dials.push(key);
    return real(key, signal);
  }, { dials });
}

function pool(dial: PoolDialer, options: { maxStreamsPerConnection?: number } = {}): HbonePool {
  const p = new HbonePool({ dial, clock, ...options });
  defer(async () => {
    p.close();
    await p.drain();
  });
  return p;
}

function key(srv: MiniHboneServer, overrides: Partial<PoolKey> = {}): PoolKey {
  return { srcIdentity: ALICE, dstIdentities: [SERVER_ID, SERVICE_SAN], nextHop: srv.address, srcIp: '10.0.0.1', ...overrides };
}

async function roundTrip(s: PooledStream, text = 'hello'): Promise<string> {
  s.stream.end(text);
  const chunks: Buffer[] = [];
  for await (const c of s.stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

async function failure(p: Promise<unknown>): Promise<ProxyError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(ProxyError);
  return err as ProxyError;
}

describe('reuse and stream limits', () => {
  it('reuses one connection for sequential and concurrent streams to the same key', async () => {
    const srv = await server();
    const d = dialer();
    const p = pool(d);
    expect(await roundTrip(await p.openStream(key(srv), TO_APP))).toBe('hello');
    expect(await roundTrip(await p.openStream(key(srv), TO_APP))).toBe('hello');
    const many = await Promise.all(Array.from({ length: 10 }, () => p.openStream(key(srv), TO_APP)));
    expect(new Set(many.map((s) => s.connection.id)).size).toBe(1);
    await Promise.all(many.map((s) => roundTrip(s)));
    expect(d.dials).toHaveLength(1);
    expect(srv.sessions).toHaveLength(1);
    expect(p.stats()).toMatchObject({ dials: 1, dialFailures: 0, streamsOpened: 12, connections: 1, pooled: 1 });
  });

  it('50 concurrent callers for a new key share exactly one dial', async () => {
    const srv = await server();
    const d = dialer();
    const p = pool(d);
    const streams = await Promise.all(Array.from({ length: 50 }, () => p.openStream(key(srv), TO_APP)));
    expect(d.dials).toHaveLength(1);
    expect(srv.sessions).toHaveLength(1);
    expect(srv.sessions[0]!.streams).toBe(50);
    await Promise.all(streams.map((s) => roundTrip(s)));
  });

  it('at 100 streams (POOL_MAX_STREAMS_PER_CONNECTION) the 101st stream gets a new connection', async () => {
    const srv = await server();
    const p = pool(dialer());
    const first = await Promise.all(Array.from({ length: 100 }, () => p.openStream(key(srv), TO_APP)));
    expect(new Set(first.map((s) => s.connection.id)).size).toBe(1);
    expect(p.stats()).toMatchObject({ connections: 1, pooled: 0, released: expect.objectContaining({ 'max-streams': 1 }) });
    const extra = await p.openStream(key(srv), TO_APP);
    expect(extra.connection.id).not.toBe(first[0]!.connection.id);
    expect(srv.sessions.map((s) => s.streams)).toEqual([100, 1]);
    // The full connection left the pool; it closes once its streams are done.
    await Promise.all(first.map((s) => roundTrip(s)));
    await first[0]!.connection.whenClosed();
    expect(extra.connection.isReady).toBe(true);
    expect(await roundTrip(extra)).toBe('hello');
  });

  it('a lower configured limit: 4 concurrent streams with a limit of 2 use exactly 2 connections', async () => {
    const srv = await server();
    const d = dialer();
    const p = pool(d, { maxStreamsPerConnection: 2 });
    const streams = await Promise.all(Array.from({ length: 4 }, () => p.openStream(key(srv), TO_APP)));
    expect(d.dials).toHaveLength(2);
    expect(srv.sessions.map((s) => s.streams)).toEqual([2, 2]);
    await Promise.all(streams.map((s) => roundTrip(s)));
  });

  it("honours the peer's lower SETTINGS_MAX_CONCURRENT_STREAMS", async () => {
    const srv = await server({ maxConcurrentStreams: 3 });
    const p = pool(dialer());
    const streams: PooledStream[] = [];
    for (let i = 0; i < 7; i++) streams.push(await p.openStream(key(srv), TO_APP));
    expect(streams[0]!.connection.peerMaxConcurrentStreams).toBe(3);
    expect(srv.sessions.map((s) => s.streams)).toEqual([3, 3, 1]);
    await Promise.all(streams.map((s) => roundTrip(s)));
  });

  it('a peer allowing 0 streams fails the callers instead of redialing forever', async () => {
    const srv = await server({ maxConcurrentStreams: 0 });
    const d = dialer();
    const p = pool(d);
    const err = await failure(p.openStream(key(srv), TO_APP));
    expect(err.code).toBe('UPSTREAM_CONNECT_FAILED');
    expect(err.message).toContain('SETTINGS_MAX_CONCURRENT_STREAMS is 0');
    expect(d.dials).toHaveLength(1);
  });
});

describe('dial failures and timeouts', () => {
  it('a failed dial rejects every waiter with its error, and the next call dials again', async () => {
    const srv = await server();
    const real = dialer();
    let attempts = 0;
    const flaky: PoolDialer = (k, signal) => {
      attempts++;
      // The first attempt goes to a port nobody listens on.
      return attempts === 1 ? real({ ...k, nextHop: { ip: '127.0.0.1', port: 1 } }, signal) : real(k, signal);
    };
    const p = pool(flaky);
    const results = await Promise.all(Array.from({ length: 10 }, () => failure(p.openStream(key(srv), TO_APP))));
    expect(attempts).toBe(1);
    for (const err of results) {
      expect(err.code).toBe('UPSTREAM_CONNECT_FAILED');
      expect(err).toBe(results[0]);
    }
    expect(p.stats()).toMatchObject({ dials: 1, dialFailures: 1, keys: 0, dialsInFlight: 0 });
    expect(await roundTrip(await p.openStream(key(srv), TO_APP))).toBe('hello');
    expect(attempts).toBe(2);
  });

  it('a connect that never completes fails all waiters with UPSTREAM_TIMEOUT after 10 s', async () => {
    const sockets: Socket[] = [];
    const p = pool(dialer({ sockets: { connect: () => {
      const s = new Socket();
      sockets.push(s);
      return s;
    } } }));
    const k: PoolKey = { srcIdentity: ALICE, dstIdentities: [SERVER_ID], nextHop: { ip: '10.9.9.9', port: 15008 }, srcIp: '10.0.0.1' };
    const waiting = Array.from({ length: 5 }, () => failure(p.openStream(k, { connect: { authority: { kind: 'address', ip: '10.9.9.9', port: 80 } } })));
    await clock.advance(10_000);
    for (const err of await Promise.all(waiting)) {
      expect(err.code).toBe('UPSTREAM_TIMEOUT');
      expect(err.message).toContain('maybe a NetworkPolicy is blocking HBONE port 15008');
    }
    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.destroyed).toBe(true);
  });

  it('no certificate for the source identity fails closed with CERT_UNAVAILABLE', async () => {
    const srv = await server();
    const p = pool(dialer());
    const err = await failure(p.openStream(key(srv, { srcIdentity: id('spiffe://cluster.local/ns/apps/sa/nobody') }), TO_APP));
    expect(err.code).toBe('CERT_UNAVAILABLE');
    expect(srv.sessions).toHaveLength(0);
  });

  it('a peer whose identity is not among the expected ones is refused', async () => {
    const srv = await server();
    const p = pool(dialer());
    const err = await failure(p.openStream(key(srv, { dstIdentities: [SERVICE_SAN] }), TO_APP));
    expect(err.code).toBe('PEER_IDENTITY_INVALID');
    expect(srv.streams).toHaveLength(0);
  });
});

describe('connection lifecycle in the pool', () => {
  it('releases a connection unused for 5 minutes; one carrying a stream is kept', async () => {
    const srv = await server();
    // Keepalive PINGs are tested on their own; here only the pool's timers run.
    const d = dialer({ settings: { pingIntervalMs: 24 * 3600_000 } });
    const p = pool(d);
    const first = await p.openStream(key(srv), TO_APP);
    // A stream stays open across the 5 minutes: the connection is in use, not idle.
    await clock.advance(6 * 60_000);
    expect(p.stats().pooled).toBe(1);
    await roundTrip(first);
    await eventually(() => first.connection.activeStreams === 0, 'the stream closed');

    await clock.advance(5 * 60_000 - 1);
    expect(p.stats().pooled).toBe(1);
    await clock.advance(1);
    expect(p.stats()).toMatchObject({ pooled: 0, released: expect.objectContaining({ idle: 1 }) });
    await first.connection.whenClosed();
    await eventually(() => srv.openSessions() === 0, 'the server saw the connection close');

    const next = await p.openStream(key(srv), TO_APP);
    expect(next.connection.id).not.toBe(first.connection.id);
    expect(d.dials).toHaveLength(2);
    await roundTrip(next);
  });

  it('after GOAWAY the next stream gets a new connection while the old stream finishes', async () => {
    const srv = await server();
    const p = pool(dialer());
    const old = await p.openStream(key(srv), TO_APP);
    const goaway = new Promise((resolve) => old.connection.on('goaway', resolve));
    srv.goawayAll();
    await goaway;
    expect(p.stats()).toMatchObject({ pooled: 0, released: expect.objectContaining({ goaway: 1 }) });
    const fresh = await p.openStream(key(srv), TO_APP);
    expect(fresh.connection.id).not.toBe(old.connection.id);
    expect(await roundTrip(old, 'old stream')).toBe('old stream');
    expect(await roundTrip(fresh, 'new stream')).toBe('new stream');
    await old.connection.whenClosed();
    expect(srv.sessions).toHaveLength(2);
  });

  it('a connection whose peer stops answering PINGs is dropped and the next stream redials', async () => {
    const srv = await server();
    const relay = await startFreezableRelay(srv.port);
    defer(() => relay.close());
    const d = dialer();
    const p = pool(d);
    const k = key(srv, { nextHop: { ip: '127.0.0.1', port: relay.port } });
    const first = await p.openStream(k, TO_APP);
    const streamClosed = new Promise((resolve) => first.stream.once('close', resolve));
    relay.freeze();
    await clock.advance(10_000); // PING sent, never answered
    await clock.advance(20_000); // PING timeout
    await first.connection.whenClosed();
    await streamClosed;
    expect(p.stats()).toMatchObject({ connections: 0, pooled: 0 });
    const next = await p.openStream(k, TO_APP);
    expect(d.dials).toHaveLength(2);
    expect(await roundTrip(next)).toBe('hello');
  });

  it('drain() refuses new streams, lets open streams finish, and resolves when every connection closed', async () => {
    const srv = await server();
    const p = pool(dialer());
    const open = await p.openStream(key(srv), TO_APP);
    let drained = false;
    const draining = p.drain().then(() => (drained = true));
    expect((await failure(p.openStream(key(srv), TO_APP))).code).toBe('DRAINING');
    expect(await roundTrip(open, 'finishing')).toBe('finishing');
    await draining;
    expect(drained).toBe(true);
    expect(p.stats().connections).toBe(0);
  });

  it('close() resets open streams at once', async () => {
    const srv = await server();
    const p = pool(dialer());
    const open = await p.openStream(key(srv), TO_APP);
    const closed = new Promise((resolve) => open.stream.once('close', resolve));
    p.close();
    await closed;
    await open.connection.whenClosed();
    expect((await failure(p.openStream(key(srv), TO_APP))).code).toBe('DRAINING');
  });
});

describe('key isolation', () => {
  it('two source identities never share a connection, and each presents its own certificate', async () => {
    const srv = await server();
    const p = pool(dialer());
    const a = await p.openStream(key(srv, { srcIdentity: ALICE }), TO_APP);
    const b = await p.openStream(key(srv, { srcIdentity: BOB }), TO_APP);
    expect(a.connection.id).not.toBe(b.connection.id);
    expect(srv.sessions.map((s) => s.peerUri).sort()).toEqual([ALICE_URI, BOB_URI]);
    // And each keeps reusing its own.
    const a2 = await p.openStream(key(srv, { srcIdentity: ALICE }), TO_APP);
    expect(a2.connection.id).toBe(a.connection.id);
    expect(srv.sessions.find((s) => s.peerUri === ALICE_URI)!.streams).toBe(2);
    await Promise.all([a, b, a2].map((s) => roundTrip(s)));
  });

  it('different expected identities or source IPs get different connections; identity order does not matter', async () => {
    const srv = await server();
    const d = dialer();
    const p = pool(d);
    const base = await p.openStream(key(srv), TO_APP);
    const reordered = await p.openStream(key(srv, { dstIdentities: [SERVICE_SAN, SERVER_ID, SERVER_ID] }), TO_APP);
    expect(reordered.connection.id).toBe(base.connection.id);
    const otherDst = await p.openStream(key(srv, { dstIdentities: [SERVER_ID] }), TO_APP);
    const otherSrcIp = await p.openStream(key(srv, { srcIp: '10.0.0.2' }), TO_APP);
    const ids = new Set([base, otherDst, otherSrcIp].map((s) => s.connection.id));
    expect(ids.size).toBe(3);
    expect(d.dials).toHaveLength(3);
    expect(p.connections().map((c) => c.srcIp).sort()).toEqual(['10.0.0.1', '10.0.0.1', '10.0.0.2']);
    await Promise.all([base, reordered, otherDst, otherSrcIp].map((s) => roundTrip(s)));
  });
});
