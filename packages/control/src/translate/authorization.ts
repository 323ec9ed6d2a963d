/**
 * istio.security.Authorization → model Authorization (ztunnel src/rbac.rs
 * `TryFrom<XdsRbac>`), and decoding of an Authorization xDS resource.
 *
 * Where ztunnel silently drops a malformed entry from a match list (an unset
 * StringMatch, a source/destination address of the wrong size or prefix
 * length) we refuse the whole policy instead: dropping the only entry of a
 * positive list would turn "from these" into "from anyone". A NACK keeps the
 * previous version of the policy in force. Ports are refused outside
 * 1..65535 (ztunnel truncates them with `as u16`), and ServiceAccountMatch
 * needs both fields (an empty one can never match an identity).
 *
 * `extensions` (on the policy and on each match) are accepted and ignored, as
 * ztunnel does.
 */
import { fromBinary } from '@bufbuild/protobuf';
import type { PackedResource } from '../xds/type-urls.js';
import {
  Action,
  ActionSchema,
  AuthorizationSchema,
  Scope,
  ScopeSchema,
  type Address as PbAddress,
  type Authorization as PbAuthorization,
  type Match as PbMatch,
  type ServiceAccountMatch as PbServiceAccountMatch,
  type StringMatch as PbStringMatch,
} from '../gen/istio/security/authorization_pb.js';
import type {
  Authorization,
  Match,
  PolicyAction,
  PolicyScope,
  Rule,
  ServiceAccountMatch,
  StringMatch,
} from '../model/authorization.js';
import { makeCidr, type Cidr } from '../model/ip.js';
import { fail, rejection, type Result } from '../result.js';
import { AUTHORIZATION_TYPE_URL } from '../xds/type-urls.js';
import { checkPort, DECODE_OPTIONS, errorText, ipFromWire, mapEnum, Problems } from './common.js';

const SCOPES: Record<number, PolicyScope> = {
  [Scope.GLOBAL]: 'Global',
  [Scope.NAMESPACE]: 'Namespace',
  [Scope.WORKLOAD_SELECTOR]: 'WorkloadSelector',
};

const ACTIONS: Record<number, PolicyAction> = {
  [Action.ALLOW]: 'Allow',
  [Action.DENY]: 'Deny',
};

export function translateAuthorization(pb: PbAuthorization): Result<Authorization> {
  const problems = Problems.root();
  return problems.result(authorization(pb, problems));
}

/**
 * Unpacks an `Any` holding an istio.security.Authorization and translates it.
 * A wrong type URL or bytes that do not decode are rejections, never throws.
 */
export function decodeAuthorizationResource(any: PackedResource): Result<Authorization> {
  if (any.typeUrl !== AUTHORIZATION_TYPE_URL) {
    return fail(rejection('typeUrl', `expected ${AUTHORIZATION_TYPE_URL}, got ${JSON.stringify(any.typeUrl)}`));
  }
  let pb: PbAuthorization;
  try {
    pb = fromBinary(AuthorizationSchema, any.value, DECODE_OPTIONS);
  } catch (e) {
    return fail(rejection('', `resource does not decode as istio.security.Authorization: ${errorText(e)}`));
  }
  return translateAuthorization(pb);
}

function authorization(pb: PbAuthorization, problems: Problems): Authorization | undefined {
  // Policies are keyed and referenced as `namespace/name`.
  if (pb.name === '') problems.add('name', 'name must not be empty (policies are keyed by namespace/name)');
  if (pb.namespace === '') problems.add('namespace', 'namespace must not be empty (policies are keyed by namespace/name)');
  const scope = mapEnum(pb.scope, ScopeSchema, SCOPES, 'scope', problems);
  const action = mapEnum(pb.action, ActionSchema, ACTIONS, 'action', problems);
  const rules: Rule[] = pb.rules.map((r, i) => ({
    clauses: r.clauses.map((c, j) => ({
      matches: c.matches.map((m, k) => match(m, problems.at(`rules[${i}].clauses[${j}].matches[${k}]`))),
    })),
  }));
  if (problems.count > 0 || scope === undefined || action === undefined) return undefined;
  return { name: pb.name, namespace: pb.namespace, scope, action, dryRun: pb.dryRun, rules };
}

function match(pb: PbMatch, problems: Problems): Match {
  const strings = (list: readonly PbStringMatch[], field: string): StringMatch[] =>
    list.flatMap((s, i) => stringMatch(s, `${field}[${i}]`, problems) ?? []);
  const accounts = (list: readonly PbServiceAccountMatch[], field: string): ServiceAccountMatch[] =>
    list.map((s, i) => serviceAccountMatch(s, `${field}[${i}]`, problems));
  const cidrs = (list: readonly PbAddress[], field: string): Cidr[] =>
    list.flatMap((a, i) => cidr(a, `${field}[${i}]`, problems) ?? []);
  const ports = (list: readonly number[], field: string): number[] =>
    list.map((p, i) => checkPort(p, `${field}[${i}]`, problems, { allowZero: false }));
  return {
    namespaces: strings(pb.namespaces, 'namespaces'),
    notNamespaces: strings(pb.notNamespaces, 'notNamespaces'),
    principals: strings(pb.principals, 'principals'),
    notPrincipals: strings(pb.notPrincipals, 'notPrincipals'),
    serviceAccounts: accounts(pb.serviceAccounts, 'serviceAccounts'),
    notServiceAccounts: accounts(pb.notServiceAccounts, 'notServiceAccounts'),
    sourceIps: cidrs(pb.sourceIps, 'sourceIps'),
    notSourceIps: cidrs(pb.notSourceIps, 'notSourceIps'),
    destinationIps: cidrs(pb.destinationIps, 'destinationIps'),
    notDestinationIps: cidrs(pb.notDestinationIps, 'notDestinationIps'),
    destinationPorts: ports(pb.destinationPorts, 'destinationPorts'),
    notDestinationPorts: ports(pb.notDestinationPorts, 'notDestinationPorts'),
  };
}

function stringMatch(pb: PbStringMatch, field: string, problems: Problems): StringMatch | undefined {
  const m = pb.matchType;
  switch (m.case) {
    case 'exact':
    case 'prefix':
    case 'suffix':
      return { kind: m.case, value: m.value };
    case 'presence':
      return { kind: 'presence' };
    case undefined:
      problems.add(field, 'string match has no match type; expected exact, prefix, suffix or presence');
      return undefined;
  }
}

function serviceAccountMatch(pb: PbServiceAccountMatch, field: string, problems: Problems): ServiceAccountMatch {
  if (pb.namespace === '') problems.add(`${field}.namespace`, 'namespace must not be empty');
  if (pb.serviceAccount === '') problems.add(`${field}.serviceAccount`, 'service account must not be empty');
  return { namespace: pb.namespace, serviceAccount: pb.serviceAccount };
}

function cidr(pb: PbAddress, field: string, problems: Problems): Cidr | undefined {
  const ip = ipFromWire(pb.address, `${field}.address`, problems);
  if (ip === undefined) return undefined;
  const width = pb.address.length * 8;
  if (pb.length > width) {
    problems.add(`${field}.length`, `prefix length ${pb.length} is longer than the ${width}-bit address ${ip}`);
    return undefined;
  }
  return makeCidr(ip, pb.length);
}
