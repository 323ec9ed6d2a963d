import { ManualClock } from '@ambient/control/testing';
import type { ZdsPacket } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { ZdsClient, type ZdsTransport } from './zds-client.js';

/** An in-memory SEQPACKET peer: records what ztunnel sends, lets the test deliver packets and close. */
class FakeTransport implements ZdsTransport {
  readonly sent: Uint8Array[] = [];
  #packet: ((p: { data: Buffer; fds: number[]; truncated: boolean }) => void) | undefined;
  #close: ((err?: Error) => void) | undefined;
  closedByUs = false;
  failSends = false;
  send(data: Uint8Array): void {
    if (this.failSends) throw new Error('EPIPE');
    this.sent.push(data);
  }
  onPacket(cb: (p: { data: Buffer; fds: number[]; truncated: boolean }) => void): void {
    this.#packet = cb;
  }
  onClose(cb: (err?: Error) => void): void {
    this.#close = cb;
  }
  close(): void {
    this.closedByUs = true;
  }
  deliver(text: string, fds: number[] = []): void {
    this.#packet?.({ data: Buffer.from(text), fds, truncated: false });
  }
  peerClosed(): void {
    this.#close?.();
  }
}

async function settle(): Promise<void> {
  for (let i = 0; i < 10; i++) await Promise.resolve();
}

function fixture(connectResults: Array<FakeTransport | Error>) {
  const clock = new ManualClock();
  const handled: string[] = [];
  const events: string[] = [];
  const attempts: number[] = [];
  const warnings: object[] = [];
  const client = new ZdsClient({
    path: '/var/run/ztunnel/ztunnel.sock',
    connect: () => {
      attempts.push(clock.monotonic());
      const next = connectResults.shift();
      if (next === undefined || next instanceof Error) throw next ?? new Error('ENOENT: no such file');
      return next;
    },
    clock,
    random: () => 0.5,
    log: { info: () => {}, warn: (o) => void warnings.push(o), error: () => {} },
    onConnected: () => void events.push('connected'),
    onDisconnected: () => void events.push('disconnected'),
    onPacket: async (p: ZdsPacket) => {
      const text = Buffer.from(p.bytes).toString();
      handled.push(text);
      // The second packet takes longer than the third: answers must still come back in order.
      if (text === 'slow') await clock.sleep(100);
      return Buffer.from(`ack:${text}`);
    },
  });
  return { clock, client, handled, events, attempts, warnings };
}

const text = (b: Uint8Array | undefined) => Buffer.from(b ?? new Uint8Array()).toString();

describe('ZDS client (ztunnel side of the node agent connection)', () => {
  it('sends ZdsHello{V1} first, then answers every packet once, in order, even when one is slow', async () => {
    const t = new FakeTransport();
    const f = fixture([t]);
    f.client.start();
    await settle();
    expect(f.events).toEqual(['connected']);
    // ZdsHello { version = 1 (V1) }: field 1, varint 1.
    expect([...(t.sent[0] ?? [])]).toEqual([0x08, 0x01]);
    t.deliver('first');
    t.deliver('slow');
    t.deliver('third');
    await settle();
    await f.clock.advance(100);
    await settle();
    expect(t.sent.slice(1).map(text)).toEqual(['ack:first', 'ack:slow', 'ack:third']);
    await f.client.close();
  });

  it('retries a missing node agent with backoff from 10 ms doubling up to 15 s, and logs each failure', async () => {
    const t = new FakeTransport();
    const failures = Array.from({ length: 14 }, () => new Error('ECONNREFUSED'));
    const f = fixture([...failures, t]);
    f.client.start();
    for (let i = 0; i < 14; i++) await f.clock.advanceToNextTimer();
    await settle();
    const gaps = f.attempts.slice(1).map((at, i) => at - (f.attempts[i] ?? 0));
    expect(gaps.slice(0, 4)).toEqual([20, 40, 80, 160]);
    expect(Math.max(...gaps)).toBe(15_000);
    expect(f.warnings).toHaveLength(14);
    expect(f.events).toEqual(['connected']);
    await f.client.close();
  });

  it('after the node agent closes, reports the disconnect and reconnects; the new connection starts with a new hello', async () => {
    const t1 = new FakeTransport();
    const t2 = new FakeTransport();
    const f = fixture([t1, t2]);
    f.client.start();
    await settle();
    t1.deliver('a');
    t1.peerClosed();
    await settle();
    expect(f.events).toEqual(['connected', 'disconnected']);
    await f.clock.advanceToNextTimer();
    await settle();
    expect(f.events).toEqual(['connected', 'disconnected', 'connected']);
    expect(t2.sent).toHaveLength(1);
    expect(f.handled).toEqual(['a']);
    await f.client.close();
  });

  it('a failed send ends the connection and reconnects; close() stops everything', async () => {
    const t1 = new FakeTransport();
    const f = fixture([t1]);
    f.client.start();
    await settle();
    t1.failSends = true;
    t1.deliver('x');
    await settle();
    expect(t1.closedByUs).toBe(true);
    expect(f.events).toEqual(['connected', 'disconnected']);
    await f.client.close();
    await f.clock.advance(60_000);
    expect(f.attempts).toHaveLength(1);
  });
});
