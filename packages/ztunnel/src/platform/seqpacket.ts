/**
 * The SEQPACKET wrappers around the addon's raw handles (the ZDS transport):
 * typed callbacks, buffering until a callback is registered, and ownership of
 * received descriptors. The addon does the I/O (uv_poll, recvmsg/sendmsg with
 * SCM_RIGHTS, queueing on EAGAIN); this module never blocks and owns no timers.
 *
 * Invariants:
 *   - packets and connections that arrive before a callback is registered are
 *     buffered and delivered, in order, as soon as it is registered (packets
 *     still undelivered when the connection ends are dropped, their fds closed);
 *   - onClose fires at most once, and only when the connection ends by itself
 *     (peer closed, or an I/O error); after close() no callback fires at all;
 *   - close() is idempotent; buffered packets' descriptors are closed by it
 *     (nobody else can own them);
 *   - a socket whose raw handle is undefined is closed: the addon has already
 *     closed its descriptor and stopped polling.
 */
import { constants as osConstants } from 'node:os';
import type { NativeError, RawBinding, RawHandle, SeqpacketPacket, SeqpacketServer, SeqpacketSocket } from './native.js';

/** What the wrappers need from native.ts, injected so that this module only imports types from it. */
export interface SeqpacketErrors {
  /** Runs a raw call, converting the addon's errors into NativeError. */
  call<T>(fn: () => T): T;
  /** The NativeError for an errno reported by the addon. */
  fromErrno(errno: number, syscall: string, message: string): NativeError;
  /** Argument check for descriptors. */
  checkFd(name: string, fd: number): void;
}

export class NativeSeqpacketSocket implements SeqpacketSocket {
  private readonly raw: RawBinding;
  private readonly errors: SeqpacketErrors;
  private handle: RawHandle | undefined;
  private packetCb: ((p: SeqpacketPacket) => void) | undefined;
  private closeCb: ((err?: NativeError) => void) | undefined;
  private readonly pending: SeqpacketPacket[] = [];
  /** Set when the connection ended by itself before onClose was registered. */
  private ended: { err: NativeError | undefined } | undefined;

  constructor(raw: RawBinding, errors: SeqpacketErrors, handle: RawHandle) {
    this.raw = raw;
    this.errors = errors;
    this.handle = handle;
    try {
      errors.call(() =>
        raw.seqpacketStart(
          handle,
          (data, fds, truncated) => this.packet({ data, fds, truncated }),
          (errno, syscall) => this.ended_(errno, syscall),
        ),
      );
    } catch (err) {
      this.close();
      throw err;
    }
  }

  send(data: Uint8Array, fds: readonly number[] = []): void {
    for (const fd of fds) this.errors.checkFd('fds[]', fd);
    const handle = this.handle;
    if (handle === undefined) throw this.errors.fromErrno(osConstants.errno.EPIPE, 'sendmsg', 'send on a closed SEQPACKET socket');
    this.errors.call(() => this.raw.seqpacketSend(handle, data, fds));
  }

  onPacket(cb: (p: SeqpacketPacket) => void): void {
    this.packetCb = cb;
    while (this.pending.length > 0 && this.packetCb === cb && this.handle !== undefined) {
      const p = this.pending.shift();
      if (p !== undefined) cb(p);
    }
  }

  onClose(cb: (err?: NativeError) => void): void {
    this.closeCb = cb;
    const ended = this.ended;
    if (ended !== undefined) {
      this.ended = undefined;
      queueMicrotask(() => (ended.err === undefined ? cb() : cb(ended.err)));
    }
  }

  close(): void {
    const handle = this.handle;
    if (handle === undefined) return;
    this.handle = undefined;
    this.closeCb = undefined;
    this.packetCb = undefined;
    this.raw.seqpacketClose(handle);
    this.discardPending();
  }

  private packet(p: SeqpacketPacket): void {
    if (this.handle === undefined) {
      this.closeFds(p.fds);
      return;
    }
    if (this.packetCb === undefined) {
      this.pending.push(p);
      return;
    }
    this.packetCb(p);
  }

  /** Called by the addon once, after it has closed the descriptor (peer closed or I/O error). */
  private ended_(errno: number, syscall: string): void {
    if (this.handle === undefined) return;
    this.handle = undefined;
    const err = errno === 0 ? undefined : this.errors.fromErrno(errno, syscall, `${syscall} on the SEQPACKET socket failed`);
    // Buffered packets nobody asked for are dropped now (their fds closed).
    this.discardPending();
    const cb = this.closeCb;
    this.packetCb = undefined;
    if (cb === undefined) {
      this.ended = { err };
      return;
    }
    this.closeCb = undefined;
    if (err === undefined) cb();
    else cb(err);
  }

  private discardPending(): void {
    for (const p of this.pending.splice(0)) this.closeFds(p.fds);
  }

  private closeFds(fds: readonly number[]): void {
    for (const fd of fds) {
      try {
        this.raw.closeFd(fd);
      } catch {
        // already closed: nothing to release
      }
    }
  }
}

export class NativeSeqpacketServer implements SeqpacketServer {
  private readonly raw: RawBinding;
  private readonly errors: SeqpacketErrors;
  private handle: RawHandle | undefined;
  private connectionCb: ((s: SeqpacketSocket) => void) | undefined;
  private readonly pending: SeqpacketSocket[] = [];

  constructor(raw: RawBinding, errors: SeqpacketErrors, path: string) {
    this.raw = raw;
    this.errors = errors;
    this.handle = errors.call(() => raw.seqpacketListen(path, (h) => this.accepted(h)));
  }

  onConnection(cb: (s: SeqpacketSocket) => void): void {
    this.connectionCb = cb;
    while (this.pending.length > 0 && this.connectionCb === cb && this.handle !== undefined) {
      const s = this.pending.shift();
      if (s !== undefined) cb(s);
    }
  }

  close(): void {
    const handle = this.handle;
    if (handle === undefined) return;
    this.handle = undefined;
    this.connectionCb = undefined;
    this.raw.seqpacketServerClose(handle);
    for (const s of this.pending.splice(0)) s.close();
  }

  private accepted(h: RawHandle): void {
    if (this.handle === undefined) {
      this.raw.seqpacketClose(h);
      return;
    }
    let socket: NativeSeqpacketSocket;
    try {
      socket = new NativeSeqpacketSocket(this.raw, this.errors, h);
    } catch {
      return; // could not start polling the accepted socket; the constructor closed it
    }
    if (this.connectionCb === undefined) this.pending.push(socket);
    else this.connectionCb(socket);
  }
}
