/**
 * The DNS proxy of one workload (ztunnel `dns::Server`): UDP and TCP
 * listeners on `localhost:15053` (127.0.0.1, plus ::1 when IPv6 is enabled)
 * made by the workload's socket factory, so that in-pod mode listens inside
 * the pod's network namespace, each message handed to handler.ts and the
 * response sent back. Unknown names go upstream through forwarder.ts, on the
 * same socket factory.
 *
 * TCP follows RFC 7766 as hickory does: two-byte length framing, several
 * queries per connection answered as they complete, and the connection
 * closed after 5 s without a new request (while nothing is pending).
 *
 * Invariants:
 * - bounded: at most `maxTcpConnections` connections (more are closed at
 *   once), `maxQueriesPerTcpConnection` queries pending per connection
 *   (reading pauses beyond, and while the client is not reading its
 *   answers), `maxPendingUdpQueries` UDP queries pending
 *   (more are dropped), `maxInFlightForwards` upstream queries (more get
 *   SERVFAIL), TCP messages of at most `maxTcpMessageBytes` (a larger one
 *   closes the connection), and one idle timer per connection;
 * - a message never makes the process throw: the handler never rejects and
 *   every socket has an error listener;
 * - close() is idempotent; it stops both listeners, aborts pending queries
 *   (their upstream sockets and timers are released), closes every
 *   connection, and resolves once all of that is done. No response is sent
 *   after close() starts.
 */
import type { Clock, Logger, Random, Snapshot, Store, Timer, Workload } from '@ambient/control';
import type { Socket as UdpSocket } from 'node:dgram';
import type { AddressInfo, Server, Socket } from 'node:net';
import { LOCAL_WORKLOAD_WAIT_MS } from '../proxy/await-workload.js';
import { formatSocketAddress, canonicalPeerIp, peerAddress, type SocketAddress, type SocketFactory } from '@ambient/dataplane';
import { createForwarder, DEFAULT_MAX_IN_FLIGHT_FORWARDS, DEFAULT_UPSTREAM_TIMEOUT_MS } from './forwarder.js';
import { createDnsHandler, type DnsHandler } from './handler.js';
import type { DnsMetricsRecorder } from './metrics.js';
import { DEFAULT_CLUSTER_DOMAIN } from './names.js';
import type { Nameserver } from './resolv-conf.js';
import { frameTcp, TcpFrameReader } from './wire.js';

interface DnsProxyLimits {
  /** Open TCP connections (default 128). */
  readonly maxTcpConnections: number;
  /** ztunnel's TCP request timeout: a connection with nothing pending is closed after this long without a request (default 5 s). */
  readonly tcpRequestTimeoutMs: number;
  /** Largest TCP message accepted (default 4096; a query is a few hundred bytes). */
  readonly maxTcpMessageBytes: number;
  /** Queries answered concurrently per TCP connection; reading pauses beyond (default 32). */
  readonly maxQueriesPerTcpConnection: number;
  /** UDP queries being answered at once; more are dropped (default 1024). */
  readonly maxPendingUdpQueries: number;
  /** Upstream queries at once; more are answered SERVFAIL (default 256). */
  readonly maxInFlightForwards: number;
  /** Per upstream nameserver attempt (default 5 s). */
  readonly upstreamTimeoutMs: number;
}

const DEFAULT_DNS_PROXY_LIMITS: DnsProxyLimits = {
  maxTcpConnections: 128,
  tcpRequestTimeoutMs: 5_000,
  maxTcpMessageBytes: 4_096,
  maxQueriesPerTcpConnection: 32,
  maxPendingUdpQueries: 1_024,
  maxInFlightForwards: DEFAULT_MAX_IN_FLIGHT_FORWARDS,
  upstreamTimeoutMs: DEFAULT_UPSTREAM_TIMEOUT_MS,
};

export interface DnsProxyOptions {
  /** The workload's socket factory (in-pod: sockets inside the pod's netns, with its mark). */
  readonly sockets: SocketFactory;
  /** `localhost` (127.0.0.1, plus ::1 when IPv6 is enabled) or an IP; ztunnel's default is localhost:15053. */
  readonly address: { readonly host: string; readonly port: number };
  readonly store: Pick<Store, 'snapshot' | 'subscribe'>;
  /** The client pod's workload in a snapshot (in-pod: `(s) => s.findLocalWorkload(info)`). */
  readonly localWorkload: (snapshot: Snapshot) => Workload | undefined;
  /** How long a query waits for that workload to show up before SERVFAIL (default 5 s, as ztunnel). */
  readonly localWorkloadWaitMs?: number;
  /** CLUSTER_DOMAIN (default cluster.local). */
  readonly clusterDomain?: string;
  /** IPV6_ENABLED: AAAA answers, and the ::1 listener for `localhost`. */
  readonly ipv6Enabled: boolean;
  /** Dedicated mode: the search list of its resolv.conf. Default (shared mode): each client pod's Kubernetes search list. */
  readonly searchDomains?: readonly string[] | undefined;
  /** PREFERED_SERVICE_NAMESPACE; default: the store snapshot's. */
  readonly preferredServiceNamespace?: string | undefined;
  /** ztunnel's own resolv.conf nameservers (resolv-conf.ts `loadResolvConf`). */
  readonly nameservers: readonly Nameserver[];
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly metrics: DnsMetricsRecorder;
  readonly limits?: Partial<DnsProxyLimits>;
}

export interface DnsProxy {
  /** Where the proxy listens; each address serves both UDP and TCP. */
  readonly addresses: readonly SocketAddress[];
  close(): Promise<void>;
}

interface TcpConnection {
  readonly socket: Socket;
  readonly source: string;
  readonly reader: TcpFrameReader;
  /** Complete messages received but not started (at most one read's worth: reading pauses while any wait). */
  readonly queued: Buffer[];
  pending: number;
  idle: Timer | undefined;
}

/** Binds the listeners and starts serving; rejects (leaving nothing bound) when a listener cannot be bound. */
export async function startDnsProxy(o: DnsProxyOptions): Promise<DnsProxy> {
  const limits: DnsProxyLimits = { ...DEFAULT_DNS_PROXY_LIMITS, ...o.limits };
  const log = o.log.child({ scope: 'dns' });
  const forwarder = createForwarder({
    sockets: o.sockets,
    nameservers: o.nameservers,
    clock: o.clock,
    random: o.random,
    log,
    timeoutMs: limits.upstreamTimeoutMs,
    maxInFlight: limits.maxInFlightForwards,
  });
  const handler = createDnsHandler({
    store: o.store,
    localWorkload: o.localWorkload,
    localWorkloadWaitMs: o.localWorkloadWaitMs ?? LOCAL_WORKLOAD_WAIT_MS,
    clusterDomain: o.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN,
    ipv6Enabled: o.ipv6Enabled,
    searchDomains: o.searchDomains,
    preferredServiceNamespace: o.preferredServiceNamespace,
    forwarder,
    clock: o.clock,
    random: o.random,
    log,
    metrics: o.metrics,
  });
  const proxy = new Proxy(o, limits, log, handler, () => forwarder.close());
  try {
    await proxy.bind();
  } catch (err) {
    await proxy.close();
    throw err;
  }
  if (o.nameservers.length === 0) log.warn({}, 'no upstream nameservers: names outside the mesh will get SERVFAIL');
  log.info({ address: proxy.addresses.map(formatSocketAddress).join(','), component: 'dns' }, 'starting local DNS server');
  return proxy;
}

class Proxy implements DnsProxy {
  readonly #o: DnsProxyOptions;
  readonly #limits: DnsProxyLimits;
  readonly #log: Logger;
  readonly #handler: DnsHandler;
  readonly #closeForwarder: () => void;
  readonly #closing = new AbortController();
  readonly #udp: UdpSocket[] = [];
  readonly #tcp: Server[] = [];
  readonly #connections = new Set<TcpConnection>();
  readonly #pending = new Set<Promise<void>>();
  readonly #addresses: SocketAddress[] = [];
  #pendingUdp = 0;
  #closed: Promise<void> | undefined;

  constructor(o: DnsProxyOptions, limits: DnsProxyLimits, log: Logger, handler: DnsHandler, closeForwarder: () => void) {
    this.#o = o;
    this.#limits = limits;
    this.#log = log;
    this.#handler = handler;
    this.#closeForwarder = closeForwarder;
  }

  get addresses(): readonly SocketAddress[] {
    return this.#addresses;
  }

  async bind(): Promise<void> {
    const { host, port } = this.#o.address;
    const hosts = host === 'localhost' ? ['127.0.0.1', ...(this.#o.ipv6Enabled ? ['::1'] : [])] : [host];
    let boundPort = port;
    for (const [i, ip] of hosts.entries()) {
      let server: Server | undefined;
      try {
        server = await this.#o.sockets.listen({ host: ip, port: boundPort }, (s) => this.#onConnection(s));
        const actual = (server.address() as AddressInfo).port;
        const udp = await this.#o.sockets.udp({ host: ip, port: actual });
        server.on('error', (err) => this.#log.warn({ address: ip, error: err.message }, 'DNS TCP listener error'));
        this.#tcp.push(server);
        this.#udp.push(udp);
        this.#serveUdp(udp);
        boundPort = actual;
        this.#addresses.push({ ip, port: actual });
      } catch (err) {
        if (server !== undefined) await closeServer(server);
        const code = (err as NodeJS.ErrnoException).code;
        // ztunnel checks that the pod has IPv6 on lo before binding ::1; a pod without it keeps the IPv4 listener.
        if (i > 0 && ip === '::1' && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) {
          this.#log.warn({ address: ip, error: code }, 'IPv6 loopback is not available here; the DNS proxy listens on IPv4 only');
          continue;
        }
        throw err;
      }
    }
  }

  close(): Promise<void> {
    this.#closed ??= this.#shutdown();
    return this.#closed;
  }

  async #shutdown(): Promise<void> {
    this.#closing.abort();
    this.#closeForwarder();
    for (const udp of this.#udp) {
      try {
        udp.close();
      } catch {
        // already closed
      }
    }
    const servers = Promise.all(this.#tcp.map(closeServer));
    for (const c of this.#connections) this.#drop(c);
    await servers;
    await Promise.allSettled([...this.#pending]);
  }

  get #isClosing(): boolean {
    return this.#closing.signal.aborted;
  }

  #track(p: Promise<void>): void {
    this.#pending.add(p);
    void p.finally(() => this.#pending.delete(p));
  }

  #serveUdp(udp: UdpSocket): void {
    udp.on('error', (err) => this.#log.warn({ error: err.message }, 'DNS UDP socket error'));
    udp.on('message', (message: Buffer, from) => {
      if (this.#isClosing) return;
      const source = formatSocketAddress({ ip: canonicalPeerIp(from.address) ?? from.address, port: from.port });
      if (this.#pendingUdp >= this.#limits.maxPendingUdpQueries) {
        this.#log.warn({ src: source, limit: this.#limits.maxPendingUdpQueries }, 'dropped a DNS query: too many UDP queries pending');
        return;
      }
      this.#pendingUdp++;
      this.#track(
        this.#handler({ message, protocol: 'udp', source, signal: this.#closing.signal }).then((response) => {
          this.#pendingUdp--;
          if (response === undefined || this.#isClosing) return;
          try {
            udp.send(response, from.port, from.address, (err) => {
              if (err) this.#log.debug({ src: source, error: err.message }, 'cannot send a DNS response');
            });
          } catch (err) {
            this.#log.debug({ src: source, error: (err as Error).message }, 'cannot send a DNS response');
          }
        }),
      );
    });
  }

  #onConnection(socket: Socket): void {
    socket.on('error', (err) => this.#log.debug({ error: err.message }, 'DNS TCP connection error'));
    const peer = peerAddress(socket);
    const source = peer === undefined ? 'unknown' : formatSocketAddress(peer);
    if (this.#isClosing) {
      socket.destroy();
      return;
    }
    if (this.#connections.size >= this.#limits.maxTcpConnections) {
      this.#log.warn({ src: source, limit: this.#limits.maxTcpConnections }, 'refused a DNS TCP connection: too many connections open');
      socket.destroy();
      return;
    }
    const conn: TcpConnection = { socket, source, reader: new TcpFrameReader(this.#limits.maxTcpMessageBytes), queued: [], pending: 0, idle: undefined };
    this.#connections.add(conn);
    socket.on('close', () => this.#drop(conn));
    socket.on('drain', () => this.#flow(conn));
    this.#armIdle(conn);
    socket.on('data', (chunk: Buffer) => {
      const { messages, error } = conn.reader.push(chunk);
      conn.queued.push(...messages);
      this.#startQueued(conn);
      if (error !== undefined) {
        this.#log.warn({ src: source, reason: error }, 'closing a DNS TCP connection: bad framing');
        this.#drop(conn);
      }
    });
  }

  #startQueued(conn: TcpConnection): void {
    for (;;) {
      if (conn.pending >= this.#limits.maxQueriesPerTcpConnection) break;
      const message = conn.queued.shift();
      if (message === undefined) break;
      this.#query(conn, message);
    }
    this.#flow(conn);
  }

  #query(conn: TcpConnection, message: Buffer): void {
    conn.idle?.cancel();
    conn.idle = undefined;
    conn.pending++;
    this.#track(
      this.#handler({ message, protocol: 'tcp', source: conn.source, signal: this.#closing.signal }).then((response) => {
        conn.pending--;
        if (this.#isClosing || conn.socket.destroyed) return;
        const frame = response === undefined ? undefined : frameTcp(response);
        if (frame !== undefined && conn.socket.writable) conn.socket.write(frame);
        this.#startQueued(conn);
        if (conn.pending === 0) this.#armIdle(conn);
      }),
    );
  }

  /** Reads only while the connection has room for another query and the client is taking its answers. */
  #flow(conn: TcpConnection): void {
    if (conn.queued.length > 0 || conn.pending >= this.#limits.maxQueriesPerTcpConnection || conn.socket.writableNeedDrain) conn.socket.pause();
    else conn.socket.resume();
  }

  #armIdle(conn: TcpConnection): void {
    const ms = this.#limits.tcpRequestTimeoutMs;
    conn.idle?.cancel();
    conn.idle = this.#o.clock.setTimer(ms, () => {
      conn.idle = undefined;
      this.#log.debug({ src: conn.source }, `closing a DNS TCP connection after ${ms} ms without a request`);
      this.#drop(conn);
    });
  }

  #drop(conn: TcpConnection): void {
    conn.idle?.cancel();
    conn.idle = undefined;
    this.#connections.delete(conn);
    conn.socket.destroy();
  }
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}
