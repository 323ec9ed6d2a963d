/**
 * The delta ADS endpoint (`envoy.service.discovery.v3.AggregatedDiscoveryService/
 * DeltaAggregatedResources`) serving the two WDS types from the mesh state.
 *
 * Behaviour follows istiod (`pilot/pkg/xds/delta.go`, `authentication.go`):
 * - The stream is authenticated from its metadata before anything is read;
 *   failure ends it with UNAUTHENTICATED "authentication failure: <reason>".
 * - The first request must carry a Node with an id, else INVALID_ARGUMENT
 *   "missing node information" (istiod's exact text, plus a hint). With an
 *   authenticated caller, Node.metadata NAMESPACE (and SERVICE_ACCOUNT, when
 *   set) must match the caller, else PERMISSION_DENIED "authorization failed:
 *   no identities ([...]) matched ns/sa" (`checkConnectionIdentity`).
 * - A request without type_url ends the stream with INVALID_ARGUMENT.
 * - A type URL other than the two WDS types is logged and ignored: no
 *   response, the stream stays up. istiod does not fail a stream for a type it
 *   has no generator for either; ztunnel never asks for other types.
 * - The first request for a type is always answered, even with nothing, so
 *   the client can ACK and become ready. Later requests are answered only when
 *   they change the subscription (an ACK is not answered).
 * - A NACK (error_detail set) is recorded with its message and not answered;
 *   the versions it rejected are not resent (see subscription.ts).
 * - Every response carries a nonce unique to this process run; ACKs with an
 *   unknown or stale nonce are accepted by the protocol and only logged.
 * - Every mesh change is pushed to every stream as a delta.
 */
import { systemRandomBytes } from '../platform/crypto.js';
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type JsonObject } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import type { Node } from '../gen/envoy/config/core/v3/base_pb.js';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  ResourceSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
} from '../gen/envoy/service/discovery/v3/discovery_pb.js';
import type { Status } from '../gen/google/rpc/status_pb.js';
import { DELTA_ADS_METHOD, type WdsTypeUrl } from '../xds/type-urls.js';
import { isWdsTypeUrl, type MeshChange, type MeshState } from './mesh-state.js';
import { TypeSubscription, type ResponsePlan, type SubscriberContext } from './subscription.js';
import { authenticate, callerSpiffeId, type Caller, type TokenRegistry } from './tokens.js';

/** A status to end streams with. */
export interface StreamStatus {
  readonly code: grpc.status;
  readonly details: string;
}

/** One open ADS stream, as observers and tests see it. */
export interface AdsStreamInfo {
  readonly id: number;
  /** The client's address (grpc-js `getPeer()`). */
  readonly peer: string;
  /** Node.id from the first request ('' until it arrived). */
  readonly nodeId: string;
  /** The authenticated caller, when the stream presented a valid token. */
  readonly caller?: Caller | undefined;
}

/** Per-type view of a stream, for debugging and tests. */
export interface AdsSubscriptionStatus {
  readonly typeUrl: WdsTypeUrl;
  readonly wildcard: boolean;
  readonly subscribed: readonly string[];
  readonly known: ReadonlyMap<string, string>;
  readonly lastNonceSent: string;
  readonly lastNonceAcked: string;
  /** error_detail.message of the last NACK, cleared by the next ACK. */
  readonly lastError: string;
}

export interface AckEvent {
  readonly streamId: number;
  readonly typeUrl: string;
  readonly nonce: string;
}

export interface NackEvent extends AckEvent {
  readonly errorDetail: Status;
}

/** Callbacks for everything a stream does (tests record these). */
export interface AdsObserver {
  onStreamOpen?(stream: AdsStreamInfo): void;
  onStreamClose?(stream: AdsStreamInfo): void;
  onRequest?(stream: AdsStreamInfo, request: DeltaDiscoveryRequest): void;
  onResponse?(stream: AdsStreamInfo, response: DeltaDiscoveryResponse): void;
  onAck?(event: AckEvent): void;
  onNack?(event: NackEvent): void;
}

export interface AdsServiceOptions {
  readonly state: MeshState;
  readonly tokens: TokenRegistry;
  readonly trustDomain: string;
  /** When set, a `clusterid` header naming another cluster is refused. */
  readonly clusterId?: string | undefined;
  /** 'required': every stream needs a valid bearer token (istiod's XDS_AUTH default). */
  readonly auth: 'required' | 'none';
  readonly logger: Logger;
  readonly observer?: AdsObserver | undefined;
}

/** grpc-js service definition for the one method we serve. */
const deltaAdsServiceDefinition: grpc.ServiceDefinition = {
  DeltaAggregatedResources: {
    path: DELTA_ADS_METHOD,
    requestStream: true,
    responseStream: true,
    requestSerialize: (r: DeltaDiscoveryRequest) => toBuffer(toBinary(DeltaDiscoveryRequestSchema, r)),
    requestDeserialize: (b: Buffer) => fromBinary(DeltaDiscoveryRequestSchema, b),
    responseSerialize: (r: DeltaDiscoveryResponse) => toBuffer(toBinary(DeltaDiscoveryResponseSchema, r)),
    responseDeserialize: (b: Buffer) => fromBinary(DeltaDiscoveryResponseSchema, b),
  },
};

type AdsCall = grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;

export class AdsService {
  readonly definition = deltaAdsServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  private readonly connections = new Set<AdsConnection>();
  private readonly unsubscribe: () => void;
  private nextStreamId = 1;
  private changeCount = 0;
  /** Prefix that keeps nonces unique across restarts of the control plane. */
  private readonly noncePrefix = Buffer.from(systemRandomBytes(4)).toString('hex');
  private nonceCount = 0;

  constructor(readonly options: AdsServiceOptions) {
    this.implementation = {
      DeltaAggregatedResources: ((call: AdsCall) => this.accept(call)) as grpc.handleBidiStreamingCall<
        DeltaDiscoveryRequest,
        DeltaDiscoveryResponse
      >,
    };
    this.unsubscribe = options.state.onChange((changes) => this.push(changes));
  }

  /** Open streams. */
  streams(): AdsStreamInfo[] {
    return [...this.connections].map((c) => c.info());
  }

  /** Per-type status of one stream (undefined when it is not open). */
  subscriptions(streamId: number): AdsSubscriptionStatus[] | undefined {
    for (const c of this.connections) if (c.id === streamId) return c.subscriptionStatus();
    return undefined;
  }

  /** Ends every open stream with `status`; returns how many were ended. */
  dropStreams(status: StreamStatus): number {
    const all = [...this.connections];
    for (const c of all) c.fail(status.code, status.details, 'info');
    return all.length;
  }

  /** Stops pushing and ends every stream with UNAVAILABLE. */
  close(): void {
    this.unsubscribe();
    this.dropStreams({ code: grpc.status.UNAVAILABLE, details: 'control plane shutting down' });
  }

  /** @internal */
  newNonce(): string {
    this.nonceCount += 1;
    return `${this.noncePrefix}-${this.nonceCount}`;
  }

  /** @internal */
  systemVersion(): string {
    return String(this.changeCount);
  }

  /** @internal */
  forget(conn: AdsConnection): void {
    if (this.connections.delete(conn)) this.options.observer?.onStreamClose?.(conn.info());
  }

  private accept(call: AdsCall): void {
    const id = this.nextStreamId++;
    const log = this.options.logger.child({ component: 'ads', stream: id });
    let caller: Caller | undefined;
    const auth = authenticate(call.metadata, this.options.tokens, this.options.clusterId);
    if (auth.ok) caller = auth.caller;
    const conn = new AdsConnection(id, call, this, log, caller);
    this.connections.add(conn);
    this.options.observer?.onStreamOpen?.(conn.info());
    if (!auth.ok && this.options.auth === 'required') {
      // istiod answers "authentication failure" and logs the details; we say why, too.
      conn.fail(grpc.status.UNAUTHENTICATED, `authentication failure: ${auth.reason}`, 'warn');
      return;
    }
    log.info({ peer: call.getPeer(), caller: caller ? callerSpiffeId(caller, this.options.trustDomain) : undefined }, 'ADS stream opened');
    conn.start();
  }

  private push(changes: readonly MeshChange[]): void {
    this.changeCount += 1;
    for (const conn of [...this.connections]) {
      for (const change of changes) conn.pushType(change.typeUrl);
    }
  }
}

/** Nonces remembered per type, to tell a current ACK from an unknown one. */
const REMEMBERED_NONCES = 32;

interface TypeState {
  readonly subscription: TypeSubscription;
  readonly nonces: string[];
  lastNonceSent: string;
  lastNonceAcked: string;
  lastError: string;
}

class AdsConnection {
  private node: Node | undefined;
  private readonly types = new Map<WdsTypeUrl, TypeState>();
  private readonly ignoredTypes = new Set<string>();
  private closed = false;

  constructor(
    readonly id: number,
    private readonly call: AdsCall,
    private readonly service: AdsService,
    private readonly log: Logger,
    private readonly caller: Caller | undefined,
  ) {
    const cleanup = () => this.cleanup();
    call.on('cancelled', cleanup);
    call.on('close', cleanup);
    call.on('error', cleanup);
  }

  info(): AdsStreamInfo {
    return { id: this.id, peer: this.call.getPeer(), nodeId: this.node?.id ?? '', caller: this.caller };
  }

  subscriptionStatus(): AdsSubscriptionStatus[] {
    return [...this.types].map(([typeUrl, t]) => ({
      typeUrl,
      wildcard: t.subscription.isWildcard,
      subscribed: t.subscription.subscribedNames(),
      known: new Map(t.subscription.knownVersions()),
      lastNonceSent: t.lastNonceSent,
      lastNonceAcked: t.lastNonceAcked,
      lastError: t.lastError,
    }));
  }

  start(): void {
    this.call.on('data', (request: DeltaDiscoveryRequest) => {
      try {
        this.handle(request);
      } catch (err) {
        this.log.error({ err }, 'internal error handling a DeltaDiscoveryRequest');
        this.fail(grpc.status.INTERNAL, `internal error: ${err instanceof Error ? err.message : String(err)}`, 'error');
      }
    });
    // The client half-closed: finish our side with OK (istiod returns nil).
    this.call.on('end', () => {
      if (this.closed) return;
      this.log.info('ADS stream ended by the client');
      this.closed = true;
      this.call.end();
      this.service.forget(this);
    });
  }

  /** Ends the stream with a status (idempotent). */
  fail(code: grpc.status, details: string, level: 'info' | 'warn' | 'error'): void {
    if (this.closed) return;
    this.closed = true;
    this.log[level]({ code: grpc.status[code], details }, 'ending ADS stream');
    this.call.emit('error', { code, details });
    this.service.forget(this);
  }

  /** Sends whatever this stream is missing for a changed type. */
  pushType(typeUrl: WdsTypeUrl): void {
    const t = this.types.get(typeUrl);
    if (!t || this.closed) return;
    const plan = t.subscription.plan(this.service.options.state, this.context());
    if (plan.resources.length === 0 && plan.removed.length === 0) return;
    this.send(t, plan);
  }

  private cleanup(): void {
    this.closed = true;
    this.service.forget(this);
  }

  private context(): SubscriberContext {
    return { nodeName: metadataString(this.node?.metadata, 'NODE_NAME') };
  }

  private handle(request: DeltaDiscoveryRequest): void {
    if (this.closed) return;
    const info = this.info();
    this.service.options.observer?.onRequest?.(info, request);

    if (!this.node) {
      if (!request.node || request.node.id === '') {
        this.fail(
          grpc.status.INVALID_ARGUMENT,
          'missing node information: the first DeltaDiscoveryRequest on a stream must carry node.id',
          'warn',
        );
        return;
      }
      const denied = this.authorize(request.node);
      if (denied) {
        this.fail(grpc.status.PERMISSION_DENIED, denied, 'warn');
        return;
      }
      this.node = request.node;
      this.log.info({ node: request.node.id }, 'new delta connection');
    }

    if (request.typeUrl === '') {
      this.fail(grpc.status.INVALID_ARGUMENT, 'DeltaDiscoveryRequest.type_url is required', 'warn');
      return;
    }
    const typeUrl = request.typeUrl;
    if (!isWdsTypeUrl(typeUrl)) {
      if (!this.ignoredTypes.has(typeUrl)) {
        this.ignoredTypes.add(typeUrl);
        this.log.warn({ typeUrl }, 'ignoring a subscription to a type this control plane does not serve');
      }
      return;
    }

    const existing = this.types.get(typeUrl);
    if (request.errorDetail) {
      const detail = request.errorDetail;
      if (existing) existing.lastError = detail.message;
      this.log.warn({ typeUrl, nonce: request.responseNonce, code: detail.code, message: detail.message }, 'NACK');
      this.service.options.observer?.onNack?.({ streamId: this.id, typeUrl, nonce: request.responseNonce, errorDetail: detail });
      return;
    }
    if (request.responseNonce !== '' && existing) {
      if (existing.nonces.includes(request.responseNonce)) {
        existing.lastNonceAcked = request.responseNonce;
        existing.lastError = '';
        this.service.options.observer?.onAck?.({ streamId: this.id, typeUrl, nonce: request.responseNonce });
      } else {
        this.log.debug({ typeUrl, nonce: request.responseNonce }, 'request with an unknown or expired nonce');
      }
    }

    const state = this.service.options.state;
    if (!existing) {
      const t: TypeState = {
        subscription: new TypeSubscription(typeUrl, request),
        nonces: [],
        lastNonceSent: '',
        lastNonceAcked: '',
        lastError: '',
      };
      this.types.set(typeUrl, t);
      this.log.debug(
        { typeUrl, wildcard: t.subscription.isWildcard, initial: Object.keys(request.initialResourceVersions).length },
        'subscribed',
      );
      // Always answer the first request for a type, even with nothing.
      this.send(t, t.subscription.plan(state, this.context()));
      return;
    }
    const changed = existing.subscription.update(request, state, this.context());
    if (!changed && request.resourceNamesSubscribe.length === 0) return;
    const plan = existing.subscription.plan(state, this.context());
    // A subscribe is always answered (an on-demand caller waits for it); an
    // unsubscribe only when it leaves something to send.
    if (request.resourceNamesSubscribe.length === 0 && plan.resources.length === 0 && plan.removed.length === 0) return;
    this.send(existing, plan);
  }

  /** istiod `checkConnectionIdentity`: the caller must match NAMESPACE / SERVICE_ACCOUNT metadata. */
  private authorize(node: Node): string | undefined {
    if (!this.caller) return undefined;
    const namespace = metadataString(node.metadata, 'NAMESPACE') ?? '';
    const serviceAccount = metadataString(node.metadata, 'SERVICE_ACCOUNT') ?? '';
    if (namespace !== '' && namespace !== this.caller.namespace) return this.denial(namespace, serviceAccount);
    if (serviceAccount !== '' && serviceAccount !== this.caller.serviceAccount) return this.denial(namespace, serviceAccount);
    return undefined;
  }

  private denial(namespace: string, serviceAccount: string): string {
    const id = this.caller ? callerSpiffeId(this.caller, this.service.options.trustDomain) : '';
    return `authorization failed: no identities ([${id}]) matched ${namespace}/${serviceAccount}`;
  }

  private send(t: TypeState, plan: ResponsePlan): void {
    const nonce = this.service.newNonce();
    const response = create(DeltaDiscoveryResponseSchema, {
      typeUrl: t.subscription.typeUrl,
      nonce,
      systemVersionInfo: this.service.systemVersion(),
      resources: plan.resources.map((r) =>
        create(ResourceSchema, { name: r.name, version: r.version, aliases: [...r.aliases], resource: r.resource }),
      ),
      removedResources: [...plan.removed],
    });
    t.subscription.commit(plan, this.service.options.state);
    t.lastNonceSent = nonce;
    t.nonces.push(nonce);
    if (t.nonces.length > REMEMBERED_NONCES) t.nonces.shift();
    this.log.debug(
      { typeUrl: response.typeUrl, nonce, resources: plan.resources.length, removed: plan.removed.length },
      'PUSH',
    );
    this.call.write(response);
    this.service.options.observer?.onResponse?.(this.info(), response);
  }
}

function metadataString(metadata: JsonObject | undefined, key: string): string | undefined {
  const v = metadata?.[key];
  return typeof v === 'string' ? v : undefined;
}

function toBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
