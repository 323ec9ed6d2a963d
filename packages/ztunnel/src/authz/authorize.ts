/**
 * The one L4 authorization step every listener runs — HBONE inbound (15008),
 * plaintext inbound (15006) and the connection manager's re-check of live
 * connections after a policy change — so the three can never disagree:
 * the policies that apply to the destination workload, evaluated on the
 * connection (evaluate.ts), and on denial the ProxyError the error table
 * answers (POLICY_DENIED for a new connection, POLICY_CHANGED for a live one).
 * Pure; the caller logs with `logDecision`.
 */
import type { Snapshot, Workload } from '@ambient/control';
import { ProxyError } from '@ambient/dataplane';
import { describeDecision, evaluate, type ConnInfo, type Decision } from './evaluate.js';

export interface Authorized {
  readonly decision: Decision;
  /** `describeDecision(decision)`. */
  readonly reason: string;
  /** Set exactly when the decision denies. */
  readonly denied: ProxyError | undefined;
}

export function authorize(
  snapshot: Pick<Snapshot, 'policiesFor'>,
  workload: Workload,
  conn: ConnInfo,
  code: 'POLICY_DENIED' | 'POLICY_CHANGED' = 'POLICY_DENIED',
): Authorized {
  const decision = evaluate(snapshot.policiesFor(workload), conn);
  const reason = describeDecision(decision);
  const prefix = code === 'POLICY_DENIED' ? 'connection denied' : 'connection closed due to policy change';
  return { decision, reason, denied: decision.allow ? undefined : new ProxyError(code, `${prefix}: ${reason}`) };
}

/** The info line ztunnel writes (AUTHZ_POLICY_INFO_LOGGING), and always when a dry-run policy took part. */
export function logDecision(log: { info(obj: object, msg?: string): void }, a: Authorized, infoLogging: boolean): void {
  if (infoLogging || a.decision.dryRun.length > 0) log.info({ decision: a.reason }, 'authorization decision');
}
