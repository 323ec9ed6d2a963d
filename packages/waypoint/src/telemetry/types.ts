/**
 * What the data path reports about each finished HTTP request or TCP
 * connection. The data path fills one of these (facts only: who, what, how it
 * ended); telemetry/ turns it into Istio's metrics (labels in Istio's order,
 * `reporter="waypoint"`), the access-log line in Istio's default format, and a
 * span. Keeping this one value between them is what keeps the label filling
 * testable without sockets.
 */
import type { Identity, Service, Workload } from '@ambient/control';

/** Envoy's short response flags (§6.4; not ztunnel's L4 flags in @ambient/dataplane); several may be set. */
export type EnvoyResponseFlag =
  | 'UH' | 'UT' | 'LR' | 'UR' | 'UF' | 'UC' | 'UO' | 'NR' | 'URX' | 'DC' | 'DPE' | 'UPE' | 'SI' | 'IH' | 'RL' | 'UAEX' | 'NC' | 'OM' | 'DT' | 'DR' | 'DI' | 'FI';

/** The peer on each side, as far as the waypoint knows it. */
export interface PeerInfo {
  /** The peer certificate's SPIFFE identity (downstream: the client's; upstream: the chosen endpoint's). */
  readonly identity: Identity | undefined;
  /** The workload found in workload discovery (downstream: by client IP; upstream: the chosen endpoint). */
  readonly workload: Workload | undefined;
}

export interface HttpRequestRecord {
  readonly kind: 'http';
  /** Wall-clock start (ms since the epoch) and duration (ms, monotonic). */
  readonly startMs: number;
  readonly durationMs: number;
  /** http | grpc (request_protocol label). */
  readonly requestProtocol: 'http' | 'grpc';
  /** HTTP/1.1 | HTTP/2 (the access log's %PROTOCOL%). */
  readonly httpVersion: 'HTTP/1.1' | 'HTTP/2';
  readonly method: string;
  /** The original path (X-ENVOY-ORIGINAL-PATH?:PATH), with the query. */
  readonly path: string;
  readonly authority: string | undefined;
  readonly userAgent: string | undefined;
  readonly requestId: string | undefined;
  readonly forwardedFor: string | undefined;
  /** 0 when no response was sent. */
  readonly responseCode: number;
  /** grpc-status of the response (trailers or trailers-only), undefined for non-gRPC. */
  readonly grpcStatus: number | undefined;
  readonly flags: readonly EnvoyResponseFlag[];
  /** Envoy's %RESPONSE_CODE_DETAILS% (via_upstream, route_not_found, direct_response, ...). */
  readonly responseCodeDetails: string;
  readonly upstreamTransportFailureReason: string | undefined;
  /** Wire bytes of the request and response (headers + body), as Envoy counts them (istio_request_bytes / istio_response_bytes). */
  readonly requestBytes: number;
  readonly responseBytes: number;
  /** Body bytes only (the access log's %BYTES_RECEIVED% / %BYTES_SENT%, which Envoy counts without headers). */
  readonly requestBodyBytes: number;
  readonly responseBodyBytes: number;
  /** Upstream service time (first response byte from the backend) in ms, for x-envoy-upstream-service-time. */
  readonly upstreamServiceTimeMs: number | undefined;
  /** gRPC message counts (istio_request_messages_total / istio_response_messages_total). */
  readonly requestMessages: number;
  readonly responseMessages: number;
  readonly source: PeerInfo;
  readonly destination: PeerInfo;
  /** The service the request was routed to (destination_service*), undefined when none was chosen. */
  readonly destinationService: Service | undefined;
  /** `podIP:targetPort` of the chosen endpoint (UPSTREAM_HOST). */
  readonly upstreamHost: string | undefined;
  /** inbound-vip|<port>|http|<hostname> (UPSTREAM_CLUSTER_RAW). */
  readonly upstreamCluster: string | undefined;
  /** The CONNECT authority (DOWNSTREAM_LOCAL_ADDRESS) and the client address (DOWNSTREAM_REMOTE_ADDRESS). */
  readonly downstreamLocal: string;
  readonly downstreamRemote: string;
  readonly routeName: string | undefined;
  /** The request's trace headers as received (the span's parent); undefined when it carried none. */
  readonly trace: TraceHeaders | undefined;
}

/** The trace-context request headers, verbatim (each undefined when absent). They are forwarded unchanged. */
export interface TraceHeaders {
  readonly traceparent?: string | undefined;
  readonly tracestate?: string | undefined;
  /** The single-header B3 form. */
  readonly b3?: string | undefined;
  readonly 'x-b3-traceid'?: string | undefined;
  readonly 'x-b3-spanid'?: string | undefined;
  readonly 'x-b3-parentspanid'?: string | undefined;
  readonly 'x-b3-sampled'?: string | undefined;
  readonly 'x-b3-flags'?: string | undefined;
}

export interface TcpConnectionRecord {
  readonly kind: 'tcp';
  readonly startMs: number;
  readonly durationMs: number;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly flags: readonly EnvoyResponseFlag[];
  readonly source: PeerInfo;
  readonly destination: PeerInfo;
  readonly destinationService: Service | undefined;
  readonly upstreamHost: string | undefined;
  readonly upstreamCluster: string | undefined;
  readonly downstreamLocal: string;
  readonly downstreamRemote: string;
  readonly routeName: string | undefined;
  readonly connectionTerminationDetails: string | undefined;
}

/** Telemetry's face to the data path. */
export interface RequestTelemetry {
  /** A TCP connection (or a tunnel carrying HTTP) opened: istio_tcp_connections_opened_total. */
  tcpOpened(source: PeerInfo, destination: PeerInfo, service: Service | undefined): void;
  /** A finished HTTP request: istio_requests_total, the histograms, gRPC message counters, access log, span. */
  httpFinished(record: HttpRequestRecord): void;
  /** A finished opaque TCP connection: istio_tcp_* closed/bytes, access log. */
  tcpFinished(record: TcpConnectionRecord): void;
}
