import net, { type AddressInfo } from 'node:net';
import tls from 'node:tls';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { systemClock, type Identity, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { id, newCa, workloadCert } from '../testing/certs.js';
import { ProxyError } from '../errors.js';
import { HBONE_CIPHERS, peerChainOf, serverTlsOptions, TlsMaterial, TlsMaterialCache } from './contexts.js';
import { clientHandshake } from './handshake.js';
import { peerVerifier } from './peer-verifier.js';

const clock = systemClock;
let ca: LocalCertificateAuthority;
let serverCert: WorkloadCertificate;
let clientCert: WorkloadCertificate;

beforeAll(async () => {
  ca = await newCa(clock);
  serverCert = await workloadCert(ca, 'spiffe://cluster.local/ns/server/sa/server', clock);
  clientCert = await workloadCert(ca, 'spiffe://cluster.local/ns/client/sa/client', clock);
});

interface Accepted {
  readonly socket: tls.TLSSocket;
  readonly servername: string | false | null;
  readonly reused: boolean;
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A tls.Server with the HBONE server options, recording what each accepted connection looked like. */
async function startServer(cert: WorkloadCertificate = serverCert) {
  const accepted: Accepted[] = [];
  const waiters: Array<(a: Accepted) => void> = [];
  const errors: Error[] = [];
  const errorListeners: Array<() => void> = [];
  const server = tls.createServer(serverTlsOptions(cert, { handshakeTimeoutMs: 5000 }), (socket) => {
    const a = { socket, servername: socket.servername, reused: socket.isSessionReused() };
    accepted.push(a);
    socket.on('error', () => {});
    waiters.shift()?.(a);
  });
  server.on('tlsClientError', (err) => {
    errors.push(err);
    for (const l of errorListeners) l();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  cleanups.push(() => {
    for (const a of accepted) a.socket.destroy();
    server.close();
  });
  return { port, accepted, errors, errorListeners, next: () => new Promise<Accepted>((resolve) => waiters.push(resolve)) };
}

/** The production client path: TCP, then clientHandshake with the one verifier expecting `expected`. */
async function handshake(cert: WorkloadCertificate, expected: readonly Identity[], host: string, port: number): Promise<tls.TLSSocket> {
  const material = TlsMaterial.from(cert);
  const tcp = net.connect({ host, port });
  cleanups.push(() => tcp.destroy());
  const verifier = peerVerifier({ roots: material.roots, expect: { peer: 'server', identities: expected }, clock });
  const { socket } = await clientHandshake(tcp, { material, verifier, clock, timeoutMs: 5000, peer: `${host}:${port}` });
  cleanups.push(() => socket.destroy());
  return socket;
}

/** What the server side concludes about an accepted client (the one verifier, our trust domain). */
function verifyClient(socket: tls.TLSSocket, cert: WorkloadCertificate = serverCert) {
  const material = TlsMaterial.from(cert);
  return peerVerifier({ roots: material.roots, expect: { peer: 'client', trustDomain: material.identity.trustDomain }, clock })(peerChainOf(socket.getPeerCertificate(true)));
}

/** A raw tls.connect, for clients that behave unlike ours (tickets, old versions, other suites). */
function connect(options: tls.ConnectionOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(options);
    cleanups.push(() => socket.destroy());
    socket.once('secureConnect', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('HBONE TLS options', () => {
  it('the server uses TLS 1.3 only, exactly the two AES-GCM suites, ALPN h2 and a mandatory client certificate', () => {
    const options = serverTlsOptions(serverCert, { handshakeTimeoutMs: 1000 });
    expect(options).toMatchObject({
      minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ciphers: 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256',
      requestCert: true, rejectUnauthorized: true, ALPNProtocols: ['h2'], ca: serverCert.rootsPem,
    });
    expect(HBONE_CIPHERS).toBe('TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256');
  });

  it('handshakes with TLS 1.3, AES-GCM and h2, sends no SNI even to a hostname, and the server verifies the client identity', async () => {
    const server = await startServer();
    const accepted = server.next();
    const socket = await handshake(clientCert, [serverCert.identity], 'localhost', server.port);
    const a = await accepted;
    expect(socket.getProtocol()).toBe('TLSv1.3');
    expect(['TLS_AES_256_GCM_SHA384', 'TLS_AES_128_GCM_SHA256']).toContain(socket.getCipher().standardName);
    expect(socket.alpnProtocol).toBe('h2');
    // The ClientHello carried no server_name extension.
    expect(a.servername).toBe(false);
    const peer = verifyClient(a.socket);
    expect(peer.ok && peer.value.identity).toEqual(clientCert.identity);
  });

  it('the client aborts before sending any byte when the server is not an expected identity', async () => {
    const server = await startServer();
    const received: Buffer[] = [];
    // The server sees either a failed handshake or a connection that closes without data.
    const serverDone = new Promise<void>((resolve) => {
      server.errorListeners.push(() => resolve());
      void server.next().then((a) => {
        a.socket.on('data', (d: Buffer) => received.push(d));
        if (a.socket.destroyed) resolve();
        else a.socket.once('close', () => resolve());
      });
    });
    const err = await handshake(clientCert, [id('spiffe://cluster.local/ns/other/sa/other')], '127.0.0.1', server.port).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect((err as ProxyError).code).toBe('PEER_IDENTITY_INVALID');
    expect((err as ProxyError).message).toMatch(/not one of the expected identities/);
    await serverDone;
    expect(Buffer.concat(received).length).toBe(0);
  });

  it('the server refuses the client identity from another trust domain', async () => {
    const server = await startServer();
    const foreign = await workloadCert(ca, 'spiffe://other.local/ns/client/sa/client', clock);
    const accepted = server.next();
    await handshake(foreign, [serverCert.identity], '127.0.0.1', server.port);
    const peer = verifyClient((await accepted).socket);
    expect(peer.ok ? [] : peer.errors.map((e) => ('check' in e ? e.check : e.code))).toEqual(['trust-domain']);
  });

  it('never resumes a session, even when a client offers the ticket from an earlier connection', async () => {
    const server = await startServer();
    // A client that keeps tickets (ours never does): even its offered ticket is not resumed.
    const options = { secureContext: TlsMaterial.from(clientCert).clientContext(), ALPNProtocols: ['h2'], rejectUnauthorized: false, host: '127.0.0.1', port: server.port };
    const first = tls.connect(options);
    cleanups.push(() => first.destroy());
    const ticket = await new Promise<Buffer>((resolve, reject) => {
      first.once('session', resolve);
      first.once('error', reject);
    });
    const accepted = server.next();
    const second = await connect({ ...options, session: ticket });
    expect(second.isSessionReused()).toBe(false);
    expect((await accepted).reused).toBe(false);
  });

  it('refuses TLS 1.2 clients and clients without an AES-GCM suite', async () => {
    const server = await startServer();
    const base = { ALPNProtocols: ['h2'], rejectUnauthorized: false, host: '127.0.0.1', port: server.port };
    const tls12 = tls.createSecureContext({ key: clientCert.privateKeyPem, cert: clientCert.chainPem.join(''), ca: [...clientCert.rootsPem], maxVersion: 'TLSv1.2' });
    await expect(connect({ ...base, secureContext: tls12 })).rejects.toThrow(/protocol version|unsupported protocol/i);
    const chacha = tls.createSecureContext({ key: clientCert.privateKeyPem, cert: clientCert.chainPem.join(''), ca: [...clientCert.rootsPem], ciphers: 'TLS_CHACHA20_POLY1305_SHA256', minVersion: 'TLSv1.3' });
    await expect(connect({ ...base, secureContext: chacha })).rejects.toThrow(/handshake failure|no shared cipher/i);
  });
});

describe('TlsMaterialCache', () => {
  it('builds one material and context per certificate and rebuilds on rotation', async () => {
    const cache = new TlsMaterialCache();
    const a = cache.get(serverCert);
    expect(cache.get(serverCert)).toBe(a);
    expect(a.clientContext()).toBe(a.clientContext());
    const rotated = await workloadCert(ca, 'spiffe://cluster.local/ns/server/sa/server', clock);
    const b = cache.get(rotated);
    expect(b).not.toBe(a);
    expect(b.serial).toBe(rotated.leaf.serialNumber);
    expect(cache.size).toBe(1);
    cache.forget(rotated.identity);
    expect(cache.size).toBe(0);
  });

  it('keeps at most maxEntries identities, dropping the least recently used', async () => {
    const cache = new TlsMaterialCache({ maxEntries: 2 });
    const first = cache.get(serverCert);
    cache.get(clientCert);
    cache.get(serverCert); // most recent now
    const third = await workloadCert(ca, 'spiffe://cluster.local/ns/third/sa/third', clock);
    cache.get(third);
    expect(cache.size).toBe(2);
    expect(cache.get(serverCert)).toBe(first);
  });

  it('refuses a certificate whose roots cannot be parsed', () => {
    expect(() => TlsMaterial.from({ ...serverCert, rootsPem: ['garbage'] })).toThrow(/CERT_UNAVAILABLE|not a PEM/);
  });
});
