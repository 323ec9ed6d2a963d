/**
 * The HBONE server transport end to end: real TLS 1.3 and real HTTP/2 on
 * 127.0.0.1, certificates from a LocalCertificateAuthority, abuse through a
 * raw frame client. Time-based limits run on a ManualClock.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { pipeline, Readable, type Duplex } from 'node:stream';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import type { SocketAddress } from '../src/net/address.js';
import { DEFAULT_HBONE_SERVER_LIMITS } from '../src/hbone/server-limits.js';
import { asWorkloadCertificate, customCert, id, newCa, signerOf, workloadCert } from '../src/testing/certs.js';
import { connect, h2Client, readAll, response, startHarness, until, type Harness } from './support/hbone-server-harness.js';
import { ProxyError } from '../src/errors.js';
import {
  connectHeaders,
  connectTcp,
  connectTls,
  data,
  FLAG,
  frame,
  FRAME,
  goawayCode,
  headers,
  hpack,
  PREFACE,
  ping,
  rawH2,
  rstStream,
  settings,
  type RawH2,
} from './support/raw-h2.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR, NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_PROTOCOL_ERROR } = http2.constants;

const clock = systemClock;
let ca: LocalCertificateAuthority;
let serverCert: WorkloadCertificate;
let clientCert: WorkloadCertificate;
const SERVER_ID = 'spiffe://cluster.local/ns/server/sa/server';
const cleanup: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  ca = await newCa(clock);
  serverCert = await workloadCert(ca, SERVER_ID, clock);
  clientCert = await workloadCert(ca, 'spiffe://cluster.local/ns/client/sa/client', clock);
});

afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

function manualClock(): ManualClock {
  return new ManualClock({ now: Date.now() });
}

function start(options: Partial<Parameters<typeof startHarness>[0]> = {}): Promise<Harness> {
  return startHarness({ clock, certificate: serverCert, ...options }, cleanup);
}

function client(h: Harness, c = clock) {
  return h2Client(h.port, clientCert, [id(SERVER_ID)], c, cleanup);
}

/** mTLS + HTTP/2 preface by hand, after the server's SETTINGS (acknowledged, so its limits apply). */
async function rawClient(h: Harness, cert: WorkloadCertificate = clientCert): Promise<RawH2> {
  const socket = await connectTls(h.port, cert);
  cleanup.push(() => {
    socket.destroy();
  });
  const r = rawH2(socket);
  await r.waitFor((f) => f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK), 'the server SETTINGS');
  r.write(PREFACE, settings(), settings([], true));
  return r;
}

function closedBy(r: RawH2) {
  return r.waitFor((f) => f.type === FRAME.GOAWAY, 'GOAWAY');
}

describe('CONNECT streams', () => {
  it('hands a verified CONNECT to the handler; bytes flow both ways and the client half-closes first', async () => {
    const h = await start();
    const session = await client(h);
    const req = connect(session, '127.0.0.1:8080', {
      baggage: 'k8s.namespace.name=client,k8s.deployment.name=sleep',
      forwarded: 'for="10.0.0.1:3456";host=echo.default.svc.cluster.local',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00',
    });
    const request = await h.requests.next();
    expect(request.peer.identity).toEqual(clientCert.identity);
    expect(request.peer.spiffeId).toBe('spiffe://cluster.local/ns/client/sa/client');
    expect(request.local).toEqual({ ip: '127.0.0.1', port: h.port });
    expect(request.remote.ip).toBe('127.0.0.1');
    expect(request.request).toMatchObject({
      authority: { kind: 'address', ip: '127.0.0.1', port: 8080 },
      forwardedFor: { ip: '10.0.0.1', port: 3456 },
      forwardedHost: 'echo.default.svc.cluster.local',
      baggage: { namespace: 'client', workloadType: 'deployment', workloadName: 'sleep' },
    });
    expect(request.state).toBe('pending');

    const reqClosed = new Promise((resolve) => req.once('close', resolve));
    const tunnel = request.accept({ baggage: 'k8s.namespace.name=server' });
    const headersIn = await response(req);
    expect(headersIn[':status']).toBe(200);
    expect(headersIn['baggage']).toBe('k8s.namespace.name=server');

    req.end('hello');
    expect(await readAll(tunnel)).toBe('hello'); // END_STREAM from the client is EOF
    const back = readAll(req);
    tunnel.write('still ');
    tunnel.end('open');
    expect(await back).toBe('still open');
    await reqClosed;
    expect(req.rstCode).toBe(NGHTTP2_NO_ERROR);
  });

  it('the server half-closes first and keeps reading', async () => {
    const h = await start();
    const session = await client(h);
    const req = connect(session);
    const reqClosed = new Promise((resolve) => req.once('close', resolve));
    const tunnel = (await h.requests.next()).accept();
    tunnel.end('bye');
    const received = readAll(tunnel);
    expect((await response(req))[':status']).toBe(200);
    expect(await readAll(req)).toBe('bye'); // END_STREAM from the server is EOF for the client
    req.end('after the server closed'); // the client → server direction is still open
    expect(await received).toBe('after the server closed');
    await reqClosed;
    expect(req.rstCode).toBe(NGHTTP2_NO_ERROR);
  });

  it('delivers data the client sent before the 200 only after accept', async () => {
    const h = await start();
    const session = await client(h);
    const req = connect(session);
    req.write('early');
    const request = await h.requests.next();
    const tunnel = request.accept();
    req.end();
    expect(await readAll(tunnel)).toBe('early');
  });

  it('treats RST_STREAM CANCEL and NO_ERROR as EOF, other codes as errors', async () => {
    const h = await start();
    const session = await client(h);
    const open = async () => {
      const req = connect(session);
      const tunnel = (await h.requests.next((r) => r.state === 'pending')).accept();
      await response(req);
      const errors: Error[] = [];
      tunnel.on('error', (e: Error) => errors.push(e));
      const closed = new Promise((resolve) => tunnel.once('close', resolve));
      return { req, tunnel, errors, closed };
    };
    for (const code of [NGHTTP2_CANCEL, NGHTTP2_NO_ERROR]) {
      const { req, tunnel, errors, closed } = await open();
      req.write('x');
      const got = readAll(tunnel);
      req.close(code);
      expect(await got).toBe('x');
      await closed;
      expect(errors).toEqual([]);
    }
    const { req, errors, closed } = await open();
    req.close(NGHTTP2_INTERNAL_ERROR);
    await closed;
    expect(errors.map((e) => e.message)).toEqual([expect.stringContaining('NGHTTP2_INTERNAL_ERROR')]);
  });

  it('answers a rejection with its status and ends the stream; the abort signal fires when the client goes away', async () => {
    const h = await start({ onConnect: (r) => { if (r.request.authority.kind === 'address' && r.request.authority.port === 401) r.refuse(new ProxyError('POLICY_DENIED', 'denied by policy')); } });
    const session = await client(h);
    const denied = connect(session, '127.0.0.1:401');
    denied.write('must never reach an upstream');
    expect((await response(denied))[':status']).toBe(401);
    await new Promise((resolve) => denied.once('close', resolve));
    const r401 = await h.requests.next();
    expect(r401.state).toBe('rejected');
    expect(() => r401.accept()).toThrow(/already rejected/);

    const pending = connect(session, '127.0.0.1:9');
    const request = await h.requests.next((r) => r.request.authority.kind === 'address' && r.request.authority.port === 9);
    const aborted = new Promise((resolve) => request.signal.addEventListener('abort', resolve));
    pending.close(NGHTTP2_CANCEL);
    await aborted;
    const tunnel = request.accept(); // too late: the stream is already gone
    expect(tunnel.destroyed).toBe(true);
  });

  it('answers 400 to anything but CONNECT and to a bad authority, without calling the handler', async () => {
    const h = await start();
    const session = await client(h);
    const get = session.request({ ':method': 'GET', ':path': '/' });
    get.resume();
    expect((await response(get))[':status']).toBe(400);
    const bad = connect(session, '10.0.0.1:0');
    expect((await response(bad))[':status']).toBe(400);
    const bare6 = connect(session, 'fd00::1:80');
    expect((await response(bare6))[':status']).toBe(400);
    expect(h.requests.items).toHaveLength(0);
    expect((await h.refusals.next((r) => r.code === 'NOT_CONNECT')).reason).toContain('"GET" is not CONNECT');
    expect((await h.refusals.next((r) => r.code === 'BAD_AUTHORITY')).streamId).toBeGreaterThan(0);
  });

  it('refuses a CONNECT carrying :path and :scheme (malformed, RFC 9113 8.5) without calling the handler', async () => {
    const h = await start();
    const r = await rawClient(h);
    r.write(headers(1, [[':method', 'CONNECT'], [':authority', '127.0.0.1:80'], [':path', '/'], [':scheme', 'https']]), connectHeaders(3));
    const rst = await r.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === 1, 'RST_STREAM on stream 1');
    expect(rst.payload.readUInt32BE(0)).toBe(NGHTTP2_PROTOCOL_ERROR);
    const next = await h.requests.next();
    expect(next.streamId).toBe(3); // the connection keeps serving
    expect(h.requests.items).toHaveLength(1);
  });

  it('answers 503 when the handler throws', async () => {
    const h = await start({ onConnect: () => { throw new Error('boom'); } });
    const session = await client(h);
    expect((await response(connect(session)))[':status']).toBe(503);
  });

  it('serves the certificate chosen for the local address (in-pod: one identity per pod IP)', async () => {
    const podB = await workloadCert(ca, 'spiffe://cluster.local/ns/b/sa/b', clock);
    const asked: SocketAddress[] = [];
    const h = await start({
      host: '0.0.0.0',
      certificate: (local) => {
        asked.push(local);
        return Promise.resolve(local.ip === '127.0.0.2' ? podB : serverCert);
      },
    });
    const a = await h2Client(h.port, clientCert, [id(SERVER_ID)], clock, cleanup, { host: '127.0.0.1' });
    const b = await h2Client(h.port, clientCert, [podB.identity], clock, cleanup, { host: '127.0.0.2' });
    connect(a);
    connect(b);
    const requests = [await h.requests.next((r) => r.local.ip === '127.0.0.1'), await h.requests.next((r) => r.local.ip === '127.0.0.2')];
    expect(requests.map((r) => r.local.ip)).toEqual(['127.0.0.1', '127.0.0.2']);
    expect(asked.map((l) => l.ip).sort()).toEqual(['127.0.0.1', '127.0.0.2']);
    // A client expecting pod A's identity at pod B's address is refused by the client-side check.
    await expect(h2Client(h.port, clientCert, [id(SERVER_ID)], clock, cleanup, { host: '127.0.0.2' })).rejects.toThrow(/not one of the expected identities/);
  });

  it('presents a rotated certificate to new connections while old ones keep working', async () => {
    let current = serverCert;
    const h = await start({ certificate: () => Promise.resolve(current), onConnect: (r) => { const t = r.accept(); t.pipe(t); } });
    const first = await client(h);
    const oldSerial = (first.socket as unknown as { getPeerCertificate(): { serialNumber: string } }).getPeerCertificate().serialNumber;
    current = await workloadCert(ca, SERVER_ID, clock);
    const second = await client(h);
    const newSerial = (second.socket as unknown as { getPeerCertificate(): { serialNumber: string } }).getPeerCertificate().serialNumber;
    expect(newSerial).not.toBe(oldSerial);
    expect(newSerial.toLowerCase()).toBe(current.leaf.serialNumber.toLowerCase());
    const req = connect(first);
    req.end('old connection');
    expect(await readAll(req)).toBe('old connection');
  });
});

describe('TLS and peer identity', () => {
  async function refusedHandshake(h: Harness, cert: WorkloadCertificate | undefined, options: Parameters<typeof connectTls>[2] = {}) {
    const socket = await connectTls(h.port, cert, options).catch(() => undefined);
    if (socket !== undefined) {
      cleanup.push(() => { socket.destroy(); });
      socket.on('error', () => {});
      socket.resume();
      socket.write(PREFACE);
      await new Promise((resolve) => (socket.destroyed ? resolve(undefined) : socket.once('close', resolve)));
    }
    const refusal = await h.refusals.next();
    await h.closed.next();
    expect(h.requests.items).toHaveLength(0);
    expect(h.server.connectionCount).toBe(0);
    return refusal;
  }

  it('refuses a client without a certificate', async () => {
    const h = await start();
    const refusal = await refusedHandshake(h, undefined);
    expect(refusal).toMatchObject({ code: 'TLS_HANDSHAKE_FAILED', reason: expect.stringContaining('no certificate') });
  });

  it('refuses a certificate from another CA', async () => {
    const h = await start();
    const foreign = await workloadCert(await newCa(clock), 'spiffe://cluster.local/ns/client/sa/client', clock);
    const refusal = await refusedHandshake(h, foreign);
    expect(refusal).toMatchObject({ code: 'TLS_HANDSHAKE_FAILED', reason: expect.stringContaining('rejected by the workload trust roots') });
  });

  it('refuses a client from another trust domain', async () => {
    const h = await start();
    const other = await workloadCert(ca, 'spiffe://clusterset.local/ns/client/sa/client', clock);
    const refusal = await refusedHandshake(h, other);
    expect(refusal).toMatchObject({ code: 'PEER_IDENTITY_INVALID', checks: ['trust-domain'] });
    expect(refusal.reason).toContain('"clusterset.local", expected "cluster.local"');
  });

  it.each([
    ['a DNS-only SAN', { sans: [{ type: 'dns' as const, value: 'client.cluster.local' }] }, 'san'],
    ['two URI SANs', { sans: [{ type: 'url' as const, value: 'spiffe://cluster.local/ns/a/sa/a' }, { type: 'url' as const, value: 'spiffe://cluster.local/ns/b/sa/b' }] }, 'san'],
    ['a malformed SPIFFE path', { sans: [{ type: 'url' as const, value: 'spiffe://cluster.local/ns/a/sa/b/c' }] }, 'spiffe-id'],
  ])('refuses a client certificate with %s', async (_name, spec, check) => {
    const h = await start();
    const leaf = await customCert(await signerOf(ca), clock, spec);
    const refusal = await refusedHandshake(h, asWorkloadCertificate(leaf, ca.rootsPem));
    expect(refusal).toMatchObject({ code: 'PEER_IDENTITY_INVALID', checks: [check] });
  });

  it.each([
    ['a CA certificate', { ca: true, keyUsage: 0x84 /* digitalSignature | keyCertSign */ }],
    ['a leaf allowed to sign certificates', { keyUsage: 0x84 }],
    ['a serverAuth-only certificate (CVE-2022-21657)', { eku: ['1.3.6.1.5.5.7.3.1'] }],
  ])('refuses %s as the client certificate (OpenSSL already refuses its purpose; the SPIFFE check would too)', async (_name, spec) => {
    const h = await start();
    const leaf = await customCert(await signerOf(ca), clock, spec);
    const refusal = await refusedHandshake(h, asWorkloadCertificate(leaf, ca.rootsPem));
    expect(refusal).toMatchObject({ code: 'TLS_HANDSHAKE_FAILED', reason: expect.stringContaining('rejected by the workload trust roots') });
  });

  it('refuses ALPN http/1.1 and a client without ALPN', async () => {
    const h = await start();
    expect((await refusedHandshake(h, clientCert, { ALPNProtocols: ['http/1.1'] })).reason).toContain('did not offer ALPN "h2"');
    const h2 = await start();
    expect((await refusedHandshake(h2, clientCert, { ALPNProtocols: [] })).reason).toContain('did not negotiate ALPN "h2"');
  });

  it('closes a plaintext connection without answering, and keeps accepting', async () => {
    const h = await start();
    const socket = await connectTcp(h.port);
    cleanup.push(() => { socket.destroy(); });
    const received: Buffer[] = [];
    socket.on('data', (d: Buffer) => received.push(d));
    socket.on('error', () => {});
    socket.write('GET / HTTP/1.1\r\nHost: ztunnel\r\n\r\n');
    await new Promise((resolve) => socket.once('close', resolve));
    expect(Buffer.concat(received).toString('latin1')).not.toContain('HTTP/');
    expect((await h.refusals.next()).reason).toContain('plaintext HTTP request');
    const session = await client(h);
    connect(session);
    await h.requests.next();
  });

  it('closes the connection when no certificate is available for the local address (fail closed)', async () => {
    const h = await start({ certificate: () => Promise.reject(new Error('CA unreachable')) });
    await expect(client(h)).rejects.toThrow();
    expect(await h.refusals.next()).toMatchObject({ code: 'CERT_UNAVAILABLE', reason: expect.stringContaining('CA unreachable') });
  });

  it('survives garbage after the TLS handshake', async () => {
    const h = await start();
    const socket = await connectTls(h.port, clientCert);
    cleanup.push(() => { socket.destroy(); });
    socket.on('error', () => {});
    socket.write(Buffer.from('this is not an HTTP/2 preface\r\n\r\n'.repeat(10)));
    socket.resume();
    await new Promise((resolve) => socket.once('close', resolve));
    await h.closed.next();
    const session = await client(h);
    connect(session);
    await h.requests.next();
  });
});

describe('HTTP/2 settings', () => {
  it('advertises ztunnel\'s settings: 200 streams, 4 MiB stream and 16 MiB connection windows, 1 MiB frames, 64 KiB headers', async () => {
    const h = await start();
    const session = await client(h);
    const remote = session.remoteSettings.maxConcurrentStreams === 200 ? session.remoteSettings
      : await new Promise<http2.Settings>((resolve) => session.once('remoteSettings', resolve));
    expect(remote).toMatchObject({
      maxConcurrentStreams: 200,
      initialWindowSize: 4 * 1024 * 1024,
      maxFrameSize: 1024 * 1024,
      maxHeaderListSize: 64 * 1024,
    });
    await until(() => session.state.remoteWindowSize === 16 * 1024 * 1024, 'the 16 MiB connection window');
    expect(DEFAULT_HBONE_SERVER_LIMITS.maxConcurrentStreams).toBe(200);
  });

  it('queues the 201st stream of a well-behaved client until one of 200 closes', async () => {
    const h = await start();
    const session = await client(h);
    const streams = Array.from({ length: 201 }, (_, i) => connect(session, `127.0.0.1:${i + 1}`));
    await until(() => h.requests.items.length === 200, '200 streams at the handler');
    expect(h.requests.items.some((r) => r.request.authority.port === 201)).toBe(false);
    h.requests.items[0]?.refuse(new ProxyError('NO_HEALTHY_UPSTREAM', 'done'));
    const last = await h.requests.next((r) => r.request.authority.port === 201);
    expect(last.state).toBe('pending');
    for (const s of streams) s.close();
  });

  it('closes a connection that opens more streams than advertised (nghttp2: PROTOCOL_ERROR)', async () => {
    const h = await start();
    const r = await rawClient(h);
    r.write(...Array.from({ length: 201 }, (_, i) => connectHeaders(2 * i + 1)));
    await r.closed;
    expect(await h.limits.next()).toBe('protocol-error');
    expect(h.requests.items.length).toBeLessThanOrEqual(200);
  });
});

describe('limits ztunnel lacks', () => {
  it('closes a connection that does not finish the TLS handshake in time', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc, limits: { tlsHandshakeTimeoutMs: 10_000 } });
    const socket = await connectTcp(h.port);
    cleanup.push(() => { socket.destroy(); });
    socket.on('error', () => {});
    const closed = new Promise((resolve) => socket.once('close', resolve));
    await h.opened.next();
    await mc.advance(9_999);
    expect(h.server.connectionCount).toBe(1);
    await mc.advance(1);
    await closed;
    expect(await h.limits.next()).toBe('tls-handshake-timeout');
    expect((await h.refusals.next()).code).toBe('TLS_HANDSHAKE_TIMEOUT');
    expect(mc.pendingTimers()).toEqual([]);
  });

  it('closes a connection that sends no CONNECT within the first-request timeout after TLS', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc });
    const socket = await connectTls(h.port, clientCert);
    cleanup.push(() => { socket.destroy(); });
    const r = rawH2(socket);
    await r.waitFor((f) => f.type === FRAME.SETTINGS, 'the server SETTINGS');
    r.write(PREFACE, settings()); // a preface, then silence
    await mc.advance(10_000);
    await r.closed;
    expect(h.limits.items).toContain('first-request-timeout');
    expect((await h.refusals.next()).code).toBe('H2_PROTOCOL_VIOLATION');
    await h.closed.next();
    expect(mc.pendingTimers()).toEqual([]);
  });

  it('reaps a session nghttp2 abandoned after a HPACK error (oversized header field)', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc });
    const r = await rawClient(h);
    r.write(connectHeaders(1, '127.0.0.1:80', [['x-big', 'a'.repeat(70_000)]]));
    expect(goawayCode(await closedBy(r))).toBe(http2.constants.NGHTTP2_COMPRESSION_ERROR);
    await mc.advance(10_000);
    await r.closed;
    expect(h.requests.items).toHaveLength(0);
  });

  it('refuses header lists over 64 KiB and more than the allowed header count, and keeps serving', async () => {
    const h = await start();
    const r = await rawClient(h);
    r.write(connectHeaders(1, '127.0.0.1:80', [['x-a', 'a'.repeat(40_000)], ['x-b', 'b'.repeat(30_000)]]));
    r.write(connectHeaders(3, '127.0.0.1:80', Array.from({ length: 100 }, (_, i) => [`x-h${i}`, 'v'] as const)));
    r.write(connectHeaders(5));
    for (const streamId of [1, 3]) {
      const rst = await r.waitFor((f) => f.type === FRAME.RST_STREAM && f.streamId === streamId, `RST_STREAM ${streamId}`);
      expect(rst.payload.readUInt32BE(0)).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    }
    expect((await h.requests.next()).streamId).toBe(5);
    expect(h.requests.items).toHaveLength(1);
  });

  it('closes on a CONTINUATION flood', async () => {
    const h = await start();
    const r = await rawClient(h);
    r.write(
      headers(1, [[':method', 'CONNECT'], [':authority', '127.0.0.1:80']], { endHeaders: false }),
      ...Array.from({ length: 100 }, () => frame(FRAME.CONTINUATION, 0, 1, hpack([['x-a', 'b'.repeat(1000)]]))),
    );
    await r.closed;
    expect(await h.limits.next()).toBe('continuation-flood');
    expect(h.requests.items).toHaveLength(0);
  });

  it('answers a rapid reset (HEADERS + RST_STREAM loop) with GOAWAY ENHANCE_YOUR_CALM', async () => {
    const h = await start({ limits: { rapidReset: { burst: 20, perSecond: 1 } } });
    const r = await rawClient(h);
    const frames = [];
    for (let i = 0; i < 100; i++) frames.push(connectHeaders(2 * i + 1), rstStream(2 * i + 1, NGHTTP2_CANCEL));
    r.write(...frames);
    expect(goawayCode(await closedBy(r))).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    await r.closed;
    expect(await h.limits.next()).toBe('rapid-reset');
    expect(h.requests.items.length).toBeLessThanOrEqual(25);
    expect(h.requests.items.every((req) => req.signal.aborted)).toBe(true);
  });

  it('does not count resets of established tunnels as rapid resets', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc, limits: { rapidReset: { burst: 2, perSecond: 0.001 } }, onConnect: (req) => { req.accept(); } });
    const session = await client(h, mc);
    for (let i = 0; i < 5; i++) {
      const req = connect(session);
      await response(req);
      await mc.advance(1_000); // older than prematureResetMs
      req.close(NGHTTP2_CANCEL);
      await new Promise((resolve) => req.once('close', resolve));
    }
    const req = connect(session);
    expect((await response(req))[':status']).toBe(200);
    expect(h.limits.items).toEqual([]);
  });

  it.each([
    ['PING', () => ping(7)],
    ['SETTINGS', () => settings()],
  ])('closes on a %s flood with GOAWAY ENHANCE_YOUR_CALM', async (name, make) => {
    const h = await start({ limits: { controlFrames: { burst: 50, perSecond: 1 } } });
    const r = await rawClient(h);
    r.write(...Array.from({ length: 200 }, make));
    expect(goawayCode(await closedBy(r))).toBe(NGHTTP2_ENHANCE_YOUR_CALM);
    await r.closed;
    expect(await h.limits.next()).toBe('control-frame-flood');
    void name;
  });

  it('closes on an empty DATA frame flood (maxSessionInvalidFrames)', async () => {
    const h = await start({ limits: { maxSessionInvalidFrames: 10 } });
    const r = await rawClient(h);
    r.write(connectHeaders(1), ...Array.from({ length: 50 }, () => data(1, Buffer.alloc(0))));
    await r.closed;
    expect(await h.limits.next()).toBe('invalid-frames');
  });

  it('refuses connections over the global cap, logs it once per second, and keeps serving the others', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc, limits: { maxConnections: 2 } });
    const a = await client(h, mc);
    const b = await client(h, mc);
    connect(a);
    connect(b);
    await h.requests.next((r) => r.connectionId === 1);
    await h.requests.next((r) => r.connectionId === 2);
    for (let i = 0; i < 3; i++) {
      const extra = await connectTcp(h.port);
      cleanup.push(() => { extra.destroy(); });
      extra.on('error', () => {});
      await new Promise((resolve) => extra.once('close', resolve));
    }
    expect(h.limits.items).toEqual(['connection-cap', 'connection-cap', 'connection-cap']);
    expect(h.refusals.items.map((r) => r.code)).toEqual(['CONNECTION_LIMIT', 'CONNECTION_LIMIT', 'CONNECTION_LIMIT']);
    const warnings = () => h.logs.items.filter((l) => l.level === 'warn' && l.msg === 'HBONE limit reached: connection-cap');
    expect(warnings()).toHaveLength(1);
    await mc.advance(1_000);
    const late = await connectTcp(h.port);
    cleanup.push(() => { late.destroy(); });
    late.on('error', () => {});
    await new Promise((resolve) => late.once('close', resolve));
    expect(warnings()).toHaveLength(2);
    expect(warnings()[1]?.fields['suppressed']).toBe(2);
    connect(a, '127.0.0.1:7');
    await h.requests.next((r) => r.request.authority.port === 7);
  });

  it('sends PINGs every 10 s and drops a peer that does not answer within 20 s', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc });
    const r = await rawClient(h);
    r.write(connectHeaders(1));
    await h.requests.next();
    await mc.advance(10_000);
    const pingFrame = await r.waitFor((f) => f.type === FRAME.PING && !(f.flags & FLAG.ACK), 'a keepalive PING');
    expect(pingFrame.payload).toHaveLength(8);
    await mc.advance(19_999);
    expect(h.server.connectionCount).toBe(1);
    await mc.advance(1);
    await r.closed;
    expect(await h.limits.next()).toBe('keepalive-timeout');
  });

  it('keeps a peer that answers PINGs', async () => {
    const mc = manualClock();
    const h = await start({ clock: mc });
    const session = await client(h, mc);
    connect(session);
    await h.requests.next();
    const pinged = new Promise((resolve) => session.once('ping', resolve));
    await mc.advance(10_000);
    await pinged;
    // The PONG cancels the timeout and schedules the next PING 10 s later.
    await until(() => mc.pendingTimers().includes(10_000), 'the next PING to be scheduled');
    await mc.advance(25_000);
    expect(h.server.connectionCount).toBe(1);
    expect(h.limits.items).toEqual([]);
  });
});

describe('flow control', () => {
  it('a slow reader never makes the server buffer beyond the window (upstream → client)', async () => {
    const CHUNK = 64 * 1024;
    const TOTAL = 16 * 1024 * 1024;
    let produced = 0;
    let maxWritable = 0;
    let tunnelRef: { writableLength: number } | undefined;
    const h = await start({
      onConnect: (r) => {
        const tunnel = r.accept();
        tunnelRef = tunnel;
        const source = new Readable({
          read() {
            if (produced >= TOTAL) return void this.push(null);
            produced += CHUNK;
            this.push(Buffer.alloc(CHUNK, 1));
          },
        });
        pipeline(source, tunnel, () => {});
      },
    });
    const session = await client(h);
    const req = connect(session);
    await response(req);
    let consumed = 0;
    let maxInFlight = 0;
    await new Promise<void>((resolve, reject) => {
      req.on('error', reject);
      req.on('end', resolve);
      const pump = () => {
        const chunk = req.read(4096) as Buffer | null;
        if (chunk !== null) {
          consumed += chunk.length;
          maxInFlight = Math.max(maxInFlight, produced - consumed);
          maxWritable = Math.max(maxWritable, tunnelRef?.writableLength ?? 0);
          setImmediate(pump); // read slowly: one small read per event-loop turn
        } else {
          req.once('readable', pump);
        }
      };
      req.once('readable', pump);
    });
    expect(consumed).toBe(TOTAL);
    // Client window (64 KiB) + the tunnel's and the source's buffers: far below what was sent.
    expect(maxInFlight).toBeLessThan(512 * 1024);
    expect(maxWritable).toBeLessThan(256 * 1024);
  });

  it('a handler that does not read never makes the server buffer beyond the stream window (client → upstream)', async () => {
    let tunnelRef: Duplex | undefined;
    const h = await start({ onConnect: (r) => { tunnelRef = r.accept(); } });
    const session = await client(h);
    const req = connect(session);
    await response(req);
    const WINDOW = 4 * 1024 * 1024;
    const LIMIT = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(64 * 1024, 2);
    let written = 0;
    let stopped = false;
    // A client that writes as fast as its stream accepts (honouring backpressure).
    const write = () => {
      while (!stopped && written < LIMIT) {
        written += chunk.length;
        if (!req.write(chunk)) {
          req.once('drain', write);
          return;
        }
      }
    };
    write();
    const tunnel = tunnelRef as Duplex;
    await until(() => tunnel.readableLength >= WINDOW - chunk.length || written >= LIMIT, 'the stream window to fill');
    const buffered = tunnel.readableLength;
    const writtenWhenFull = written;
    for (let i = 0; i < 200; i++) await new Promise<void>((resolve) => setImmediate(resolve));
    // Nothing more arrives while the handler does not read, and the client is held back.
    expect(tunnel.readableLength).toBe(buffered);
    expect(buffered).toBeLessThanOrEqual(WINDOW + chunk.length);
    expect(written).toBe(writtenWhenFull);
    expect(written).toBeLessThan(2 * WINDOW);
    // Reading releases the window and the rest flows.
    stopped = true;
    req.end();
    let total = 0;
    tunnel.on('data', (d: Buffer) => { total += d.length; });
    await new Promise((resolve) => tunnel.once('end', resolve));
    expect(total).toBe(written);
  });
});

describe('drain and close', () => {
  it('serves a listener it is attached to, which must not read before TLS', async () => {
    const h = await start();
    expect(() => h.server.attach(net.createServer())).toThrow(/pauseOnConnect/);
    const listener = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    cleanup.push(() => new Promise<void>((resolve) => listener.close(() => resolve())));
    h.server.attach(listener);
    const port = (listener.address() as net.AddressInfo).port;
    const session = await h2Client(port, clientCert, [id(SERVER_ID)], clock, cleanup);
    connect(session);
    expect((await h.requests.next()).local.port).toBe(port);
    // Draining or closing detaches from the listener (its owner closes it).
    await h.server.close();
    expect(listener.listenerCount('connection')).toBe(0);
    expect(h.server.connectionCount).toBe(0);
  });


  it('drain sends GOAWAY, refuses new connections before TLS, lets open streams finish, then resolves', async () => {
    const h = await start({ onConnect: (r) => { const t = r.accept(); t.pipe(t); } });
    const session = await client(h);
    const req = connect(session);
    await response(req);
    const goaway = new Promise((resolve) => session.once('goaway', resolve));
    let drained = false;
    const draining = h.server.drain().then(() => { drained = true; });
    await goaway;
    const echoed = readAll(req);
    req.write('after GOAWAY ');
    await new Promise((resolve) => req.once('data', resolve));
    // A connection arriving now is closed at once, before TLS starts, and counted as DRAINING.
    const late = net.connect(h.port, '127.0.0.1');
    late.on('error', () => {});
    const lateBytes: Buffer[] = [];
    late.on('data', (d: Buffer) => lateBytes.push(d));
    await new Promise((resolve) => late.once('close', resolve));
    expect(Buffer.concat(lateBytes).length).toBe(0);
    expect((await h.refusals.next((r) => r.code === 'DRAINING')).code).toBe('DRAINING');
    expect(drained).toBe(false);
    req.end('still works');
    expect(await echoed).toBe('after GOAWAY still works');
    await draining;
    expect(h.server.connectionCount).toBe(0);
  });

  it('close force-closes open tunnels', async () => {
    const h = await start({ onConnect: (r) => { r.accept(); } });
    const session = await client(h);
    const req = connect(session);
    await response(req);
    const closed = new Promise((resolve) => session.once('close', resolve));
    await h.server.close();
    await closed;
    expect(h.server.connectionCount).toBe(0);
  });
});
