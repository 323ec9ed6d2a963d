/**
 * MtlsAcceptor on real sockets: a pauseOnConnect TCP listener on 127.0.0.1
 * hands each accepted socket to the acceptor, as HboneServer does, and the
 * test records the one outcome per socket. Clients are the production client
 * path (clientHandshake), or raw ones for what ours never does (no
 * certificate, plaintext). The handshake deadline runs on a ManualClock.
 */
import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type LocalCertificateAuthority, type Logger, type WorkloadCertificate } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { localAddressOf } from '../net/address.js';
import { id, newCa, signerOf, workloadCert } from '../testing/certs.js';
import { crlPem } from '../testing/crl.js';
import { TlsMaterial } from '../tls/contexts.js';
import { CrlManager, type CrlReporter, type RevocationSource } from '../tls/crl/manager.js';
import { clientHandshake } from '../tls/handshake.js';
import { peerVerifier } from '../tls/peer-verifier.js';
import { MtlsAcceptor, type AcceptedPeer, type AcceptHandlers, type AcceptRefusal, type Acceptance, type MtlsAcceptorOptions } from './acceptor.js';

const SERVER_URI = 'spiffe://cluster.local/ns/server/sa/server';
const CLIENT_URI = 'spiffe://cluster.local/ns/client/sa/client';
const HANDSHAKE_TIMEOUT_MS = 10_000;

const silentLog: Logger = { child: () => silentLog, debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };

let ca: LocalCertificateAuthority;
let serverCert: WorkloadCertificate;
let clientCert: WorkloadCertificate;
let foreignDomainCert: WorkloadCertificate;
let revokedClientCert: WorkloadCertificate;

beforeAll(async () => {
  ca = await newCa(systemClock);
  serverCert = await workloadCert(ca, SERVER_URI, systemClock);
  clientCert = await workloadCert(ca, CLIENT_URI, systemClock);
  // Same CA (so the chain is fine), another trust domain.
  foreignDomainCert = await workloadCert(ca, 'spiffe://other.local/ns/client/sa/client', systemClock);
  revokedClientCert = await workloadCert(ca, CLIENT_URI, systemClock);
});

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

type Outcome = { readonly kind: 'secure'; readonly accepted: AcceptedPeer } | { readonly kind: 'refused'; readonly refusal: AcceptRefusal };

interface Accepted {
  readonly raw: net.Socket;
  readonly acceptance: Acceptance;
  readonly outcomes: Outcome[];
  readonly tlsSockets: tls.TLSSocket[];
  /** Resolves with the first outcome. */
  readonly outcome: Promise<Outcome>;
  readonly rawClosed: Promise<void>;
}

interface Fixture {
  readonly port: number;
  readonly clock: ManualClock;
  readonly accepted: Accepted[];
  /** Resolves with the `n`th accepted socket (1-based). */
  connection(n: number): Promise<Accepted>;
}

/**
 * A pauseOnConnect listener whose sockets go to one MtlsAcceptor.
 * `onTlsSocket` lets a test act at the moment the TLS socket is matched (mid-handshake).
 */
async function acceptor(options: Partial<MtlsAcceptorOptions> = {}, hooks: { atAccept?: (a: Acceptance, raw: net.Socket) => void; onTlsSocket?: (a: Acceptance, socket: tls.TLSSocket) => void } = {}): Promise<Fixture> {
  const clock = new ManualClock({ now: systemClock.now() });
  const mtls = new MtlsAcceptor({ clock, certificateFor: () => Promise.resolve(serverCert), handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS, ...options });
  const accepted: Accepted[] = [];
  const waiters: Array<() => void> = [];
  const listener = net.createServer({ pauseOnConnect: true }, (raw) => {
    raw.on('error', () => {});
    const outcomes: Outcome[] = [];
    const tlsSockets: tls.TLSSocket[] = [];
    let first: (o: Outcome) => void = () => {};
    const outcome = new Promise<Outcome>((resolve) => (first = resolve));
    const rawClosed = new Promise<void>((resolve) => raw.once('close', () => resolve()));
    const record = (o: Outcome) => {
      outcomes.push(o);
      first(o);
    };
    // Set right after accept(); the handlers run later (the TLS phase is asynchronous).
    const ref: { acceptance?: Acceptance } = {};
    const handlers: AcceptHandlers = {
      onTlsSocket: (socket) => {
        tlsSockets.push(socket);
        socket.on('error', () => {});
        if (ref.acceptance !== undefined) hooks.onTlsSocket?.(ref.acceptance, socket);
      },
      onSecure: (a) => record({ kind: 'secure', accepted: a }),
      onRefused: (r) => record({ kind: 'refused', refusal: r }),
    };
    const local = localAddressOf(raw);
    if (local === undefined) throw new Error('accepted socket without a local address');
    const acceptance = mtls.accept({ raw, local, log: silentLog }, handlers);
    ref.acceptance = acceptance;
    accepted.push({ raw, acceptance, outcomes, tlsSockets, outcome, rawClosed });
    hooks.atAccept?.(acceptance, raw);
    for (const w of waiters.splice(0)) w();
  });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const a of accepted) {
      for (const t of a.tlsSockets) t.destroy();
      a.raw.destroy();
    }
    listener.close(() => resolve());
  }));
  return {
    port: (listener.address() as AddressInfo).port,
    clock,
    accepted,
    connection: (n) =>
      new Promise<Accepted>((resolve) => {
        const check = () => {
          const a = accepted[n - 1];
          if (a !== undefined) resolve(a);
          else waiters.push(check);
        };
        check();
      }),
  };
}

/** A TCP connection to the acceptor's listener, destroyed after the test. */
function tcp(port: number): net.Socket {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => {});
  cleanups.push(() => {
    socket.destroy();
  });
  return socket;
}

/** Our production client: clientHandshake expecting the server's identity. Settles however the server ends it. */
function ourClient(port: number, cert: WorkloadCertificate): Promise<tls.TLSSocket | Error> {
  const material = TlsMaterial.from(cert);
  const verifier = peerVerifier({ roots: material.roots, expect: { peer: 'server', identities: [id(SERVER_URI)] }, clock: systemClock });
  return clientHandshake(tcp(port), { material, verifier, clock: systemClock, timeoutMs: 5_000, peer: `127.0.0.1:${port}` }).then(
    ({ socket }) => {
      socket.on('error', () => {});
      cleanups.push(() => {
        socket.destroy();
      });
      return socket;
    },
    (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
  );
}

/** After the socket closed, the acceptor's late-error path gets its turn: then the outcomes are final. */
async function settled(a: Accepted): Promise<void> {
  await a.rawClosed;
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

async function refusalOf(a: Accepted): Promise<AcceptRefusal> {
  const o = await a.outcome;
  if (o.kind !== 'refused') throw new Error(`expected a refusal, got onSecure for ${o.accepted.peer.spiffeId}`);
  await settled(a);
  expect(a.outcomes).toHaveLength(1);
  return o.refusal;
}

async function revocationOf(cert: WorkloadCertificate): Promise<{ source: RevocationSource; rejected: CrlReporter[] }> {
  const pem = await crlPem(await signerOf(ca), [cert.leaf.serialNumber]);
  const rejected: CrlReporter[] = [];
  const manager = await CrlManager.start({
    path: '/etc/crl/ca-crl.pem',
    readFile: () => Promise.resolve(pem),
    clock: systemClock,
    log: silentLog,
    metrics: { rejected: (r) => void rejected.push(r), untracked: () => {} },
    watch: false,
  });
  cleanups.push(() => manager.close());
  return { source: manager.source('destination'), rejected };
}

describe('MtlsAcceptor', () => {
  it('a verified client: onSecure with its identity, chain and our roots, after onTlsSocket, and the deadline timer is gone', async () => {
    const f = await acceptor();
    const client = ourClient(f.port, clientCert);
    const a = await f.connection(1);
    expect(f.clock.pendingTimers()).toEqual([HANDSHAKE_TIMEOUT_MS]);
    const o = await a.outcome;
    if (o.kind !== 'secure') throw new Error(`refused: ${o.refusal.code} ${o.refusal.reason}`);
    expect(o.accepted.peer.identity).toEqual(clientCert.identity);
    expect(o.accepted.peer.spiffeId).toBe(CLIENT_URI);
    expect(o.accepted.chain[0]?.fingerprint256).toBe(clientCert.leaf.fingerprint256);
    expect(o.accepted.roots.map((r) => r.fingerprint256)).toEqual([TlsMaterial.from(serverCert).roots[0]!.fingerprint256]);
    expect(a.tlsSockets).toEqual([o.accepted.socket]);
    expect(o.accepted.socket.alpnProtocol).toBe('h2');
    expect(f.clock.pendingTimers()).toEqual([]);

    // The socket handed over is the live TLS connection.
    const socket = await client;
    if (socket instanceof Error) throw socket;
    const got = new Promise<string>((resolve) => o.accepted.socket.once('data', (d: Buffer) => resolve(d.toString())));
    socket.write('after the handshake');
    expect(await got).toBe('after the handshake');
    expect(a.outcomes).toHaveLength(1);
  });

  it('a client from another trust domain is refused once with PEER_IDENTITY_INVALID naming the trust domains', async () => {
    const f = await acceptor();
    void ourClient(f.port, foreignDomainCert);
    const refusal = await refusalOf(await f.connection(1));
    expect(refusal.code).toBe('PEER_IDENTITY_INVALID');
    expect(refusal.checks).toEqual(['trust-domain']);
    expect(refusal.reason).toBe(
      'client certificate refused: subjectAltName.uri: client identity "spiffe://other.local/ns/client/sa/client" is in trust domain "other.local", expected "cluster.local"',
    );
    expect(refusal.peerIdentity).toBeUndefined();
    expect(refusal.handshakeTimeout).toBeUndefined();
    expect(f.clock.pendingTimers()).toEqual([]);
  });

  it('a client without a certificate is refused once with TLS_HANDSHAKE_FAILED saying mTLS is required', async () => {
    const f = await acceptor();
    const anonymous = tls.connect({ host: '127.0.0.1', port: f.port, ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', rejectUnauthorized: false });
    anonymous.on('error', () => {});
    cleanups.push(() => {
      anonymous.destroy();
    });
    const refusal = await refusalOf(await f.connection(1));
    expect(refusal).toEqual({ code: 'TLS_HANDSHAKE_FAILED', reason: 'the client presented no certificate (HBONE requires mTLS)' });
    expect(f.clock.pendingTimers()).toEqual([]);
  });

  it('a plaintext HTTP request is refused once with TLS_HANDSHAKE_FAILED saying it was not a ClientHello', async () => {
    const f = await acceptor();
    const plain = tcp(f.port);
    plain.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    const refusal = await refusalOf(await f.connection(1));
    expect(refusal).toEqual({ code: 'TLS_HANDSHAKE_FAILED', reason: 'the client sent a plaintext HTTP request instead of a TLS ClientHello' });
    expect(f.clock.pendingTimers()).toEqual([]);
  });

  it('a client that never speaks TLS is refused at the deadline with TLS_HANDSHAKE_TIMEOUT (handshakeTimeout: true) and disconnected', async () => {
    const f = await acceptor();
    const silent = tcp(f.port);
    const clientClosed = new Promise<void>((resolve) => silent.once('close', () => resolve()));
    const a = await f.connection(1);
    expect(f.clock.pendingTimers()).toEqual([HANDSHAKE_TIMEOUT_MS]);
    await f.clock.advance(HANDSHAKE_TIMEOUT_MS - 1);
    expect(a.outcomes).toEqual([]);
    await f.clock.advance(1);
    const refusal = await refusalOf(a);
    expect(refusal).toEqual({ code: 'TLS_HANDSHAKE_TIMEOUT', reason: `TLS handshake not completed within ${HANDSHAKE_TIMEOUT_MS} ms`, handshakeTimeout: true });
    await clientClosed;
    expect(f.clock.pendingTimers()).toEqual([]);
  });

  it('cancel() before the handshake: the socket closing reports nothing (without cancel the same close is a refusal)', async () => {
    let cancelNext = true;
    const f = await acceptor({}, {
      atAccept: (acceptance) => {
        if (cancelNext) acceptance.cancel();
      },
    });
    tcp(f.port);
    const cancelled = await f.connection(1);
    expect(f.clock.pendingTimers()).toEqual([]);
    // The owner closes a cancelled socket (HboneServer.drain/close do).
    cancelled.raw.destroy();
    await settled(cancelled);
    expect(cancelled.outcomes).toEqual([]);

    // Control: the same close on a socket that was not cancelled is reported.
    cancelNext = false;
    tcp(f.port);
    const watched = await f.connection(2);
    watched.raw.destroy();
    expect(await refusalOf(watched)).toEqual({ code: 'TLS_HANDSHAKE_FAILED', reason: 'the client closed the connection during the TLS handshake' });
  });

  it('cancel() mid-handshake: the client completes TLS, but no outcome is reported and the TLS socket is closed', async () => {
    let tlsClosed: Promise<void> | undefined;
    let matched: () => void = () => {};
    const tlsMatched = new Promise<void>((resolve) => (matched = resolve));
    const f = await acceptor({}, {
      onTlsSocket: (acceptance, socket) => {
        acceptance.cancel();
        tlsClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
        matched();
      },
    });
    const client = ourClient(f.port, clientCert);
    const a = await f.connection(1);
    await tlsMatched;
    await tlsClosed;
    // The client got through its side of TLS 1.3 (its peer check passed) before the acceptor dropped the socket.
    expect(await client).toBeInstanceOf(tls.TLSSocket);
    a.raw.destroy();
    await settled(a);
    expect(a.outcomes).toEqual([]);
    expect(f.clock.pendingTimers()).toEqual([]);
  });

  it('a revoked client is refused once with CERT_REVOKED (checks: revoked, its identity kept); a valid client of the same CA still passes', async () => {
    const { source, rejected } = await revocationOf(revokedClientCert);
    const f = await acceptor({ revocation: source });
    void ourClient(f.port, revokedClientCert);
    const refusal = await refusalOf(await f.connection(1));
    expect(refusal.code).toBe('CERT_REVOKED');
    expect(refusal.checks).toEqual(['revoked']);
    expect(refusal.peerIdentity).toEqual(revokedClientCert.identity);
    expect(refusal.reason).toMatch(/^client certificate refused: certificate: the peer certificate \(serial [0-9a-f]+, subject "URI:spiffe:\/\/cluster\.local\/ns\/client\/sa\/client"\) is revoked by CRL #1 issued by /);
    expect(rejected).toEqual(['destination']);

    void ourClient(f.port, clientCert);
    const ok = await (await f.connection(2)).outcome;
    expect(ok.kind).toBe('secure');
    expect(rejected).toEqual(['destination']);
  });

  it('no certificate to present refuses the connection with CERT_UNAVAILABLE naming the local address', async () => {
    const f = await acceptor({ certificateFor: () => Promise.reject(new Error('the certificate manager has nothing for this pod')) });
    tcp(f.port);
    const refusal = await refusalOf(await f.connection(1));
    expect(refusal).toEqual({ code: 'CERT_UNAVAILABLE', reason: `no certificate to serve 127.0.0.1:${f.port}: the certificate manager has nothing for this pod` });
    expect(f.clock.pendingTimers()).toEqual([]);
  });
});
