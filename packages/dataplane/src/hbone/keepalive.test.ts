/**
 * The HBONE keepalive on a real HTTP/2 session pair over loopback, with time
 * on a ManualClock. Between the two sessions sits a TCP relay that can hold
 * back what the server sends, so the server's PING answers stay on the wire
 * while the test moves time: a peer that does not answer. (Pausing the
 * server's socket does not do it: node:http2 reads a TCP socket's handle
 * natively, past a JavaScript pause.)
 */
import http2, { type ClientHttp2Session, type ServerHttp2Session } from 'node:http2';
import net, { type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ManualClock } from '@ambient/control/testing';
import { startKeepalive, type Keepalive, type KeepaliveOptions } from './keepalive.js';

const INTERVAL = 1_000;
const TIMEOUT = 5_000;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

/** Waits on a counter that event handlers bump. */
class Counter {
  value = 0;
  readonly #waiters: Array<() => void> = [];

  bump(): void {
    this.value++;
    for (const w of this.#waiters.splice(0)) w();
  }

  reach(n: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => (this.value >= n ? resolve() : this.#waiters.push(check));
      check();
    });
  }
}

interface Pair {
  readonly client: ClientHttp2Session;
  readonly server: ServerHttp2Session;
  /** PING frames the server received (and answered: node:http2 answers every PING). */
  readonly pingsReceived: Counter;
  /** PINGs the client sent through session.ping, and the answers (or errors) their callbacks got. */
  readonly pingsSent: Counter;
  readonly answers: Counter;
  readonly answerErrors: Error[];
  /** Holds back everything the server sends (its PING answers) until release(). */
  hold(): void;
  release(): void;
}

/** An h2c server, a relay in front of it that can hold the server→client direction, and a client session through it. */
async function sessionPair(): Promise<Pair> {
  const pingsReceived = new Counter();
  let resolveServer: (s: ServerHttp2Session) => void = () => {};
  const serverSession = new Promise<ServerHttp2Session>((resolve) => (resolveServer = resolve));
  const h2 = http2.createServer();
  h2.on('session', (s: ServerHttp2Session) => {
    s.on('error', () => {});
    s.on('ping', () => pingsReceived.bump());
    resolveServer(s);
  });
  await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => h2.close(() => resolve())));

  let holding = false;
  const held: Buffer[] = [];
  const relaySockets: net.Socket[] = [];
  let toClient: net.Socket | undefined;
  const relay = net.createServer((downstream) => {
    const upstream = net.connect({ host: '127.0.0.1', port: (h2.address() as AddressInfo).port });
    relaySockets.push(downstream, upstream);
    toClient = downstream;
    for (const s of [downstream, upstream]) s.on('error', () => {});
    downstream.on('close', () => upstream.destroy());
    upstream.on('close', () => downstream.destroy());
    downstream.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => (holding ? held.push(chunk) : downstream.write(chunk)));
  });
  await new Promise<void>((resolve) => relay.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => {
    for (const s of relaySockets) s.destroy();
    relay.close(() => resolve());
  }));

  const client = http2.connect(`http://127.0.0.1:${(relay.address() as AddressInfo).port}`);
  client.on('error', () => {});
  cleanups.push(() => {
    client.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    client.once('remoteSettings', () => resolve());
    client.once('close', () => reject(new Error('the client session closed before the server SETTINGS')));
  });
  const server = await serverSession;
  cleanups.push(() => {
    server.destroy();
  });

  // Observe the keepalive's PINGs and their answers at the session it was given.
  const pingsSent = new Counter();
  const answers = new Counter();
  const answerErrors: Error[] = [];
  const ping = client.ping.bind(client) as (cb: (err: Error | null, duration: number, payload: Buffer) => void) => boolean;
  (client as { ping: unknown }).ping = (cb: (err: Error | null, duration: number, payload: Buffer) => void) => {
    pingsSent.bump();
    return ping((err, duration, payload) => {
      if (err) answerErrors.push(err);
      cb(err, duration, payload);
      answers.bump();
    });
  };

  return {
    client,
    server,
    pingsReceived,
    pingsSent,
    answers,
    answerErrors,
    hold: () => void (holding = true),
    release: () => {
      holding = false;
      for (const chunk of held.splice(0)) toClient?.write(chunk);
    },
  };
}

function keepalive(pair: Pair, clock: ManualClock, onDead: KeepaliveOptions['onDead']): Keepalive {
  const k = startKeepalive(pair.client, { clock, intervalMs: INTERVAL, timeoutMs: TIMEOUT, onDead });
  cleanups.push(() => k.stop());
  return k;
}

function deaths(): { calls: Array<[kind: 'timeout' | 'error', reason: string]>; onDead: KeepaliveOptions['onDead'] } {
  const calls: Array<['timeout' | 'error', string]> = [];
  return { calls, onDead: (kind, reason) => void calls.push([kind, reason]) };
}

describe('startKeepalive', () => {
  it('sends a PING intervalMs after the start, and again intervalMs after each answer (not after each send)', async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    keepalive(pair, clock, dead.onDead);
    expect(clock.pendingTimers()).toEqual([INTERVAL]);

    await clock.advance(INTERVAL - 1);
    expect(pair.pingsSent.value).toBe(0);
    pair.hold();
    await clock.advance(1);
    expect(pair.pingsSent.value).toBe(1);
    await pair.pingsReceived.reach(1);
    // Outstanding: only the answer deadline is pending.
    expect(clock.pendingTimers()).toEqual([TIMEOUT]);

    // The answer is late (still within the deadline): no second PING meanwhile.
    await clock.advance(3_000);
    expect(pair.pingsSent.value).toBe(1);
    expect(clock.pendingTimers()).toEqual([TIMEOUT - 3_000]);
    pair.release();
    await pair.answers.reach(1);
    expect(pair.answerErrors).toEqual([]);
    // The next PING is intervalMs after the answer.
    expect(clock.pendingTimers()).toEqual([INTERVAL]);

    await clock.advance(INTERVAL - 1);
    expect(pair.pingsSent.value).toBe(1);
    await clock.advance(1);
    expect(pair.pingsSent.value).toBe(2);
    await pair.pingsReceived.reach(2);
    await pair.answers.reach(2);
    expect(clock.pendingTimers()).toEqual([INTERVAL]);

    await clock.advance(INTERVAL);
    await pair.answers.reach(3);
    expect(pair.pingsReceived.value).toBe(3);
    expect(pair.pingsSent.value).toBe(3);
    expect(dead.calls).toEqual([]);
  });

  it("no answer within timeoutMs reports the session dead once ('timeout'), leaves no timer and sends no more PINGs", async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    keepalive(pair, clock, dead.onDead);
    pair.hold();
    await clock.advance(INTERVAL);
    await pair.pingsReceived.reach(1);

    await clock.advance(TIMEOUT - 1);
    expect(dead.calls).toEqual([]);
    await clock.advance(1);
    expect(dead.calls).toEqual([['timeout', `PING not answered within ${TIMEOUT} ms`]]);
    expect(clock.pendingTimers()).toEqual([]);

    // The answer finally arrives: it neither revives the loop nor reports again.
    pair.release();
    await pair.answers.reach(1);
    expect(clock.pendingTimers()).toEqual([]);
    await clock.advance(10 * (INTERVAL + TIMEOUT));
    expect(pair.pingsSent.value).toBe(1);
    expect(dead.calls).toHaveLength(1);
    // The keepalive only reports: closing the session is its owner's job.
    expect(pair.client.destroyed).toBe(false);
  });

  it("a PING that fails (the session went away with it outstanding) reports 'error' once and leaves no timer", async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    keepalive(pair, clock, dead.onDead);
    pair.hold();
    await clock.advance(INTERVAL);
    await pair.pingsReceived.reach(1);
    pair.client.destroy();
    await pair.answers.reach(1);
    expect(pair.answerErrors).toHaveLength(1);
    expect(dead.calls).toHaveLength(1);
    expect(dead.calls[0]![0]).toBe('error');
    expect(dead.calls[0]![1]).toMatch(/^PING failed: /);
    expect(clock.pendingTimers()).toEqual([]);
    await clock.advance(10 * (INTERVAL + TIMEOUT));
    expect(dead.calls).toHaveLength(1);
  });

  it('stop() before the first PING leaves no pending timer and sends nothing', async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    const k = keepalive(pair, clock, dead.onDead);
    expect(clock.pendingTimers()).toEqual([INTERVAL]);
    k.stop();
    expect(clock.pendingTimers()).toEqual([]);
    await clock.advance(10 * (INTERVAL + TIMEOUT));
    expect(pair.pingsSent.value).toBe(0);
    expect(dead.calls).toEqual([]);
  });

  it('stop() with a PING outstanding cancels its deadline; the late answer schedules nothing', async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    const k = keepalive(pair, clock, dead.onDead);
    pair.hold();
    await clock.advance(INTERVAL);
    await pair.pingsReceived.reach(1);
    expect(clock.pendingTimers()).toEqual([TIMEOUT]);
    k.stop();
    expect(clock.pendingTimers()).toEqual([]);
    pair.release();
    await pair.answers.reach(1);
    expect(clock.pendingTimers()).toEqual([]);
    await clock.advance(10 * (INTERVAL + TIMEOUT));
    expect(pair.pingsSent.value).toBe(1);
    expect(dead.calls).toEqual([]);
  });

  it('a session closed before the PING is due gets no PING, no report and no timer', async () => {
    const clock = new ManualClock();
    const pair = await sessionPair();
    const dead = deaths();
    keepalive(pair, clock, dead.onDead);
    const closed = new Promise<void>((resolve) => pair.client.once('close', resolve));
    pair.client.close();
    await closed;
    await clock.advance(INTERVAL);
    expect(pair.pingsSent.value).toBe(0);
    expect(dead.calls).toEqual([]);
    expect(clock.pendingTimers()).toEqual([]);
  });
});
