/**
 * The in-pod workload proxy manager's state (ztunnel src/inpod/statemanager.rs):
 * which pods have a running proxy, which are pending (their proxy could not
 * start and is retried), and the snapshot bookkeeping of one ZDS connection.
 * It decides; starting and draining proxies is injected, so the rules are
 * testable without network namespaces.
 *
 * Rules (ztunnel's, plus the stricter protocol checks):
 * - Add of a known pod with the same netns (dev, inode) is idempotent; a
 *   different netns (sandbox re-created) drains the old proxy immediately and
 *   starts a new one;
 * - a proxy that fails to start leaves the pod pending (NACK), retried by
 *   retryPending() until it starts or the pod is deleted;
 * - Del drains the pod's proxy immediately; Del of a pod we never heard of is
 *   an error (ztunnel ignores it; we NACK so a confused node agent shows up);
 * - Keep is only valid before SnapshotSent; on SnapshotSent every proxy not
 *   named in the snapshot (by Add or Keep) is drained; a second SnapshotSent
 *   on the same connection is an error;
 * - ready once the snapshot arrived and nothing is pending.
 *
 * Invariants:
 * - every netns fd handed to process() is closed exactly once: at once when
 *   it is not kept (duplicate, rejected), or when its pending entry or its
 *   proxy goes away;
 * - requests are processed one at a time (the caller serializes), so there
 *   is never more than one start in flight per pod.
 */
import type { ZdsRequest, ZdsWorkloadInfo } from '@ambient/control';
import type { DrainMode } from '../workload-proxy.js';

export interface PodNetns {
  readonly fd: number;
  /** `dev:inode` of the namespace: equal ids are the same namespace. */
  readonly id: string;
}

export interface RunningProxy {
  drain(mode: DrainMode): Promise<void>;
  /** For the config dump's workloadState (ztunnel: the proxy's connection manager). */
  connections(): unknown;
}

export interface ManagerStateDeps {
  /** Checks the fd is a network namespace and returns its identity; throws otherwise. */
  identifyNetns(fd: number): string;
  closeFd(fd: number): void;
  startProxy(uid: string, info: ZdsWorkloadInfo, netns: PodNetns): Promise<RunningProxy>;
  log: { info(o: object, m?: string): void; warn(o: object, m?: string): void; debug(o: object, m?: string): void };
  onCountsChanged?(active: number, pending: number): void;
  onProxyStarted?(): void;
  onProxyStopped?(): void;
}

interface Up {
  readonly info: ZdsWorkloadInfo;
  readonly netns: PodNetns;
  readonly proxy: RunningProxy;
}

interface Pending {
  readonly info: ZdsWorkloadInfo;
  readonly netns: PodNetns;
  readonly error: string;
}

/** The result of one request: undefined to Ack, or the error text of a NACK. */
export type RequestOutcome = string | undefined;

export interface WorkloadStateDump {
  readonly state: 'Up' | 'Pending';
  readonly connections?: unknown;
  readonly info: { readonly name: string; readonly namespace: string; readonly serviceAccount: string };
}

export class ManagerState {
  readonly #up = new Map<string, Up>();
  readonly #pending = new Map<string, Pending>();
  readonly #draining = new Set<Promise<void>>();
  #snapshotReceived = false;
  readonly #snapshotNames = new Set<string>();

  constructor(private readonly deps: ManagerStateDeps) {}

  get snapshotReceived(): boolean {
    return this.#snapshotReceived;
  }

  /** A new ZDS connection: its snapshot starts over (running proxies stay until SnapshotSent reconciles). */
  resetSnapshot(): void {
    this.#snapshotNames.clear();
    for (const [uid, p] of this.#pending) this.#dropPending(uid, p);
    this.#snapshotReceived = false;
    this.#counts();
  }

  ready(): boolean {
    return this.#snapshotReceived && this.#pending.size === 0;
  }

  hasPending(): boolean {
    return this.#pending.size > 0;
  }

  async process(req: ZdsRequest): Promise<RequestOutcome> {
    switch (req.kind) {
      case 'add':
        return this.#add(req.uid, req.info, req.netnsFd);
      case 'keep':
        if (this.#snapshotReceived) return 'Keep received after SnapshotSent; Keep is only valid in the snapshot';
        this.deps.log.info({ uid: req.uid }, 'pod keep received; it will not be removed when the snapshot is complete');
        this.#snapshotNames.add(req.uid);
        return undefined;
      case 'del':
        return this.#del(req.uid);
      case 'snapshot-sent':
        if (this.#snapshotReceived) return 'SnapshotSent received twice on one connection';
        this.deps.log.info({ pods: this.#snapshotNames.size }, 'snapshot received; removing proxies of pods it does not name');
        for (const [uid, up] of [...this.#up]) if (!this.#snapshotNames.has(uid)) this.#stop(uid, up);
        this.#snapshotNames.clear();
        this.#snapshotReceived = true;
        this.#counts();
        return undefined;
    }
  }

  /** Retries every pending pod once (ztunnel: every 5 s while any is pending). */
  async retryPending(): Promise<void> {
    for (const [uid, p] of [...this.#pending]) {
      // A later request may have replaced or removed it meanwhile.
      if (this.#pending.get(uid) !== p) continue;
      this.#pending.delete(uid);
      this.deps.log.info({ uid }, 'retrying the pod proxy');
      await this.#start(uid, p.info, p.netns);
    }
  }

  dump(): Record<string, WorkloadStateDump> {
    const out: Record<string, WorkloadStateDump> = {};
    for (const [uid, p] of this.#pending) out[uid] = { state: 'Pending', info: { ...p.info } };
    for (const [uid, up] of this.#up) out[uid] = { state: 'Up', connections: up.proxy.connections(), info: { ...up.info } };
    return out;
  }

  /** Drains every proxy (graceful on ztunnel shutdown) and waits for the ones already stopping. */
  async drainAll(mode: DrainMode): Promise<void> {
    for (const [uid, p] of [...this.#pending]) this.#dropPending(uid, p);
    const running = [...this.#up].map(([uid, up]) => {
      this.#up.delete(uid);
      return this.#finish(up, mode);
    });
    this.#counts();
    await Promise.allSettled([...running, ...this.#draining]);
  }

  async #add(uid: string, info: ZdsWorkloadInfo, fd: number): Promise<RequestOutcome> {
    this.deps.log.info({ uid, name: info.name, namespace: info.namespace }, 'pod received, starting proxy');
    let id: string;
    try {
      id = this.deps.identifyNetns(fd);
    } catch (err) {
      this.#closeFd(fd);
      return `the fd sent with Add for pod ${uid} is not a network namespace: ${message(err)}`;
    }
    if (!this.#snapshotReceived) this.#snapshotNames.add(uid);
    const netns: PodNetns = { fd, id };
    const existing = this.#up.get(uid);
    if (existing !== undefined) {
      if (existing.netns.id === id) {
        this.#closeFd(fd);
        return undefined;
      }
      this.deps.log.info({ uid, old: existing.netns.id, new: id }, 'pod network namespace changed (sandbox re-created): replacing its proxy');
      this.#stop(uid, existing);
    }
    const pending = this.#pending.get(uid);
    if (pending !== undefined) this.#dropPending(uid, pending);
    return this.#start(uid, info, netns);
  }

  async #start(uid: string, info: ZdsWorkloadInfo, netns: PodNetns): Promise<RequestOutcome> {
    try {
      const proxy = await this.deps.startProxy(uid, info, netns);
      this.#up.set(uid, { info, netns, proxy });
      this.deps.onProxyStarted?.();
      this.#counts();
      return undefined;
    } catch (err) {
      const error = `starting the proxy for pod ${info.namespace}/${info.name} (${uid}) failed: ${message(err)}`;
      this.deps.log.warn({ uid, err: message(err) }, 'pod proxy failed to start; it stays pending and is retried');
      this.#pending.set(uid, { info, netns, error });
      this.#counts();
      return error;
    }
  }

  #del(uid: string): RequestOutcome {
    this.deps.log.info({ uid }, 'pod delete request, shutting down proxy');
    const pending = this.#pending.get(uid);
    if (pending !== undefined) this.#dropPending(uid, pending);
    if (!this.#snapshotReceived) this.#snapshotNames.delete(uid);
    const up = this.#up.get(uid);
    if (up !== undefined) {
      this.#stop(uid, up);
      return undefined;
    }
    if (pending !== undefined || !this.#snapshotReceived) return undefined;
    return `Del for pod ${uid}, which this ztunnel does not know`;
  }

  /** Immediate drain in the background (the pod is gone); shutdown waits for it. */
  #stop(uid: string, up: Up): void {
    this.#up.delete(uid);
    this.#counts();
    const done = this.#finish(up, 'immediate').finally(() => this.#draining.delete(done));
    this.#draining.add(done);
  }

  async #finish(up: Up, mode: DrainMode): Promise<void> {
    try {
      await up.proxy.drain(mode);
    } catch (err) {
      this.deps.log.warn({ err: message(err), pod: `${up.info.namespace}/${up.info.name}` }, 'draining a pod proxy failed');
    } finally {
      this.#closeFd(up.netns.fd);
      this.deps.onProxyStopped?.();
    }
  }

  #dropPending(uid: string, p: Pending): void {
    this.#pending.delete(uid);
    this.#closeFd(p.netns.fd);
  }

  #closeFd(fd: number): void {
    try {
      this.deps.closeFd(fd);
    } catch (err) {
      this.deps.log.warn({ fd, err: message(err) }, 'closing a network namespace fd failed');
    }
  }

  #counts(): void {
    this.deps.onCountsChanged?.(this.#up.size, this.#pending.size);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
