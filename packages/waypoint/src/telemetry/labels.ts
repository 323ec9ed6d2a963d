/**
 * The label values of Istio's `istio_stats` filter as a waypoint
 * (`reporter: SERVER_GATEWAY`) fills them, from the facts in a telemetry
 * record. Pure: no I/O, no clock, no registry.
 *
 * Rules (istio/proxy `istio_stats`, its waypoint test data
 * `server_waypoint_proxy_connect_*`, observability.md §5.1):
 * - `source_*` describe the downstream peer: the workload found by client IP
 *   plus the peer certificate. `source_principal` is the peer SAN (no SAN:
 *   "unknown"); `source_workload_namespace` is the SAN's namespace first, the
 *   workload's otherwise. A missing `source_canonical_revision` is "latest".
 * - `destination_*` describe the chosen endpoint: its workload (principal
 *   from the workload's identity, the endpoint's peer SAN only when there is
 *   no workload). A missing `destination_canonical_revision` is "unknown"
 *   (a waypoint does not default it).
 * - `*_app` / `*_version` are the canonical name / revision (what Istio's
 *   workload metadata carries as app name and version), not pod labels.
 * - `*_cluster` is the workload's cluster id (the model defaults it to
 *   "Kubernetes"); with no workload "unknown", as ztunnel.
 * - `destination_service*` come from the routed service (FQDN, name,
 *   namespace); none chosen (e.g. no route): "unknown". No Host fallback.
 * - `request_protocol` http | grpc (tcp for TCP); `response_code` the status
 *   as a decimal string, "0" with no response; `grpc_response_status` the
 *   gRPC status for gRPC (inferred from the HTTP status when the response
 *   carried none, as Envoy's getGrpcStatus does), "" otherwise;
 *   `response_flags` Envoy's short flags in Envoy's order, comma-joined, "-"
 *   for none; `connection_security_policy` "mutual_tls" when the downstream
 *   presented a SAN (the waypoint always has its own), else "none".
 * - Every value is non-empty except `grpc_response_status` ("" is a value).
 * Label objects list their keys in Istio's exposition order.
 */
import { identityToString, type Identity, type Service, type Workload } from '@ambient/control';
import type { EnvoyResponseFlag, HttpRequestRecord, PeerInfo } from './types.js';

/** The peer labels every istio_* family carries, in Envoy's exposition order. */
export const PEER_LABEL_NAMES = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_service_name',
  'destination_service_namespace',
  'destination_cluster',
] as const;

/** istio_requests_total and the HTTP histograms / gRPC message counters. */
export const HTTP_LABEL_NAMES = [
  ...PEER_LABEL_NAMES,
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;

/** istio_tcp_*: no response_code, no grpc_response_status. */
export const TCP_LABEL_NAMES = [...PEER_LABEL_NAMES, 'request_protocol', 'response_flags', 'connection_security_policy'] as const;

type PeerLabelName = (typeof PEER_LABEL_NAMES)[number];
export type HttpLabelName = (typeof HTTP_LABEL_NAMES)[number];
export type TcpLabelName = (typeof TCP_LABEL_NAMES)[number];
export type PeerLabels = Readonly<Record<PeerLabelName, string>>;
export type HttpLabels = Readonly<Record<HttpLabelName, string>>;
export type TcpLabels = Readonly<Record<TcpLabelName, string>>;

const UNKNOWN = 'unknown';
const u = (v: string | undefined): string => (v === undefined || v === '' ? UNKNOWN : v);

/** The peer labels of one (downstream peer, chosen endpoint, routed service). */
export function peerLabels(source: PeerInfo, destination: PeerInfo, service: Service | undefined): PeerLabels {
  const sw: Workload | undefined = source.workload;
  const sid: Identity | undefined = source.identity;
  const dw: Workload | undefined = destination.workload;
  const did: Identity | undefined = dw?.identity ?? destination.identity;
  return {
    reporter: 'waypoint',
    source_workload: u(sw?.workloadName),
    source_canonical_service: u(sw?.canonicalName),
    source_canonical_revision: sw === undefined || sw.canonicalRevision === '' ? 'latest' : sw.canonicalRevision,
    source_workload_namespace: u(sid?.namespace ?? sw?.namespace),
    source_principal: sid === undefined ? UNKNOWN : identityToString(sid),
    source_app: u(sw?.canonicalName),
    source_version: u(sw?.canonicalRevision),
    source_cluster: u(sw?.clusterId),
    destination_workload: u(dw?.workloadName),
    destination_workload_namespace: u(dw?.namespace ?? destination.identity?.namespace),
    destination_principal: did === undefined ? UNKNOWN : identityToString(did),
    destination_app: u(dw?.canonicalName),
    destination_version: u(dw?.canonicalRevision),
    destination_service: u(service?.hostname),
    destination_canonical_service: u(dw?.canonicalName),
    destination_canonical_revision: u(dw?.canonicalRevision),
    destination_service_name: u(service?.name),
    destination_service_namespace: u(service?.namespace),
    destination_cluster: u(dw?.clusterId),
  };
}

/** `mutual_tls` when the downstream presented a SAN (ours always exists), else `none`. */
function securityPolicy(source: PeerInfo): 'mutual_tls' | 'none' {
  return source.identity === undefined ? 'none' : 'mutual_tls';
}

/**
 * Envoy's flag order (`ResponseFlag` bit order, which `toShortString` walks):
 * a request with several flags prints them in this order whatever order the
 * data path set them in.
 */
const FLAG_RANK: Readonly<Record<EnvoyResponseFlag, number>> = {
  UH: 0, UT: 1, LR: 2, UR: 3, UF: 4, UC: 5, UO: 6, NR: 7, DI: 8, FI: 9, RL: 10, UAEX: 11,
  DC: 12, URX: 13, SI: 14, IH: 15, DPE: 16, DT: 17, UPE: 18, NC: 19, OM: 20, DR: 21,
};

/** %RESPONSE_FLAGS% / `response_flags`: "-" for none, else Envoy's order, comma-joined, each once. */
export function responseFlagsText(flags: readonly EnvoyResponseFlag[]): string {
  if (flags.length === 0) return '-';
  if (flags.length === 1) return flags[0] as string;
  const unique = [...new Set(flags)];
  unique.sort((a, b) => FLAG_RANK[a] - FLAG_RANK[b]);
  return unique.join(',');
}

/** Envoy `Grpc::Utility::httpToGrpcStatus` (the gRPC spec's HTTP → gRPC mapping). */
function httpToGrpcStatus(code: number): number {
  switch (code) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/**
 * `grpc_response_status`: "" for non-gRPC; for gRPC the response's
 * grpc-status, else inferred from the HTTP status, else "" (no response).
 */
export function grpcStatusText(r: Pick<HttpRequestRecord, 'requestProtocol' | 'grpcStatus' | 'responseCode'>): string {
  if (r.requestProtocol !== 'grpc') return '';
  if (r.grpcStatus !== undefined) return String(r.grpcStatus);
  return r.responseCode > 0 ? String(httpToGrpcStatus(r.responseCode)) : '';
}

/** The outcome labels of an HTTP request, appended to its peer labels (keys in exposition order). */
export function httpLabels(
  peer: PeerLabels,
  r: Pick<HttpRequestRecord, 'requestProtocol' | 'grpcStatus' | 'responseCode' | 'flags' | 'source'>,
): HttpLabels {
  return {
    ...peer,
    request_protocol: r.requestProtocol,
    response_code: String(r.responseCode),
    grpc_response_status: grpcStatusText(r),
    response_flags: responseFlagsText(r.flags),
    connection_security_policy: securityPolicy(r.source),
  };
}

/** The labels of a TCP connection (request_protocol "tcp"). */
export function tcpLabels(peer: PeerLabels, source: PeerInfo, flags: readonly EnvoyResponseFlag[]): TcpLabels {
  return {
    ...peer,
    request_protocol: 'tcp',
    response_flags: responseFlagsText(flags),
    connection_security_policy: securityPolicy(source),
  };
}
