/**
 * The in-pod (shared mode) workload proxy manager (ztunnel
 * src/inpod/workloadmanager.rs): the ZDS client feeds decoded requests to the
 * manager state, which starts one workload proxy per pod inside the pod's
 * network namespace; pending pods are retried every 5 s; readiness and the
 * `workload_manager_*` metrics follow the state.
 *
 * Readiness (ztunnel's "workload proxy manager" task): not ready until the
 * first snapshot of a connection is complete with no pod pending; not ready
 * again while disconnected from the node agent or while a pod is pending.
 *
 * A protocol violation (Add without its one fd, fds on other messages, Keep
 * after the snapshot, Del of an unknown pod, a truncated packet, an fd that
 * is not a network namespace) gets a NACK naming the problem and a log line;
 * unlike ztunnel it never stops the manager, so other pods are unaffected.
 */
import { decodeZdsRequest, encodeZdsAck, formatRejections, type Clock, type Random, type ZdsPacket, type ZdsWorkloadInfo } from '@ambient/control';
import type { Logger } from 'pino';
import type { WorkloadManagerMetrics } from '../metrics/components.js';
import type { DrainMode } from '../workload-proxy.js';
import { ManagerState, type PodNetns, type RunningProxy, type WorkloadStateDump } from './manager-state.js';
import { ZdsClient, type ZdsTransport } from './zds-client.js';

/** ztunnel retries pods whose proxy failed to start every 5 s. */
const PENDING_RETRY_MS = 5_000;

export interface WorkloadProxyManagerDeps {
  readonly uds: string;
  readonly connect: (path: string) => ZdsTransport;
  readonly identifyNetns: (fd: number) => string;
  readonly closeFd: (fd: number) => void;
  readonly startProxy: (uid: string, info: ZdsWorkloadInfo, netns: PodNetns) => Promise<RunningProxy>;
  readonly readiness: { register(name: string): () => void };
  readonly metrics: WorkloadManagerMetrics | undefined;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
}

export class WorkloadProxyManager {
  readonly #state: ManagerState;
  readonly #client: ZdsClient;
  readonly #log: Logger;
  #notReady: (() => void) | undefined;
  #retry: { cancel(): void } | undefined;
  #closed = false;
  /** Requests and retries run one at a time, so a pod never has two starts in flight. */
  #serial: Promise<unknown> = Promise.resolve();

  constructor(private readonly deps: WorkloadProxyManagerDeps) {
    this.#log = deps.log.child({ component: 'inpod' });
    const m = deps.metrics;
    this.#state = new ManagerState({
      identifyNetns: deps.identifyNetns,
      closeFd: deps.closeFd,
      startProxy: deps.startProxy,
      log: this.#log,
      onCountsChanged: (active, pending) => {
        m?.activeProxies.set(active);
        m?.pendingProxies.set(pending);
      },
      onProxyStarted: () => m?.proxiesStarted.inc(),
      onProxyStopped: () => m?.proxiesStopped.inc(),
    });
    this.#notReady = deps.readiness.register('workload proxy manager');
    this.#client = new ZdsClient({
      path: deps.uds,
      connect: deps.connect,
      clock: deps.clock,
      random: deps.random,
      log: this.#log,
      onConnected: () => {
        this.#state.resetSnapshot();
        this.#checkReady();
      },
      onDisconnected: () => this.#setReady(false),
      onPacket: (p) => this.#exclusive(() => this.#handle(p)),
    });
  }

  start(): void {
    this.#client.start();
  }

  /** The config dump's `workloadState`: pod uid -> { state: Up | Pending, connections, info }. */
  dump(): Record<string, WorkloadStateDump> {
    return this.#state.dump();
  }

  /** Stops talking to the node agent and drains every pod's proxy. */
  async drain(mode: DrainMode): Promise<void> {
    this.#closed = true;
    this.#retry?.cancel();
    await this.#client.close();
    await this.#exclusive(() => this.#state.drainAll(mode));
  }

  async #handle(packet: ZdsPacket): Promise<Uint8Array> {
    const decoded = decodeZdsRequest(packet, this.#state.snapshotReceived);
    if (!decoded.ok) {
      for (const fd of packet.fds) this.#closeQuietly(fd);
      const error = `invalid ZDS request: ${formatRejections(decoded.errors)}`;
      this.#log.error({ error }, 'ZDS protocol violation; answering with an error Ack');
      return encodeZdsAck(error);
    }
    if (this.#closed) {
      if (decoded.value.kind === 'add') this.#closeQuietly(decoded.value.netnsFd);
      return encodeZdsAck('ztunnel is shutting down');
    }
    const outcome = await this.#state.process(decoded.value);
    if (outcome !== undefined) this.#log.warn({ request: decoded.value.kind, error: outcome }, 'ZDS request refused');
    if (decoded.value.kind === 'snapshot-sent' && outcome === undefined) this.#client.resetBackoff();
    this.#scheduleRetry();
    this.#checkReady();
    return encodeZdsAck(outcome ?? '');
  }

  #scheduleRetry(): void {
    if (this.#retry !== undefined || !this.#state.hasPending() || this.#closed) return;
    this.#retry = this.deps.clock.setTimer(PENDING_RETRY_MS, () => {
      this.#retry = undefined;
      void this.#exclusive(async () => {
        if (this.#closed) return;
        await this.#state.retryPending();
        this.#scheduleRetry();
        this.#checkReady();
      });
    });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  #checkReady(): void {
    this.#setReady(this.#state.ready());
  }

  #setReady(ready: boolean): void {
    if (ready && this.#notReady !== undefined) {
      this.#notReady();
      this.#notReady = undefined;
      this.#log.info({}, 'workload proxy manager is ready');
    } else if (!ready && this.#notReady === undefined) {
      this.#notReady = this.deps.readiness.register('workload proxy manager');
    }
  }

  #closeQuietly(fd: number): void {
    try {
      this.deps.closeFd(fd);
    } catch {
      // Already closed or never valid: nothing to release.
    }
  }
}
