/**
 * Forwards the queries the mesh does not answer to the upstream nameservers
 * (ztunnel's own /etc/resolv.conf), through the proxy's socket factory, so
 * that in-pod mode sends them from inside the pod's network namespace with
 * the pod's mark.
 *
 * The client's query is sent as received, under an id of our own, over the
 * protocol the client used (UDP: a fresh socket on a random port per query;
 * TCP: a fresh connection). An answer counts only if it comes from the
 * address and port queried, carries our id and echoes the question; anything
 * else is ignored. Nameservers are tried in order, each within the timeout,
 * moving on after a timeout, a transport error or a SERVFAIL/REFUSED/NOTIMP/
 * FORMERR answer. A truncated UDP answer is relayed as is: it was truncated
 * to the client's own size, and the client retries over TCP, which is then
 * forwarded over TCP.
 *
 * Invariants:
 * - at most `maxInFlight` queries are outstanding; beyond that a query fails
 *   at once without touching the network;
 * - every attempt owns one socket and one timer and releases both when it
 *   settles (answer, timeout, error, abort or close()), exactly once;
 * - after close() no new socket is opened and every attempt settles as
 *   aborted.
 */
import { settleWithin, type Clock, type Logger, type Random, type SettleWithinOptions } from '@ambient/control';
import type { RemoteInfo, Socket as UdpSocket } from 'node:dgram';
import type { Socket } from 'node:net';
import type { Question } from 'dns-packet';
import { canonicalPeerIp, type SocketFactory } from '@ambient/dataplane';
import { formatNameserver, nameserverHost, type Nameserver } from './resolv-conf.js';
import { frameTcp, matchUpstreamResponse, RCODE, TcpFrameReader, withId, type Protocol } from './wire.js';

/** hickory's default per-query timeout (ResolverOpts). */
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 5_000;
export const DEFAULT_MAX_IN_FLIGHT_FORWARDS = 256;

export interface ForwardRequest {
  /** The client's query, as received. */
  readonly query: Buffer;
  /** Its (single) question, to match answers against. */
  readonly question: Question;
  readonly protocol: Protocol;
  readonly signal?: AbortSignal;
}

export type ForwardOutcome =
  | {
      readonly kind: 'response';
      /** The upstream's message as received (our id in it). */
      readonly response: Buffer;
      readonly rcode: number;
      readonly answerCount: number;
      readonly server: Nameserver;
    }
  | { readonly kind: 'failed'; readonly reason: string; readonly aborted: boolean };

export interface DnsForwarder {
  forward(request: ForwardRequest): Promise<ForwardOutcome>;
  /** Queries outstanding now. */
  readonly inFlight: number;
  /** Aborts every outstanding query and refuses new ones. */
  close(): void;
}

export interface ForwarderOptions {
  readonly sockets: Pick<SocketFactory, 'udp' | 'connect'>;
  readonly nameservers: readonly Nameserver[];
  readonly clock: Clock;
  /** Picks query ids. */
  readonly random: Random;
  readonly log: Logger;
  /** Per nameserver attempt. Default 5 s. */
  readonly timeoutMs?: number;
  readonly maxInFlight?: number;
}

type Attempt =
  | { readonly kind: 'answer'; readonly response: Buffer; readonly rcode: number; readonly answerCount: number }
  | { readonly kind: 'error'; readonly reason: string };

const RETRY_NEXT_SERVER: ReadonlySet<number> = new Set([RCODE.SERVFAIL, RCODE.REFUSED, RCODE.NOTIMP, RCODE.FORMERR]);

export function createForwarder(o: ForwarderOptions): DnsForwarder {
  return new Forwarder(o);
}

class Forwarder implements DnsForwarder {
  readonly #o: ForwarderOptions;
  readonly #timeoutMs: number;
  readonly #maxInFlight: number;
  readonly #closing = new AbortController();
  #inFlight = 0;

  constructor(o: ForwarderOptions) {
    this.#o = o;
    this.#timeoutMs = o.timeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    this.#maxInFlight = o.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT_FORWARDS;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  close(): void {
    this.#closing.abort();
  }

  async forward(r: ForwardRequest): Promise<ForwardOutcome> {
    if (this.#closing.signal.aborted || r.signal?.aborted) return { kind: 'failed', reason: 'the DNS proxy is closing', aborted: true };
    if (this.#o.nameservers.length === 0) return { kind: 'failed', reason: 'no upstream nameservers are configured', aborted: false };
    if (this.#inFlight >= this.#maxInFlight) {
      return { kind: 'failed', reason: `${this.#inFlight} forwarded queries are already in flight (limit ${this.#maxInFlight})`, aborted: false };
    }
    this.#inFlight++;
    const signal = r.signal === undefined ? this.#closing.signal : AbortSignal.any([r.signal, this.#closing.signal]);
    try {
      const failures: string[] = [];
      for (const server of this.#o.nameservers) {
        const attempt = r.protocol === 'tcp' ? await this.#tcp(server, r, signal) : await this.#udp(server, r, signal);
        if (signal.aborted) return { kind: 'failed', reason: 'the DNS proxy is closing', aborted: true };
        if (attempt.kind === 'answer' && !RETRY_NEXT_SERVER.has(attempt.rcode)) {
          return { kind: 'response', response: attempt.response, rcode: attempt.rcode, answerCount: attempt.answerCount, server };
        }
        const reason = attempt.kind === 'error' ? attempt.reason : `answered rcode ${attempt.rcode}`;
        failures.push(`${formatNameserver(server)}: ${reason}`);
      }
      return { kind: 'failed', reason: failures.join('; '), aborted: false };
    } finally {
      this.#inFlight--;
    }
  }

  #queryId(): number {
    return Math.floor(this.#o.random() * 0x10000) & 0xffff;
  }

  async #udp(server: Nameserver, r: ForwardRequest, signal: AbortSignal): Promise<Attempt> {
    let socket: UdpSocket;
    try {
      socket = await this.#o.sockets.udp({ host: server.ip.includes(':') ? '::' : '0.0.0.0', port: 0 });
    } catch (err) {
      return { kind: 'error', reason: `cannot open a UDP socket: ${errorText(err)}` };
    }
    const id = this.#queryId();
    const log = this.#o.log;
    if (signal.aborted) {
      // settleWithin would not run the attempt: release the socket here.
      socket.close();
      return { kind: 'error', reason: 'aborted' };
    }
    return settleWithin<Attempt>(this.#deadline(signal), (done) => {
      const settle = (a: Attempt) => done.resolve(a);
      socket.on('error', (err) => settle({ kind: 'error', reason: `UDP error: ${err.message}` }));
      socket.on('message', (msg: Buffer, from: RemoteInfo) => {
        if (!sameHost(from.address, server.ip) || from.port !== server.port) {
          log.debug({ upstream: formatNameserver(server), from: `${from.address}:${from.port}` }, 'ignored a DNS datagram from an address we did not query');
          return;
        }
        const m = matchUpstreamResponse(msg, id, r.question);
        if (!m.ok) {
          log.debug({ upstream: formatNameserver(server), reason: m.reason }, 'ignored a DNS datagram that does not answer our query');
          return;
        }
        settle({ kind: 'answer', response: msg, rcode: m.rcode, answerCount: m.answerCount });
      });
      socket.send(withId(r.query, id), server.port, nameserverHost(server), (err) => {
        if (err) settle({ kind: 'error', reason: `cannot send: ${err.message}` });
      });
      return () => {
        socket.removeAllListeners('message');
        socket.removeAllListeners('error');
        socket.on('error', () => {});
        try {
          socket.close();
        } catch {
          // already closed
        }
      };
    });
  }

  #tcp(server: Nameserver, r: ForwardRequest, signal: AbortSignal): Promise<Attempt> {
    const id = this.#queryId();
    const frame = frameTcp(withId(r.query, id));
    if (frame === undefined) return Promise.resolve({ kind: 'error', reason: 'query too large for TCP' });
    let socket: Socket;
    try {
      socket = this.#o.sockets.connect({ ip: nameserverHost(server), port: server.port });
    } catch (err) {
      return Promise.resolve({ kind: 'error', reason: `cannot open a TCP socket: ${errorText(err)}` });
    }
    const log = this.#o.log;
    if (signal.aborted) {
      socket.destroy();
      return Promise.resolve({ kind: 'error', reason: 'aborted' });
    }
    return settleWithin<Attempt>(this.#deadline(signal), (done) => {
      const reader = new TcpFrameReader(65_535);
      const settle = (a: Attempt) => done.resolve(a);
      socket.on('error', (err) => settle({ kind: 'error', reason: `TCP error: ${err.message}` }));
      socket.on('close', () => settle({ kind: 'error', reason: 'the connection closed before an answer' }));
      socket.once('connect', () => socket.write(frame));
      socket.on('data', (chunk: Buffer) => {
        const { messages, error } = reader.push(chunk);
        for (const msg of messages) {
          const m = matchUpstreamResponse(msg, id, r.question);
          if (m.ok) {
            settle({ kind: 'answer', response: msg, rcode: m.rcode, answerCount: m.answerCount });
            return;
          }
          log.debug({ upstream: formatNameserver(server), reason: m.reason }, 'ignored a DNS message that does not answer our query');
        }
        if (error !== undefined) settle({ kind: 'error', reason: error });
      });
      return () => {
        socket.removeAllListeners('data');
        socket.on('error', () => {});
        socket.destroy();
      };
    });
  }

  /** One attempt's end by deadline or abort, as an error attempt (the caller tries the next server). */
  #deadline(signal: AbortSignal): SettleWithinOptions<Attempt> {
    return {
      clock: this.#o.clock,
      timeoutMs: this.#timeoutMs,
      onTimeout: () => ({ value: { kind: 'error', reason: `no answer within ${this.#timeoutMs} ms` } }),
      signal,
      onAbort: () => ({ value: { kind: 'error', reason: 'aborted' } }),
    };
  }
}

/** Same IP, ignoring an IPv6 zone and the IPv4-mapped form. */
function sameHost(a: string, b: string): boolean {
  const strip = (ip: string) => {
    const bare = ip.split('%')[0] ?? ip;
    return canonicalPeerIp(bare) ?? bare.toLowerCase();
  };
  return strip(a) === strip(b);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
