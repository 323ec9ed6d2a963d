/**
 * The one HTTP/2 keepalive of HBONE, on both sides (ztunnel h2.rs
 * `do_ping_pong`): a PING `intervalMs` after the session starts and
 * `intervalMs` after each answer; no answer within `timeoutMs`, or a PING
 * that cannot be sent or fails, reports the session dead once — the owner
 * closes it. At most one timer exists at a time and none after `stop()`.
 */
import type { Http2Session } from 'node:http2';
import type { Clock, Timer } from '@ambient/control';
import { describeError } from '../errors.js';

export interface KeepaliveOptions {
  readonly clock: Pick<Clock, 'setTimer'>;
  readonly intervalMs: number;
  readonly timeoutMs: number;
  /** Called at most once; `timeout`: no answer in time, `error`: the PING failed or could not be sent. */
  readonly onDead: (kind: 'timeout' | 'error', reason: string) => void;
}

export interface Keepalive {
  stop(): void;
}

export function startKeepalive(session: Http2Session, o: KeepaliveOptions): Keepalive {
  let timer: Timer | undefined;
  let stopped = false;
  const dead = (kind: 'timeout' | 'error', reason: string) => {
    if (stopped) return;
    stop();
    o.onDead(kind, reason);
  };
  const schedule = () => {
    timer = o.clock.setTimer(o.intervalMs, ping);
  };
  const ping = () => {
    timer = undefined;
    if (stopped || session.destroyed || session.closed) return;
    let answered = false;
    timer = o.clock.setTimer(o.timeoutMs, () => {
      if (!answered) dead('timeout', `PING not answered within ${o.timeoutMs} ms`);
    });
    const onPong = (err: Error | null) => {
      if (answered || stopped) return;
      answered = true;
      timer?.cancel();
      timer = undefined;
      if (err) dead('error', `PING failed: ${describeError(err)}`);
      else schedule();
    };
    let sent: boolean;
    try {
      sent = session.ping(onPong);
    } catch (err) {
      onPong(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (!sent) onPong(new Error('PING could not be sent (session closing or too many outstanding PINGs)'));
  };
  const stop = () => {
    stopped = true;
    timer?.cancel();
    timer = undefined;
  };
  schedule();
  return { stop };
}
