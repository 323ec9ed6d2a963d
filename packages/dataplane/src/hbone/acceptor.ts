/**
 * The mTLS acceptor of an HBONE listener (15008): takes an accepted TCP
 * socket that nothing has read from, presents the workload certificate for
 * the address it was accepted on, runs the TLS 1.3 handshake with a required
 * client certificate, and checks the client with the one PeerVerifier
 * (SPIFFE identity in our trust domain, key usage, chain, revocation).
 * Exactly one outcome per socket: `onSecure` with the verified peer, or
 * `onRefused` with the ProxyError code and words a user can act on — unless
 * the caller cancelled first.
 *
 * Node's tls.Server hands back a new TLSSocket, not the TCP socket we gave
 * it, so the acceptor keeps one non-listening tls.Server per certificate (one
 * SecureContext each, performance.md 6.4) and matches each TLS socket to its
 * TCP socket by 4-tuple while both are alive (unique among live
 * connections), then by a WeakMap; an unmatched TLS socket is closed (fail
 * closed).
 *
 * Invariants: the handshake timer exists from `accept` until the outcome or
 * `cancel`; a socket whose bytes were already read is refused (TLS must see
 * them); a resumed session is refused (every connection re-runs
 * verification, CVE-2022-21654).
 */
import type { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { formatRejections, type Clock, type Identity, type Logger, type Timer, type WorkloadCertificate } from '@ambient/control';
import { asProxyError, firstLine, type ProxyErrorCode } from '../errors.js';
import { formatSocketAddress, type SocketAddress } from '../net/address.js';
import { peerChainOf, serverTlsOptions, TlsMaterialCache, type TlsMaterial } from '../tls/contexts.js';
import type { RevocationSource } from '../tls/crl/manager.js';
import { peerRefusalError, peerVerifier, refusedChecks } from '../tls/peer-verifier.js';
import type { PeerCheck, VerifiedPeer } from '../tls/spiffe-verify.js';

/** A TCP connection in its TLS phase. */
export interface AcceptingSocket {
  readonly raw: net.Socket;
  readonly local: SocketAddress;
  readonly log: Logger;
}

export interface AcceptedPeer {
  readonly socket: tls.TLSSocket;
  readonly peer: VerifiedPeer;
  /** The client chain as verified and our roots, for re-checks on CRL reloads (chain empty when unreadable). */
  readonly chain: readonly X509Certificate[];
  readonly roots: readonly X509Certificate[];
}

export interface AcceptRefusal {
  readonly code: ProxyErrorCode;
  readonly reason: string;
  readonly peerIdentity?: Identity;
  /** For PEER_IDENTITY_INVALID / CERT_REVOKED: which checks failed. */
  readonly checks?: readonly (PeerCheck | 'revoked')[];
  /** Our TLS handshake deadline fired (a slowloris client), as opposed to any other failure. */
  readonly handshakeTimeout?: boolean;
}

export interface AcceptHandlers {
  /** The TLS socket exists (matched to the TCP socket): watch its close too. */
  onTlsSocket(socket: tls.TLSSocket): void;
  onSecure(accepted: AcceptedPeer): void;
  onRefused(refusal: AcceptRefusal): void;
}

export interface MtlsAcceptorOptions {
  readonly clock: Clock;
  /** The certificate to present on a connection accepted at `local`; rejecting refuses it (CERT_UNAVAILABLE). */
  readonly certificateFor: (local: SocketAddress) => Promise<WorkloadCertificate>;
  readonly materials?: TlsMaterialCache | undefined;
  readonly revocation?: RevocationSource | undefined;
  readonly handshakeTimeoutMs: number;
}

export interface Acceptance {
  /** Stops waiting for this socket: no outcome will be reported. */
  cancel(): void;
}

interface Pending {
  readonly key: string;
  readonly socket: AcceptingSocket;
  readonly handlers: AcceptHandlers;
  timer: Timer | undefined;
  tls: tls.TLSSocket | undefined;
  tlsError: Error | undefined;
  done: boolean;
}

export class MtlsAcceptor {
  readonly #o: MtlsAcceptorOptions;
  readonly #materials: TlsMaterialCache;
  readonly #tlsServers = new WeakMap<TlsMaterial, tls.Server>();
  /** Sockets whose TLS socket is not matched yet, by TCP 4-tuple. */
  readonly #awaiting = new Map<string, Pending>();
  readonly #byTlsSocket = new WeakMap<tls.TLSSocket, Pending>();

  constructor(o: MtlsAcceptorOptions) {
    this.#o = o;
    this.#materials = o.materials ?? new TlsMaterialCache();
  }

  /** Starts the TLS phase on `s.raw` (paused, never read). */
  accept(s: AcceptingSocket, handlers: AcceptHandlers): Acceptance {
    const key = socketKey(s.raw);
    const p: Pending = { key: key ?? '', socket: s, handlers, timer: undefined, tls: undefined, tlsError: undefined, done: false };
    if (key === undefined || this.#awaiting.has(key)) {
      // A closed socket, or (cannot happen for live TCP sockets) a 4-tuple in use: refuse rather than mismatch identities.
      this.#refuse(p, { code: 'INTERNAL', reason: key === undefined ? 'the socket closed before TLS started' : 'the socket 4-tuple is already in use' });
      s.raw.destroy();
      return { cancel: () => this.#finish(p) };
    }
    this.#awaiting.set(key, p);
    p.timer = this.#o.clock.setTimer(this.#o.handshakeTimeoutMs, () => {
      this.#refuse(p, { code: 'TLS_HANDSHAKE_TIMEOUT', reason: `TLS handshake not completed within ${this.#o.handshakeTimeoutMs} ms`, handshakeTimeout: true });
      s.raw.destroy();
    });
    s.raw.once('close', () => {
      if (p.done) return;
      // The TLS error (if any) may be reported just after the socket closed.
      setImmediate(() => this.#refuse(p, describeTlsFailure(p.tlsError, p.tls?.authorizationError)));
    });
    void this.#start(p);
    return { cancel: () => this.#finish(p) };
  }

  async #start(p: Pending): Promise<void> {
    const { raw, local } = p.socket;
    let material: TlsMaterial;
    try {
      material = this.#materials.get(await this.#o.certificateFor(local));
    } catch (err) {
      this.#refuse(p, { code: 'CERT_UNAVAILABLE', reason: `no certificate to serve ${formatSocketAddress(local)}: ${asProxyError(err).message}` });
      raw.destroy();
      return;
    }
    if (p.done || raw.destroyed) return;
    if (raw.readableLength > 0) {
      this.#refuse(p, { code: 'INTERNAL', reason: 'bytes were read from the socket before TLS (the listener must use pauseOnConnect)' });
      raw.destroy();
      return;
    }
    this.#tlsServerFor(material).emit('connection', raw);
  }

  /** One tls.Server (and so one SecureContext) per certificate; it never listens. */
  #tlsServerFor(material: TlsMaterial): tls.Server {
    let server = this.#tlsServers.get(material);
    if (server !== undefined) return server;
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    const { ALPNProtocols: _unused, ...options } = serverTlsOptions(material.certificate, {
      handshakeTimeoutMs: this.#o.handshakeTimeoutMs + 1000,
    });
    server = tls.createServer({
      ...options,
      // Selects h2 (or refuses with no_application_protocol) and matches the TLS
      // socket to its connection while the socket is certainly alive.
      ALPNCallback(this: tls.TLSSocket, { protocols }: { servername: string; protocols: string[] }) {
        self.#match(this);
        return protocols.includes('h2') ? 'h2' : undefined;
      },
    });
    server.on('secureConnection', (socket: tls.TLSSocket) => this.#onSecure(material, socket));
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => this.#onTlsError(err, socket));
    this.#tlsServers.set(material, server);
    return server;
  }

  #match(socket: tls.TLSSocket): Pending | undefined {
    const known = this.#byTlsSocket.get(socket);
    if (known !== undefined) return known;
    const key = socketKey(socket); // also caches the addresses on the socket
    const p = key === undefined ? undefined : this.#awaiting.get(key);
    if (p === undefined) return undefined;
    this.#awaiting.delete(p.key);
    this.#byTlsSocket.set(socket, p);
    p.tls = socket;
    socket.on('error', (err) => p.socket.log.debug({ err: firstLine(err) }, 'HBONE TLS socket error'));
    p.handlers.onTlsSocket(socket);
    return p;
  }

  #onTlsError(err: Error, socket: tls.TLSSocket): void {
    const p = this.#match(socket);
    socket.destroy();
    if (p === undefined) return;
    p.tlsError = err;
    this.#refuse(p, describeTlsFailure(err, socket.authorizationError));
  }

  #onSecure(material: TlsMaterial, socket: tls.TLSSocket): void {
    const p = this.#match(socket);
    if (p === undefined || p.done) {
      socket.destroy();
      return;
    }
    const fail = (refusal: AcceptRefusal) => {
      this.#refuse(p, refusal);
      socket.destroy();
    };
    if (!socket.authorized) return fail({ code: 'TLS_HANDSHAKE_FAILED', reason: `client certificate rejected: ${String(socket.authorizationError)}` });
    if (socket.alpnProtocol !== 'h2') return fail({ code: 'TLS_HANDSHAKE_FAILED', reason: 'the client did not negotiate ALPN "h2"' });
    if (socket.getProtocol() !== 'TLSv1.3') return fail({ code: 'TLS_HANDSHAKE_FAILED', reason: `negotiated ${String(socket.getProtocol())}, only TLSv1.3 is allowed` });
    if (socket.isSessionReused()) return fail({ code: 'TLS_HANDSHAKE_FAILED', reason: 'TLS session resumption is refused; every connection must verify the peer' });
    const chain = peerChainOf(socket.getPeerCertificate(true));
    const verify = peerVerifier({ roots: material.roots, expect: { peer: 'client', trustDomain: material.identity.trustDomain }, clock: this.#o.clock, revocation: this.#o.revocation });
    const verdict = verify(chain);
    if (!verdict.ok) {
      const error = peerRefusalError(verdict.errors, 'client certificate refused');
      const revoked = verdict.errors.find((e) => e.code === 'CERT_REVOKED');
      return fail({
        code: error.code,
        reason: `client certificate refused: ${formatRejections(verdict.errors)}`,
        checks: refusedChecks(verdict.errors),
        ...(revoked !== undefined ? { peerIdentity: revoked.peer.identity } : {}),
      });
    }
    this.#finish(p);
    p.handlers.onSecure({ socket, peer: verdict.value, chain, roots: material.roots });
  }

  #refuse(p: Pending, refusal: AcceptRefusal): void {
    if (p.done) return;
    this.#finish(p);
    p.handlers.onRefused(refusal);
  }

  #finish(p: Pending): void {
    p.done = true;
    p.timer?.cancel();
    p.timer = undefined;
    if (this.#awaiting.get(p.key) === p) this.#awaiting.delete(p.key);
  }
}

function socketKey(s: net.Socket): string | undefined {
  const { localAddress, localPort, remoteAddress, remotePort } = s;
  if (localAddress === undefined || localPort === undefined || remoteAddress === undefined || remotePort === undefined) return undefined;
  return `${localAddress}|${localPort}|${remoteAddress}|${remotePort}`;
}

/** What a TLS handshake failure means, in words a user can act on. */
function describeTlsFailure(err: Error | undefined, authorizationError: string | Error | null | undefined): AcceptRefusal {
  if (authorizationError) return { code: 'TLS_HANDSHAKE_FAILED', reason: `client certificate rejected by the workload trust roots: ${String(authorizationError)}` };
  const code = (err as { code?: string } | undefined)?.code;
  switch (code) {
    case undefined:
    case 'ECONNRESET':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client closed the connection during the TLS handshake' };
    case 'ERR_TLS_HANDSHAKE_TIMEOUT':
      return { code: 'TLS_HANDSHAKE_TIMEOUT', reason: 'TLS handshake timed out' };
    case 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client presented no certificate (HBONE requires mTLS)' };
    case 'ERR_SSL_NO_APPLICATION_PROTOCOL':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client did not offer ALPN "h2"' };
    case 'ERR_SSL_HTTP_REQUEST':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'the client sent a plaintext HTTP request instead of a TLS ClientHello' };
    case 'ERR_SSL_WRONG_VERSION_NUMBER':
    case 'ERR_SSL_UNSUPPORTED_PROTOCOL':
    case 'ERR_SSL_PACKET_LENGTH_TOO_LONG':
    case 'ERR_SSL_RECORD_LENGTH_MISMATCH':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: `not a TLS 1.3 ClientHello (${firstLine(err).replace(/^.*:([^:]+)$/, '$1')})` };
    case 'ERR_SSL_NO_SHARED_CIPHER':
      return { code: 'TLS_HANDSHAKE_FAILED', reason: 'no shared cipher suite (HBONE offers TLS_AES_256_GCM_SHA384 and TLS_AES_128_GCM_SHA256 only)' };
    default:
      return { code: 'TLS_HANDSHAKE_FAILED', reason: `TLS handshake failed: ${code} ${firstLine(err)}` };
  }
}
