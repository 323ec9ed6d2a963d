/**
 * ztunnel's side of the ZDS connection to the istio-cni node agent
 * (ztunnel src/inpod/workloadmanager.rs, protocol.rs): connect to INPOD_UDS
 * (SOCK_SEQPACKET; the node agent is the server), send ZdsHello, then answer
 * every request packet with exactly one Ack, in order. On connection failure
 * it retries with ztunnel's backoff (10 ms doubling, capped at 15 s); after a
 * connection ends it reconnects at once and, if that fails, backs off.
 *
 * Invariants:
 * - packets are handled strictly one at a time, in arrival order, and each
 *   gets one response before the next is looked at (the node agent waits for
 *   each Ack);
 * - the handler owns every fd of the packets it is given; packets that
 *   arrive after the connection is gone are still handed over (so their fds
 *   are closed) but their answers are dropped;
 * - close() stops reconnecting and closes the connection; nothing runs after.
 */
import { encodeZdsAck, encodeZdsHello, type Clock, type Random, type ZdsPacket } from '@ambient/control';

/** One SOCK_SEQPACKET connection (the native module's SeqpacketSocket satisfies it). */
export interface ZdsTransport {
  send(data: Uint8Array): void;
  onPacket(cb: (p: { data: Buffer; fds: number[]; truncated: boolean }) => void): void;
  onClose(cb: (err?: Error) => void): void;
  close(): void;
}

export interface ZdsClientDeps {
  readonly path: string;
  /** Connects to the node agent; throws (ENOENT, ECONNREFUSED, ...) when it is not there. */
  readonly connect: (path: string) => ZdsTransport;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: { info(o: object, m?: string): void; warn(o: object, m?: string): void; error(o: object, m?: string): void };
  /** A new connection is up (hello sent): the snapshot starts over. */
  readonly onConnected: () => void;
  /** The connection ended: not ready until the next snapshot. */
  readonly onDisconnected: () => void;
  /** Handles one request packet and returns the response packet (an Ack or a NACK). */
  readonly onPacket: (packet: ZdsPacket) => Promise<Uint8Array>;
}

const ZDS_BACKOFF_INITIAL_MS = 10;
const ZDS_BACKOFF_MAX_MS = 15_000;

export class ZdsClient {
  #closed = false;
  #transport: ZdsTransport | undefined;
  #backoffMs = ZDS_BACKOFF_INITIAL_MS;
  #timer: { cancel(): void } | undefined;
  #chain: Promise<void> = Promise.resolve();

  constructor(private readonly deps: ZdsClientDeps) {}

  start(): void {
    this.#connect();
  }

  /** Stops reconnecting and closes the connection. Resolves once the packet in hand (if any) is handled. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#timer?.cancel();
    this.#transport?.close();
    this.#transport = undefined;
    await this.#chain;
  }

  /** A completed snapshot: the next failure starts backing off from the beginning again. */
  resetBackoff(): void {
    this.#backoffMs = ZDS_BACKOFF_INITIAL_MS;
  }

  #connect(): void {
    if (this.#closed) return;
    let transport: ZdsTransport;
    try {
      transport = this.deps.connect(this.deps.path);
    } catch (err) {
      this.#backoffMs = Math.min(ZDS_BACKOFF_MAX_MS, this.#backoffMs * 2);
      // ±10 % jitter so many ztunnels restarting together do not knock in step.
      const wait = Math.round(this.#backoffMs * (0.9 + this.deps.random() * 0.2));
      this.deps.log.warn(
        { uds: this.deps.path, err: err instanceof Error ? err.message : String(err), retryInMs: wait },
        'failed to connect to the Istio CNI node agent; is the node agent healthy? retrying',
      );
      this.#timer = this.deps.clock.setTimer(wait, () => this.#connect());
      return;
    }
    this.#transport = transport;
    let open = true;
    const disconnected = (err?: Error) => {
      if (!open) return;
      open = false;
      if (this.#transport === transport) this.#transport = undefined;
      transport.close();
      this.deps.log.info(err === undefined ? {} : { err: err.message }, 'the ZDS connection to the Istio CNI node agent ended');
      // Requests already received are still processed (their fds must be closed), then we reconnect.
      this.#chain = this.#chain.then(() => {
        this.deps.onDisconnected();
        // A connection that ended before its snapshot completed counts as a failure: back off.
        const wait = this.#backoffMs;
        this.#backoffMs = Math.min(ZDS_BACKOFF_MAX_MS, this.#backoffMs * 2);
        if (!this.#closed) this.#timer = this.deps.clock.setTimer(wait, () => this.#connect());
      });
    };
    const reply = (data: Uint8Array) => {
      if (!open || this.#closed) return;
      try {
        transport.send(data);
      } catch (err) {
        // The node agent re-sends its snapshot on the next connection.
        this.deps.log.error({ err: err instanceof Error ? err.message : String(err) }, 'sending to the Istio CNI node agent failed');
        disconnected(err instanceof Error ? err : new Error(String(err)));
      }
    };
    transport.onClose((err) => disconnected(err));
    transport.onPacket((p) => {
      const packet: ZdsPacket = { bytes: p.data, fds: p.fds, truncated: p.truncated };
      this.#chain = this.#chain.then(async () => {
        try {
          reply(await this.deps.onPacket(packet));
        } catch (err) {
          // A handler bug must not stall the connection: log it and NACK.
          this.deps.log.error({ err: err instanceof Error ? (err.stack ?? err.message) : String(err) }, 'handling a ZDS request failed');
          reply(encodeZdsAck(`internal error: ${err instanceof Error ? err.message : String(err)}`));
        }
      });
    });
    this.deps.log.info({ uds: this.deps.path }, 'connected to the Istio CNI node agent; sending hello');
    this.#chain = this.#chain.then(() => {
      this.deps.onConnected();
      reply(encodeZdsHello());
    });
  }
}
