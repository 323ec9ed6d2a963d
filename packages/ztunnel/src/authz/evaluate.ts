/**
 * L4 authorization: the allow/deny decision for one connection to a
 * destination workload, given the policies that apply to it (Snapshot
 * `policiesFor`). Pure: no logging, no clock; the caller logs
 * `describeDecision` and the dry-run notes.
 *
 * The order follows Istio's documented algorithm, as ztunnel's
 * `DemandProxyState::assert_rbac` does, with one deliberate difference: a
 * policy the workload references but that has not arrived yet makes the
 * decision fail closed ('missing-policy'), where ztunnel skips it with a
 * warning. The missing policy may be a DENY (e.g. istiod's static STRICT
 * mTLS policy), so allowing in the meantime could let plaintext in.
 */
import { policyKey, type ApplicablePolicies, type Authorization, type PolicyAction } from '@ambient/control';
import { policyMatches, subjectOf, type ConnInfo } from './match.js';

export type { ConnInfo } from './match.js';

type DecisionReason =
  | 'explicit-deny' //      a non-dry-run DENY policy matched (`policy` names it)
  | 'no-allow-policies' //  no non-dry-run ALLOW policy applies: allowed
  | 'allow-match' //        an ALLOW policy matched (`policy` names it)
  | 'no-allow-match' //     ALLOW policies apply but none matched
  | 'missing-policy' //     a referenced policy has not been received (`missing` lists them): fail closed
  | 'invalid-connection'; // the connection's addresses are not IPs: fail closed

interface DryRunNote {
  /** `namespace/name`. */
  readonly policy: string;
  readonly action: PolicyAction;
  /** Whether the policy would have matched had it been enforced. */
  readonly wouldMatch: boolean;
}

export interface Decision {
  readonly allow: boolean;
  readonly reason: DecisionReason;
  /** `namespace/name` of the deciding policy (explicit-deny, allow-match). */
  readonly policy?: string;
  /** The referenced policy keys not received (missing-policy). */
  readonly missing?: readonly string[];
  /** Every dry-run policy evaluated, in evaluation order (log only; never affects `allow`). */
  readonly dryRun: readonly DryRunNote[];
}

export function evaluate(applicable: ApplicablePolicies, conn: ConnInfo): Decision {
  const subject = subjectOf(conn);
  if (subject === undefined) return { allow: false, reason: 'invalid-connection', dryRun: [] };

  const deny: Authorization[] = [];
  const denyDryRun: Authorization[] = [];
  const allow: Authorization[] = [];
  const allowDryRun: Authorization[] = [];
  for (const p of applicable.policies) {
    if (p.action === 'Deny') (p.dryRun ? denyDryRun : deny).push(p);
    else (p.dryRun ? allowDryRun : allow).push(p);
  }
  const dryRun: DryRunNote[] = [];

  // Allow and deny logic follows https://istio.io/latest/docs/reference/config/security/authorization-policy/

  // Dry-run DENY policies are evaluated for the log only.
  for (const p of denyDryRun) {
    dryRun.push({ policy: policyKey(p), action: 'Deny', wouldMatch: policyMatches(p, subject) });
  }
  // "If there are any DENY policies that match the request, deny the request."
  for (const p of deny) {
    if (policyMatches(p, subject)) return { allow: false, reason: 'explicit-deny', policy: policyKey(p), dryRun };
  }
  // Dry-run ALLOW policies are evaluated for the log only.
  for (const p of allowDryRun) {
    dryRun.push({ policy: policyKey(p), action: 'Allow', wouldMatch: policyMatches(p, subject) });
  }
  // Stricter than ztunnel (which skips unknown keys): a referenced policy we
  // have not received could be a DENY, so fail closed until it arrives.
  if (applicable.missing.length > 0) {
    return { allow: false, reason: 'missing-policy', missing: [...applicable.missing], dryRun };
  }
  // "If there are no ALLOW policies for the workload, allow the request."
  if (allow.length === 0) return { allow: true, reason: 'no-allow-policies', dryRun };
  // "If any of the ALLOW policies match the request, allow the request."
  for (const p of allow) {
    if (policyMatches(p, subject)) return { allow: true, reason: 'allow-match', policy: policyKey(p), dryRun };
  }
  // "Deny the request."
  return { allow: false, reason: 'no-allow-match', dryRun };
}

/** One line for logs and access-log errors, e.g. `denied by policy ns/name`. */
export function describeDecision(d: Decision): string {
  let text: string;
  switch (d.reason) {
    case 'explicit-deny':
      text = `denied by policy ${d.policy ?? '?'}`;
      break;
    case 'no-allow-policies':
      text = 'allowed: no allow policies apply';
      break;
    case 'allow-match':
      text = `allowed by policy ${d.policy ?? '?'}`;
      break;
    case 'no-allow-match':
      text = 'denied: allow policies exist, but none allowed';
      break;
    case 'missing-policy':
      text = `denied: referenced polic${(d.missing?.length ?? 0) === 1 ? 'y' : 'ies'} ${(d.missing ?? []).join(', ')} not received from the control plane yet (failing closed)`;
      break;
    case 'invalid-connection':
      text = 'denied: the connection addresses are not valid IPs';
      break;
  }
  const notes = d.dryRun.filter((n) => n.wouldMatch).map((n) => `dry-run ${n.action.toLowerCase()} policy ${n.policy} matches`);
  const dryAllows = d.dryRun.filter((n) => n.action === 'Allow');
  if (d.reason === 'no-allow-policies' && dryAllows.length > 0 && !dryAllows.some((n) => n.wouldMatch)) {
    // ztunnel: the connection is allowed, but would be denied if the dry-run policies were enforced.
    notes.push('dry-run: no allow policies match');
  }
  return notes.length === 0 ? text : `${text} (${notes.join('; ')})`;
}

const policyHashes = new WeakMap<Authorization, string>();

/**
 * A string that changes whenever the applicable policy set or the content of
 * any policy in it changes (keys, actions, dry-run flags, rules, missing
 * keys). Connection re-checks can skip connections whose fingerprint is
 * unchanged. Not a security boundary: equal fingerprints mean equal inputs
 * except for hash collisions, so callers must still re-evaluate on doubt.
 */
export function policyFingerprint(applicable: ApplicablePolicies): string {
  const parts = applicable.policies.map((p) => {
    let h = policyHashes.get(p);
    if (h === undefined) {
      h = fnv1a(JSON.stringify(p));
      policyHashes.set(p, h);
    }
    return `${policyKey(p)}@${h}`;
  });
  parts.sort();
  const missing = [...applicable.missing].sort();
  return `${parts.join(',')}|missing:${missing.join(',')}`;
}

/** True when two applicable sets hold the very same policy objects (the store never mutates a policy). */
export function samePolicies(a: ApplicablePolicies, b: ApplicablePolicies): boolean {
  if (a.policies.length !== b.policies.length || a.missing.length !== b.missing.length) return false;
  const mine = new Set<Authorization>(a.policies);
  if (!b.policies.every((p) => mine.has(p))) return false;
  const missing = new Set(a.missing);
  return b.missing.every((k) => missing.has(k));
}

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}
