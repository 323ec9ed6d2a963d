/**
 * L4 authorization policies (istio.security.Authorization) with named nesting:
 * a policy matches when ANY rule matches; a rule when ALL its clauses match;
 * a clause when ANY of its matches match; a match when EVERY populated field passes.
 */
import type { Cidr } from './ip.js';

export type PolicyScope = 'Global' | 'Namespace' | 'WorkloadSelector';
export type PolicyAction = 'Allow' | 'Deny';

export type StringMatch =
  | { readonly kind: 'exact'; readonly value: string }
  | { readonly kind: 'prefix'; readonly value: string }
  | { readonly kind: 'suffix'; readonly value: string }
  | { readonly kind: 'presence' };

export interface ServiceAccountMatch {
  readonly namespace: string;
  readonly serviceAccount: string;
}

export interface Match {
  readonly namespaces: readonly StringMatch[];
  readonly notNamespaces: readonly StringMatch[];
  readonly principals: readonly StringMatch[];
  readonly notPrincipals: readonly StringMatch[];
  readonly serviceAccounts: readonly ServiceAccountMatch[];
  readonly notServiceAccounts: readonly ServiceAccountMatch[];
  readonly sourceIps: readonly Cidr[];
  readonly notSourceIps: readonly Cidr[];
  readonly destinationIps: readonly Cidr[];
  readonly notDestinationIps: readonly Cidr[];
  readonly destinationPorts: readonly number[];
  readonly notDestinationPorts: readonly number[];
}

export interface Clause {
  readonly matches: readonly Match[];
}

export interface Rule {
  readonly clauses: readonly Clause[];
}

export interface Authorization {
  readonly name: string;
  readonly namespace: string;
  readonly scope: PolicyScope;
  readonly action: PolicyAction;
  readonly dryRun: boolean;
  readonly rules: readonly Rule[];
}

/** `namespace/name`: the xDS resource name istiod uses and the key workloads reference. */
export function policyKey(p: { readonly namespace: string; readonly name: string }): string {
  return `${p.namespace}/${p.name}`;
}
