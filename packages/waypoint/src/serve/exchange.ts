/**
 * One HTTP request/response exchange as the pipeline sees it, whatever the
 * downstream protocol: http1.ts (node:http over a tunnel) and http2.ts
 * (node:http2 streams over a tunnel) each adapt their objects to these two
 * interfaces, so pipeline.ts is written once for both.
 *
 * Byte counts follow Envoy's accounting for istio_request_bytes /
 * istio_response_bytes (`request.total_size`): the uncompressed header
 * block (name + value of every field, pseudo-headers included) plus body
 * bytes (and trailers).
 *
 * Invariants: `respond` is called at most once; after it, only `body` writes
 * and one `end`; `reset` may come at any time and makes every later call a
 * no-op; `done` settles exactly once, when the exchange is over on the wire.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { GrpcFrameCounter } from './grpc-frames.js';
import type { RawHeaders } from '../upstream/types.js';

type HttpVersion = 'HTTP/1.1' | 'HTTP/2';

export interface DownstreamRequest {
  readonly httpVersion: HttpVersion;
  /** Upper-case method as received. */
  readonly method: string;
  /** The request target as it will be routed: `/path?query` (absolute-form already reduced), or `*`. */
  readonly target: string;
  /** Host / :authority (from an absolute-form target when there is one). */
  readonly authority: string | undefined;
  /** Regular headers in arrival order, names as received; no pseudo-headers, no Host. */
  readonly headers: RawHeaders;
  /** Envoy's header byte size of the request (pseudo-headers and Host included). */
  readonly headerBytes: number;
  /** The body (counting its bytes), undefined when the request has none (no Content-Length > 0, not chunked; END_STREAM on HEADERS). */
  readonly body: BodyMeter | undefined;
}

export type ExchangeEnd =
  /** The response was sent completely. */
  | 'complete'
  /** We reset the stream / closed the connection before the response was complete. */
  | 'reset'
  /** The client went away (closed, or reset its stream) first. */
  | 'client-gone';

export interface DownstreamResponse {
  readonly headersSent: boolean;
  /** Aborted when the client goes away before the response is complete. */
  readonly clientGone: AbortSignal;
  /**
   * Aborted, with the L7Error as its reason, when the request itself fails
   * after it was handed over (a body that breaks HTTP/1.1 framing, the request
   * timeout): the body is already destroyed with that error.
   */
  readonly requestFailure: AbortSignal;
  /** Sends the response head. `endStream`: there is no body (and no trailers). */
  respond(status: number, headers: RawHeaders, endStream: boolean): void;
  /** Writes body bytes; false: wait for `drain()`. */
  write(chunk: Buffer): boolean;
  /** Resolves when the sink can take more (or the exchange is over). */
  drain(): Promise<void>;
  /** Ends the response, with trailers when there are any (HTTP/2; chunked HTTP/1.1). */
  end(trailers: RawHeaders): void;
  /** Abandons the response: RST_STREAM on HTTP/2, closing the connection on HTTP/1.1. */
  reset(): void;
  /** Asks to close the connection after this response (HTTP/1.1 `Connection: close`; no-op on HTTP/2). */
  closeAfter(): void;
  /** Envoy's header byte size of what was sent, plus body and trailer bytes. */
  bytesSent(): number;
  /** Body bytes only (%BYTES_SENT%). */
  bodyBytesSent(): number;
  readonly done: Promise<ExchangeEnd>;
}

/** Envoy's HeaderMap byte size of raw pairs. */
export function headerBytesOf(headers: RawHeaders): number {
  let n = 0;
  for (const [name, value] of headers) n += name.length + value.length;
  return n;
}

/** Counts body bytes (and gRPC messages, once asked) on their way upstream: a pass-through, no copy. */
export class BodyMeter extends Transform {
  bytes = 0;
  grpc: GrpcFrameCounter | undefined;

  constructor() {
    super();
    // A body failed by the codec before its consumer attached must not become an uncaught 'error'.
    this.on('error', () => {});
  }

  countGrpcMessages(): GrpcFrameCounter {
    this.grpc ??= new GrpcFrameCounter();
    return this.grpc;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.grpc?.push(chunk);
    callback(null, chunk);
  }
}
