/**
 * One proxied connection's metrics and access log, from "established" to
 * "recorded" (ztunnel `ConnectionResultBuilder` / `ConnectionResult`):
 * `start` counts the open and writes "connection opened"; the proxy adds bytes
 * as it copies; `record` counts the close (and a failure), folds the bytes in
 * and writes "connection complete" — exactly once.
 *
 * A failed connection with no more specific response flag is recorded as
 * CONNECT, as ztunnel infers for any error.
 */
import type { Clock } from '@ambient/control';
import type { AccessLog } from '../access-log.js';
import { ProxyError, type ResponseFlag } from '@ambient/dataplane';
import type { ConnectionRecorder, TrafficContext, TrafficLabels, TrafficMetrics } from './traffic.js';

export interface ConnectionStart {
  /** Downstream `ip:port`. */
  readonly src: string;
  /** Where the connection goes (for HBONE: the peer's HBONE address). */
  readonly dst: string;
  /** The HBONE `:authority`, when tunnelled. */
  readonly hboneAddr?: string | undefined;
  readonly traffic: TrafficContext;
}

/** Bytes and the final outcome of one connection. */
export interface ConnectionResult {
  readonly labels: TrafficLabels;
  /** Downstream -> upstream bytes. */
  addReceived(n: number): void;
  /** Upstream -> downstream bytes. */
  addSent(n: number): void;
  readonly recorded: boolean;
  /**
   * Records the end: success without an error, else the error's response
   * flag (ProxyError disposition; CONNECT otherwise). Returns false when the
   * connection had already been recorded (the first outcome wins).
   */
  record(error?: unknown): boolean;
  /** As `record`, with an explicit response flag (e.g. DENY for a live connection a new policy refuses). */
  recordWithFlag(flag: ResponseFlag, error?: unknown): boolean;
}

export class ConnectionResults {
  constructor(
    private readonly deps: { readonly traffic: TrafficMetrics; readonly access: AccessLog; readonly clock: Pick<Clock, 'monotonic'> },
  ) {}

  start(s: ConnectionStart): ConnectionResult {
    const recorder = this.deps.traffic.open(s.traffic);
    const conn = {
      src: s.src,
      dst: s.dst,
      hboneAddr: s.hboneAddr,
      labels: recorder.labels,
      srcWorkload: s.traffic.source?.name,
      dstWorkload: s.traffic.destination?.name ?? s.traffic.derivedDestination?.workloadName,
    };
    this.deps.access.opened(conn);
    const startedAt = this.deps.clock.monotonic();
    const finish = (flag: ResponseFlag, error: unknown): boolean => {
      if (!recorder.close(flag)) return false;
      this.deps.access.completed(conn, {
        receivedBytes: recorder.receivedBytes,
        sentBytes: recorder.sentBytes,
        durationMs: this.deps.clock.monotonic() - startedAt,
        error: error === undefined ? undefined : errorText(error),
      });
      return true;
    };
    return new Result(recorder, finish);
  }
}

class Result implements ConnectionResult {
  constructor(
    private readonly recorder: ConnectionRecorder,
    private readonly finish: (flag: ResponseFlag, error: unknown) => boolean,
  ) {}

  get labels(): TrafficLabels {
    return this.recorder.labels;
  }

  get recorded(): boolean {
    return this.recorder.closed;
  }

  addReceived(n: number): void {
    this.recorder.addReceived(n);
  }

  addSent(n: number): void {
    this.recorder.addSent(n);
  }

  record(error?: unknown): boolean {
    return this.finish(error === undefined ? '-' : flagFor(error), error);
  }

  recordWithFlag(flag: ResponseFlag, error?: unknown): boolean {
    return this.finish(error !== undefined && flag === '-' ? 'CONNECT' : flag, error);
  }
}

/** The response flag an error is recorded with. */
export function flagFor(error: unknown): ResponseFlag {
  if (error instanceof ProxyError) {
    const flag = error.disposition.responseFlag;
    return flag === '-' ? 'CONNECT' : flag;
  }
  return 'CONNECT';
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
