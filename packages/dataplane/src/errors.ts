/**
 * Every way a proxied connection can fail, as one closed set of codes, and the
 * single table that maps each code to what the peer sees (HBONE status), what
 * metrics and access logs record (response flag), and how loudly we log it.
 * Istio's response flags: "-", DENY, CONNECT, TLS_FAILURE,
 * H2_HANDSHAKE_FAILURE, NETWORK_POLICY, IDENTITY_ERROR, CERT_REVOKED.
 */
export type ResponseFlag =
  | '-'
  | 'DENY'
  | 'CONNECT'
  | 'TLS_FAILURE'
  | 'H2_HANDSHAKE_FAILURE'
  | 'NETWORK_POLICY'
  | 'IDENTITY_ERROR'
  | 'CERT_REVOKED';

export type ProxyErrorCode =
  // Requests that are malformed (HBONE 400).
  | 'NOT_CONNECT' //              method other than CONNECT
  | 'BAD_AUTHORITY' //            missing or unparsable :authority
  | 'IP_MISMATCH' //              authority IP is not this workload (and no sandwich / app tunnel)
  // Nothing to serve it (HBONE 503).
  | 'UNKNOWN_LOCAL_WORKLOAD' //   the listener's workload is not (yet) in WDS
  | 'NO_SERVICE_FOR_HOSTNAME' //  hostname authority names no service
  | 'NO_TARGET_PORT' //           no port mapping for the hostname authority
  | 'SELF_CALL' //                destination is one of ztunnel's own ports
  | 'NO_HEALTHY_UPSTREAM' //      a service with no usable endpoint
  | 'UPSTREAM_CONNECT_FAILED' //  TCP connect to the upstream failed
  | 'UPSTREAM_TIMEOUT' //         TCP connect timed out (maybe a NetworkPolicy)
  | 'HBONE_STATUS' //             the remote ztunnel answered the CONNECT with a non-200 status
  // Authorization (HBONE 401).
  | 'POLICY_DENIED' //            an L4 policy denied the connection
  | 'POLICY_CHANGED' //           a live connection is no longer allowed
  // Identity and transport.
  | 'TLS_HANDSHAKE_FAILED'
  | 'TLS_HANDSHAKE_TIMEOUT'
  | 'PEER_IDENTITY_INVALID' //    client/server certificate fails the SPIFFE checks
  | 'CERT_REVOKED' //             a certificate of the peer's chain is revoked by a CRL (CRL_PATH)
  | 'CERT_UNAVAILABLE' //         no valid certificate for our identity (fail closed)
  | 'H2_HANDSHAKE_FAILED'
  | 'H2_PROTOCOL_VIOLATION' //    floods, oversize headers, preface timeout
  | 'CONNECTION_LIMIT' //         global connection cap reached
  | 'DRAINING' //                 ztunnel (or this pod's proxy) is shutting down
  | 'CLIENT_GONE' //              the client closed or reset before the tunnel was established (not a denial)
  | 'INTERNAL';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface ErrorDisposition {
  /** HTTP status for an HBONE CONNECT answer; undefined when the connection is just closed. */
  readonly httpStatus: 400 | 401 | 503 | undefined;
  readonly responseFlag: ResponseFlag;
  readonly logLevel: LogLevel;
}

export const ERROR_DISPOSITIONS: Readonly<Record<ProxyErrorCode, ErrorDisposition>> = {
  NOT_CONNECT: { httpStatus: 400, responseFlag: '-', logLevel: 'warn' },
  BAD_AUTHORITY: { httpStatus: 400, responseFlag: '-', logLevel: 'warn' },
  IP_MISMATCH: { httpStatus: 400, responseFlag: '-', logLevel: 'warn' },
  UNKNOWN_LOCAL_WORKLOAD: { httpStatus: 503, responseFlag: '-', logLevel: 'warn' },
  NO_SERVICE_FOR_HOSTNAME: { httpStatus: 503, responseFlag: '-', logLevel: 'warn' },
  NO_TARGET_PORT: { httpStatus: 503, responseFlag: '-', logLevel: 'warn' },
  SELF_CALL: { httpStatus: 503, responseFlag: '-', logLevel: 'warn' },
  NO_HEALTHY_UPSTREAM: { httpStatus: 503, responseFlag: '-', logLevel: 'warn' },
  UPSTREAM_CONNECT_FAILED: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'warn' },
  UPSTREAM_TIMEOUT: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'warn' },
  HBONE_STATUS: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'warn' },
  POLICY_DENIED: { httpStatus: 401, responseFlag: 'DENY', logLevel: 'info' },
  POLICY_CHANGED: { httpStatus: undefined, responseFlag: 'DENY', logLevel: 'info' },
  TLS_HANDSHAKE_FAILED: { httpStatus: undefined, responseFlag: 'TLS_FAILURE', logLevel: 'warn' },
  TLS_HANDSHAKE_TIMEOUT: { httpStatus: undefined, responseFlag: 'TLS_FAILURE', logLevel: 'warn' },
  PEER_IDENTITY_INVALID: { httpStatus: undefined, responseFlag: 'IDENTITY_ERROR', logLevel: 'warn' },
  CERT_REVOKED: { httpStatus: undefined, responseFlag: 'CERT_REVOKED', logLevel: 'warn' },
  CERT_UNAVAILABLE: { httpStatus: 503, responseFlag: 'IDENTITY_ERROR', logLevel: 'error' },
  H2_HANDSHAKE_FAILED: { httpStatus: undefined, responseFlag: 'H2_HANDSHAKE_FAILURE', logLevel: 'warn' },
  H2_PROTOCOL_VIOLATION: { httpStatus: undefined, responseFlag: 'H2_HANDSHAKE_FAILURE', logLevel: 'warn' },
  CONNECTION_LIMIT: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'warn' },
  DRAINING: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'info' },
  CLIENT_GONE: { httpStatus: undefined, responseFlag: '-', logLevel: 'debug' },
  INTERNAL: { httpStatus: 503, responseFlag: 'CONNECT', logLevel: 'error' },
};

export class ProxyError extends Error {
  constructor(
    readonly code: ProxyErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ProxyError';
  }

  get disposition(): ErrorDisposition {
    return ERROR_DISPOSITIONS[this.code];
  }
}

/** Any thrown value as a ProxyError (unknown errors become INTERNAL, keeping the cause). */
export function asProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  return new ProxyError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err });
}

/** An error's message with its system code (ECONNREFUSED, ERR_SSL_...), for log lines and refusals. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' && !err.message.includes(code) ? `${err.message} (${code})` : err.message;
  }
  return String(err);
}

/** The first line of an error's message, at most 300 characters (TLS errors carry OpenSSL stacks). */
export function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return (message.split('\n')[0] ?? '').slice(0, 300);
}

/** Response flags that count as failed connections (istio_tcp_connections_failed_total). */
export const FAILED_FLAGS: ReadonlySet<ResponseFlag> = new Set([
  'CONNECT', 'DENY', 'TLS_FAILURE', 'H2_HANDSHAKE_FAILURE', 'NETWORK_POLICY', 'IDENTITY_ERROR', 'CERT_REVOKED',
]);
