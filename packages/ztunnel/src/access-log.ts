/**
 * The access log lines ztunnel writes for every connection (log target
 * `access`): "connection opened" (debug), "connection complete" (info, or
 * error on failure) and "connection failed" (warn, for an early deny before
 * the connection's context is known).
 */
import type { Logger } from '@ambient/control';
import type { LogLevelControl } from '@ambient/dataplane';
import type { Reporter, TrafficLabels } from './metrics/traffic.js';

// ---------------------------------------------------------------------------
// Access log

/** One connection as the access log describes it. */
export interface AccessLogConnection {
  /** Downstream address `ip:port`. */
  readonly src: string;
  /** Destination address as dialled (`ip:port`; for HBONE the peer's 15008). */
  readonly dst: string;
  /** The HBONE authority, when the connection is tunnelled. */
  readonly hboneAddr?: string | undefined;
  readonly labels: TrafficLabels;
  /** Pod names (fall back to the canonical service labels). */
  readonly srcWorkload?: string | undefined;
  readonly dstWorkload?: string | undefined;
}

export interface ConnectionOutcome {
  /** istio_tcp_received_bytes_total semantics: downstream -> upstream. */
  readonly receivedBytes: number;
  /** istio_tcp_sent_bytes_total semantics: upstream -> downstream. */
  readonly sentBytes: number;
  readonly durationMs: number;
  /** Set when the connection failed. */
  readonly error?: string | undefined;
}

const known = (v: string | undefined): string | undefined => (v === undefined || v === '' || v === 'unknown' ? undefined : v);

/**
 * The access-log fields of a connection, in ztunnel's order. Absent values
 * are omitted; identities only for mutual TLS.
 */
export function accessLogFields(c: AccessLogConnection): Record<string, string> {
  const l = c.labels;
  const mtls = l.connection_security_policy === 'mutual_tls';
  const fields: Record<string, string | undefined> = {
    'src.addr': c.src,
    'src.workload': known(c.srcWorkload) ?? known(l.source_canonical_service),
    'src.namespace': known(l.source_workload_namespace),
    'src.identity': mtls ? known(l.source_principal) : undefined,
    'src.cluster': known(l.source_cluster),
    'dst.addr': c.dst,
    'dst.hbone_addr': c.hboneAddr,
    'dst.service': known(l.destination_service),
    'dst.workload': known(c.dstWorkload) ?? known(l.destination_canonical_service),
    'dst.namespace': known(l.destination_workload_namespace),
    'dst.identity': mtls ? known(l.destination_principal) : undefined,
    'dst.cluster': known(l.destination_cluster),
    direction: directionOf(l.reporter as Reporter),
  };
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) out[k] = v;
  return out;
}

function directionOf(reporter: Reporter): 'outbound' | 'inbound' {
  return reporter === 'source' ? 'outbound' : 'inbound';
}

/** Writes ztunnel's access log lines under scope `access`. */
export class AccessLog {
  readonly #log: Logger;

  /** `levels` lets "connection opened" skip building its fields when debug is off for `access`. */
  constructor(
    log: Logger,
    private readonly levels?: Pick<LogLevelControl, 'enabled'>,
  ) {
    this.#log = log.child({ scope: 'access' });
  }

  /** "connection opened" at debug. */
  opened(c: AccessLogConnection): void {
    if (this.levels && !this.levels.enabled('access', 'debug')) return;
    this.#log.debug(accessLogFields(c), 'connection opened');
  }

  /** "connection complete": info on success, error (with `error`) on failure. */
  completed(c: AccessLogConnection, outcome: ConnectionOutcome): void {
    // The metrics count from the downstream's point of view; ztunnel un-flips the log for outbound.
    const outbound = c.labels.reporter === 'source';
    const fields: Record<string, string | number> = {
      ...accessLogFields(c),
      bytes_sent: outbound ? outcome.receivedBytes : outcome.sentBytes,
      bytes_recv: outbound ? outcome.sentBytes : outcome.receivedBytes,
      duration: `${Math.max(0, Math.round(outcome.durationMs))}ms`,
    };
    if (outcome.error !== undefined) {
      fields['error'] = outcome.error;
      this.#log.error(fields, 'connection complete');
    } else {
      this.#log.info(fields, 'connection complete');
    }
  }

  /** "connection failed" at warn: refused before the connection's context was known. */
  failed(f: { readonly src: string; readonly dst: string; readonly reporter: Reporter; readonly error: string }): void {
    this.#log.warn({ 'src.addr': f.src, 'dst.addr': f.dst, direction: directionOf(f.reporter), error: f.error }, 'connection failed');
  }
}
