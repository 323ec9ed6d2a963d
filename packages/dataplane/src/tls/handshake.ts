/**
 * The one TLS client path of HBONE (the TLS seam: the only `tls.connect`),
 * used for an outbound connection to a peer's 15008 and for the inner tunnel
 * of double HBONE alike: TLS 1.3 with our certificate's TlsMaterial (its
 * SecureContext: full chain, workload roots only, AES-GCM suites, no
 * tickets), ALPN h2 required, no SNI, no session to resume, and the peer
 * checked by the one PeerVerifier (SPIFFE identity among the expected ones,
 * key usage, chain, revocation) from inside the handshake, so a refused
 * server never sees a byte of application data.
 *
 * Failures, each one ProxyError code: PEER_IDENTITY_INVALID / CERT_REVOKED
 * (the verifier refused), TLS_HANDSHAKE_FAILED (anything else, including a
 * server without ALPN h2), TLS_HANDSHAKE_TIMEOUT, UPSTREAM_CONNECT_FAILED
 * (aborted). The transport is destroyed on every failure.
 */
import type { X509Certificate } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { formatRejections, type Clock } from '@ambient/control';
import { describeError, ProxyError } from '../errors.js';
import { abortiveClose } from '../io/copy.js';
import { settleWithin } from '@ambient/control';
import { HBONE_ALPN, peerChainOf, type TlsMaterial } from './contexts.js';
import { peerRefusalError, type PeerRefusal, type PeerVerifier } from './peer-verifier.js';
import type { VerifiedPeer } from './spiffe-verify.js';

export interface ClientHandshakeOptions {
  /** Our certificate, as TLS material. */
  readonly material: TlsMaterial;
  /** Built for the identities this peer must prove (the one verifier). */
  readonly verifier: PeerVerifier;
  readonly clock: Clock;
  readonly timeoutMs: number;
  /** Names the peer in errors ("10.0.0.2:15008", "svc:80 via 10.0.0.9:15008"). */
  readonly peer: string;
  readonly signal?: AbortSignal | undefined;
}

export interface ClientHandshake {
  readonly socket: TLSSocket;
  readonly peer: VerifiedPeer;
  /** The server chain as verified (leaf first), kept for re-checks on CRL reloads. */
  readonly chain: readonly X509Certificate[];
}

export function clientHandshake(transport: Duplex, o: ClientHandshakeOptions): Promise<ClientHandshake> {
  let verified: { peer: VerifiedPeer; chain: readonly X509Certificate[] } | undefined;
  let refusals: readonly PeerRefusal[] | undefined;
  let socket: TLSSocket | undefined;
  return settleWithin<ClientHandshake>(
    {
      clock: o.clock,
      timeoutMs: o.timeoutMs,
      onTimeout: () => ({ error: new ProxyError('TLS_HANDSHAKE_TIMEOUT', `TLS handshake with ${o.peer} did not complete within ${o.timeoutMs} ms`) }),
      signal: o.signal,
      onAbort: (reason) => ({ error: new ProxyError('UPSTREAM_CONNECT_FAILED', `TLS handshake with ${o.peer} aborted: ${describeError(reason)}`, { cause: reason }) }),
    },
    (settle) => {
      const tls = tlsConnect({
        socket: transport,
        secureContext: o.material.clientContext(),
        ALPNProtocols: [HBONE_ALPN],
        rejectUnauthorized: true,
        // No `servername`: no SNI on the wire (ztunnel never sends one). No `session`: no resumption.
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          const chain = peerChainOf(cert);
          const verdict = o.verifier(chain);
          if (!verdict.ok) {
            refusals = verdict.errors;
            return new Error(formatRejections(verdict.errors));
          }
          verified = { peer: verdict.value, chain };
          return undefined;
        },
      });
      socket = tls;
      const onSecure = () => {
        if (tls.alpnProtocol !== HBONE_ALPN) {
          settle.reject(new ProxyError('TLS_HANDSHAKE_FAILED', `TLS to ${o.peer}: the peer did not negotiate ALPN h2 (got ${tls.alpnProtocol || 'none'})`));
        } else if (verified === undefined) {
          settle.reject(new ProxyError('PEER_IDENTITY_INVALID', `TLS to ${o.peer}: the peer identity was not verified`));
        } else {
          settle.resolve({ socket: tls, ...verified });
        }
      };
      const onError = (err: Error) => {
        if (refusals !== undefined) settle.reject(peerRefusalError(refusals, `TLS to ${o.peer}`));
        else settle.reject(new ProxyError('TLS_HANDSHAKE_FAILED', `TLS handshake with ${o.peer} failed: ${describeError(err)}`, { cause: err }));
      };
      tls.once('secureConnect', onSecure);
      tls.on('error', onError);
      return (outcome) => {
        tls.off('secureConnect', onSecure);
        tls.off('error', onError);
        // From here the HTTP/2 session reports this socket's failures; an 'error' in between must not go unhandled.
        tls.on('error', noop);
        if (outcome === 'rejected') {
          tls.destroy();
          // An HTTP/2 stream (double HBONE's outer tunnel) is reset, not ended cleanly.
          abortiveClose(transport, 'TLS handshake failed');
        }
      };
    },
  ).catch((err: unknown) => {
    // Aborted before tls.connect ran: nothing but the transport to release.
    if (socket === undefined) abortiveClose(transport, 'TLS handshake aborted');
    throw err;
  });
}

function noop(): void {}
