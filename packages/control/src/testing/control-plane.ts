/**
 * The real control plane (TLS 1.3, delta ADS, Istio CA) on 127.0.0.1 with a
 * free port and an in-memory mesh, plus everything a test needs to drive it
 * and to observe what clients did: requests, responses, ACKs, NACKs, streams
 * and CSRs. Nothing sleeps: every `next*` waits for an event (and fails with a
 * description of what was observed when it does not come in time).
 *
 * `next*` methods consume: each observed event is handed to at most one
 * `next*` call of its kind, oldest first, including events that happened
 * before the call. The arrays (`requests`, `responses`, `caRequests`) keep
 * everything.
 */
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Any } from '@bufbuild/protobuf/wkt';
import type { Logger } from 'pino';
import type { DeltaDiscoveryRequest, DeltaDiscoveryResponse } from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import type { Status } from '../gen/google/rpc/status_pb.js';
import type { Authorization } from '../gen/istio/security/authorization_pb.js';
import type { Service, Workload } from '../gen/istio/workload/workload_pb.js';
import type { Clock } from '../platform/clock.js';
import type { AckEvent, AdsStreamInfo, NackEvent, StreamStatus } from '../control-plane/ads-service.js';
import type { CaRequestRecord } from '../control-plane/ca-service.js';
import { startControlPlane, type ControlPlane, type ReloadEvent, type ServingCertificateAuthority } from '../control-plane/server.js';
import type { WdsTypeUrl } from '../xds/type-urls.js';

export interface TestControlPlaneOptions {
  readonly trustDomain?: string;
  /** When set, a `clusterid` header naming another cluster is refused. */
  readonly clusterId?: string;
  /** Default ["istio-system/ztunnel"]. */
  readonly trustedNodeAccounts?: readonly string[];
  /** Accept ADS streams without a token (default false: like istiod, a valid token is required). */
  readonly anonymousXds?: boolean;
  readonly defaultCertTtlSeconds?: number;
  readonly maxCertTtlSeconds?: number;
  /** Serve (and watch) this mesh file instead of starting empty; a reload replaces the whole mesh. */
  readonly meshPath?: string;
  /** A token file to load and watch, in addition to `token()`. */
  readonly tokensPath?: string;
  /** Debounce for file reloads (default 10 ms here, to keep tests quick). */
  readonly reloadDebounceMs?: number;
  /** Reuse a CA (e.g. to restart a control plane with the same roots). */
  readonly authority?: ServingCertificateAuthority;
  readonly clock?: Clock;
  readonly logger?: Logger;
  /** How long a `next*` call waits before failing (default 10 s). */
  readonly waitTimeoutMs?: number;
}

export interface ObservedRequest {
  readonly streamId: number;
  readonly request: DeltaDiscoveryRequest;
}

export interface ObservedResponse {
  readonly streamId: number;
  readonly response: DeltaDiscoveryResponse;
}

export interface TokenSubject {
  readonly namespace: string;
  readonly serviceAccount: string;
  /** The node the caller runs on; needed to impersonate. */
  readonly node?: string;
  readonly pod?: string;
}

export interface TestControlPlane extends AsyncDisposable {
  /** `127.0.0.1:<port>` (the serving certificate also covers localhost and ::1). */
  readonly address: string;
  readonly port: number;
  /** What ztunnel's XDS_ADDRESS / CA_ADDRESS would be: `https://localhost:<port>`. */
  readonly url: string;
  readonly rootCaPem: string;
  readonly trustDomain: string;
  /** The underlying control plane (state, subscriptions, ...). */
  readonly plane: ControlPlane;

  /** Registers a fresh bearer token for this subject and returns it. */
  token(subject: TokenSubject): string;

  setWorkload(workload: Workload): void;
  setService(service: Service): void;
  setPolicy(policy: Authorization): void;
  /** Removes a resource by its xDS name (workload uid, `namespace/hostname`, or policy `namespace/name`). */
  remove(typeUrl: WdsTypeUrl, name: string): void;
  /** Serves `resource` verbatim under `name` (e.g. bytes that do not decode, to provoke a NACK). */
  setRaw(typeUrl: WdsTypeUrl, name: string, resource: Any): void;

  /** The next ACK for `typeUrl`. */
  nextAck(typeUrl: string): Promise<AckEvent>;
  /** The next NACK for `typeUrl`: its error_detail. */
  nextNack(typeUrl: string): Promise<Status>;
  /** Every DeltaDiscoveryRequest received, in order. */
  readonly requests: readonly ObservedRequest[];
  nextRequest(predicate?: (r: ObservedRequest) => boolean): Promise<ObservedRequest>;
  /** Every DeltaDiscoveryResponse sent, in order. */
  readonly responses: readonly ObservedResponse[];
  nextResponse(predicate?: (r: ObservedResponse) => boolean): Promise<ObservedResponse>;
  /** ADS streams open now. */
  readonly connections: readonly AdsStreamInfo[];
  /** The next ADS stream to open. */
  nextConnection(): Promise<AdsStreamInfo>;
  /** The next ADS stream to close (for any reason). */
  nextDisconnection(): Promise<AdsStreamInfo>;
  /** Ends every ADS stream with `status` (default UNAVAILABLE); returns how many. */
  dropStreams(status?: StreamStatus): number;
  /** The next mesh or token file reload (successful or refused). */
  nextReload(predicate?: (e: ReloadEvent) => boolean): Promise<ReloadEvent>;
  /** Every CreateCertificate call: headers, metadata and the decision. */
  readonly caRequests: readonly CaRequestRecord[];
  nextCaRequest(predicate?: (r: CaRequestRecord) => boolean): Promise<CaRequestRecord>;

  close(): Promise<void>;
}

export async function startTestControlPlane(opts: TestControlPlaneOptions = {}): Promise<TestControlPlane> {
  const timeoutMs = opts.waitTimeoutMs ?? 10_000;
  const requests = new Observed<ObservedRequest>('DeltaDiscoveryRequest', timeoutMs, (r) => describeRequest(r));
  const responses = new Observed<ObservedResponse>('DeltaDiscoveryResponse', timeoutMs, (r) => describeResponse(r));
  const acks = new Observed<AckEvent>('ACK', timeoutMs, (a) => `${a.typeUrl} nonce=${a.nonce}`);
  const nacks = new Observed<NackEvent>('NACK', timeoutMs, (n) => `${n.typeUrl} nonce=${n.nonce}: ${n.errorDetail.message}`);
  const opened = new Observed<AdsStreamInfo>('ADS stream open', timeoutMs, (s) => `stream ${s.id}`);
  const closed = new Observed<AdsStreamInfo>('ADS stream close', timeoutMs, (s) => `stream ${s.id}`);
  const csrs = new Observed<CaRequestRecord>('CreateCertificate', timeoutMs, (r) =>
    r.outcome.ok ? `issued ${r.outcome.identity}` : `refused ${grpc.status[r.outcome.code]}: ${r.outcome.message}`,
  );

  const reloads = new Observed<ReloadEvent>('reload', timeoutMs, (e) =>
    `${e.file} ${e.ok ? 'loaded' : `refused (${e.problems.map((p) => `${p.field}: ${p.reason}`).join('; ')})`}`,
  );

  const plane = await startControlPlane({
    listen: '127.0.0.1:0',
    meshPath: opts.meshPath,
    tokensPath: opts.tokensPath,
    reloadDebounceMs: opts.reloadDebounceMs ?? 10,
    trustDomain: opts.trustDomain,
    clusterId: opts.clusterId,
    trustedNodeAccounts: opts.trustedNodeAccounts,
    xdsAuth: opts.anonymousXds ? 'none' : 'required',
    defaultCertTtlSeconds: opts.defaultCertTtlSeconds,
    maxCertTtlSeconds: opts.maxCertTtlSeconds,
    authority: opts.authority,
    clock: opts.clock,
    logger: opts.logger,
    observer: {
      onRequest: (stream, request) => requests.push({ streamId: stream.id, request }),
      onResponse: (stream, response) => responses.push({ streamId: stream.id, response }),
      onAck: (e) => acks.push(e),
      onNack: (e) => nacks.push(e),
      onStreamOpen: (s) => opened.push(s),
      onStreamClose: (s) => closed.push(s),
      onCaRequest: (r) => csrs.push(r),
      onReload: (e) => reloads.push(e),
    },
  });

  const close = async () => {
    await plane.close();
    for (const o of [requests, responses, acks, nacks, opened, closed, csrs, reloads]) o.cancelWaiters('the test control plane was closed');
  };

  return {
    address: plane.address,
    port: plane.port,
    url: `https://localhost:${plane.port}`,
    rootCaPem: plane.rootCaPem,
    trustDomain: plane.trustDomain,
    plane,
    token(subject) {
      const token = `test-${randomBytes(12).toString('hex')}`;
      plane.tokens.add({ token, ...subject });
      return token;
    },
    setWorkload: (w) => plane.state.setWorkload(w),
    setService: (s) => plane.state.setService(s),
    setPolicy: (p) => plane.state.setAuthorization(p),
    remove: (typeUrl, name) => plane.state.remove(typeUrl, name),
    setRaw: (typeUrl, name, resource) => plane.state.setRaw(typeUrl, name, resource),
    nextAck: (typeUrl) => acks.next((a) => a.typeUrl === typeUrl, `ACK for ${typeUrl}`),
    nextNack: async (typeUrl) => (await nacks.next((n) => n.typeUrl === typeUrl, `NACK for ${typeUrl}`)).errorDetail,
    requests: requests.all,
    nextRequest: (predicate) => requests.next(predicate, 'DeltaDiscoveryRequest'),
    responses: responses.all,
    nextResponse: (predicate) => responses.next(predicate, 'DeltaDiscoveryResponse'),
    get connections() {
      return plane.streams();
    },
    nextConnection: () => opened.next(undefined, 'an ADS stream to open'),
    nextDisconnection: () => closed.next(undefined, 'an ADS stream to close'),
    dropStreams: (status) => plane.dropStreams(status),
    nextReload: (predicate) => reloads.next(predicate, 'a file reload'),
    caRequests: csrs.all,
    nextCaRequest: (predicate) => csrs.next(predicate, 'CreateCertificate call'),
    close,
    [Symbol.asyncDispose]: close,
  };
}

interface Waiter<T> {
  readonly predicate: (v: T) => boolean;
  readonly resolve: (v: T) => void;
  readonly reject: (e: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

/** An append-only log of events with consuming, awaitable lookups. */
class Observed<T> {
  readonly all: T[] = [];
  private readonly consumed: boolean[] = [];
  private waiters: Waiter<T>[] = [];

  constructor(
    private readonly kind: string,
    private readonly timeoutMs: number,
    private readonly describe: (v: T) => string,
  ) {}

  push(value: T): void {
    this.all.push(value);
    const index = this.all.length - 1;
    this.consumed.push(false);
    const waiter = this.waiters.find((w) => w.predicate(value));
    if (!waiter) return;
    this.consumed[index] = true;
    this.waiters = this.waiters.filter((w) => w !== waiter);
    clearTimeout(waiter.timer);
    waiter.resolve(value);
  }

  next(predicate: ((v: T) => boolean) | undefined, what: string): Promise<T> {
    const p = predicate ?? (() => true);
    const index = this.all.findIndex((v, i) => !this.consumed[i] && p(v));
    if (index >= 0) {
      this.consumed[index] = true;
      return Promise.resolve(this.all[index] as T);
    }
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        const seen = this.all.map((v, i) => `${this.consumed[i] ? '(consumed) ' : ''}${this.describe(v)}`);
        reject(
          new Error(
            `timed out after ${this.timeoutMs} ms waiting for ${what}; ${this.kind} events observed: ${seen.length === 0 ? 'none' : seen.join(' | ')}`,
          ),
        );
      }, this.timeoutMs);
      timer.unref?.();
      this.waiters.push({ predicate: p, resolve, reject, timer });
    });
  }

  cancelWaiters(reason: string): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(new Error(`${reason} while waiting for a ${this.kind}`));
    }
    this.waiters = [];
  }
}

function describeRequest(r: ObservedRequest): string {
  const q = r.request;
  const parts = [`stream ${r.streamId} ${q.typeUrl || '(no type)'}`];
  if (q.responseNonce) parts.push(`nonce=${q.responseNonce}`);
  if (q.resourceNamesSubscribe.length) parts.push(`sub=${JSON.stringify(q.resourceNamesSubscribe)}`);
  if (q.resourceNamesUnsubscribe.length) parts.push(`unsub=${JSON.stringify(q.resourceNamesUnsubscribe)}`);
  if (q.errorDetail) parts.push(`NACK "${q.errorDetail.message}"`);
  return parts.join(' ');
}

function describeResponse(r: ObservedResponse): string {
  const s = r.response;
  return `stream ${r.streamId} ${s.typeUrl} nonce=${s.nonce} resources=${JSON.stringify(s.resources.map((x) => x.name))} removed=${JSON.stringify(s.removedResources)}`;
}
