/**
 * One HTTP request's data path, as named stages read top to bottom in
 * `serveRequest` (Envoy's connection manager → filter chain → router, as
 * Istio builds it for a waypoint, waypoint.md §2.2-2.4):
 *
 *   canonicalize → route → local replies → request filters → backend pick →
 *   forward → response filters → respond → record
 *
 * - canonicalize (canonicalize.ts): normalized path, hop-by-hop and forgeable
 *   identity headers removed, x-request-id, x-forwarded-proto;
 * - route: selectRoute on the RouteTable taken once for this request
 *   (service-addressed; workload-addressed traffic has no routes);
 * - local replies: no match → 404 NR; RequestRedirect → 3xx with Location;
 *   a direct response → its status (Istio's 500 for all-zero weights);
 * - request filters: the rule's RequestHeaderModifiers, URLRewrite (path,
 *   with `x-envoy-original-path`, and host), mirrors (fire-and-forget, each
 *   with its percentage, authority `<host>-shadow` as Envoy sends shadows);
 * - backend pick: pickWeighted, then the backend's own header filters;
 *   no route attached → the service's own endpoints on the same port with
 *   Istio's DEFAULT_RETRY_POLICY;
 * - forward: the upstream Forwarder (endpoint choice, HBONE, retries and
 *   timeouts are the upstream side's); a failure becomes the error table's
 *   local reply;
 * - response filters: hop-by-hop removed, `server: istio-envoy` (Istio's
 *   OVERWRITE), x-envoy-upstream-service-time, the rule's and the backend's
 *   ResponseHeaderModifiers;
 * - record: exactly one HttpRequestRecord per request to RequestTelemetry,
 *   whatever the outcome (also for refusals before routing).
 *
 * Invariants: every request gets exactly one answer (a response, a local
 * reply, or a reset when the response had started) and exactly one record;
 * a request refused before `forward` never sends a byte upstream; the route
 * table and the discovery snapshot are read once per request.
 */
import { PassThrough, type Duplex, type Readable } from 'node:stream';
import { identityToString, serviceKey, type Clock, type Identity, type Logger, type Random, type RandomBytes, type Service, type Snapshot, type Workload } from '@ambient/control';
import { proxyBidirectional } from '@ambient/dataplane';
import type { Bindings } from '../bindings.js';
import type { BackendTarget, HttpFilter } from '../resources/types.js';
import { applyHeaderModifier, HeaderList } from '../routing/headers.js';
import { DEFAULT_RETRY_POLICY, NO_RETRY_POLICY } from '../routing/retry.js';
import { redirectLocation, rewriteAuthority, rewritePath, splitAuthority } from '../routing/rewrite.js';
import { selectRoute } from '../routing/select.js';
import type { CompiledRoute, PortProtocol, RetryPolicy, RouteTable, WeightedBackend } from '../routing/types.js';
import { fromAppProtocol } from '../routing/protocol.js';
import { pickWeighted } from '../routing/weighted.js';
import type { EnvoyResponseFlag, HttpRequestRecord, PeerInfo, RequestTelemetry, TraceHeaders } from '../telemetry/types.js';
import type { ChosenEndpoint, ForwardOptions, RawHeaders, UpstreamRequest, UpstreamResponse, UpstreamTarget } from '../upstream/types.js';
import { canonicalize, type CanonicalRequest } from './canonicalize.js';
import { asL7Error, L7Error, localReplyOf, type LocalReply } from './errors.js';
import type { DownstreamRequest, DownstreamResponse, ExchangeEnd } from './exchange.js';
import { GrpcFrameCounter } from './grpc-frames.js';
import { RawHttp1Response, type ExchangeHandler } from './http1.js';
import type { TunnelTarget } from './targets.js';

/** A WebSocket upgrade asks the upstream side for a 101 and the upgraded stream (see the report on the contract). */
export type PipelineUpstreamRequest = UpstreamRequest & { readonly upgrade?: 'websocket' | undefined };
type PipelineUpstreamResponse = UpstreamResponse & { readonly upgraded?: Duplex | undefined };
/** Workload-addressed traffic pins the endpoint to the addressed workload. */
export type PipelineUpstreamTarget = UpstreamTarget & { readonly workload?: Workload | undefined };

/** What forward() resolves with (upstream/types.ts ForwardOutcome, as far as the pipeline reads it); it never rejects. */
export type ForwardResult =
  | { readonly kind: 'response'; readonly response: PipelineUpstreamResponse; readonly flags: readonly EnvoyResponseFlag[] }
  | { readonly kind: 'failure'; readonly error: L7Error; readonly attempts: number; readonly endpoint: ChosenEndpoint | undefined };

/** What the pipeline needs of the upstream side (upstream/forwarder.ts Forwarder). */
export interface UpstreamForwarder {
  forward(req: PipelineUpstreamRequest, target: PipelineUpstreamTarget, options: ForwardOptions): Promise<ForwardResult>;
  openTcp(target: PipelineUpstreamTarget, signal?: AbortSignal): Promise<
    | { readonly kind: 'tunnel'; readonly stream: Duplex; readonly endpoint: ChosenEndpoint }
    | { readonly kind: 'failure'; readonly error: L7Error; readonly endpoint: ChosenEndpoint | undefined }
  >;
}

export interface PipelineDeps {
  readonly clock: Clock;
  readonly random: Random;
  readonly randomBytes: RandomBytes;
  readonly log: Logger;
  /** The current compiled routes (read once per request). */
  readonly routes: () => RouteTable;
  /** The current discovery snapshot (read once per request) and the bindings computed from it. */
  readonly snapshot: () => Snapshot;
  readonly bindings: () => Bindings;
  readonly forwarder: UpstreamForwarder;
  readonly telemetry: RequestTelemetry;
  /** The waypoint's own identity (XFCC `By=`). */
  readonly identity: Identity;
  /** `ambient.istio.io/xfcc-include-client-identity: "true"` on the Gateway. */
  readonly xfccClientIdentity: boolean;
  /** The cluster's DNS domain (`cluster.local`): backendRef Service names become `<name>.<ns>.svc.<domain>`. */
  readonly clusterDomain: string;
  /** Bytes a mirror may lag behind the request body before it is dropped (Envoy buffers shadows; we bound it). */
  readonly mirrorBufferBytes?: number;
}

/** One tunnel's facts, fixed for all its requests. */
export interface TunnelContext {
  readonly log: Logger;
  readonly target: Exclude<TunnelTarget, { kind: 'refused' }>;
  /** The client: the peer certificate's identity (nothing in a request changes it) and its workload by IP. */
  readonly source: PeerInfo;
  readonly peerIdentity: Identity;
  /** The CONNECT authority (DOWNSTREAM_LOCAL_ADDRESS). */
  readonly downstreamLocal: string;
  /** The client's address (DOWNSTREAM_REMOTE_ADDRESS). */
  readonly downstreamRemote: string;
}

const SERVER_NAME = 'istio-envoy';
const DEFAULT_MIRROR_BUFFER_BYTES = 1024 * 1024;
/** Response headers never passed on (connection-specific), whatever the downstream protocol. */
const RESPONSE_HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'server']);

/** The pipeline bound to one tunnel, for http1.ts / http2.ts. */
export function exchangeHandler(deps: PipelineDeps, ctx: TunnelContext): ExchangeHandler {
  return {
    handle: (request, response) => {
      serveRequest(deps, ctx, request, response).catch((err: unknown) => lastResort(ctx, response, err));
    },
    refuse: (request, response, error) => {
      refuseRequest(deps, ctx, request, response, error).catch((err: unknown) => lastResort(ctx, response, err));
    },
    upgrade: (request, socket, head) => {
      serveUpgrade(deps, ctx, request, socket, head).catch((err: unknown) => {
        ctx.log.error({ err: err instanceof Error ? err.message : String(err) }, 'WebSocket upgrade failed unexpectedly');
        socket.destroy();
      });
    },
  };
}

function lastResort(ctx: TunnelContext, response: DownstreamResponse, err: unknown): void {
  ctx.log.error({ err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'request pipeline failed unexpectedly');
  if (!response.headersSent) sendLocalReply(response, localReplyOf(asL7Error(err)), []);
  else response.reset();
}

// ---------------------------------------------------------------------------
// The record

/** What is known so far of one request, finished into its HttpRequestRecord. */
class RequestRecord {
  readonly startMs: number;
  readonly #t0: number;
  method: string;
  path: string;
  authority: string | undefined;
  userAgent: string | undefined;
  requestId: string | undefined;
  forwardedFor: string | undefined;
  grpc = false;
  responseCode = 0;
  grpcStatus: number | undefined;
  readonly flags: EnvoyResponseFlag[] = [];
  details = '';
  transportFailureReason: string | undefined;
  upstreamServiceTimeMs: number | undefined;
  requestMessages: GrpcFrameCounter | undefined;
  responseMessages: GrpcFrameCounter | undefined;
  destination: PeerInfo = { identity: undefined, workload: undefined };
  destinationService: Service | undefined;
  upstreamHost: string | undefined;
  upstreamCluster: string | undefined;
  routeName: string | undefined;
  /** Bytes relayed after a WebSocket upgrade (client → backend, backend → client). */
  upgradeReceived = 0;
  upgradeSent = 0;
  trace: TraceHeaders | undefined;
  /** A response (local or from upstream) has been started for this request. */
  answered = false;

  constructor(
    private readonly deps: PipelineDeps,
    private readonly ctx: TunnelContext,
    private readonly request: DownstreamRequest,
    private readonly response: DownstreamResponse,
  ) {
    this.startMs = deps.clock.now();
    this.#t0 = deps.clock.monotonic();
    this.method = request.method;
    this.path = request.target;
    this.authority = request.authority;
  }

  reply(reply: LocalReply): void {
    this.responseCode = reply.status;
    for (const f of reply.flags) if (!this.flags.includes(f)) this.flags.push(f);
    this.details = reply.details;
    this.transportFailureReason = reply.transportFailureReason;
  }

  endpoint(endpoint: ChosenEndpoint | undefined): void {
    if (endpoint === undefined) return;
    this.destination = { identity: endpoint.identity, workload: endpoint.workload };
    this.destinationService = endpoint.service;
    this.upstreamHost = endpoint.address;
  }

  /** Waits for the exchange to be over on the wire, then hands the record over (once). */
  async finish(): Promise<void> {
    const end = await this.response.done;
    this.ended(end);
    const record: HttpRequestRecord = {
      kind: 'http',
      startMs: this.startMs,
      durationMs: Math.max(0, this.deps.clock.monotonic() - this.#t0),
      requestProtocol: this.grpc ? 'grpc' : 'http',
      httpVersion: this.request.httpVersion,
      method: this.method,
      path: this.path,
      authority: this.authority,
      userAgent: this.userAgent,
      requestId: this.requestId,
      forwardedFor: this.forwardedFor,
      responseCode: this.responseCode,
      grpcStatus: this.grpcStatus,
      flags: this.flags,
      responseCodeDetails: this.details,
      upstreamTransportFailureReason: this.transportFailureReason,
      requestBytes: this.request.headerBytes + (this.request.body?.bytes ?? 0) + this.upgradeReceived,
      responseBytes: this.response.bytesSent() + this.upgradeSent,
      requestBodyBytes: (this.request.body?.bytes ?? 0) + this.upgradeReceived,
      responseBodyBytes: this.response.bodyBytesSent() + this.upgradeSent,
      upstreamServiceTimeMs: this.upstreamServiceTimeMs,
      requestMessages: this.requestMessages?.count ?? 0,
      responseMessages: this.responseMessages?.count ?? 0,
      source: this.ctx.source,
      destination: this.destination,
      destinationService: this.destinationService,
      upstreamHost: this.upstreamHost,
      upstreamCluster: this.upstreamCluster,
      downstreamLocal: this.ctx.downstreamLocal,
      downstreamRemote: this.ctx.downstreamRemote,
      routeName: this.routeName,
      trace: this.trace,
    };
    try {
      this.deps.telemetry.httpFinished(record);
    } catch (err) {
      this.ctx.log.warn({ err: err instanceof Error ? err.message : String(err) }, 'telemetry failed on a request record');
    }
  }

  /** The client left before the response was complete: DC (HTTP/1.1) or DR (an HTTP/2 reset), as Envoy records it. */
  private ended(end: ExchangeEnd): void {
    if (end !== 'client-gone') return;
    const code = this.request.httpVersion === 'HTTP/2' ? 'DOWNSTREAM_REMOTE_RESET' : 'DOWNSTREAM_REMOTE_DISCONNECT';
    const reply = localReplyOf(new L7Error(code, 'the client went away'));
    for (const f of reply.flags) if (!this.flags.includes(f)) this.flags.push(f);
    if (!this.response.headersSent) {
      this.responseCode = 0;
      this.details = reply.details;
    }
  }
}

// ---------------------------------------------------------------------------
// Local replies

/** The head of a local reply: Envoy's content-length, content-type for a body, and the server name. */
function localReplyHeaders(body: string, extra: RawHeaders): Array<readonly [string, string]> {
  const out: Array<readonly [string, string]> = [];
  if (body.length > 0) out.push(['content-type', 'text/plain']);
  out.push(['content-length', String(Buffer.byteLength(body))]);
  out.push(...extra);
  out.push(['server', SERVER_NAME]);
  return out;
}

function sendLocalReply(response: DownstreamResponse, reply: LocalReply, extra: RawHeaders): void {
  if (reply.status === 0) {
    response.reset();
    return;
  }
  if (response.headersSent) {
    response.reset();
    return;
  }
  const empty = reply.body.length === 0;
  response.respond(reply.status, localReplyHeaders(reply.body, extra), empty);
  if (!empty) {
    response.write(Buffer.from(reply.body));
    response.end([]);
  }
}

/** Answers a request refused before routing (codec errors, limits), with its record. */
async function refuseRequest(deps: PipelineDeps, ctx: TunnelContext, request: DownstreamRequest, response: DownstreamResponse, error: L7Error): Promise<void> {
  const record = new RequestRecord(deps, ctx, request, response);
  const reply = localReplyOf(error);
  ctx.log[reply.logLevel]({ code: error.code, status: reply.status, err: error.message }, 'request refused');
  record.reply(reply);
  response.closeAfter();
  sendLocalReply(response, reply, []);
  await record.finish();
}

// ---------------------------------------------------------------------------
// The stages

/** What the route stage decided for a request that goes upstream. */
interface Plan {
  readonly route: CompiledRoute | undefined;
  readonly backend: WeightedBackend | undefined;
  readonly service: Service;
  readonly servicePort: number;
  readonly retry: RetryPolicy;
  readonly timeoutMs: number;
  readonly workload: Workload | undefined;
  /** The backend port's protocol (decides HTTP/2 upstream). */
  readonly protocol: PortProtocol;
}

type RouteOutcome =
  | { readonly kind: 'forward'; readonly plan: Plan }
  | { readonly kind: 'reply'; readonly reply: LocalReply; readonly extra: RawHeaders; readonly service: Service | undefined };

async function serveRequest(deps: PipelineDeps, ctx: TunnelContext, request: DownstreamRequest, response: DownstreamResponse): Promise<void> {
  const record = new RequestRecord(deps, ctx, request, response);
  const finished = record.finish();
  const unwatch = watchRequestFailure(ctx, record, response);
  void finished.then(unwatch);
  const table = deps.routes();
  const snapshot = deps.snapshot();

  // 1. canonicalize
  const canonical = canonicalize(request, {
    randomBytes: deps.randomBytes,
    xfcc: deps.xfccClientIdentity ? `By=${identityToString(deps.identity)};URI=${identityToString(ctx.peerIdentity)}` : undefined,
    upgrade: false,
  });
  if (canonical instanceof L7Error) {
    replyWith(record, response, localReplyOf(canonical), []);
    request.body?.resume();
    return finished;
  }
  describeRequest(record, canonical);
  if (canonical.grpc && request.body !== undefined) record.requestMessages = request.body.countGrpcMessages();

  // 2. route, 3. local replies, 5. backend pick
  const routed = routeRequest(deps, ctx, table, snapshot, canonical);
  if (routed.kind === 'reply') {
    record.destinationService = routed.service;
    replyWith(record, response, routed.reply, routed.extra);
    request.body?.resume();
    return finished;
  }
  const { plan } = routed;

  // 4. request filters (the rule's, then the backend's)
  const upstreamPath = applyRequestFilters(plan, canonical);
  const upstreamAuthority = rewriteAuthority(plan.route?.rewrite, canonical.authority);
  const upstreamRequest: PipelineUpstreamRequest = {
    method: request.method,
    path: upstreamPath,
    authority: upstreamAuthority,
    headers: canonical.headers.entries(),
    body: request.body,
    protocol: upstreamProtocol(plan, request),
    grpc: canonical.grpc,
  };
  const mainBody = fireMirrors(deps, ctx, plan, snapshot, upstreamRequest);
  const body = mainBody ?? request.body;

  // 6. forward
  const target: PipelineUpstreamTarget = plan.workload === undefined
    ? { service: plan.service, servicePort: plan.servicePort }
    : { service: plan.service, servicePort: plan.servicePort, workload: plan.workload };
  const signal = AbortSignal.any([response.clientGone, response.requestFailure]);
  const outcome = await deps.forwarder.forward(mainBody === undefined ? upstreamRequest : { ...upstreamRequest, body: mainBody }, target, { retry: plan.retry, timeoutMs: plan.timeoutMs, signal });
  if (outcome.kind === 'failure') {
    record.endpoint(outcome.endpoint);
    record.destinationService ??= plan.service;
    const reply = localReplyOf(outcome.error);
    if (reply.status !== 0) ctx.log[reply.logLevel]({ code: outcome.error.code, attempts: outcome.attempts, err: outcome.error.message }, 'upstream request failed');
    replyWith(record, response, reply, []);
    body?.resume();
    return finished;
  }
  for (const f of outcome.flags) record.flags.push(f);

  // 7. response filters, 8. respond
  await respondUpstream(deps, ctx, record, response, plan, outcome.response, canonical.grpc);
  return finished;
}

function describeRequest(record: RequestRecord, canonical: CanonicalRequest): void {
  record.path = canonical.query === undefined ? canonical.path : `${canonical.path}?${canonical.query}`;
  record.authority = canonical.authority;
  record.userAgent = canonical.headers.get('user-agent');
  record.requestId = canonical.requestId;
  record.forwardedFor = canonical.headers.get('x-forwarded-for');
  record.grpc = canonical.grpc;
  record.trace = traceHeadersOf(canonical.headers);
}

const TRACE_HEADERS = ['traceparent', 'tracestate', 'b3', 'x-b3-traceid', 'x-b3-spanid', 'x-b3-parentspanid', 'x-b3-sampled', 'x-b3-flags'] as const;

/** The trace-context headers as received, for the span (they are forwarded unchanged). */
function traceHeadersOf(headers: HeaderList): TraceHeaders | undefined {
  let out: Record<string, string> | undefined;
  for (const name of TRACE_HEADERS) {
    const value = headers.get(name);
    if (value !== undefined) (out ??= {})[name] = value;
  }
  return out;
}

/** Answers with a local reply, unless this request was already answered (by a request failure). */
function replyWith(record: RequestRecord, response: DownstreamResponse, reply: LocalReply, extra: RawHeaders): void {
  if (record.answered) return;
  record.answered = true;
  record.reply(reply);
  sendLocalReply(response, reply, extra);
}

/**
 * A request that fails after it was handed over (broken body framing, the
 * request timeout) is answered with its error if nothing was answered yet,
 * else its response is reset; the forward in flight is aborted.
 */
function watchRequestFailure(ctx: TunnelContext, record: RequestRecord, response: DownstreamResponse): () => void {
  const signal = response.requestFailure;
  const onFailure = () => {
    const error = asL7Error(signal.reason);
    ctx.log.debug({ code: error.code, err: error.message }, 'the request failed while it was being forwarded');
    if (record.answered) {
      const reply = localReplyOf(error);
      for (const f of reply.flags) if (!record.flags.includes(f)) record.flags.push(f);
      response.reset();
      return;
    }
    response.closeAfter();
    replyWith(record, response, localReplyOf(error), []);
  };
  signal.addEventListener('abort', onFailure, { once: true });
  return () => signal.removeEventListener('abort', onFailure);
}

/** Stages 2, 3 and 5: the route, a local reply, or the backend to forward to. */
function routeRequest(deps: PipelineDeps, ctx: TunnelContext, table: RouteTable, snapshot: Snapshot, canonical: CanonicalRequest): RouteOutcome {
  const target = ctx.target;
  if (target.kind === 'workload') {
    // Istio's direct-http chain: no routes; the addressed workload itself.
    if (target.service === undefined || target.servicePort === undefined) {
      return { kind: 'reply', reply: localReplyOf(new L7Error('CLUSTER_NOT_FOUND', `workload ${target.workload.uid} has no service port targeting ${target.port}`)), extra: [], service: undefined };
    }
    return {
      kind: 'forward',
      plan: {
        route: undefined, backend: undefined, service: target.service, servicePort: target.servicePort.servicePort,
        retry: DEFAULT_RETRY_POLICY, timeoutMs: 0, workload: target.workload, protocol: target.protocol,
      },
    };
  }
  const service = target.service;
  const servicePort = target.port.servicePort;
  const selection = selectRoute(table.portRoutes({ namespace: service.namespace, hostname: service.hostname }, servicePort), canonical.view);
  if (selection.kind === 'no-match') {
    return { kind: 'reply', reply: localReplyOf(new L7Error('ROUTE_NOT_FOUND', 'no route matched')), extra: [], service: undefined };
  }
  if (selection.kind === 'default') {
    return {
      kind: 'forward',
      plan: { route: undefined, backend: undefined, service, servicePort, retry: DEFAULT_RETRY_POLICY, timeoutMs: 0, workload: undefined, protocol: target.protocol },
    };
  }
  const route = selection.route;
  const action = route.action;
  if (action.kind === 'redirect') {
    const { host } = splitAuthority(canonical.authority);
    const redirect = redirectLocation(action.redirect, route.match, { scheme: 'http', host, port: servicePort, path: canonical.path, query: canonical.query });
    const headers = HeaderList.fromPairs([['location', redirect.location]]);
    for (const m of route.responseHeaders) applyHeaderModifier(headers, m);
    const reply: LocalReply = { ...localReplyOf(new L7Error('DIRECT_RESPONSE', 'redirect', { status: redirect.status, body: '' })) };
    return { kind: 'reply', reply, extra: headers.entries(), service: undefined };
  }
  if (action.kind === 'direct') {
    return { kind: 'reply', reply: localReplyOf(new L7Error('DIRECT_RESPONSE', 'direct response', { status: action.status, body: action.body })), extra: [], service: undefined };
  }
  const backend = pickWeighted(action.backends, deps.random);
  if (backend === undefined) {
    return { kind: 'reply', reply: localReplyOf(new L7Error('DIRECT_RESPONSE', 'no backend with a weight', { status: 500, body: '' })), extra: [], service: undefined };
  }
  if (backend.invalid !== undefined) {
    return { kind: 'reply', reply: localReplyOf(new L7Error('CLUSTER_NOT_FOUND', `backend not served: ${backend.invalid.message}`)), extra: [], service: undefined };
  }
  const backendService = resolveBackend(snapshot, backend.target, deps.clusterDomain);
  if (backendService === undefined || !backendService.ports.some((p) => p.servicePort === backend.port)) {
    const name = `${backend.target.kind} ${backend.target.namespace}/${backend.target.name}:${backend.port}`;
    return { kind: 'reply', reply: localReplyOf(new L7Error('CLUSTER_NOT_FOUND', `backend ${name} is not a known service port`)), extra: [], service: undefined };
  }
  return {
    kind: 'forward',
    plan: {
      route, backend, service: backendService, servicePort: backend.port, retry: route.retry, timeoutMs: route.timeoutMs, workload: undefined,
      protocol: portProtocolIn(table, backendService, backend.port),
    },
  };
}

/** The Service a backendRef names (Service by name in its namespace; Hostname / ServiceEntry by host). */
export function resolveBackend(snapshot: Snapshot, target: BackendTarget, clusterDomain: string): Service | undefined {
  switch (target.kind) {
    case 'Service':
      return snapshot.service(`${target.namespace}/${target.name}.${target.namespace}.svc.${clusterDomain}`);
    case 'Hostname':
    case 'ServiceEntry': {
      const byHost = snapshot.servicesByHostname(target.name);
      return byHost.find((s) => s.namespace === target.namespace) ?? byHost[0];
    }
    case 'Unsupported':
      return undefined;
  }
}

/** Stage 4: header modifiers and URLRewrite; returns the upstream path with the query. */
function applyRequestFilters(plan: Plan, canonical: CanonicalRequest): string {
  const headers = canonical.headers;
  const route = plan.route;
  let path = canonical.path;
  if (route !== undefined) {
    for (const m of route.requestHeaders) applyHeaderModifier(headers, m);
    if (route.rewrite?.path !== undefined) {
      const original = canonical.query === undefined ? canonical.path : `${canonical.path}?${canonical.query}`;
      path = rewritePath(route.rewrite.path, route.match, canonical.path);
      headers.set('x-envoy-original-path', original);
    }
  }
  if (plan.backend !== undefined) applyFilters(headers, plan.backend.filters, 'RequestHeaderModifier');
  return canonical.query === undefined ? path : `${path}?${canonical.query}`;
}

function applyFilters(headers: HeaderList, filters: readonly HttpFilter[], type: 'RequestHeaderModifier' | 'ResponseHeaderModifier'): void {
  for (const f of filters) if (f.type === type) applyHeaderModifier(headers, f.modifier);
}

/** A service port's protocol: the compiled table's (the Service resource), else workload discovery's. */
function portProtocolIn(table: RouteTable, service: Service, servicePort: number): PortProtocol {
  const compiled = table.portRoutes({ namespace: service.namespace, hostname: service.hostname }, servicePort);
  if (compiled !== undefined && compiled.protocol !== 'unknown') return compiled.protocol;
  const port = service.ports.find((p) => p.servicePort === servicePort);
  return port === undefined ? 'unknown' : fromAppProtocol(port.appProtocol);
}

/** HTTP/2 to ports declared http2 or grpc; otherwise the downstream's own protocol. */
function upstreamProtocol(plan: Plan, request: DownstreamRequest): 'http1' | 'http2' {
  if (plan.protocol === 'http2' || plan.protocol === 'grpc') return 'http2';
  return request.httpVersion === 'HTTP/2' ? 'http2' : 'http1';
}

/**
 * RequestMirror: a copy of the request to each mirror backend chosen by its
 * percentage, never awaited, authority `<host>-shadow` (Envoy's shadow
 * suffix). Returns the body the main request must read instead of the
 * original when a mirror copies it (undefined: unchanged).
 */
function fireMirrors(deps: PipelineDeps, ctx: TunnelContext, plan: Plan, snapshot: Snapshot, request: PipelineUpstreamRequest): Readable | undefined {
  const mirrors = plan.route?.mirrors;
  if (mirrors === undefined || mirrors.length === 0) return undefined;
  const targets: Array<{ service: Service; port: number }> = [];
  for (const mirror of mirrors) {
    if (!(mirror.percent >= 100 || deps.random() * 100 < mirror.percent)) continue;
    const service = resolveBackend(snapshot, mirror.backendRef, deps.clusterDomain);
    const port = mirror.backendRef.port ?? (service?.ports.length === 1 ? service.ports[0]?.servicePort : undefined);
    if (service === undefined || port === undefined) {
      ctx.log.debug({ mirror: `${mirror.backendRef.namespace}/${mirror.backendRef.name}` }, 'mirror backend not found; not mirrored');
      continue;
    }
    targets.push({ service, port });
  }
  if (targets.length === 0) return undefined;
  const tee = request.body === undefined ? undefined : teeBody(request.body, targets.length, deps.mirrorBufferBytes ?? DEFAULT_MIRROR_BUFFER_BYTES);
  const { host, port: authorityPort } = splitAuthority(request.authority);
  const authority = `${host}-shadow${authorityPort === undefined ? '' : `:${authorityPort}`}`;
  targets.forEach(({ service, port }, i) => {
    const shadow: PipelineUpstreamRequest = { ...request, authority, body: tee?.copies[i] };
    deps.forwarder
      .forward(shadow, { service, servicePort: port }, { retry: NO_RETRY_POLICY, timeoutMs: plan.timeoutMs, signal: new AbortController().signal })
      .then((outcome) => {
        if (outcome.kind === 'response') outcome.response.body.resume();
      })
      .catch(() => {});
  });
  return tee?.main;
}

/**
 * Splits a request body: the main request reads `main` (the source's pace
 * follows it), each mirror its copy; a mirror that falls `limit` bytes
 * behind is dropped, never slowing the main request.
 */
function teeBody(source: Readable, copies: number, limit: number): { main: PassThrough; copies: PassThrough[] } {
  const main = new PassThrough();
  const out: PassThrough[] = [];
  for (let i = 0; i < copies; i++) out.push(new PassThrough());
  source.on('data', (chunk: Buffer) => {
    for (const copy of out) {
      if (copy.destroyed) continue;
      if (copy.writableLength > limit) copy.destroy();
      else copy.write(chunk);
    }
    if (!main.write(chunk)) source.pause();
  });
  main.on('drain', () => source.resume());
  source.once('end', () => {
    main.end();
    for (const copy of out) if (!copy.destroyed) copy.end();
  });
  source.once('error', (err) => {
    main.destroy(err);
    for (const copy of out) copy.destroy();
  });
  return { main, copies: out };
}

/** Stages 7 and 8: the upstream response, filtered, streamed to the client with its trailers. */
async function respondUpstream(
  deps: PipelineDeps,
  ctx: TunnelContext,
  record: RequestRecord,
  response: DownstreamResponse,
  plan: Plan,
  upstream: UpstreamResponse,
  grpc: boolean,
): Promise<void> {
  record.endpoint(upstream.endpoint);
  record.upstreamCluster = clusterName(deps, plan);
  record.routeName = plan.route?.name ?? (plan.workload === undefined ? 'default' : undefined);
  if (response.clientGone.aborted || record.answered) {
    upstream.body.destroy();
    return;
  }
  record.answered = true;
  record.responseCode = upstream.status;
  record.details = 'via_upstream';
  record.upstreamServiceTimeMs = upstream.serviceTimeMs;

  const headers = HeaderList.empty();
  let trailersOnly = false;
  for (const [name, value] of upstream.headers) {
    const lower = name.toLowerCase();
    if (RESPONSE_HOP_BY_HOP.has(lower)) continue;
    if (lower === 'grpc-status') {
      trailersOnly = true;
      record.grpcStatus = Number(value);
    }
    headers.add(lower, value);
  }
  headers.set('x-envoy-upstream-service-time', String(Math.round(upstream.serviceTimeMs)));
  headers.set('server', SERVER_NAME);
  if (plan.route !== undefined) for (const m of plan.route.responseHeaders) applyHeaderModifier(headers, m);
  if (plan.backend !== undefined) applyFilters(headers, plan.backend.filters, 'ResponseHeaderModifier');

  const body = upstream.body;
  // A gRPC trailers-only response (grpc-status in the headers) has no body.
  if (trailersOnly && grpc) {
    response.respond(upstream.status, headers.entries(), true);
    body.resume();
    return;
  }
  response.respond(upstream.status, headers.entries(), false);
  if (grpc) record.responseMessages = new GrpcFrameCounter();
  const counter = record.responseMessages;
  const onGone = () => body.destroy();
  response.clientGone.addEventListener('abort', onGone, { once: true });
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      counter?.push(chunk);
      if (!response.write(chunk)) await response.drain();
      if (response.clientGone.aborted) return;
    }
    const trailers = await upstream.trailers;
    for (const [name, value] of trailers) if (name.toLowerCase() === 'grpc-status') record.grpcStatus = Number(value);
    response.end(trailers);
  } catch (err) {
    if (response.clientGone.aborted) return;
    const error = bodyError(err);
    const reply = localReplyOf(error, true);
    record.flags.push(...reply.flags.filter((f) => !record.flags.includes(f)));
    record.details = reply.details;
    ctx.log.debug({ code: error.code, err: error.message }, 'upstream response failed after it started; resetting the client stream');
    response.reset();
  } finally {
    response.clientGone.removeEventListener('abort', onGone);
  }
}

/** A failure of an upstream body after its headers were passed on, as the upstream side reports it. */
function bodyError(err: unknown): L7Error {
  if (err instanceof L7Error) return err;
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ERR_HTTP2_STREAM_ERROR') return new L7Error('UPSTREAM_REMOTE_RESET', `the upstream reset the response stream: ${message}`, { cause: err });
  return new L7Error('UPSTREAM_CONNECTION_TERMINATION', `the upstream response ended early: ${message}`, { cause: err });
}

/** Istio's cluster names: inbound-vip|<port>|http|<host> for services this waypoint serves, else outbound|<port>||<host>. */
function clusterName(deps: PipelineDeps, plan: Plan): string {
  if (plan.workload !== undefined) return 'encap';
  const served = deps.bindings().services.has(serviceKey(plan.service));
  return served ? `inbound-vip|${plan.servicePort}|http|${plan.service.hostname}` : `outbound|${plan.servicePort}||${plan.service.hostname}`;
}

// ---------------------------------------------------------------------------
// WebSocket

/**
 * A WebSocket upgrade: routed like any request; forwarded with `upgrade`;
 * the backend's 101 is passed on and the two upgraded streams are relayed
 * (Envoy's websocket upgrade config), one record when the relay ends.
 * Anything other than a 101 is answered as a normal response and the
 * connection closed.
 */
async function serveUpgrade(deps: PipelineDeps, ctx: TunnelContext, request: DownstreamRequest, socket: Duplex, head: Buffer): Promise<void> {
  const response = new RawHttp1Response(socket, deps.clock);
  const record = new RequestRecord(deps, ctx, request, response);
  const finished = () => record.finish();
  const canonical = canonicalize(request, { randomBytes: deps.randomBytes, xfcc: undefined, upgrade: true });
  if (canonical instanceof L7Error) {
    replyWith(record, response, localReplyOf(canonical), []);
    return finished();
  }
  describeRequest(record, canonical);
  const routed = routeRequest(deps, ctx, deps.routes(), deps.snapshot(), canonical);
  if (routed.kind === 'reply') {
    replyWith(record, response, routed.reply, routed.extra);
    return finished();
  }
  const { plan } = routed;
  const path = applyRequestFilters(plan, canonical);
  const outcome = await deps.forwarder.forward(
    {
      method: request.method,
      path,
      authority: rewriteAuthority(plan.route?.rewrite, canonical.authority),
      headers: canonical.headers.entries(),
      body: undefined,
      protocol: 'http1',
      grpc: false,
      upgrade: 'websocket',
    },
    plan.workload === undefined ? { service: plan.service, servicePort: plan.servicePort } : { service: plan.service, servicePort: plan.servicePort, workload: plan.workload },
    { retry: plan.retry, timeoutMs: 0, signal: response.clientGone },
  );
  if (outcome.kind === 'failure') {
    record.endpoint(outcome.endpoint);
    replyWith(record, response, localReplyOf(outcome.error), []);
    return finished();
  }
  const upstream = outcome.response as PipelineUpstreamResponse;
  const upgraded = upstream.upgraded;
  if (upstream.status !== 101 || upgraded === undefined) {
    await respondUpstream(deps, ctx, record, response, plan, upstream, false);
    return finished();
  }
  record.endpoint(upstream.endpoint);
  record.upstreamCluster = clusterName(deps, plan);
  record.routeName = plan.route?.name ?? 'default';
  record.responseCode = 101;
  record.details = 'via_upstream';
  record.upstreamServiceTimeMs = upstream.serviceTimeMs;
  const headers = HeaderList.empty();
  for (const [name, value] of upstream.headers) {
    const lower = name.toLowerCase();
    if (lower !== 'transfer-encoding' && lower !== 'keep-alive' && lower !== 'server') headers.add(lower, value);
  }
  headers.set('server', SERVER_NAME);
  if (plan.route !== undefined) for (const m of plan.route.responseHeaders) applyHeaderModifier(headers, m);
  response.respond(101, headers.entries(), false);
  const raw = response.upgraded();
  if (head.length > 0) upgraded.write(head);
  const result = await proxyBidirectional(raw, upgraded, {
    clock: deps.clock,
    onBytes: (direction, n) => {
      if (direction === 'received') record.upgradeReceived += n;
      else record.upgradeSent += n;
    },
  });
  if (result.error !== undefined) ctx.log.debug({ err: result.error.message, side: result.error.side }, 'WebSocket relay ended abnormally');
  return finished();
}
