/**
 * A TLS peer that speaks no HTTP/2: it runs the HBONE server's TLS settings
 * (TLS 1.3, ALPN h2, a required client certificate from the workload roots)
 * with any certificate, and records how far each connection got — TLS
 * secured or not, and every application byte it decrypted. The double-HBONE
 * tests put it behind a gateway as the inner peer, to prove that a refused
 * inner peer never receives a byte of the inner tunnel (the HTTP/2 preface is
 * the first byte a client would send after TLS).
 */
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import type { WorkloadCertificate } from '@ambient/control';
import { serverTlsOptions } from '../../src/tls/contexts.js';

export interface RecordingTlsPeer {
  readonly port: number;
  /** TCP connections accepted so far. */
  readonly connections: number;
  /** Connections whose TLS handshake completed on this side. */
  readonly secured: number;
  /** Application bytes received over TLS, all connections. */
  receivedBytes(): number;
  /** Resolves once `n` TCP connections were accepted and every one of them closed. */
  whenClosed(n: number): Promise<void>;
  close(): Promise<void>;
}

export async function startRecordingTlsPeer(certificate: WorkloadCertificate): Promise<RecordingTlsPeer> {
  const raw: Socket[] = [];
  const closed = new Set<Socket>();
  const secure: tls.TLSSocket[] = [];
  let bytes = 0;
  const waiters: Array<() => void> = [];
  const notify = () => {
    for (const w of waiters.splice(0)) w();
  };
  const server = tls.createServer(serverTlsOptions(certificate, { handshakeTimeoutMs: 30_000 }));
  server.on('connection', (socket: Socket) => {
    raw.push(socket);
    socket.on('error', () => {});
    socket.once('close', () => {
      closed.add(socket);
      notify();
    });
    notify();
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    secure.push(socket);
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      notify();
    });
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    get connections() {
      return raw.length;
    },
    get secured() {
      return secure.length;
    },
    receivedBytes: () => bytes,
    whenClosed: (n) =>
      new Promise<void>((resolve) => {
        const check = () => (raw.length >= n && raw.every((s) => closed.has(s)) ? resolve() : waiters.push(check));
        check();
      }),
    async close() {
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of secure) s.destroy();
      for (const s of raw) s.destroy();
      await done;
    },
  };
}
