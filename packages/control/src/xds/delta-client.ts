/**
 * A generic delta ADS client (`DeltaAggregatedResources`) over @grpc/grpc-js:
 * one stream, one handler per type URL, ACK/NACK per response, known resource
 * versions kept across reconnects, on-demand subscriptions, readiness.
 *
 * Semantics follow ztunnel `xds/client.rs` (`AdsClient`):
 * - on every stream: one initial request per registered type, in registration
 *   order; a wildcard type subscribes to `[]`, an on-demand type to `["*"]` and
 *   unsubscribes `["*"]` in the same request ("subscribe to nothing");
 *   `initial_resource_versions` carries the version of every resource accepted
 *   so far (and `""` for demanded, not-yet-received names) so the server only
 *   sends changes and removals;
 * - each response goes to its handler, which applies the whole batch at once
 *   and names the resources it rejected; accepted ones are recorded as known,
 *   rejected ones are not (so the server re-sends, and we retry, them after a
 *   reconnect: ztunnel `test_reconnect_echoes_retained_versions`); removed
 *   names are forgotten. Then ACK `{type_url, response_nonce}` or NACK with
 *   `error_detail.message = "name: reason; name: reason"`;
 * - on-demand waiters are woken after the handler ran, so they observe the
 *   updated state;
 * - reconnect forever, paced by backoff.ts; the handlers' state is never
 *   cleared, so the last good configuration keeps serving while istiod is away;
 * - `ready` resolves once every non-on-demand type has been ACKed at least once.
 *
 * Differences, deliberate: a response for a type nobody handles is NACKed
 * (ztunnel ACKs it and logs); the NACK status code is INVALID_ARGUMENT (3)
 * (ztunnel leaves it 0; istiod only checks that `error_detail` is present);
 * the node is sent on the first request of each stream only (istiod reads it
 * from the first request; ztunnel repeats it on each initial request).
 *
 * Invariants:
 * - at most one stream (attempt) is alive; `this.attempt` is it or undefined;
 * - responses of a stream are handled one at a time, in order; the next
 *   attempt starts only after the current handler call finished, so handler
 *   calls never overlap;
 * - after `close()` nothing is written, no timer is pending, the channel is closed.
 */
import { toBinary, create } from '@bufbuild/protobuf';
import { Slicer } from '../platform/slicer.js';
import { decodeResources, scanDeltaResponse, type ScannedDeltaResponse } from './scanned-response.js';
import * as grpc from '@grpc/grpc-js';
import type { Node } from '../gen/envoy/config/core/v3/base_pb.js';
import { DeltaDiscoveryRequestSchema, type DeltaDiscoveryRequest } from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import { StatusSchema } from '../gen/google/rpc/status_pb.js';
import type { Clock, Random } from '../platform/clock.js';
import { systemRandom } from '../platform/clock.js';
import { INITIAL_BACKOFF_MS, planReconnect, withJitter } from './backoff.js';
import type { StreamEnd, TerminationReason } from './backoff.js';
import { DELTA_ADS_METHOD, type PackedResource } from './type-urls.js';

// === Public types ===

/** One resource of a response, as handed to a handler. */
export interface XdsResource {
  readonly name: string;
  readonly version: string;
  /** The packed resource; undefined when the server sent none (the handler must reject it). */
  readonly resource: PackedResource | undefined;
}

/** A resource the handler refused; becomes `name: reason` in the NACK. */
export interface XdsRejection {
  readonly name: string;
  readonly reason: string;
}

/** Applies one response's worth of one type. */
export interface XdsHandler {
  readonly typeUrl: string;
  /** Subscribe to nothing up front and fetch names through `demand()` (ztunnel XDS_ON_DEMAND). */
  readonly onDemand?: boolean;
  /**
   * Applies the accepted resources and the removals as one atomic update and
   * reports the rejected resources. Must not throw for bad input; a rejection
   * of the returned promise is treated as "nothing applied" and NACKs the response.
   */
  handle(
    resources: XdsResource[],
    removed: string[],
  ): Promise<{ rejected: Array<{ name: string; reason: string }> }>;
}

/** The subset of pino the client uses. */
export interface Logger {
  child(bindings: Record<string, unknown>): Logger;
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

/** Metric hooks (ztunnel `xds/metrics.rs`). */
export interface XdsClientEvents {
  /** A response arrived: `istio_xds_message_total{url}` and `istio_xds_message_bytes_total{url}` (bytes of the packed resources). */
  onMessage?(typeUrl: string, bytes: number): void;
  /** A stream ended: `istio_xds_connection_terminations_total{reason}`. */
  onTermination?(reason: TerminationReason): void;
  /** A response was answered. */
  onResponseHandled?(typeUrl: string, outcome: 'ACK' | 'NACK', detail: string | undefined): void;
}

export interface DeltaXdsClientOptions {
  /** gRPC target, e.g. `istiod.istio-system.svc:15012` or `127.0.0.1:15012`. */
  readonly target: string;
  /** Channel credentials, or a factory called before every connection attempt (root rotation). */
  readonly credentials:
    | grpc.ChannelCredentials
    | (() => grpc.ChannelCredentials | Promise<grpc.ChannelCredentials>);
  /** Per-stream metadata (authorization bearer token, clusterid, XDS_HEADER_*), fetched for every attempt. */
  readonly callMetadata: () => Promise<grpc.Metadata> | grpc.Metadata;
  readonly node: Node;
  readonly handlers: readonly XdsHandler[];
  readonly clock: Clock;
  readonly log: Logger;
  readonly events?: XdsClientEvents;
  /** Used only when `jitter` > 0. */
  readonly random?: Random;
  /** Fraction (0..1) by which backoff delays are spread; 0 (default) reproduces ztunnel exactly. */
  readonly jitter?: number;
  /** Extra channel options merged over XDS_CHANNEL_OPTIONS (e.g. `grpc.ssl_target_name_override`). */
  readonly channelOptions?: grpc.ChannelOptions;
}

export type XdsClientState = 'idle' | 'connecting' | 'connected' | 'backoff' | 'closed';

export type XdsErrorCode = 'CLOSED' | 'UNKNOWN_TYPE' | 'NOT_ON_DEMAND';

export class XdsError extends Error {
  constructor(
    readonly code: XdsErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'XdsError';
  }
}

/** What the admin config dump shows about the client. */
export interface XdsClientSnapshot {
  readonly state: XdsClientState;
  /** Number of connection attempts so far. */
  readonly connectionId: number;
  readonly ready: boolean;
  /** Non-on-demand types not yet ACKed once. */
  readonly awaitingFirstAck: readonly string[];
  /** type URL → resource name → version last accepted (`""`: demanded, not yet received). */
  readonly knownVersions: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/**
 * Channel options matching ztunnel's control-plane client (`tls/control.rs`,
 * `xds/client.rs`): 200 MiB max decoded message, HTTP/2 keepalive PING every
 * 30 s with a 10 s timeout. A local subchannel pool gives every attempt a
 * fresh connection, so grpc-js's own reconnect backoff (up to 120 s) never
 * delays ours (Ready within one ≤ 15 s backoff of istiod returning).
 */
const XDS_CHANNEL_OPTIONS: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': 200 * 1024 * 1024,
  'grpc.keepalive_time_ms': 30_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.use_local_subchannel_pool': 1,
};

/** google.rpc.Code INVALID_ARGUMENT, sent in NACKs. */
const NACK_STATUS_CODE = 3;

// === Wire codec ===

function serializeRequest(req: DeltaDiscoveryRequest): Buffer {
  const bytes = toBinary(DeltaDiscoveryRequestSchema, req);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function deserializeResponse(buf: Buffer): ScannedDeltaResponse {
  // Only the outer message is read here (resources are decoded later, in
  // slices). A malformed response throws; grpc-js then cancels the stream
  // with INTERNAL, which reconnects with backoff (as tonic's decode error does).
  return scanDeltaResponse(buf);
}

// === impl DeltaXdsClient ===

interface Attempt {
  readonly id: number;
  readonly call: grpc.ClientDuplexStream<DeltaDiscoveryRequest, ScannedDeltaResponse>;
  readonly log: Logger;
  /** Response headers received: later failures are stream errors, not connection errors. */
  established: boolean;
  ended: boolean;
}

interface DemandWaiter {
  resolve(): void;
  reject(reason: unknown): void;
}

function describe(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

export class DeltaXdsClient implements AsyncDisposable {
  /** Resolves once every non-on-demand type has been ACKed at least once. Never rejects. */
  readonly ready: Promise<void>;

  private readonly opts: DeltaXdsClientOptions;
  private readonly log: Logger;
  private readonly handlers = new Map<string, XdsHandler>();
  private readonly known = new Map<string, Map<string, string>>();
  private readonly awaitingAck = new Set<string>();
  private readonly demands = new Map<string, Set<DemandWaiter>>();
  private readonly abort = new AbortController();
  private resolveReady!: () => void;
  private isReady = false;
  private state: XdsClientState = 'idle';
  private connectionId = 0;
  private attempt: Attempt | undefined;
  private loop: Promise<void> | undefined;

  constructor(options: DeltaXdsClientOptions) {
    this.opts = options;
    this.log = options.log.child({ component: 'xds' });
    for (const h of options.handlers) {
      // A programming error, not wire input.
      if (this.handlers.has(h.typeUrl)) throw new Error(`duplicate xDS handler for ${h.typeUrl}`);
      this.handlers.set(h.typeUrl, h);
      this.known.set(h.typeUrl, new Map());
      if (h.onDemand !== true) this.awaitingAck.add(h.typeUrl);
    }
    this.ready = new Promise<void>((resolve) => {
      this.resolveReady = resolve;
    });
    if (this.awaitingAck.size === 0) this.markReady();
  }

  /** Starts connecting (idempotent). */
  start(): void {
    if (this.loop !== undefined || this.state === 'closed') return;
    this.loop = this.run();
  }

  /**
   * Subscribes to `name` of an on-demand type and resolves once a response
   * names it or removes it (after the handler applied that response).
   * Concurrent demands for the same name share one subscription. Rejects with
   * the signal's reason when aborted, and with XdsError CLOSED on close().
   */
  demand(typeUrl: string, name: string, signal?: AbortSignal): Promise<void> {
    if (this.state === 'closed') return Promise.reject(new XdsError('CLOSED', 'xDS client is closed'));
    const handler = this.handlers.get(typeUrl);
    if (handler === undefined) {
      return Promise.reject(new XdsError('UNKNOWN_TYPE', `no xDS handler registered for ${typeUrl}`));
    }
    if (handler.onDemand !== true) {
      return Promise.reject(
        new XdsError('NOT_ON_DEMAND', `${typeUrl} is a wildcard subscription; every resource is pushed without demand`),
      );
    }
    if (signal?.aborted === true) return Promise.reject(signal.reason);

    const key = demandKey(typeUrl, name);
    let waiters = this.demands.get(key);
    if (waiters === undefined) {
      waiters = new Set();
      this.demands.set(key, waiters);
      // Recorded with an empty version (unless already held) so a reconnect
      // re-subscribes through initial_resource_versions and the server always sends it.
      const versions = this.knownFor(typeUrl);
      if (!versions.has(name)) versions.set(name, '');
      const attempt = this.attempt;
      this.log.info({ typeUrl, name, connection: attempt?.id }, 'on-demand request');
      if (attempt !== undefined) {
        this.send(attempt, create(DeltaDiscoveryRequestSchema, { typeUrl, resourceNamesSubscribe: [name] }));
      }
    }
    const set = waiters;
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        set.delete(waiter);
        if (set.size === 0 && this.demands.get(key) === set) this.demands.delete(key);
        reject(signal?.reason);
      };
      const waiter: DemandWaiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (reason) => {
          signal?.removeEventListener('abort', onAbort);
          reject(reason);
        },
      };
      set.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  snapshot(): XdsClientSnapshot {
    const knownVersions: Record<string, Record<string, string>> = {};
    for (const [typeUrl, versions] of this.known) knownVersions[typeUrl] = Object.fromEntries(versions);
    return {
      state: this.state,
      connectionId: this.connectionId,
      ready: this.isReady,
      awaitingFirstAck: [...this.awaitingAck],
      knownVersions,
    };
  }

  /** Ends the stream, stops reconnecting, closes the channel; pending demands reject with CLOSED. */
  async close(): Promise<void> {
    if (this.state !== 'closed') {
      this.transition('closed');
      this.abort.abort(new XdsError('CLOSED', 'xDS client is closed'));
      this.attempt?.call.cancel();
      const closed = new XdsError('CLOSED', 'xDS client closed before the resource arrived');
      for (const waiters of this.demands.values()) for (const w of waiters) w.reject(closed);
      this.demands.clear();
    }
    await this.loop;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- connection loop ---

  private async run(): Promise<void> {
    let backoff = INITIAL_BACKOFF_MS;
    while (this.state !== 'closed') {
      const id = ++this.connectionId;
      this.transition('connecting', id);
      let end: StreamEnd;
      try {
        end = await this.runAttempt(id);
      } catch (e) {
        // e.g. grpc.Client rejecting the target: back off like any local failure.
        end = { kind: 'local-error', message: describe(e) };
      }
      if (this.isClosed()) break;
      const plan = planReconnect(backoff, end);
      backoff = plan.backoffMs;
      this.opts.events?.onTermination?.(plan.reason);
      const delayMs = withJitter(plan.delayMs, this.opts.jitter ?? 0, this.opts.random ?? systemRandom);
      const fields = { connection: id, reason: plan.reason, end, retryInMs: delayMs };
      if (plan.reason === 'Reconnect') this.log.debug(fields, 'xDS stream terminated, reconnecting');
      else this.log.warn(fields, 'xDS stream ended, reconnecting');
      if (delayMs > 0) {
        this.transition('backoff', id);
        try {
          await this.opts.clock.sleep(delayMs, this.abort.signal);
        } catch {
          // Aborted by close().
        }
      }
    }
  }

  private isClosed(): boolean {
    return this.state === 'closed';
  }

  private async runAttempt(id: number): Promise<StreamEnd> {
    let credentials: grpc.ChannelCredentials;
    let metadata: grpc.Metadata;
    try {
      const c = this.opts.credentials;
      credentials = typeof c === 'function' ? await c() : c;
      metadata = await this.opts.callMetadata();
    } catch (e) {
      return { kind: 'local-error', message: describe(e) };
    }
    if (this.isClosed()) return { kind: 'completed' };

    const client = new grpc.Client(this.opts.target, credentials, {
      ...XDS_CHANNEL_OPTIONS,
      ...this.opts.channelOptions,
    });
    try {
      const call = client.makeBidiStreamRequest(DELTA_ADS_METHOD, serializeRequest, deserializeResponse, metadata);
      const attempt: Attempt = { id, call, log: this.log.child({ connection: id }), established: false, ended: false };
      this.attempt = attempt;
      const ended = this.pump(attempt);
      this.sendInitialRequests(attempt);
      return await ended;
    } finally {
      this.attempt = undefined;
      client.close();
    }
  }

  private sendInitialRequests(attempt: Attempt): void {
    let first = true;
    for (const handler of this.handlers.values()) {
      const onDemand = handler.onDemand === true;
      const initialResourceVersions = Object.fromEntries(this.knownFor(handler.typeUrl));
      const req = create(DeltaDiscoveryRequestSchema, {
        typeUrl: handler.typeUrl,
        resourceNamesSubscribe: onDemand ? ['*'] : [],
        resourceNamesUnsubscribe: onDemand ? ['*'] : [],
        initialResourceVersions,
      });
      if (first) req.node = this.opts.node;
      first = false;
      attempt.log.debug(
        { typeUrl: handler.typeUrl, resources: Object.keys(initialResourceVersions).length, onDemand },
        'sending initial request',
      );
      this.send(attempt, req);
    }
  }

  /** Feeds the stream's responses to the handlers one at a time; resolves with how the stream ended. */
  private pump(attempt: Attempt): Promise<StreamEnd> {
    const { call } = attempt;
    return new Promise<StreamEnd>((resolve) => {
      const queue: ScannedDeltaResponse[] = [];
      let processing = false;
      let end: StreamEnd | undefined;
      const settle = (): void => {
        if (end !== undefined && !processing) resolve(end);
      };
      const drain = async (): Promise<void> => {
        processing = true;
        try {
          for (let next = queue.shift(); next !== undefined && !attempt.ended; next = queue.shift()) {
            try {
              await this.handleResponse(attempt, next);
            } catch (e) {
              // Only a throwing event hook gets here; the handler itself is guarded.
              attempt.log.error({ typeUrl: next.typeUrl, err: describe(e) }, 'failed to process xDS response');
            }
          }
        } finally {
          processing = false;
          if (attempt.ended) settle();
          else call.resume();
        }
      };
      call.on('metadata', () => {
        attempt.established = true;
        this.transition('connected', attempt.id);
      });
      call.on('data', (msg: ScannedDeltaResponse) => {
        queue.push(msg);
        if (!processing) {
          call.pause();
          void drain();
        }
      });
      // Errors are reported again, with the status, on 'status'; this listener
      // only keeps the stream from throwing.
      call.on('error', () => undefined);
      call.on('status', (status: grpc.StatusObject) => {
        attempt.ended = true;
        // Responses not yet handled are dropped: their ACK could not be sent,
        // and their versions are not recorded, so the server re-sends them.
        queue.length = 0;
        end =
          status.code === grpc.status.OK
            ? { kind: 'completed' }
            : attempt.established
              ? { kind: 'status', code: status.code, details: status.details }
              : { kind: 'connection-failed', code: status.code, details: status.details };
        settle();
      });
    });
  }

  private async handleResponse(attempt: Attempt, response: ScannedDeltaResponse): Promise<void> {
    const { typeUrl, nonce } = response;
    attempt.log.debug(
      { typeUrl, nonce, resources: response.resources.length, removed: response.removedResources.length },
      'received response',
    );

    const handler = this.handlers.get(typeUrl);
    if (handler === undefined) {
      this.reply(attempt, typeUrl, nonce, `no handler registered for type URL ${typeUrl}`);
      return;
    }

    // Decode the resources a slice at a time (a full push is ~100k of them).
    const decoded = await decodeResources(response, new Slicer(this.opts.clock), () => attempt.ended);
    if (attempt.ended) return;
    if (!decoded.ok) {
      this.reply(attempt, typeUrl, nonce, decoded.reason);
      return;
    }
    const { resources, bytes } = decoded.value;
    // istio_xds_message_bytes_total counts the packed resources' bytes, as ztunnel does.
    this.opts.events?.onMessage?.(typeUrl, bytes);
    const removed = [...response.removedResources];
    let rejected: ReadonlyArray<{ name: string; reason: string }>;
    try {
      ({ rejected } = await handler.handle(resources, removed));
    } catch (e) {
      attempt.log.error({ typeUrl, nonce, err: describe(e) }, 'xDS handler failed; response not applied');
      this.reply(attempt, typeUrl, nonce, `handler failed, nothing applied: ${describe(e)}`);
      return;
    }

    // The handler has applied the batch: record versions, then wake demanders.
    const versions = this.knownFor(typeUrl);
    const rejectedNames = new Set(rejected.map((r) => r.name));
    for (const name of removed) {
      versions.delete(name);
      this.notifyDemand(typeUrl, name);
    }
    for (const r of resources) {
      if (!rejectedNames.has(r.name)) versions.set(r.name, r.version);
      this.notifyDemand(typeUrl, r.name);
    }

    const detail = rejected.length > 0 ? rejected.map((r) => `${r.name}: ${r.reason}`).join('; ') : undefined;
    this.reply(attempt, typeUrl, nonce, detail);
  }

  /** ACK (detail undefined) or NACK a response, and track readiness. */
  private reply(attempt: Attempt, typeUrl: string, nonce: string, detail: string | undefined): void {
    const req = create(DeltaDiscoveryRequestSchema, { typeUrl, responseNonce: nonce });
    if (detail !== undefined) {
      req.errorDetail = create(StatusSchema, { code: NACK_STATUS_CODE, message: detail });
      attempt.log.error({ typeUrl, nonce, error: detail }, 'sending NACK');
    } else {
      attempt.log.debug({ typeUrl, nonce }, 'sending ACK');
    }
    if (!this.send(attempt, req)) return;
    this.opts.events?.onResponseHandled?.(typeUrl, detail === undefined ? 'ACK' : 'NACK', detail);
    if (detail === undefined && this.awaitingAck.delete(typeUrl) && this.awaitingAck.size === 0) this.markReady();
  }

  private send(attempt: Attempt, req: DeltaDiscoveryRequest): boolean {
    if (attempt.ended || this.attempt !== attempt) return false;
    attempt.call.write(req);
    return true;
  }

  private notifyDemand(typeUrl: string, name: string): void {
    const key = demandKey(typeUrl, name);
    const waiters = this.demands.get(key);
    if (waiters === undefined) return;
    this.demands.delete(key);
    for (const w of waiters) w.resolve();
  }

  private knownFor(typeUrl: string): Map<string, string> {
    let versions = this.known.get(typeUrl);
    if (versions === undefined) {
      versions = new Map();
      this.known.set(typeUrl, versions);
    }
    return versions;
  }

  private markReady(): void {
    if (this.isReady) return;
    this.isReady = true;
    this.log.info({}, 'every subscribed type ACKed once: ready');
    this.resolveReady();
  }

  private transition(to: XdsClientState, connection?: number): void {
    const from = this.state;
    if (from === to || from === 'closed') return;
    this.state = to;
    this.log.info({ from, to, connection }, `${from} -> ${to}`);
  }
}

function demandKey(typeUrl: string, name: string): string {
  return `${typeUrl}\n${name}`;
}
