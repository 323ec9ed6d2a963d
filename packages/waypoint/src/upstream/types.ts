/**
 * The contract between the request pipeline (serve/) and the upstream side
 * (upstream/): the pipeline decides *what* to send *where* (a service port,
 * after routing and filters); the upstream side chooses the endpoint
 * (LEAST_REQUEST over healthy endpoints from workload discovery), opens or
 * reuses the HBONE tunnel to `podIP:15008` with `:authority podIP:targetPort`
 * and the waypoint's identity, speaks HTTP/1.1 or HTTP/2 inside it, and runs
 * the retry/timeout state machine. Failures come back as one of the waypoint's
 * closed L7 codes (serve/errors.ts), never as a thrown socket error.
 */
import type { Identity, Service, Workload } from '@ambient/control';
import type { Duplex, Readable } from 'node:stream';
import type { RetryPolicy } from '../routing/types.js';
import type { L7Error } from '../serve/errors.js';
import type { EnvoyResponseFlag } from '../telemetry/types.js';

/** Raw header pairs in order, names as received (duplicates stay separate entries). */
export type RawHeaders = readonly (readonly [string, string])[];

export interface UpstreamRequest {
  readonly method: string;
  /** Path with query, after rewrites. */
  readonly path: string;
  readonly authority: string;
  /** Headers to send (hop-by-hop headers already removed; x-envoy-* set by the upstream side). */
  readonly headers: RawHeaders;
  /** The request body; undefined for none. Bodies up to the retry buffer limit may be replayed on retry. */
  readonly body: Readable | undefined;
  /** How to speak to the backend inside the tunnel. */
  readonly protocol: 'http1' | 'http2';
  /** True for gRPC (trailers, grpc-status, retry on gRPC statuses). */
  readonly grpc: boolean;
  /**
   * A WebSocket upgrade: HTTP/1.1 whatever `protocol` says, the
   * Upgrade/Connection headers (they are in `headers`) sent as they are, no
   * retries; a 101 answer comes back with `upgraded`.
   */
  readonly upgrade?: 'websocket' | undefined;
}

/** The endpoint a request went to. */
export interface ChosenEndpoint {
  readonly workload: Workload;
  readonly identity: Identity;
  /** `podIP:targetPort` (the inner CONNECT authority and Envoy's UPSTREAM_HOST). */
  readonly address: string;
  readonly service: Service;
  readonly servicePort: number;
  readonly targetPort: number;
}

export interface UpstreamResponse {
  readonly status: number;
  readonly headers: RawHeaders;
  readonly body: Readable;
  /** Resolves with the trailers when the body ends (HTTP/2, chunked HTTP/1.1); [] when none. */
  readonly trailers: Promise<RawHeaders>;
  readonly endpoint: ChosenEndpoint;
  /** Time from the first attempt to the response headers (x-envoy-upstream-service-time). */
  readonly serviceTimeMs: number;
  /** Attempts made (x-envoy-attempt-count of the last one). */
  readonly attempts: number;
  /** After a 101 to an `upgrade` request: the upgraded connection to relay (bytes the backend sent after the 101 first). */
  readonly upgraded?: Duplex | undefined;
}

export interface UpstreamTarget {
  readonly service: Service;
  readonly servicePort: number;
  /**
   * Workload-addressed
   * traffic (CONNECT authority podIP:port of a workload bound to this
   * waypoint, Istio's `encap` cluster): this workload is the only candidate,
   * on the target port `service`'s port maps to for it.
   */
  readonly workload?: Workload | undefined;
}

export interface ForwardOptions {
  readonly retry: RetryPolicy;
  /** Route timeout in ms covering all attempts (0 = none). */
  readonly timeoutMs: number;
  /** Aborted when the downstream goes away. */
  readonly signal: AbortSignal;
}

/** What Forwarder.forward resolves with (it never rejects). */
export type ForwardOutcome =
  | {
      readonly kind: 'response';
      readonly response: UpstreamResponse;
      /** URX when this response was retriable but the retry limit was reached (Envoy passes it on with the flag). */
      readonly flags: readonly EnvoyResponseFlag[];
    }
  | {
      readonly kind: 'failure';
      /** The L7 code (serve/errors.ts maps it to the local reply), with retried / retry-limit / transport failure reason set. */
      readonly error: L7Error;
      readonly attempts: number;
      /** The endpoint of the last attempt, if one was chosen. */
      readonly endpoint: ChosenEndpoint | undefined;
    };
