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
import type { Readable } from 'node:stream';
import type { RetryPolicy } from '../routing/types.js';

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
}

export interface UpstreamTarget {
  readonly service: Service;
  readonly servicePort: number;
}

export interface ForwardOptions {
  readonly retry: RetryPolicy;
  /** Route timeout in ms covering all attempts (0 = none). */
  readonly timeoutMs: number;
  /** Aborted when the downstream goes away. */
  readonly signal: AbortSignal;
}
