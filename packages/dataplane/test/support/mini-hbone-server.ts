/**
 * A minimal HBONE server for the client and pool tests: TLS 1.3 with a
 * certificate from a LocalCertificateAuthority, client certificate required,
 * ALPN h2, HTTP/2 CONNECT streams answered 200 and then echoed or forwarded to
 * the TCP address in :authority. It records what a test needs to assert
 * (sessions, peer identities, SNI, resumption) and can send GOAWAY. The real
 * HBONE server (src/hbone/server.ts) replaces it in the integration tests.
 */
import { createSecureServer, constants as h2c, type Http2SecureServer, type IncomingHttpHeaders, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import { connect as netConnect, type AddressInfo, type Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { LocalCaFetcher, LocalCertificateAuthority, parseIdentity, type Clock, type WorkloadCertificate } from '@ambient/control';
import { proxyBidirectional } from '../../src/io/copy.js';

export async function newTestCa(clock: Clock): Promise<LocalCertificateAuthority> {
  return LocalCertificateAuthority.generate({ clock });
}

/** A workload certificate for `spiffeId`, issued like istiod does. */
export async function issueCertificate(ca: LocalCertificateAuthority, spiffeId: string, clock: Clock): Promise<WorkloadCertificate> {
  const identity = parseIdentity(spiffeId);
  if (!identity.ok) throw new Error(`bad test identity ${spiffeId}`);
  return new LocalCaFetcher(ca, { clock }).fetch(identity.value);
}

export type StreamBehaviour =
  /** 200, then echo every byte back; END_STREAM is echoed too. */
  | { kind: 'echo' }
  /** 200 after a TCP connect to :authority, then copy both ways; 503 when the connect fails. */
  | { kind: 'forward' }
  /** Answer with this status and end the stream. */
  | { kind: 'status'; status: number }
  /** Never answer (the stream stays open until the client gives up). */
  | { kind: 'silent' };

export interface SessionRecord {
  readonly session: ServerHttp2Session;
  /** The client's URI SAN. */
  readonly peerUri: string | undefined;
  /** `false` when the client sent no SNI. */
  readonly servername: string | false;
  readonly sessionReused: boolean;
  readonly protocol: string | null;
  readonly cipher: string;
  readonly remotePort: number | undefined;
  streams: number;
}

export interface MiniHboneServerOptions {
  readonly certificate: WorkloadCertificate;
  /** SETTINGS_MAX_CONCURRENT_STREAMS (default 200, as ztunnel's server). */
  readonly maxConcurrentStreams?: number;
  readonly behaviour?: (headers: IncomingHttpHeaders, record: SessionRecord) => StreamBehaviour;
}

export interface MiniHboneServer {
  readonly port: number;
  readonly address: { readonly ip: string; readonly port: number };
  /** Every session ever accepted, oldest first. */
  readonly sessions: SessionRecord[];
  /** Streams received (all sessions). */
  readonly streams: Array<{ headers: IncomingHttpHeaders; stream: ServerHttp2Stream; record: SessionRecord }>;
  /** Sessions not yet closed. */
  openSessions(): number;
  /** Resolves when the `n`th session (1-based) has been accepted. */
  waitForSessions(n: number): Promise<void>;
  /** Resolves when `n` streams in total have arrived. */
  waitForStreams(n: number): Promise<void>;
  /** Graceful GOAWAY on every open session (existing streams may finish). */
  goawayAll(): void;
  close(): Promise<void>;
}

export async function startMiniHboneServer(options: MiniHboneServerOptions): Promise<MiniHboneServer> {
  const cert = options.certificate;
  const sessions: SessionRecord[] = [];
  const streams: MiniHboneServer['streams'] = [];
  const open = new Set<ServerHttp2Session>();
  const sockets = new Set<Socket>();
  const waiters: Array<() => void> = [];
  const notify = () => {
    for (const w of waiters.splice(0)) w();
  };
  const waitUntil = (cond: () => boolean) =>
    new Promise<void>((resolve) => {
      const check = () => (cond() ? resolve() : waiters.push(check));
      check();
    });

  const server: Http2SecureServer = createSecureServer({
    key: cert.privateKeyPem,
    cert: cert.chainPem.join(''),
    ca: [...cert.rootsPem],
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ALPNProtocols: ['h2'],
    allowHTTP1: false,
    settings: {
      maxConcurrentStreams: options.maxConcurrentStreams ?? 200,
      initialWindowSize: 4 * 1024 * 1024,
      maxFrameSize: 1024 * 1024,
    },
    maxSessionMemory: 64,
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('session', (session: ServerHttp2Session) => {
    const tls = session.socket as TLSSocket;
    const peer = tls.getPeerX509Certificate?.();
    const uri = peer?.subjectAltName?.split(', ').find((e) => e.startsWith('URI:'))?.slice(4);
    const record: SessionRecord = {
      session,
      peerUri: uri,
      servername: (tls as TLSSocket & { servername: string | false }).servername,
      sessionReused: tls.isSessionReused(),
      protocol: tls.getProtocol(),
      cipher: tls.getCipher().standardName,
      remotePort: tls.remotePort,
      streams: 0,
    };
    sessions.push(record);
    open.add(session);
    session.on('error', () => {});
    session.on('close', () => {
      open.delete(session);
      notify();
    });
    session.on('connect', () => {
      try {
        session.setLocalWindowSize(16 * 1024 * 1024);
      } catch {
        // closed already
      }
    });
    session.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
      record.streams++;
      streams.push({ headers, stream, record });
      stream.on('error', () => {});
      notify();
      const behaviour = options.behaviour?.(headers, record) ?? { kind: 'echo' };
      serveStream(stream, headers, behaviour);
    });
    notify();
  });
  server.on('tlsClientError', () => {});
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;

  return {
    port,
    address: { ip: '127.0.0.1', port },
    sessions,
    streams,
    openSessions: () => open.size,
    waitForSessions: (n) => waitUntil(() => sessions.length >= n),
    waitForStreams: (n) => waitUntil(() => streams.length >= n),
    goawayAll() {
      for (const s of open) if (!s.closed && !s.destroyed) s.close();
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of open) s.destroy();
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

function serveStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, behaviour: StreamBehaviour): void {
  if (headers[h2c.HTTP2_HEADER_METHOD] !== 'CONNECT') {
    stream.respond({ ':status': 400 }, { endStream: true });
    return;
  }
  switch (behaviour.kind) {
    case 'echo':
      stream.respond({ ':status': 200 });
      stream.pipe(stream);
      return;
    case 'status':
      stream.respond({ ':status': behaviour.status }, { endStream: true });
      return;
    case 'silent':
      return;
    case 'forward': {
      const authority = String(headers[h2c.HTTP2_HEADER_AUTHORITY] ?? '');
      const i = authority.lastIndexOf(':');
      const host = authority.slice(0, i).replace(/^\[|\]$/g, '');
      const upstream = netConnect({ host, port: Number(authority.slice(i + 1)), allowHalfOpen: true });
      upstream.once('error', () => {
        if (!stream.headersSent && !stream.destroyed) stream.respond({ ':status': 503 }, { endStream: true });
      });
      upstream.once('connect', () => {
        if (stream.destroyed) {
          upstream.destroy();
          return;
        }
        stream.respond({ ':status': 200 });
        void proxyBidirectional(stream, upstream);
      });
      return;
    }
  }
}
