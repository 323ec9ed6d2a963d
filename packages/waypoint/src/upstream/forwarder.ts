/**
 * The router's upstream half (Envoy `router.cc` as Istio's waypoint runs it):
 * one request, its attempts, retries and timeouts, to the endpoints of one
 * service port; and the opaque TCP tunnel for TCP ports.
 *
 * One request, step by step:
 * 1. endpoints from the current snapshot (no usable endpoint: UH, 503
 *    "no healthy upstream");
 * 2. each attempt picks an endpoint (LEAST_REQUEST; a retry prefers one not
 *    tried yet, Istio's previous_hosts predicate), sets
 *    `x-envoy-attempt-count` (Istio's virtual hosts include it) and, when a
 *    timeout applies, `x-envoy-expected-rq-timeout-ms`, and starts the
 *    exchange; the request body streams to it and is kept for a retry up to
 *    the retry buffer limit (request-body.ts);
 * 3. the route timeout (0 = none) starts when the downstream request is
 *    complete and covers every attempt, the backoffs and the response body
 *    (Envoy: "until the upstream response has been completely processed");
 *    the per-try timeout (ignored when ≥ the route timeout) covers one
 *    attempt until its response headers;
 * 4. after each attempt routing/retry.ts decides (Envoy's RetryStateImpl):
 *    connect failures, resets (REFUSED_STREAM, before the request was sent),
 *    per-try timeouts, response codes and gRPC statuses in the response
 *    headers are retried as the policy's retryOn says, after Envoy's fully
 *    jittered backoff (base 25 ms, max 10×), while retries remain and the
 *    body can be replayed; a retriable outcome with no retries left is
 *    passed on with URX; overflow is never retried; a backoff that would
 *    outlast the route timeout waits for it (UT);
 * 5. the response is streamed (never buffered) with its trailers; aborting
 *    the downstream signal cancels whatever is in flight (DC).
 *
 * forward() never rejects: every failure is an L7Error (serve/errors.ts) in
 * the outcome. Mid-response failures surface as errors of the response body;
 * `bodyErrorOf` turns one into the L7Error to record.
 *
 * Which outcomes a policy retries, the backoff and the retry budget are
 * routing/retry.ts's pure decideRetry; this module drives it with the Clock.
 */
import type { Duplex } from 'node:stream';
import type { Clock, Logger, Random, Snapshot, Timer } from '@ambient/control';
import { L7Error, type L7ErrorCode } from '../serve/errors.js';
import { decideRetry, type AttemptOutcome, type RetryDecision } from '../routing/retry.js';
import type { RetryPolicy } from '../routing/types.js';
import type { EnvoyResponseFlag } from '../telemetry/types.js';
import { UpstreamResetError, type Attempt, type AttemptResponse, type ResetReason, type UpstreamConnections } from './connections.js';
import { EndpointPicker, resolveCandidates, type Candidate, type LocalInfo } from './endpoints.js';
import { ReplayableBody } from './request-body.js';
import type { ChosenEndpoint, ForwardOptions, ForwardOutcome, RawHeaders, UpstreamRequest, UpstreamTarget } from './types.js';

/** Envoy's per_connection_buffer_limit_bytes default, which bounds the retry buffer (1 MiB). */
const DEFAULT_RETRY_BUFFER_LIMIT_BYTES = 1024 * 1024;

const ATTEMPT_COUNT_HEADER = 'x-envoy-attempt-count';
const EXPECTED_TIMEOUT_HEADER = 'x-envoy-expected-rq-timeout-ms';

export interface ForwarderOptions {
  /** The current workload-discovery snapshot (taken once per attempt). */
  readonly snapshot: () => Snapshot;
  readonly connections: UpstreamConnections;
  /** The waypoint's network and own workload (locality). */
  readonly local: () => LocalInfo;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: Logger;
  readonly retryBufferLimitBytes?: number;
  readonly hostSelectionRetryMaxAttempts?: number;
}

export type TcpOutcome =
  | { readonly kind: 'tunnel'; readonly stream: Duplex; readonly endpoint: ChosenEndpoint }
  | { readonly kind: 'failure'; readonly error: L7Error; readonly endpoint: ChosenEndpoint | undefined };

export class Forwarder {
  readonly #o: ForwarderOptions;
  readonly #picker: EndpointPicker;
  readonly #bufferLimit: number;
  #reconciled: Snapshot | undefined;

  constructor(options: ForwarderOptions) {
    this.#o = options;
    this.#bufferLimit = options.retryBufferLimitBytes ?? DEFAULT_RETRY_BUFFER_LIMIT_BYTES;
    this.#picker = new EndpointPicker({
      random: options.random,
      activeRequests: (key) => options.connections.activeRequests(key),
      ...(options.hostSelectionRetryMaxAttempts === undefined ? {} : { hostSelectionRetryMaxAttempts: options.hostSelectionRetryMaxAttempts }),
    });
  }

  /**
   * When discovery moved on since the last request, retire the connections
   * of endpoints that left it (the composition root may also call
   * connections.reconcile on every store change, which closes them sooner).
   */
  #reconcile(): void {
    const snapshot = this.#o.snapshot();
    if (snapshot === this.#reconciled) return;
    this.#reconciled = snapshot;
    this.#o.connections.reconcile(snapshot);
  }

  /** Sends `req` to an endpoint of `target` with the route's retries and timeouts. */
  forward(req: UpstreamRequest, target: UpstreamTarget, options: ForwardOptions): Promise<ForwardOutcome> {
    this.#reconcile();
    return new Exchange(this.#o, this.#picker, this.#bufferLimit, req, target, options).run();
  }

  /**
   * Opaque TCP: one tunnel to a chosen endpoint (Envoy's tcp_proxy, one
   * connect attempt). UH when there is no endpoint, UF when it fails.
   */
  async openTcp(target: UpstreamTarget, signal?: AbortSignal): Promise<TcpOutcome> {
    this.#reconcile();
    const set = resolveCandidates(this.#o.snapshot(), target, this.#o.local());
    if (set.kind === 'none') return { kind: 'failure', error: new L7Error('NO_HEALTHY_UPSTREAM', set.reason), endpoint: undefined };
    const candidate = this.#picker.pick(set);
    try {
      const stream = await this.#o.connections.openTunnel(candidate, signal);
      return { kind: 'tunnel', stream, endpoint: candidate.endpoint };
    } catch (err) {
      const reset = err instanceof UpstreamResetError ? err : new UpstreamResetError('remote connection failure', String(err));
      return { kind: 'failure', error: resetError(reset, { retried: false, limit: false }), endpoint: candidate.endpoint };
    }
  }
}

/**
 * The L7Error for a response body that failed after the headers were passed
 * on: our own timeouts and cancels carry one; an HTTP/2 reset or a closed
 * HTTP/1.1 connection from the upstream are UR / UC.
 */
export function bodyErrorOf(err: unknown): L7Error {
  if (err instanceof L7Error) return err;
  if (err instanceof UpstreamResetError) return resetError(err, { retried: false, limit: false });
  const code = (err as { code?: unknown } | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (code === 'ERR_HTTP2_STREAM_ERROR') return new L7Error('UPSTREAM_REMOTE_RESET', `the upstream reset the response stream: ${message}`, { cause: err });
  return new L7Error('UPSTREAM_CONNECTION_TERMINATION', `the upstream connection closed during the response: ${message}`, { cause: err });
}

// ---------------------------------------------------------------------------
// One request

type Interrupt = 'per-try' | 'route' | 'abort';

type Waited =
  | { readonly kind: 'response'; readonly response: AttemptResponse }
  | { readonly kind: 'reset'; readonly error: UpstreamResetError }
  | { readonly kind: 'interrupt'; readonly why: Interrupt };

class Exchange {
  readonly #o: ForwarderOptions;
  readonly #picker: EndpointPicker;
  readonly #req: UpstreamRequest;
  readonly #target: UpstreamTarget;
  readonly #policy: RetryPolicy;
  readonly #signal: AbortSignal;
  readonly #globalMs: number;
  readonly #perTryMs: number;
  readonly #body: ReplayableBody | undefined;
  readonly #attempted = new Set<string>();
  #attempts = 0;
  #firstAttemptAt = 0;
  #completeAt: number | undefined;
  #routeTimer: Timer | undefined;
  #perTryTimer: Timer | undefined;
  #terminal: Interrupt | undefined;
  #wake: ((why: Interrupt) => void) | undefined;
  #current: Attempt | undefined;
  #currentCandidate: Candidate | undefined;
  #waitingHeaders = false;
  #settled = false;

  constructor(o: ForwarderOptions, picker: EndpointPicker, bufferLimit: number, req: UpstreamRequest, target: UpstreamTarget, options: ForwardOptions) {
    this.#o = o;
    this.#picker = picker;
    this.#req = req;
    this.#target = target;
    this.#policy = options.retry;
    this.#signal = options.signal;
    this.#globalMs = Math.max(0, options.timeoutMs);
    const perTry = Math.max(0, options.retry.perTryTimeoutMs);
    this.#perTryMs = this.#globalMs > 0 && perTry >= this.#globalMs ? 0 : perTry;
    this.#body = req.body === undefined ? undefined : new ReplayableBody(req.body, options.retry.numRetries > 0 ? bufferLimit : 0);
  }

  async run(): Promise<ForwardOutcome> {
    const onAbort = () => this.#interrupt('abort');
    if (this.#signal.aborted) return this.#fail(new L7Error('DOWNSTREAM_REMOTE_DISCONNECT', 'the downstream went away before the request was sent'));
    this.#signal.addEventListener('abort', onAbort, { once: true });
    this.#firstAttemptAt = this.#o.clock.monotonic();
    if (this.#body === undefined) this.#requestComplete();
    else {
      void this.#body.complete.then(() => this.#requestComplete());
      void this.#body.failed.then(() => this.#interrupt('abort'));
    }
    try {
      const outcome = await this.#loop();
      if (outcome.kind === 'response') this.#watchResponse(outcome.response.body, onAbort);
      else this.#signal.removeEventListener('abort', onAbort);
      return outcome;
    } catch (err) {
      this.#signal.removeEventListener('abort', onAbort);
      this.#current?.cancel();
      return this.#fail(new L7Error('INTERNAL', `forwarding failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err }));
    }
  }

  async #loop(): Promise<ForwardOutcome> {
    for (;;) {
      const set = resolveCandidates(this.#o.snapshot(), this.#target, this.#o.local());
      if (set.kind === 'none') return this.#fail(new L7Error('NO_HEALTHY_UPSTREAM', set.reason));
      const candidate = this.#picker.pick(set, this.#attempted);
      this.#attempted.add(candidate.key);
      this.#attempts++;
      const attempt = this.#o.connections.startAttempt(candidate, {
        method: this.#req.method,
        path: this.#req.path,
        authority: this.#req.authority,
        headers: this.#attemptHeaders(),
        protocol: this.#req.protocol,
        hasBody: this.#body !== undefined,
        upgrade: this.#req.upgrade === 'websocket',
      });
      this.#current = attempt;
      this.#currentCandidate = candidate;
      if (this.#body !== undefined) {
        const body = this.#body;
        void attempt.sink.then((sink) => {
          if (sink !== undefined && this.#current === attempt && !this.#settled) body.attach(sink);
        });
      }
      this.#waitingHeaders = true;
      this.#armPerTry();
      const waited = await this.#wait(attempt);
      this.#waitingHeaders = false;
      this.#cancelPerTry();

      if (waited.kind === 'response') {
        const { response } = waited;
        const next = this.#decide({ kind: 'response', status: response.status, grpcStatus: grpcStatusOf(response.headers), rateLimited: hasHeader(response.headers, 'x-envoy-ratelimited') });
        if (next.kind === 'retry') {
          attempt.cancel();
          this.#body?.detach();
          this.#o.log.debug({ endpoint: candidate.endpoint.address, status: response.status, attempt: this.#attempts }, 'retrying after a retriable response');
          if (!(await this.#sleep(next.delayMs))) return this.#interrupted();
          continue;
        }
        if (next.kind === 'timeout') {
          attempt.cancel();
          await this.#sleep(Number.POSITIVE_INFINITY);
          return this.#interrupted();
        }
        return this.#respond(candidate, response, next.retryLimitExceeded ? ['URX'] : []);
      }

      if (waited.kind === 'reset') {
        const { error } = waited;
        this.#body?.detach();
        const next = error.reason === 'overflow' ? FINAL : this.#decide(resetOutcome(error.reason, attempt.started));
        if (next.kind === 'retry') {
          this.#o.log.debug({ endpoint: candidate.endpoint.address, reason: error.reason, attempt: this.#attempts, err: error.message }, 'retrying after an upstream reset');
          if (!(await this.#sleep(next.delayMs))) return this.#interrupted();
          continue;
        }
        if (next.kind === 'timeout') {
          await this.#sleep(Number.POSITIVE_INFINITY);
          return this.#interrupted();
        }
        return this.#fail(resetError(error, { retried: this.#attempts > 1, limit: next.retryLimitExceeded }));
      }

      // Interrupted while waiting for the headers.
      attempt.cancel();
      this.#body?.detach();
      if (waited.why === 'per-try') {
        const next = this.#decide({ kind: 'per-try-timeout' });
        if (next.kind === 'retry') {
          this.#o.log.debug({ endpoint: candidate.endpoint.address, attempt: this.#attempts }, 'retrying after the per-try timeout');
          if (!(await this.#sleep(next.delayMs))) return this.#interrupted();
          continue;
        }
        if (next.kind === 'timeout') {
          await this.#sleep(Number.POSITIVE_INFINITY);
          return this.#interrupted();
        }
        return this.#fail(new L7Error('UPSTREAM_PER_TRY_TIMEOUT', `no response from ${candidate.endpoint.address} within the per-try timeout of ${this.#perTryMs} ms`, {
          retried: this.#attempts > 1,
          retryLimitExceeded: next.retryLimitExceeded,
        }));
      }
      return this.#interrupted();
    }
  }

  /**
   * routing/retry.ts decides; a body that can no longer be replayed ends
   * retrying altogether (Envoy drops its retry state then, so no URX either);
   * upgrades are not retried (the contract).
   */
  #decide(outcome: AttemptOutcome): RetryDecision {
    if (this.#body?.canReplay === false || this.#req.upgrade !== undefined) return FINAL;
    let remainingMs: number | undefined;
    if (this.#globalMs > 0 && this.#completeAt !== undefined) remainingMs = this.#globalMs - (this.#o.clock.monotonic() - this.#completeAt);
    return decideRetry({ policy: this.#policy, retriesDone: this.#attempts - 1, outcome, remainingMs, random: this.#o.random });
  }

  /**
   * Waits `ms` (a backoff; Infinity: until the route timeout fires); false
   * when the route timeout or the downstream ended the request meanwhile.
   */
  async #sleep(ms: number): Promise<boolean> {
    if (this.#terminal !== undefined) return false;
    if (ms <= 0) return true;
    const why = await new Promise<Interrupt | 'done'>((resolve) => {
      const timer = Number.isFinite(ms)
        ? this.#o.clock.setTimer(ms, () => {
            this.#wake = undefined;
            resolve('done');
          })
        : undefined;
      this.#wake = (w) => {
        if (w === 'per-try') return;
        timer?.cancel();
        this.#wake = undefined;
        resolve(w);
      };
    });
    return why === 'done';
  }

  #interrupted(): ForwardOutcome {
    const endpoint = this.#currentCandidate?.endpoint.address ?? 'no endpoint';
    if (this.#terminal === 'route') {
      return this.#fail(new L7Error('UPSTREAM_REQUEST_TIMEOUT', `no response within the route timeout of ${this.#globalMs} ms (${this.#attempts} attempts, last to ${endpoint})`, { retried: this.#attempts > 1 }));
    }
    return this.#fail(new L7Error('DOWNSTREAM_REMOTE_DISCONNECT', 'the downstream went away before the response', { retried: this.#attempts > 1 }));
  }

  #wait(attempt: Attempt): Promise<Waited> {
    if (this.#terminal !== undefined) return Promise.resolve({ kind: 'interrupt', why: this.#terminal });
    return new Promise<Waited>((resolve) => {
      let done = false;
      const finish = (w: Waited) => {
        if (done) {
          if (w.kind === 'response') w.response.body.destroy();
          return;
        }
        done = true;
        this.#wake = undefined;
        resolve(w);
      };
      this.#wake = (why) => finish({ kind: 'interrupt', why });
      attempt.response.then(
        (response) => finish({ kind: 'response', response }),
        (err: unknown) => finish({ kind: 'reset', error: err instanceof UpstreamResetError ? err : new UpstreamResetError('local reset', String(err)) }),
      );
    });
  }

  #interrupt(why: Interrupt): void {
    if (why !== 'per-try') this.#terminal ??= why;
    if (this.#settled) {
      // After the response headers: the route timeout and the downstream end the body.
      if (why === 'route') this.#current?.cancel(new L7Error('UPSTREAM_REQUEST_TIMEOUT', `the response did not complete within the route timeout of ${this.#globalMs} ms`));
      else if (why === 'abort') this.#current?.cancel(new L7Error('DOWNSTREAM_REMOTE_DISCONNECT', 'the downstream went away during the response'));
      return;
    }
    this.#wake?.(why);
  }

  #requestComplete(): void {
    if (this.#completeAt !== undefined) return;
    this.#completeAt = this.#o.clock.monotonic();
    if (this.#globalMs > 0) this.#routeTimer = this.#o.clock.setTimer(this.#globalMs, () => this.#interrupt('route'));
    if (this.#waitingHeaders) this.#armPerTry();
  }

  #armPerTry(): void {
    this.#cancelPerTry();
    if (this.#perTryMs <= 0 || this.#completeAt === undefined || !this.#waitingHeaders) return;
    this.#perTryTimer = this.#o.clock.setTimer(this.#perTryMs, () => {
      this.#perTryTimer = undefined;
      this.#interrupt('per-try');
    });
  }

  #cancelPerTry(): void {
    this.#perTryTimer?.cancel();
    this.#perTryTimer = undefined;
  }

  /** The request headers of this attempt: Envoy's attempt count and expected timeout replace any the request had. */
  #attemptHeaders(): RawHeaders {
    const expected = this.#expectedTimeoutMs();
    const out: (readonly [string, string])[] = [];
    for (const h of this.#req.headers) {
      const name = h[0].toLowerCase();
      if (name === ATTEMPT_COUNT_HEADER || (expected !== undefined && name === EXPECTED_TIMEOUT_HEADER)) continue;
      out.push(h);
    }
    out.push([ATTEMPT_COUNT_HEADER, String(this.#attempts)]);
    if (expected !== undefined) out.push([EXPECTED_TIMEOUT_HEADER, String(expected)]);
    return out;
  }

  /** Envoy setTimeoutHeaders: the per-try timeout, else the route timeout, capped by what is left of the route timeout. */
  #expectedTimeoutMs(): number | undefined {
    let expected = this.#perTryMs > 0 ? this.#perTryMs : this.#globalMs;
    if (expected <= 0) return undefined;
    if (this.#globalMs > 0) {
      const elapsed = this.#completeAt === undefined ? 0 : Math.floor(this.#o.clock.monotonic() - this.#completeAt);
      expected = elapsed >= this.#globalMs ? 1 : Math.min(expected, this.#globalMs - elapsed);
    }
    return expected;
  }

  #respond(candidate: Candidate, response: AttemptResponse, flags: readonly EnvoyResponseFlag[]): ForwardOutcome {
    this.#settled = true;
    const now = this.#o.clock.monotonic();
    const from = this.#completeAt ?? this.#firstAttemptAt;
    return {
      kind: 'response',
      response: {
        status: response.status,
        headers: response.headers,
        body: response.body,
        trailers: response.trailers,
        endpoint: candidate.endpoint,
        serviceTimeMs: Math.max(0, Math.round(now - from)),
        attempts: this.#attempts,
        ...(response.upgraded === undefined ? {} : { upgraded: response.upgraded }),
      },
      flags,
    };
  }

  /** Keeps the route timeout and the downstream signal on the response body until it is over. */
  #watchResponse(body: AttemptResponse['body'], onAbort: () => void): void {
    const done = () => {
      this.#routeTimer?.cancel();
      this.#routeTimer = undefined;
      this.#signal.removeEventListener('abort', onAbort);
      this.#body?.dispose();
    };
    const attempt = this.#current;
    if (attempt !== undefined) void attempt.done.then(done);
    else done();
    if (body.destroyed) done();
  }

  #fail(error: L7Error): ForwardOutcome {
    this.#settled = true;
    this.#routeTimer?.cancel();
    this.#routeTimer = undefined;
    this.#cancelPerTry();
    this.#body?.dispose();
    return { kind: 'failure', error, attempts: this.#attempts, endpoint: this.#currentCandidate?.endpoint };
  }
}

const RESET_CODES: Readonly<Record<ResetReason, L7ErrorCode>> = {
  'local connection failure': 'UPSTREAM_LOCAL_CONNECTION_FAILURE',
  'remote connection failure': 'UPSTREAM_REMOTE_CONNECTION_FAILURE',
  'connection timeout': 'UPSTREAM_CONNECTION_TIMEOUT',
  'connection termination': 'UPSTREAM_CONNECTION_TERMINATION',
  'local reset': 'UPSTREAM_LOCAL_RESET',
  overflow: 'UPSTREAM_OVERFLOW',
  'remote reset': 'UPSTREAM_REMOTE_RESET',
  'remote refused stream reset': 'UPSTREAM_REMOTE_REFUSED_STREAM',
  'protocol error': 'UPSTREAM_PROTOCOL_ERROR',
};

function resetError(err: UpstreamResetError, o: { retried: boolean; limit: boolean }): L7Error {
  return new L7Error(RESET_CODES[err.reason], err.message, {
    cause: err,
    transportFailureReason: err.transportFailure,
    retried: o.retried,
    retryLimitExceeded: o.limit,
  });
}

// ---------------------------------------------------------------------------
// Attempt outcomes in routing/retry.ts's terms

const FINAL: RetryDecision = { kind: 'final', retryLimitExceeded: false };

function resetOutcome(reason: ResetReason, started: boolean): AttemptOutcome {
  if (reason === 'local connection failure' || reason === 'remote connection failure' || reason === 'connection timeout') return { kind: 'connect-failure' };
  return { kind: 'reset', refusedStream: reason === 'remote refused stream reset', requestSent: started };
}

function hasHeader(headers: RawHeaders, name: string): boolean {
  for (const [n] of headers) if (n.length === name.length && n.toLowerCase() === name) return true;
  return false;
}

/** grpc-status in the response headers (a trailers-only response), as Envoy's getGrpcStatus reads it. */
function grpcStatusOf(headers: RawHeaders): number | undefined {
  for (const [n, v] of headers) {
    if (n.length !== 11 || n.toLowerCase() !== 'grpc-status') continue;
    const text = v.trim();
    if (text === '' || text.length > 10) return undefined;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 48 || c > 57) return undefined;
    }
    return Number(text);
  }
  return undefined;
}
