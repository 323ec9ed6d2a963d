/**
 * The waypoint's access log: Istio's default Envoy format (`EnvoyTextLogFormat`
 * and `EnvoyJSONLogFormatIstio`, pilot/pkg/model/telemetry_logging.go), one
 * line per finished HTTP request or TCP connection, written through an
 * injected writer. Off unless configured (meshConfig.accessLogFile "" is
 * Istio's default).
 *
 * Text (waypoint.md §5.3): 22 fields separated by single spaces, ending in
 * "\n"; the request line, UPSTREAM_TRANSPORT_FAILURE_REASON, X-FORWARDED-FOR,
 * USER-AGENT, X-REQUEST-ID, :AUTHORITY and UPSTREAM_HOST in double quotes;
 * every missing value is "-" (also inside quotes); START_TIME as Envoy's
 * default `%Y-%m-%dT%H:%M:%E3SZ` in UTC, in square brackets. Values are not
 * escaped (Envoy does not escape them either).
 *
 * JSON: the same operators under Istio's snake_case keys, one object per line,
 * keys sorted (Envoy's key order is not specified); RESPONSE_CODE,
 * BYTES_RECEIVED, BYTES_SENT and DURATION are numbers, everything else a
 * string, a missing value is null (Envoy's typed JSON formatter).
 *
 * Envoy's view of a waypoint's addresses: an endpoint reached over HBONE is
 * Envoy's internal `connect_originate` listener, so UPSTREAM_HOST is
 * `envoy://connect_originate/<ip:port>` and UPSTREAM_LOCAL_ADDRESS is
 * `envoy://internal_client_address/` (istio#50321); a plain-TCP endpoint is
 * its own address (the local address is not known here: "-").
 * BYTES_RECEIVED / BYTES_SENT are body bytes for HTTP (Envoy's operators),
 * connection bytes for TCP; DURATION and X-ENVOY-UPSTREAM-SERVICE-TIME whole
 * milliseconds.
 */
import type { Writable } from 'node:stream';
import { responseFlagsText } from './labels.js';
import type { HttpRequestRecord, PeerInfo, TcpConnectionRecord } from './types.js';

export type AccessLogEncoding = 'TEXT' | 'JSON';

/** Receives one complete line (with its "\n"); must not block or throw. */
export type AccessLogWriter = (line: string) => void;

/** The values of Istio's default format, by Envoy operator; undefined = missing. */
export interface AccessLogEntry {
  readonly startMs: number;
  readonly method: string | undefined;
  readonly path: string | undefined;
  readonly protocol: string | undefined;
  readonly responseCode: number;
  readonly responseFlags: string;
  readonly responseCodeDetails: string | undefined;
  readonly connectionTerminationDetails: string | undefined;
  readonly upstreamTransportFailureReason: string | undefined;
  readonly bytesReceived: number;
  readonly bytesSent: number;
  readonly durationMs: number;
  readonly upstreamServiceTimeMs: number | undefined;
  readonly forwardedFor: string | undefined;
  readonly userAgent: string | undefined;
  readonly requestId: string | undefined;
  readonly authority: string | undefined;
  readonly upstreamHost: string | undefined;
  readonly upstreamCluster: string | undefined;
  readonly upstreamLocalAddress: string | undefined;
  readonly downstreamLocalAddress: string | undefined;
  readonly downstreamRemoteAddress: string | undefined;
  readonly requestedServerName: string | undefined;
  readonly routeName: string | undefined;
}

const INTERNAL_CLIENT_ADDRESS = 'envoy://internal_client_address/';

/** UPSTREAM_HOST and UPSTREAM_LOCAL_ADDRESS as Envoy's waypoint sees them. */
function upstreamAddresses(destination: PeerInfo, upstreamHost: string | undefined): { host: string | undefined; local: string | undefined } {
  if (upstreamHost === undefined) return { host: undefined, local: undefined };
  if (destination.workload?.protocol === 'HBONE') return { host: `envoy://connect_originate/${upstreamHost}`, local: INTERNAL_CLIENT_ADDRESS };
  return { host: upstreamHost, local: undefined };
}

export function httpAccessLogEntry(r: HttpRequestRecord): AccessLogEntry {
  const up = upstreamAddresses(r.destination, r.upstreamHost);
  return {
    startMs: r.startMs,
    method: r.method,
    path: r.path,
    protocol: r.httpVersion,
    responseCode: r.responseCode,
    responseFlags: responseFlagsText(r.flags),
    responseCodeDetails: r.responseCodeDetails,
    connectionTerminationDetails: undefined,
    upstreamTransportFailureReason: r.upstreamTransportFailureReason,
    bytesReceived: r.requestBodyBytes,
    bytesSent: r.responseBodyBytes,
    durationMs: r.durationMs,
    upstreamServiceTimeMs: r.upstreamServiceTimeMs,
    forwardedFor: r.forwardedFor,
    userAgent: r.userAgent,
    requestId: r.requestId,
    authority: r.authority,
    upstreamHost: up.host,
    upstreamCluster: r.upstreamCluster,
    upstreamLocalAddress: up.local,
    downstreamLocalAddress: r.downstreamLocal,
    downstreamRemoteAddress: r.downstreamRemote,
    requestedServerName: undefined,
    routeName: r.routeName,
  };
}

export function tcpAccessLogEntry(r: TcpConnectionRecord): AccessLogEntry {
  const up = upstreamAddresses(r.destination, r.upstreamHost);
  return {
    startMs: r.startMs,
    method: undefined,
    path: undefined,
    protocol: undefined,
    responseCode: 0,
    responseFlags: responseFlagsText(r.flags),
    responseCodeDetails: undefined,
    connectionTerminationDetails: r.connectionTerminationDetails,
    upstreamTransportFailureReason: undefined,
    bytesReceived: r.bytesReceived,
    bytesSent: r.bytesSent,
    durationMs: r.durationMs,
    upstreamServiceTimeMs: undefined,
    forwardedFor: undefined,
    userAgent: undefined,
    requestId: undefined,
    authority: undefined,
    upstreamHost: up.host,
    upstreamCluster: r.upstreamCluster,
    upstreamLocalAddress: up.local,
    downstreamLocalAddress: r.downstreamLocal,
    downstreamRemoteAddress: r.downstreamRemote,
    requestedServerName: undefined,
    routeName: r.routeName,
  };
}

/** Envoy's default %START_TIME%: `2024-01-01T00:00:00.000Z` (UTC, milliseconds). */
export function formatStartTime(ms: number): string {
  return new Date(Math.trunc(ms)).toISOString();
}

const dash = (v: string | undefined): string => (v === undefined || v === '' ? '-' : v);
const whole = (ms: number): number => (ms > 0 && Number.isFinite(ms) ? Math.trunc(ms) : 0);

/** One line of Istio's default text format. */
export function formatTextLine(e: AccessLogEntry): string {
  const ust = e.upstreamServiceTimeMs === undefined ? '-' : String(whole(e.upstreamServiceTimeMs));
  return (
    `[${formatStartTime(e.startMs)}] "${dash(e.method)} ${dash(e.path)} ${dash(e.protocol)}" ${e.responseCode} ${dash(e.responseFlags)} ` +
    `${dash(e.responseCodeDetails)} ${dash(e.connectionTerminationDetails)} "${dash(e.upstreamTransportFailureReason)}" ` +
    `${e.bytesReceived} ${e.bytesSent} ${whole(e.durationMs)} ${ust} "${dash(e.forwardedFor)}" "${dash(e.userAgent)}" ` +
    `"${dash(e.requestId)}" "${dash(e.authority)}" "${dash(e.upstreamHost)}" ${dash(e.upstreamCluster)} ` +
    `${dash(e.upstreamLocalAddress)} ${dash(e.downstreamLocalAddress)} ${dash(e.downstreamRemoteAddress)} ` +
    `${dash(e.requestedServerName)} ${dash(e.routeName)}\n`
  );
}

const orNull = (v: string | undefined): string | null => (v === undefined || v === '' ? null : v);

/** One line of Istio's default JSON format (keys sorted). */
export function formatJsonLine(e: AccessLogEntry): string {
  const o = {
    authority: orNull(e.authority),
    bytes_received: e.bytesReceived,
    bytes_sent: e.bytesSent,
    connection_termination_details: orNull(e.connectionTerminationDetails),
    downstream_local_address: orNull(e.downstreamLocalAddress),
    downstream_remote_address: orNull(e.downstreamRemoteAddress),
    duration: whole(e.durationMs),
    method: orNull(e.method),
    path: orNull(e.path),
    protocol: orNull(e.protocol),
    request_id: orNull(e.requestId),
    requested_server_name: orNull(e.requestedServerName),
    response_code: e.responseCode,
    response_code_details: orNull(e.responseCodeDetails),
    response_flags: orNull(e.responseFlags),
    route_name: orNull(e.routeName),
    start_time: formatStartTime(e.startMs),
    upstream_cluster: orNull(e.upstreamCluster),
    upstream_host: orNull(e.upstreamHost),
    upstream_local_address: orNull(e.upstreamLocalAddress),
    upstream_service_time: e.upstreamServiceTimeMs === undefined ? null : String(whole(e.upstreamServiceTimeMs)),
    upstream_transport_failure_reason: orNull(e.upstreamTransportFailureReason),
    user_agent: orNull(e.userAgent),
    x_forwarded_for: orNull(e.forwardedFor),
  };
  return `${JSON.stringify(o)}\n`;
}

/** Formats records in one encoding and hands each line to the writer. */
export class AccessLog {
  readonly #format: (e: AccessLogEntry) => string;

  constructor(
    encoding: AccessLogEncoding,
    private readonly writer: AccessLogWriter,
  ) {
    this.#format = encoding === 'JSON' ? formatJsonLine : formatTextLine;
  }

  http(r: HttpRequestRecord): void {
    this.writer(this.#format(httpAccessLogEntry(r)));
  }

  tcp(r: TcpConnectionRecord): void {
    this.writer(this.#format(tcpAccessLogEntry(r)));
  }
}

/**
 * A writer onto a stream (stdout or a file) that never blocks a request: while
 * the stream holds more than `maxBufferedBytes` unwritten, lines are dropped
 * and counted (Envoy's file logger also buffers and flushes in the background).
 */
export function streamAccessLogWriter(
  stream: Pick<Writable, 'write' | 'writableLength'>,
  o: { readonly maxBufferedBytes?: number; readonly onDrop?: () => void } = {},
): AccessLogWriter {
  const max = o.maxBufferedBytes ?? 4 * 1024 * 1024;
  return (line) => {
    if (stream.writableLength > max) {
      o.onDrop?.();
      return;
    }
    stream.write(line);
  };
}

/**
 * meshConfig.accessLogFile / accessLogEncoding → the access-log dependency of
 * createWaypointTelemetry: undefined for "" (Istio's default: off); otherwise
 * `open(file)` gives the writer ("/dev/stdout" is the usual value).
 */
export function accessLogFromMeshConfig(
  setting: { readonly file: string; readonly encoding: AccessLogEncoding },
  open: (file: string) => AccessLogWriter,
): { readonly encoding: AccessLogEncoding; readonly writer: AccessLogWriter } | undefined {
  return setting.file === '' ? undefined : { encoding: setting.encoding, writer: open(setting.file) };
}
