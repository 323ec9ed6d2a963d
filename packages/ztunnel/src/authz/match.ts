/**
 * Whether one L4 authorization policy matches one connection, with exactly
 * ztunnel's semantics (src/rbac.rs `Authorization::matches`):
 *
 * - a policy with no rules never matches;
 * - rules are OR-ed; a rule's clauses are AND-ed (no clauses, or an empty
 *   clause, matches);
 * - a clause's matches are OR-ed, and an empty Match is skipped (it never
 *   matches, so a clause holding only empty matches fails);
 * - within a Match every populated field must pass: a positive list passes
 *   when ANY entry matches, a negative list when NONE does.
 *
 * What each field is compared against, for a connection with or without a
 * peer identity (plaintext on 15006 has none):
 *
 * | field                | with identity                      | without identity                  |
 * |----------------------|------------------------------------|-----------------------------------|
 * | principals           | identity without `spiffe://`       | nothing: no entry ever matches    |
 * | namespaces           | the identity's namespace           | the empty string                  |
 * | serviceAccounts      | (namespace, service account)       | nothing: no entry ever matches    |
 * | sourceIps / destIps  | conn.src.ip / conn.dst.ip (CIDR)   | same                              |
 * | destinationPorts     | conn.dst.port (the target port)    | same                              |
 *
 * So without an identity positive principals/serviceAccounts fail and their
 * negative forms pass (`not_principals: [presence]` is how STRICT mTLS denies
 * plaintext); namespaces see "" — an `exact: ""`/`prefix: ""` entry matches
 * it, `presence` does not — exactly as ztunnel.
 */
import { canonicalIp, cidrContains, type Authorization, type Cidr, type Identity, type Match, type ServiceAccountMatch, type StringMatch } from '@ambient/control';
import type { SocketAddress } from '@ambient/dataplane';

/** The connection facts L4 authorization looks at (ztunnel `rbac::Connection`). */
export interface ConnInfo {
  readonly src: SocketAddress;
  /** The workload IP and the resolved TARGET port (never 15008). */
  readonly dst: SocketAddress;
  /** The mTLS peer identity; undefined for plaintext (15006). */
  readonly srcIdentity: Identity | undefined;
  readonly dstNetwork: string;
}

/** Per-connection values derived once and shared by every policy checked. */
export interface Subject {
  readonly conn: ConnInfo;
  /** Identity without `spiffe://`, or undefined when there is none. */
  readonly principal: string | undefined;
  readonly namespace: string;
}

/** Undefined when either IP is not an IP (the caller fails closed). */
export function subjectOf(conn: ConnInfo): Subject | undefined {
  // Addresses are canonical (unmapped) where they enter; anything else here is not an IP and fails closed.
  if (canonicalIp(conn.src.ip) === undefined || canonicalIp(conn.dst.ip) === undefined) return undefined;
  const id = conn.srcIdentity;
  return {
    conn,
    principal: id === undefined ? undefined : `${id.trustDomain}/ns/${id.namespace}/sa/${id.serviceAccount}`,
    namespace: id?.namespace ?? '',
  };
}

export function policyMatches(policy: Authorization, subject: Subject): boolean {
  // An empty rule list never matches: an ALLOW with no rules allows nothing.
  if (policy.rules.length === 0) return false;
  // ANY rule matching is a match...
  return policy.rules.some((rule) =>
    // ...a rule matches when ALL its clauses match (vacuously true when empty)...
    rule.clauses.every(
      (clause) =>
        // ...an empty clause matches; otherwise ANY non-empty match must match.
        clause.matches.length === 0 || clause.matches.some((m) => !isEmptyMatch(m) && matchPasses(m, subject)),
    ),
  );
}

function isEmptyMatch(m: Match): boolean {
  return (
    m.namespaces.length === 0 &&
    m.notNamespaces.length === 0 &&
    m.principals.length === 0 &&
    m.notPrincipals.length === 0 &&
    m.serviceAccounts.length === 0 &&
    m.notServiceAccounts.length === 0 &&
    m.sourceIps.length === 0 &&
    m.notSourceIps.length === 0 &&
    m.destinationIps.length === 0 &&
    m.notDestinationIps.length === 0 &&
    m.destinationPorts.length === 0 &&
    m.notDestinationPorts.length === 0
  );
}

/** Every populated field of a (non-empty) Match passes. */
function matchPasses(m: Match, s: Subject): boolean {
  const { conn } = s;
  return (
    field(m.destinationIps, m.notDestinationIps, (c: Cidr) => cidrContains(c, conn.dst.ip)) &&
    field(m.sourceIps, m.notSourceIps, (c: Cidr) => cidrContains(c, conn.src.ip)) &&
    field(m.destinationPorts, m.notDestinationPorts, (p: number) => p === conn.dst.port) &&
    field(m.serviceAccounts, m.notServiceAccounts, (sa: ServiceAccountMatch) => serviceAccountMatches(sa, conn.srcIdentity)) &&
    field(m.principals, m.notPrincipals, (p: StringMatch) => s.principal !== undefined && stringMatches(p, s.principal)) &&
    field(m.namespaces, m.notNamespaces, (n: StringMatch) => stringMatches(n, s.namespace))
  );
}

/** Positive: any entry matches (or none declared). Negative: no entry matches (or none declared). */
function field<T>(positive: readonly T[], negative: readonly T[], matches: (v: T) => boolean): boolean {
  if (positive.length > 0 && !positive.some(matches)) return false;
  if (negative.length > 0 && negative.some(matches)) return false;
  return true;
}

function stringMatches(m: StringMatch, value: string): boolean {
  switch (m.kind) {
    case 'exact':
      return value === m.value;
    case 'prefix':
      return value.startsWith(m.value);
    case 'suffix':
      return value.endsWith(m.value);
    case 'presence':
      return value !== '';
  }
}

function serviceAccountMatches(m: ServiceAccountMatch, id: Identity | undefined): boolean {
  // No identity at all never matches.
  return id !== undefined && id.namespace === m.namespace && id.serviceAccount === m.serviceAccount;
}
