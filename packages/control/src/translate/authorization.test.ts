import { create, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { anyPack, EmptySchema } from '@bufbuild/protobuf/wkt';
import { describe, expect, it } from 'vitest';
import {
  Action,
  AuthorizationSchema,
  Scope,
  type Authorization as PbAuthorization,
  type MatchSchema,
} from '../gen/istio/security/authorization_pb.js';
import type { Authorization, Match } from '../model/authorization.js';
import { ipToBytes } from '../model/ip.js';
import { aMatch } from '../testing/model-builders.js';
import type { Rejection } from '../result.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../xds/type-urls.js';
import { decodeAuthorizationResource, translateAuthorization } from './authorization.js';

/** A number outside the enum, as protobuf-es keeps it when decoding (open enums). */
const unknownEnum = (n: number): never => n as never;

type AuthorizationInit = MessageInitShape<typeof AuthorizationSchema>;
type MatchInit = MessageInitShape<typeof MatchSchema>;

function pbPolicy(overrides: Partial<AuthorizationInit> = {}): PbAuthorization {
  const init = {
    name: 'allow-client',
    namespace: 'demo',
    scope: Scope.WORKLOAD_SELECTOR,
    action: Action.ALLOW,
    rules: [{ clauses: [{ matches: [{ destinationPorts: [8080] }] }] }],
    ...overrides,
  } as AuthorizationInit;
  return create(AuthorizationSchema, init);
}

/** A policy whose only match is `m`. */
function withMatch(m: MatchInit): Partial<AuthorizationInit> {
  return { rules: [{ clauses: [{ matches: [m] }] }] };
}

function translated(overrides: Partial<AuthorizationInit> = {}): Authorization {
  const r = translateAuthorization(pbPolicy(overrides));
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.errors)}`);
  return r.value;
}

function onlyMatch(m: MatchInit): Match {
  const match = translated(withMatch(m)).rules[0]?.clauses[0]?.matches[0];
  if (match === undefined) throw new Error('no match');
  return match;
}

function rejections(overrides: Partial<AuthorizationInit>): readonly Rejection[] {
  const r = translateAuthorization(pbPolicy(overrides));
  if (r.ok) throw new Error('expected a rejection');
  return r.errors;
}

const EMPTY_MATCH: Match = aMatch();

describe('translateAuthorization', () => {
  it('translates every field, keeping the rules → clauses → matches nesting', () => {
    const p = translated({
      name: 'mixed',
      namespace: 'demo',
      scope: Scope.NAMESPACE,
      action: Action.DENY,
      dryRun: true,
      extensions: [{ name: 'istio.io/future' }],
      rules: [
        {
          clauses: [
            {
              matches: [
                {
                  namespaces: [{ matchType: { case: 'exact', value: 'demo' } }],
                  notNamespaces: [{ matchType: { case: 'prefix', value: 'kube-' } }],
                  principals: [{ matchType: { case: 'suffix', value: '/sa/client' } }],
                  notPrincipals: [{ matchType: { case: 'presence', value: create(EmptySchema) } }],
                  serviceAccounts: [{ namespace: 'demo', serviceAccount: 'client' }],
                  notServiceAccounts: [{ namespace: 'demo', serviceAccount: 'blocked' }],
                  sourceIps: [{ address: ipToBytes('10.1.0.0'), length: 16 }],
                  notSourceIps: [{ address: ipToBytes('10.1.2.3'), length: 32 }],
                  destinationIps: [{ address: ipToBytes('fd00::'), length: 8 }],
                  notDestinationIps: [{ address: ipToBytes('0.0.0.0'), length: 0 }],
                  destinationPorts: [8080, 9090],
                  notDestinationPorts: [15000],
                  extensions: [{ name: 'istio.io/future' }],
                },
                {},
              ],
            },
            { matches: [] },
          ],
        },
        { clauses: [] },
      ],
    });
    expect(p).toEqual<Authorization>({
      name: 'mixed',
      namespace: 'demo',
      scope: 'Namespace',
      action: 'Deny',
      dryRun: true,
      rules: [
        {
          clauses: [
            {
              matches: [
                {
                  namespaces: [{ kind: 'exact', value: 'demo' }],
                  notNamespaces: [{ kind: 'prefix', value: 'kube-' }],
                  principals: [{ kind: 'suffix', value: '/sa/client' }],
                  notPrincipals: [{ kind: 'presence' }],
                  serviceAccounts: [{ namespace: 'demo', serviceAccount: 'client' }],
                  notServiceAccounts: [{ namespace: 'demo', serviceAccount: 'blocked' }],
                  sourceIps: [{ address: '10.1.0.0', prefixLength: 16, family: 4 }],
                  notSourceIps: [{ address: '10.1.2.3', prefixLength: 32, family: 4 }],
                  destinationIps: [{ address: 'fd00::', prefixLength: 8, family: 6 }],
                  notDestinationIps: [{ address: '0.0.0.0', prefixLength: 0, family: 4 }],
                  destinationPorts: [8080, 9090],
                  notDestinationPorts: [15000],
                },
                EMPTY_MATCH,
              ],
            },
            { matches: [] },
          ],
        },
        { clauses: [] },
      ],
    });
  });

  it.each([
    [Scope.GLOBAL, 'Global'],
    [Scope.NAMESPACE, 'Namespace'],
    [Scope.WORKLOAD_SELECTOR, 'WorkloadSelector'],
  ])('scope %i → %s', (scope, expected) => {
    expect(translated({ scope }).scope).toBe(expected);
  });

  it.each([
    [Action.ALLOW, 'Allow'],
    [Action.DENY, 'Deny'],
  ])('action %i → %s', (action, expected) => {
    expect(translated({ action }).action).toBe(expected);
  });

  it('keeps a policy with no rules (it never matches)', () => {
    expect(translated({ rules: [] }).rules).toEqual([]);
  });

  it('keeps an empty string match value (istiod sends "*x" as suffix "x", "*" as presence)', () => {
    expect(onlyMatch({ principals: [{ matchType: { case: 'prefix', value: '' } }] }).principals).toEqual([{ kind: 'prefix', value: '' }]);
  });

  it('masks host bits of a policy CIDR', () => {
    expect(onlyMatch({ sourceIps: [{ address: ipToBytes('10.1.2.3'), length: 8 }] }).sourceIps).toEqual([
      { address: '10.0.0.0', prefixLength: 8, family: 4 },
    ]);
  });

  const M = 'rules[0].clauses[0].matches[0]';
  it.each<[string, Partial<AuthorizationInit>, string, string]>([
    ['empty name', { name: '' }, 'name', 'name must not be empty'],
    ['empty namespace', { namespace: '' }, 'namespace', 'namespace must not be empty'],
    ['unknown scope', { scope: unknownEnum(3) }, 'scope', 'unknown Scope value 3; expected one of GLOBAL (0), NAMESPACE (1), WORKLOAD_SELECTOR (2)'],
    ['unknown action (no AUDIT in WDS)', { action: unknownEnum(2) }, 'action', 'unknown Action value 2; expected one of ALLOW (0), DENY (1)'],
    ['string match without a type', withMatch({ principals: [{}] }), `${M}.principals[0]`, 'string match has no match type'],
    ['unset namespace match', withMatch({ notNamespaces: [{ matchType: { case: 'exact', value: 'a' } }, {}] }), `${M}.notNamespaces[1]`, 'no match type'],
    ['service account match without namespace', withMatch({ serviceAccounts: [{ serviceAccount: 'sa' }] }), `${M}.serviceAccounts[0].namespace`, 'must not be empty'],
    ['service account match without account', withMatch({ notServiceAccounts: [{ namespace: 'ns' }] }), `${M}.notServiceAccounts[0].serviceAccount`, 'must not be empty'],
    ['source address of 5 bytes', withMatch({ sourceIps: [{ address: new Uint8Array(5), length: 32 }] }), `${M}.sourceIps[0].address`, 'got 5'],
    ['IPv4 prefix over 32', withMatch({ notSourceIps: [{ address: ipToBytes('10.0.0.0'), length: 33 }] }), `${M}.notSourceIps[0].length`, 'prefix length 33 is longer than the 32-bit address 10.0.0.0'],
    ['IPv6 prefix over 128', withMatch({ destinationIps: [{ address: ipToBytes('fd00::'), length: 129 }] }), `${M}.destinationIps[0].length`, 'longer than the 128-bit'],
    ['empty destination address', withMatch({ notDestinationIps: [{ address: new Uint8Array(0), length: 0 }] }), `${M}.notDestinationIps[0].address`, 'got 0'],
    ['destination port 0', withMatch({ destinationPorts: [0] }), `${M}.destinationPorts[0]`, 'port 0 is out of range; expected 1..65535'],
    ['not-destination port 65536', withMatch({ notDestinationPorts: [80, 65536] }), `${M}.notDestinationPorts[1]`, 'port 65536 is out of range'],
    [
      'a bad match in a later rule',
      { rules: [{ clauses: [] }, { clauses: [{ matches: [{}, { principals: [{}] }] }] }] },
      'rules[1].clauses[0].matches[1].principals[0]',
      'no match type',
    ],
  ])('rejects %s', (_name, overrides, field, reason) => {
    expect(rejections(overrides)).toContainEqual({ field, reason: expect.stringContaining(reason) });
  });
});

describe('decodeAuthorizationResource', () => {
  it('unpacks and translates an Authorization', () => {
    const r = decodeAuthorizationResource(anyPack(AuthorizationSchema, pbPolicy()));
    expect(r.ok && r.value.name).toBe('allow-client');
  });

  it('rejects another type URL', () => {
    const r = decodeAuthorizationResource({ ...anyPack(AuthorizationSchema, pbPolicy()), typeUrl: ADDRESS_TYPE_URL });
    expect(r).toEqual({ ok: false, errors: [{ field: 'typeUrl', reason: expect.stringContaining(`expected ${AUTHORIZATION_TYPE_URL}`) }] });
  });

  it('rejects bytes that do not decode', () => {
    const any = anyPack(AuthorizationSchema, pbPolicy());
    const r = decodeAuthorizationResource({ ...any, value: new Uint8Array([0x0a, 0x05, 0x61]) });
    expect(r).toEqual({ ok: false, errors: [{ field: '', reason: expect.stringContaining('does not decode as istio.security.Authorization') }] });
  });

  it('rejects a decoded policy that does not translate', () => {
    const any = anyPack(AuthorizationSchema, pbPolicy());
    const r = decodeAuthorizationResource({ ...any, value: toBinary(AuthorizationSchema, pbPolicy({ action: unknownEnum(5) })) });
    expect(r.ok).toBe(false);
  });
});
