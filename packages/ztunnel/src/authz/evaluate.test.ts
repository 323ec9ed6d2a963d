import type { Authorization, Identity, Match, StringMatch } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { peerAddress } from '@ambient/dataplane';
import { aMatch, aPolicy, aWorkload, cidr, snapshotOf } from '../../test/model-fixtures.js';
import { describeDecision, evaluate, policyFingerprint, samePolicies, type ConnInfo } from './evaluate.js';

const id = (ns: string, sa: string, td = 'cluster.local'): Identity => ({ trustDomain: td, namespace: ns, serviceAccount: sa });

/** An mTLS connection from a/b (10.0.0.1) to 10.0.0.2 on target port 8080. */
const MTLS: ConnInfo = {
  src: { ip: '10.0.0.1', port: 40000 },
  dst: { ip: '10.0.0.2', port: 8080 },
  srcIdentity: id('a', 'b'),
  dstNetwork: '',
};
/** The same connection in plaintext (15006): no identity. */
const PLAIN: ConnInfo = { ...MTLS, srcIdentity: undefined };

const exact = (value: string): StringMatch => ({ kind: 'exact', value });
const prefix = (value: string): StringMatch => ({ kind: 'prefix', value });
const suffix = (value: string): StringMatch => ({ kind: 'suffix', value });
const presence: StringMatch = { kind: 'presence' };

const allowWith = (rules: Authorization['rules']): Authorization => aPolicy({ namespace: 'ns', name: 'allow', rules });
const allowMatching = (...matches: Match[]): Authorization => aPolicy({ namespace: 'ns', name: 'allow', matches });

/** Whether a single ALLOW policy matches the connection (allowed iff it matches, as it is the only ALLOW). */
function allowed(policy: Authorization, conn: ConnInfo): boolean {
  const d = evaluate({ policies: [policy], missing: [] }, conn);
  expect(d.reason === 'allow-match' || d.reason === 'no-allow-match').toBe(true);
  return d.allow;
}

describe('L4 match semantics (ztunnel rbac.rs)', () => {
  it.each<[string, Authorization, ConnInfo, boolean]>([
    // Structure
    ['a policy with no rules never matches', allowWith([]), MTLS, false],
    ['a rule with no clauses matches', allowWith([{ clauses: [] }]), MTLS, true],
    ['an empty clause matches', allowWith([{ clauses: [{ matches: [] }] }]), MTLS, true],
    ['a clause of only empty Matches never matches', allowMatching(aMatch(), aMatch()), MTLS, false],
    ['an empty Match is skipped, the next one can match', allowMatching(aMatch(), aMatch({ namespaces: [exact('a')] })), MTLS, true],
    ['matches in a clause are OR-ed', allowMatching(aMatch({ namespaces: [exact('x')] }), aMatch({ namespaces: [exact('a')] })), MTLS, true],
    [
      'clauses in a rule are AND-ed (one fails)',
      allowWith([{ clauses: [{ matches: [aMatch({ namespaces: [exact('a')] })] }, { matches: [aMatch({ destinationPorts: [9090] })] }] }]),
      MTLS,
      false,
    ],
    [
      'clauses in a rule are AND-ed (all pass)',
      allowWith([{ clauses: [{ matches: [aMatch({ namespaces: [exact('a')] })] }, { matches: [aMatch({ destinationPorts: [8080] })] }] }]),
      MTLS,
      true,
    ],
    [
      'a clause holding only an empty Match fails the whole rule',
      allowWith([{ clauses: [{ matches: [aMatch({ namespaces: [exact('a')] })] }, { matches: [aMatch()] }] }]),
      MTLS,
      false,
    ],
    [
      'rules are OR-ed',
      allowWith([{ clauses: [{ matches: [aMatch({ namespaces: [exact('x')] })] }] }, { clauses: [{ matches: [aMatch({ destinationPorts: [8080] })] }] }]),
      MTLS,
      true,
    ],
    ['fields within a Match are AND-ed', allowMatching(aMatch({ namespaces: [exact('a')], destinationPorts: [9090] })), MTLS, false],
    ['a positive list passes when any entry matches', allowMatching(aMatch({ destinationPorts: [1, 8080, 2] })), MTLS, true],
    ['positive and negative of one field: negative hit fails', allowMatching(aMatch({ principals: [prefix('cluster.local/ns/a/')], notPrincipals: [exact('cluster.local/ns/a/sa/b')] })), MTLS, false],
    // principals: the identity without spiffe://
    ['principals exact', allowMatching(aMatch({ principals: [exact('cluster.local/ns/a/sa/b')] })), MTLS, true],
    ['principals exact, other identity', allowMatching(aMatch({ principals: [exact('cluster.local/ns/a/sa/c')] })), MTLS, false],
    ['principals are compared without spiffe://', allowMatching(aMatch({ principals: [exact('spiffe://cluster.local/ns/a/sa/b')] })), MTLS, false],
    ['principals prefix', allowMatching(aMatch({ principals: [prefix('cluster.local/ns/a/')] })), MTLS, true],
    ['principals suffix', allowMatching(aMatch({ principals: [suffix('/sa/b')] })), MTLS, true],
    ['principals suffix, no match', allowMatching(aMatch({ principals: [suffix('/sa/c')] })), MTLS, false],
    ['principals presence with an identity', allowMatching(aMatch({ principals: [presence] })), MTLS, true],
    ['principals presence, plaintext', allowMatching(aMatch({ principals: [presence] })), PLAIN, false],
    ['principals empty prefix, plaintext: no identity never matches', allowMatching(aMatch({ principals: [prefix('')] })), PLAIN, false],
    ['principals trust domain is part of the principal', allowMatching(aMatch({ principals: [exact('cluster.local/ns/a/sa/b')] })), { ...MTLS, srcIdentity: id('a', 'b', 'other.td') }, false],
    ['not_principals exact hit fails', allowMatching(aMatch({ notPrincipals: [exact('cluster.local/ns/a/sa/b')] })), MTLS, false],
    ['not_principals exact miss passes', allowMatching(aMatch({ notPrincipals: [exact('cluster.local/ns/x/sa/y')] })), MTLS, true],
    ['not_principals presence, mTLS: fails', allowMatching(aMatch({ notPrincipals: [presence] })), MTLS, false],
    ['not_principals presence, plaintext: passes', allowMatching(aMatch({ notPrincipals: [presence] })), PLAIN, true],
    // namespaces: from the identity, "" without one
    ['namespaces exact', allowMatching(aMatch({ namespaces: [exact('a')] })), MTLS, true],
    ['namespaces exact, other', allowMatching(aMatch({ namespaces: [exact('b')] })), MTLS, false],
    ['namespaces prefix', allowMatching(aMatch({ namespaces: [prefix('a')] })), MTLS, true],
    ['namespaces suffix', allowMatching(aMatch({ namespaces: [suffix('x')] })), MTLS, false],
    ['namespaces presence, plaintext', allowMatching(aMatch({ namespaces: [presence] })), PLAIN, false],
    ['namespaces exact "", plaintext: matches the empty namespace (as ztunnel)', allowMatching(aMatch({ namespaces: [exact('')] })), PLAIN, true],
    ['namespaces exact, plaintext', allowMatching(aMatch({ namespaces: [exact('a')] })), PLAIN, false],
    ['not_namespaces hit fails', allowMatching(aMatch({ notNamespaces: [exact('a')] })), MTLS, false],
    ['not_namespaces miss passes', allowMatching(aMatch({ notNamespaces: [exact('z')] })), MTLS, true],
    ['not_namespaces exact, plaintext passes', allowMatching(aMatch({ notNamespaces: [exact('a')] })), PLAIN, true],
    ['not_namespaces presence, plaintext passes', allowMatching(aMatch({ notNamespaces: [presence] })), PLAIN, true],
    // service accounts: (namespace, sa) of the identity; no identity never matches
    ['serviceAccounts hit', allowMatching(aMatch({ serviceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] })), MTLS, true],
    ['serviceAccounts wrong sa', allowMatching(aMatch({ serviceAccounts: [{ namespace: 'a', serviceAccount: 'c' }] })), MTLS, false],
    ['serviceAccounts wrong namespace', allowMatching(aMatch({ serviceAccounts: [{ namespace: 'x', serviceAccount: 'b' }] })), MTLS, false],
    ['serviceAccounts, plaintext', allowMatching(aMatch({ serviceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] })), PLAIN, false],
    ['not_serviceAccounts hit fails', allowMatching(aMatch({ notServiceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] })), MTLS, false],
    ['not_serviceAccounts miss passes', allowMatching(aMatch({ notServiceAccounts: [{ namespace: 'a', serviceAccount: 'z' }] })), MTLS, true],
    ['not_serviceAccounts, plaintext passes', allowMatching(aMatch({ notServiceAccounts: [{ namespace: 'a', serviceAccount: 'b' }] })), PLAIN, true],
    // IPs (CIDR)
    ['sourceIps inside', allowMatching(aMatch({ sourceIps: [cidr('10.0.0.0/24')] })), MTLS, true],
    ['sourceIps exact /32', allowMatching(aMatch({ sourceIps: [cidr('10.0.0.1/32')] })), MTLS, true],
    ['sourceIps outside', allowMatching(aMatch({ sourceIps: [cidr('192.168.0.0/16')] })), MTLS, false],
    ['sourceIps of another family never match', allowMatching(aMatch({ sourceIps: [cidr('::/0')] })), MTLS, false],
    // Addresses are unmapped where they enter (a dual-stack listener reports IPv4 peers as ::ffff:a.b.c.d).
    ['sourceIps: an IPv4-mapped source, as the listener edge reports it, is compared as IPv4', allowMatching(aMatch({ sourceIps: [cidr('10.0.0.0/24')] })), { ...MTLS, src: peerAddress({ remoteAddress: '::ffff:10.0.0.1', remotePort: 1 }) ?? MTLS.src }, true],
    ['sourceIps: IPv6', allowMatching(aMatch({ sourceIps: [cidr('fd00::/8')] })), { ...MTLS, src: { ip: 'fd00::1', port: 1 } }, true],
    ['not_sourceIps inside fails', allowMatching(aMatch({ notSourceIps: [cidr('10.0.0.0/8')] })), MTLS, false],
    ['not_sourceIps outside passes', allowMatching(aMatch({ notSourceIps: [cidr('172.16.0.0/12')] })), MTLS, true],
    ['destinationIps inside', allowMatching(aMatch({ destinationIps: [cidr('10.0.0.2/32')] })), MTLS, true],
    ['destinationIps outside', allowMatching(aMatch({ destinationIps: [cidr('10.0.0.1/32')] })), MTLS, false],
    ['not_destinationIps inside fails', allowMatching(aMatch({ notDestinationIps: [cidr('10.0.0.0/16')] })), MTLS, false],
    ['not_destinationIps outside passes', allowMatching(aMatch({ notDestinationIps: [cidr('10.1.0.0/16')] })), MTLS, true],
    // Ports: the resolved target port, never the HBONE port
    ['destinationPorts: the target port', allowMatching(aMatch({ destinationPorts: [8080] })), MTLS, true],
    ['destinationPorts: 15008 is not the target port', allowMatching(aMatch({ destinationPorts: [15008] })), MTLS, false],
    ['not_destinationPorts hit fails', allowMatching(aMatch({ notDestinationPorts: [8080] })), MTLS, false],
    ['not_destinationPorts miss passes', allowMatching(aMatch({ notDestinationPorts: [9090] })), MTLS, true],
  ])('%s', (_name, policy, conn, want) => {
    expect(allowed(policy, conn)).toBe(want);
  });
});

const DENY_ALL = aPolicy({ namespace: 'ns', name: 'deny-all', action: 'Deny', rules: [{ clauses: [] }] });
const DENY_PORT_9090 = aPolicy({ namespace: 'ns', name: 'deny-9090', action: 'Deny', matches: [aMatch({ destinationPorts: [9090] })] });
const ALLOW_A = aPolicy({ namespace: 'ns', name: 'allow-a', matches: [aMatch({ namespaces: [exact('a')] })] });
const ALLOW_X = aPolicy({ namespace: 'ns', name: 'allow-x', matches: [aMatch({ namespaces: [exact('x')] })] });
const DRY_DENY_ALL = { ...DENY_ALL, name: 'dry-deny-all', dryRun: true };
const DRY_ALLOW_X = { ...ALLOW_X, name: 'dry-allow-x', dryRun: true };
const DRY_ALLOW_A = { ...ALLOW_A, name: 'dry-allow-a', dryRun: true };
/** istiod's PeerAuthentication STRICT conversion. */
const STRICT = aPolicy({
  namespace: 'istio-system',
  name: 'istio_converted_static_strict',
  scope: 'WorkloadSelector',
  action: 'Deny',
  matches: [aMatch({ notPrincipals: [presence] })],
});

describe('evaluation order (Istio authorization-policy algorithm)', () => {
  it.each<[string, Authorization[], readonly string[], ConnInfo, Partial<ReturnType<typeof evaluate>>]>([
    ['no policies: allow', [], [], MTLS, { allow: true, reason: 'no-allow-policies' }],
    ['a matching DENY: deny, naming it', [DENY_ALL], [], MTLS, { allow: false, reason: 'explicit-deny', policy: 'ns/deny-all' }],
    ['a DENY that does not match, no ALLOW: allow', [DENY_PORT_9090], [], MTLS, { allow: true, reason: 'no-allow-policies' }],
    ['DENY wins over a matching ALLOW', [ALLOW_A, DENY_ALL], [], MTLS, { allow: false, reason: 'explicit-deny', policy: 'ns/deny-all' }],
    ['a matching ALLOW: allow, naming it', [ALLOW_X, ALLOW_A], [], MTLS, { allow: true, reason: 'allow-match', policy: 'ns/allow-a' }],
    ['ALLOWs exist but none match: deny', [ALLOW_X], [], MTLS, { allow: false, reason: 'no-allow-match' }],
    ['an ALLOW with empty rules allows nothing', [aPolicy({ namespace: 'ns', name: 'empty' })], [], MTLS, { allow: false, reason: 'no-allow-match' }],
    [
      'a dry-run DENY never denies, but is reported',
      [DRY_DENY_ALL],
      [],
      MTLS,
      { allow: true, reason: 'no-allow-policies', dryRun: [{ policy: 'ns/dry-deny-all', action: 'Deny', wouldMatch: true }] },
    ],
    [
      'a dry-run ALLOW does not count as an ALLOW policy',
      [DRY_ALLOW_X],
      [],
      MTLS,
      { allow: true, reason: 'no-allow-policies', dryRun: [{ policy: 'ns/dry-allow-x', action: 'Allow', wouldMatch: false }] },
    ],
    [
      'a dry-run ALLOW that matches does not rescue a non-matching ALLOW',
      [ALLOW_X, DRY_ALLOW_A],
      [],
      MTLS,
      { allow: false, reason: 'no-allow-match', dryRun: [{ policy: 'ns/dry-allow-a', action: 'Allow', wouldMatch: true }] },
    ],
    [
      'dry-run DENYs are evaluated before an explicit deny, dry-run ALLOWs are not',
      [DRY_ALLOW_A, DENY_ALL, DRY_DENY_ALL],
      [],
      MTLS,
      { allow: false, reason: 'explicit-deny', dryRun: [{ policy: 'ns/dry-deny-all', action: 'Deny', wouldMatch: true }] },
    ],
    ['a missing referenced policy fails closed, even when an ALLOW matches', [ALLOW_A], ['ns/not-yet'], MTLS, { allow: false, reason: 'missing-policy', missing: ['ns/not-yet'] }],
    ['a missing referenced policy fails closed with no ALLOW policies', [], ['ns/not-yet'], MTLS, { allow: false, reason: 'missing-policy' }],
    ['an explicit DENY is reported before a missing policy', [DENY_ALL], ['ns/not-yet'], MTLS, { allow: false, reason: 'explicit-deny' }],
    ['STRICT mTLS denies plaintext', [STRICT], [], PLAIN, { allow: false, reason: 'explicit-deny', policy: 'istio-system/istio_converted_static_strict' }],
    ['STRICT mTLS allows mTLS', [STRICT], [], MTLS, { allow: true, reason: 'no-allow-policies' }],
    ['an address that is not an IP fails closed', [], [], { ...MTLS, src: { ip: 'not-an-ip', port: 1 } }, { allow: false, reason: 'invalid-connection' }],
  ])('%s', (_name, policies, missing, conn, want) => {
    const d = evaluate({ policies, missing }, conn);
    expect(d).toMatchObject(want);
    if (want.dryRun === undefined) expect(d.dryRun).toEqual([]);
  });
});

describe('policies applicable to a workload (global + namespace + selector) through the store', () => {
  const server = aWorkload({
    uid: 'Kubernetes//Pod/ns/server',
    namespace: 'ns',
    addresses: ['10.0.0.2'],
    authorizationPolicies: ['istio-system/istio_converted_static_strict', 'ns/selector-allow-a'],
  });
  const globalDeny9090 = aPolicy({ namespace: 'istio-system', name: 'global-deny-9090', scope: 'Global', action: 'Deny', matches: [aMatch({ destinationPorts: [9090] })] });
  const nsAllowA = aPolicy({ namespace: 'ns', name: 'ns-allow-a', matches: [aMatch({ namespaces: [exact('a')] })] });
  const selectorAllowA = aPolicy({ namespace: 'ns', name: 'selector-allow-a', scope: 'WorkloadSelector', matches: [aMatch({ namespaces: [exact('c')] })] });
  const otherNsDenyAll = aPolicy({ namespace: 'other', name: 'deny-all', action: 'Deny', rules: [{ clauses: [] }] });
  const unreferencedSelectorDeny = aPolicy({ namespace: 'ns', name: 'not-mine', scope: 'WorkloadSelector', action: 'Deny', rules: [{ clauses: [] }] });
  const all = [globalDeny9090, nsAllowA, selectorAllowA, otherNsDenyAll, unreferencedSelectorDeny, STRICT];

  it.each<[string, readonly Authorization[], ConnInfo, Partial<ReturnType<typeof evaluate>>]>([
    ['namespace ALLOW matches; other namespaces and unreferenced selector policies do not apply', all, MTLS, { allow: true, reason: 'allow-match', policy: 'ns/ns-allow-a' }],
    ['selector ALLOW matches a namespace the namespace policy does not', all, { ...MTLS, srcIdentity: id('c', 'd') }, { allow: true, reason: 'allow-match', policy: 'ns/selector-allow-a' }],
    ['no ALLOW (namespace or selector) matches', all, { ...MTLS, srcIdentity: id('z', 'd') }, { allow: false, reason: 'no-allow-match' }],
    ['the global DENY applies to every namespace', all, { ...MTLS, dst: { ip: '10.0.0.2', port: 9090 } }, { allow: false, reason: 'explicit-deny', policy: 'istio-system/global-deny-9090' }],
    ['the referenced STRICT policy denies plaintext', all, PLAIN, { allow: false, reason: 'explicit-deny', policy: 'istio-system/istio_converted_static_strict' }],
    ['a referenced selector policy not yet received fails closed', all.filter((p) => p !== selectorAllowA), MTLS, { allow: false, reason: 'missing-policy', missing: ['ns/selector-allow-a'] }],
  ])('%s', async (_name, policies, conn, want) => {
    const snapshot = await snapshotOf([server], policies);
    expect(evaluate(snapshot.policiesFor(server), conn)).toMatchObject(want);
  });
});

describe('describeDecision', () => {
  it.each<[string, ReturnType<typeof evaluate>, string]>([
    ['explicit deny', { allow: false, reason: 'explicit-deny', policy: 'ns/deny', dryRun: [] }, 'denied by policy ns/deny'],
    ['no allow policies', { allow: true, reason: 'no-allow-policies', dryRun: [] }, 'allowed: no allow policies apply'],
    ['allow match', { allow: true, reason: 'allow-match', policy: 'ns/a', dryRun: [] }, 'allowed by policy ns/a'],
    ['no allow match', { allow: false, reason: 'no-allow-match', dryRun: [] }, 'denied: allow policies exist, but none allowed'],
    [
      'missing policies',
      { allow: false, reason: 'missing-policy', missing: ['ns/a', 'ns/b'], dryRun: [] },
      'denied: referenced policies ns/a, ns/b not received from the control plane yet (failing closed)',
    ],
    [
      'dry-run matches are appended',
      { allow: true, reason: 'no-allow-policies', dryRun: [{ policy: 'ns/d', action: 'Deny', wouldMatch: true }] },
      'allowed: no allow policies apply (dry-run deny policy ns/d matches)',
    ],
    [
      'dry-run allows that would deny are flagged',
      { allow: true, reason: 'no-allow-policies', dryRun: [{ policy: 'ns/x', action: 'Allow', wouldMatch: false }] },
      'allowed: no allow policies apply (dry-run: no allow policies match)',
    ],
  ])('%s', (_name, decision, want) => {
    expect(describeDecision(decision)).toBe(want);
  });
});

describe('policy fingerprints for re-evaluation', () => {
  it('is stable for the same set in any order and changes with content, membership and missing keys', () => {
    const base = policyFingerprint({ policies: [ALLOW_A, DENY_ALL], missing: [] });
    expect(policyFingerprint({ policies: [DENY_ALL, ALLOW_A], missing: [] })).toBe(base);
    expect(policyFingerprint({ policies: [{ ...ALLOW_A }, DENY_ALL], missing: [] })).toBe(base);
    expect(policyFingerprint({ policies: [{ ...ALLOW_A, dryRun: true }, DENY_ALL], missing: [] })).not.toBe(base);
    expect(policyFingerprint({ policies: [{ ...ALLOW_A, rules: [] }, DENY_ALL], missing: [] })).not.toBe(base);
    expect(policyFingerprint({ policies: [ALLOW_A], missing: [] })).not.toBe(base);
    expect(policyFingerprint({ policies: [ALLOW_A, DENY_ALL], missing: ['ns/x'] })).not.toBe(base);
  });

  it('samePolicies compares by identity of the immutable policy objects', () => {
    expect(samePolicies({ policies: [ALLOW_A, DENY_ALL], missing: ['k'] }, { policies: [DENY_ALL, ALLOW_A], missing: ['k'] })).toBe(true);
    expect(samePolicies({ policies: [ALLOW_A], missing: [] }, { policies: [{ ...ALLOW_A }], missing: [] })).toBe(false);
    expect(samePolicies({ policies: [ALLOW_A], missing: [] }, { policies: [ALLOW_A], missing: ['k'] })).toBe(false);
  });
});
