/**
 * A fake of the istio-cni node agent's ZDS server, one per node: listens on
 * the node's INPOD_UDS (AF_UNIX SOCK_SEQPACKET), reads each ztunnel's
 * ZdsHello, sends the snapshot (Add with the pod's netns fd per captured pod,
 * or Keep when the namespace is gone), then SnapshotSent, then incremental
 * Add (to the most recently connected ztunnel) and Del (to every connected
 * ztunnel), waiting up to 5 s for each Ack, as the real agent does
 * (istio/istio cni/pkg/nodeagent/ztunnelserver.go). A reconnecting ztunnel
 * gets the snapshot again.
 *
 * Invariants:
 * - per connection, requests go out strictly one at a time: the next is sent
 *   only after the previous one's Ack arrived (or its deadline passed, which
 *   closes the connection, as the agent does);
 * - every NACK and every protocol problem is recorded in `problems`; the test
 *   asserts it is empty unless it expects one;
 * - the netns fds we open are closed right after sending (the kernel gave
 *   ztunnel its own copy).
 */
import { closeSync, existsSync, openSync } from 'node:fs';
import type { Native, SeqpacketSocket } from '@ambient/ztunnel/native';
import { decodeWorkloadResponse, decodeZdsHello, encodeWorkloadRequest, type WorkloadInfo, type WorkloadRequest } from './zds-wire.js';

const ACK_DEADLINE_MS = 5_000;
const HELLO_DEADLINE_MS = 5_000;

export interface CniPod {
  /** The Kubernetes pod UID (what ZDS carries). */
  readonly uid: string;
  readonly info: WorkloadInfo;
  /** /var/run/netns/<name>: opened and sent with every Add. */
  readonly netnsPath: string;
}

export interface ZdsProblem {
  readonly connection: number;
  readonly request: string;
  readonly error: string;
}

interface Pending {
  readonly request: string;
  readonly resolve: (ack: string) => void;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

class ZdsConnection {
  #queue: Promise<unknown> = Promise.resolve();
  #pending: Pending | undefined;
  #closed = false;
  #helloResolve: ((v: void) => void) | undefined;
  readonly hello: Promise<void>;
  snapshotDone = false;

  constructor(
    readonly id: number,
    private readonly socket: SeqpacketSocket,
    private readonly agent: CniNodeAgent,
  ) {
    let helloReject: (e: Error) => void = () => undefined;
    this.hello = new Promise<void>((resolve, reject) => {
      this.#helloResolve = resolve;
      helloReject = reject;
    });
    const helloTimer = setTimeout(() => {
      helloReject(new Error(`no ZdsHello within ${HELLO_DEADLINE_MS} ms`));
      this.close();
    }, HELLO_DEADLINE_MS);
    this.hello.then(() => clearTimeout(helloTimer), () => clearTimeout(helloTimer));
    socket.onPacket((p) => this.#onPacket(p.data, p.fds, p.truncated));
    socket.onClose((err) => {
      this.agent.event(this.id, `closed by ztunnel${err ? `: ${err.message}` : ''}`);
      this.#teardown(new Error(`connection ${this.id} closed by ztunnel`));
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  #onPacket(data: Buffer, fds: number[], truncated: boolean): void {
    for (const fd of fds) this.agent.native.closeFd(fd);
    if (fds.length > 0 || truncated) this.agent.problem(this.id, 'packet', `ztunnel sent ${fds.length} fds${truncated ? ', truncated' : ''}`);
    if (this.#helloResolve !== undefined) {
      const hello = decodeZdsHello(data);
      if ('error' in hello) this.agent.problem(this.id, 'hello', hello.error);
      else if (hello.version !== 1) this.agent.problem(this.id, 'hello', `ZdsHello version ${hello.version}, expected V1`);
      else this.agent.event(this.id, 'hello V1');
      const r = this.#helloResolve;
      this.#helloResolve = undefined;
      r();
      return;
    }
    const pending = this.#pending;
    if (pending === undefined) {
      this.agent.problem(this.id, 'unsolicited', `a packet with no request outstanding (${data.length} bytes)`);
      return;
    }
    this.#pending = undefined;
    clearTimeout(pending.timer);
    const resp = decodeWorkloadResponse(data);
    if ('error' in resp) {
      this.agent.problem(this.id, pending.request, resp.error);
      pending.reject(new Error(resp.error));
    } else {
      this.agent.event(this.id, `${pending.request} -> ${resp.ack === '' ? 'ACK' : `NACK: ${resp.ack}`}`);
      pending.resolve(resp.ack);
    }
  }

  /**
   * Sends one request after the previous one was answered; resolves with the
   * Ack's error text ('' = ACK). With `netnsPath` the packet carries that
   * namespace's fd; `anyFile` sends the fd of any file instead (protocol tests).
   */
  request(req: WorkloadRequest, netnsPath?: string, anyFile = false): Promise<string> {
    const what = describe(req);
    const next = this.#queue.then(
      () =>
        new Promise<string>((resolve, reject) => {
          if (this.#closed) {
            reject(new Error(`connection ${this.id} is closed`));
            return;
          }
          let fd: number | undefined;
          try {
            if (netnsPath !== undefined) fd = anyFile ? openSync(netnsPath, 'r') : this.agent.native.openNetns(netnsPath);
            this.socket.send(encodeWorkloadRequest(req), fd === undefined ? [] : [fd]);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
            return;
          } finally {
            if (fd !== undefined) {
              if (anyFile) closeSync(fd);
              else this.agent.native.closeFd(fd);
            }
          }
          this.agent.event(this.id, `sent ${what}`);
          this.#pending = {
            request: what,
            resolve,
            reject,
            timer: setTimeout(() => {
              this.#pending = undefined;
              this.agent.problem(this.id, what, `no Ack within ${ACK_DEADLINE_MS} ms`);
              reject(new Error(`no Ack for ${what} within ${ACK_DEADLINE_MS} ms`));
              this.close();
            }, ACK_DEADLINE_MS),
          };
        }),
    );
    this.#queue = next.catch(() => undefined);
    return next;
  }

  #teardown(err: Error): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#pending) {
      clearTimeout(this.#pending.timer);
      this.#pending.reject(err);
      this.#pending = undefined;
    }
    this.agent.dropped(this);
  }

  close(): void {
    if (this.#closed) return;
    this.#teardown(new Error(`connection ${this.id} closed by the node agent`));
    this.socket.close();
  }
}

function describe(req: WorkloadRequest): string {
  switch (req.kind) {
    case 'add':
      return `Add ${req.uid} (${req.info === undefined ? "no workload_info" : `${req.info.namespace}/${req.info.name}`})`;
    case 'keep':
      return `Keep ${req.uid}`;
    case 'del':
      return `Del ${req.uid}`;
    case 'snapshot-sent':
      return 'SnapshotSent';
  }
}

export class CniNodeAgent {
  readonly #pods = new Map<string, CniPod>();
  readonly #connections: ZdsConnection[] = [];
  readonly #snapshotWaiters: Array<{ count: number; resolve: () => void }> = [];
  #server: { close(): void } | undefined;
  #nextId = 0;
  #snapshots = 0;
  /** NACKs and protocol problems, in order. */
  readonly problems: ZdsProblem[] = [];
  /** Everything that happened, for failure messages. */
  readonly events: string[] = [];

  private constructor(
    readonly native: Native,
    readonly socketPath: string,
    readonly nodeName: string,
  ) {}

  static start(native: Native, socketPath: string, nodeName: string): CniNodeAgent {
    const agent = new CniNodeAgent(native, socketPath, nodeName);
    const server = native.seqpacketListen(socketPath);
    agent.#server = server;
    server.onConnection((s) => agent.#accept(s));
    return agent;
  }

  event(conn: number, text: string): void {
    this.events.push(`[cni ${this.nodeName} #${conn}] ${text}`);
  }

  problem(conn: number, request: string, error: string): void {
    this.problems.push({ connection: conn, request, error });
    this.event(conn, `PROBLEM ${request}: ${error}`);
  }

  dropped(c: ZdsConnection): void {
    const i = this.#connections.indexOf(c);
    if (i >= 0) this.#connections.splice(i, 1);
  }

  #accept(socket: SeqpacketSocket): void {
    const conn = new ZdsConnection(++this.#nextId, socket, this);
    this.#connections.push(conn);
    this.event(conn.id, 'ztunnel connected');
    void this.#sendSnapshot(conn);
  }

  async #sendSnapshot(conn: ZdsConnection): Promise<void> {
    try {
      await conn.hello;
      const requests: Array<Promise<string>> = [];
      for (const pod of this.#pods.values()) {
        requests.push(
          existsSync(pod.netnsPath)
            ? conn.request({ kind: 'add', uid: pod.uid, info: pod.info }, pod.netnsPath)
            : conn.request({ kind: 'keep', uid: pod.uid }),
        );
      }
      requests.push(conn.request({ kind: 'snapshot-sent' }));
      const acks = await Promise.all(requests);
      acks.forEach((a, i) => {
        if (a !== '') this.problem(conn.id, i < acks.length - 1 ? 'snapshot Add/Keep' : 'SnapshotSent', `NACK: ${a}`);
      });
      conn.snapshotDone = true;
      this.#snapshots++;
      for (const w of [...this.#snapshotWaiters]) {
        if (this.#snapshots >= w.count) {
          this.#snapshotWaiters.splice(this.#snapshotWaiters.indexOf(w), 1);
          w.resolve();
        }
      }
    } catch (err) {
      this.problem(conn.id, 'snapshot', err instanceof Error ? err.message : String(err));
      conn.close();
    }
  }

  /** How many snapshots have been completed (one per ztunnel connection). */
  get snapshotsSent(): number {
    return this.#snapshots;
  }

  /** Resolves once `count` snapshots in total have been acknowledged. */
  waitForSnapshots(count: number): Promise<void> {
    if (this.#snapshots >= count) return Promise.resolve();
    return new Promise((resolve) => this.#snapshotWaiters.push({ count, resolve }));
  }

  get connectionCount(): number {
    return this.#connections.length;
  }

  /** The pod is captured: remember it, and send Add to the most recent ztunnel. Resolves with the Ack text. */
  async addPod(pod: CniPod, options: { expectNack?: boolean } = {}): Promise<string> {
    this.#pods.set(pod.uid, pod);
    const latest = this.#connections.at(-1);
    if (latest === undefined) return 'no ztunnel connected (the pod goes out with the next snapshot)';
    const ack = await latest.request({ kind: 'add', uid: pod.uid, info: pod.info }, pod.netnsPath);
    if (ack !== '' && options.expectNack !== true) this.problem(latest.id, `Add ${pod.uid}`, `NACK: ${ack}`);
    return ack;
  }

  /** The pod is gone: forget it, and send Del to every connected ztunnel. */
  async delPod(uid: string): Promise<string[]> {
    this.#pods.delete(uid);
    const acks = await Promise.all(this.#connections.map((c) => c.request({ kind: 'del', uid })));
    acks.forEach((a) => {
      if (a !== '') this.problem(0, `Del ${uid}`, `NACK: ${a}`);
    });
    return acks;
  }

  /** A raw request to the most recent ztunnel, with the fd of any file (protocol tests). */
  async sendRaw(req: WorkloadRequest, fdOfFile?: string): Promise<string> {
    const latest = this.#connections.at(-1);
    if (latest === undefined) throw new Error('no ztunnel connected');
    return latest.request(req, fdOfFile, true);
  }

  close(): void {
    for (const c of [...this.#connections]) c.close();
    this.#server?.close();
    this.#server = undefined;
  }
}
