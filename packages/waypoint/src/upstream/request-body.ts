/**
 * A downstream request body shared by the attempts of one request (Envoy's
 * router buffering for retries): bytes go to the current attempt's sink as
 * they arrive, and are kept so that a retry can send them again — up to
 * `replayLimitBytes` (Envoy's retry buffer limit). Beyond it the kept bytes
 * are dropped and the body can no longer be replayed once any of it reached
 * an attempt, so the request is not retried.
 *
 * Reading is driven by the sink: the source is paused while the sink pushes
 * back, and while no attempt is attached (connecting, backing off) at most
 * `HOLD_BYTES` are read ahead. So waiting for a retry never makes the body
 * overflow its limit (Envoy answers 507 in that case; we just stop reading).
 *
 * Invariants: bytes reach a sink in source order, each at most once per
 * attachment; a sink is ended exactly when the source ended and everything
 * was written to it; `complete` resolves once when the source ended and
 * `failed` once if the source errored (the downstream went away).
 */
import type { Readable, Writable } from 'node:stream';

/** How much is read ahead while no attempt takes the bytes. */
const HOLD_BYTES = 64 * 1024;

export class ReplayableBody {
  readonly #source: Readable;
  readonly #limit: number;
  /** Replayable: every chunk so far. Not replayable: only chunks the current sink has not had. */
  #chunks: Buffer[] = [];
  #bytes = 0;
  #next = 0;
  #unsent = 0;
  #replayable = true;
  #delivered = false;
  #ended = false;
  #errored = false;
  #sink: Writable | undefined;
  #waitingDrain = false;
  readonly complete: Promise<void>;
  readonly failed: Promise<Error>;
  #markComplete!: () => void;
  #markFailed!: (e: Error) => void;

  constructor(source: Readable, replayLimitBytes: number) {
    this.#source = source;
    this.#limit = Math.max(0, replayLimitBytes);
    this.complete = new Promise((resolve) => (this.#markComplete = resolve));
    this.failed = new Promise((resolve) => (this.#markFailed = resolve));
    source.on('data', this.#onData);
    source.once('end', this.#onEnd);
    source.once('error', this.#onError);
    source.once('close', this.#onClose);
  }

  /** A retry may resend the body: it is all kept, or no byte of it reached an attempt yet. */
  get canReplay(): boolean {
    return this.#replayable || !this.#delivered;
  }

  get ended(): boolean {
    return this.#ended;
  }

  /** Sends the body to `sink`: what is kept first, then what arrives; ends it at the end. */
  attach(sink: Writable): void {
    this.detach();
    this.#sink = sink;
    this.#next = 0;
    this.#unsent = 0;
    for (const c of this.#chunks) this.#unsent += c.length;
    sink.on('drain', this.#onDrain);
    this.#flush();
  }

  /** Stops writing to the current sink (the attempt is over). */
  detach(): void {
    const sink = this.#sink;
    if (sink === undefined) return;
    sink.off('drain', this.#onDrain);
    this.#sink = undefined;
    this.#waitingDrain = false;
    if (!this.#replayable) {
      this.#chunks.splice(0, this.#next);
      this.#next = 0;
    }
    this.#unsent = 0;
    for (const c of this.#chunks) this.#unsent += c.length;
    this.#updateFlow();
  }

  /** Stops reading the source for good. */
  dispose(): void {
    this.detach();
    this.#source.off('data', this.#onData);
    this.#chunks = [];
  }

  readonly #onData = (chunk: Buffer | string) => {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    this.#bytes += buf.length;
    this.#chunks.push(buf);
    this.#unsent += buf.length;
    if (this.#replayable && this.#bytes > this.#limit) {
      this.#replayable = false;
      // Whatever the current sink already has is no longer needed.
      this.#chunks.splice(0, this.#next);
      this.#next = 0;
    }
    this.#flush();
  };

  readonly #onEnd = () => {
    this.#ended = true;
    this.#markComplete();
    this.#flush();
  };

  readonly #onError = (err: Error) => {
    this.#errored = true;
    this.#markFailed(err);
  };

  readonly #onClose = () => {
    if (!this.#ended && !this.#errored) {
      this.#errored = true;
      this.#markFailed(new Error('the downstream request body was closed before its end'));
    }
  };

  readonly #onDrain = () => {
    this.#waitingDrain = false;
    this.#flush();
  };

  #flush(): void {
    const sink = this.#sink;
    if (sink !== undefined && !this.#waitingDrain) {
      while (this.#next < this.#chunks.length) {
        const chunk = this.#chunks[this.#next++] as Buffer;
        this.#unsent -= chunk.length;
        this.#delivered = true;
        const ok = sink.destroyed ? true : sink.write(chunk);
        if (!this.#replayable) {
          this.#chunks.splice(0, this.#next);
          this.#next = 0;
        }
        if (!ok) {
          this.#waitingDrain = true;
          break;
        }
      }
      if (this.#ended && this.#next >= this.#chunks.length && !sink.destroyed && !sink.writableEnded) sink.end();
    }
    this.#updateFlow();
  }

  #updateFlow(): void {
    if (this.#ended || this.#errored) return;
    const hold = this.#sink === undefined ? this.#unsent >= HOLD_BYTES : this.#waitingDrain;
    if (hold) this.#source.pause();
    else this.#source.resume();
  }
}
