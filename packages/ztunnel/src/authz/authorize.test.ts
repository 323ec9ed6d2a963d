/** The one authorization step: the decision, the error the table answers, and the log line. */
import type { Identity } from '@ambient/control';
import { beforeAll, describe, expect, it } from 'vitest';
import { ERROR_DISPOSITIONS } from '@ambient/dataplane';
import { aMatch, aPolicy, aWorkload, snapshotOf } from '../../test/model-fixtures.js';
import { authorize, logDecision } from './authorize.js';
import type { ConnInfo } from './evaluate.js';

const id = (ns: string, sa: string): Identity => ({ trustDomain: 'cluster.local', namespace: ns, serviceAccount: sa });
const conn = (port: number, srcIdentity: Identity | undefined = id('a', 'b')): ConnInfo => ({
  src: { ip: '10.0.0.1', port: 40000 },
  dst: { ip: '10.0.0.2', port },
  srcIdentity,
  dstNetwork: '',
});

describe('authorize', () => {
  const server = aWorkload({ uid: 'Kubernetes//Pod/ns/server', namespace: 'ns', addresses: ['10.0.0.2'] });
  // Namespace-scoped: they apply to every workload of ns.
  const deny = aPolicy({ namespace: 'ns', name: 'deny-9090', action: 'Deny', matches: [aMatch({ destinationPorts: [9090] })] });
  const dry = aPolicy({ namespace: 'ns', name: 'dry', action: 'Deny', dryRun: true, matches: [aMatch({ destinationPorts: [7070] })] });
  let snapshot: Awaited<ReturnType<typeof snapshotOf>>;
  beforeAll(async () => {
    snapshot = await snapshotOf([server], [deny, dry]);
  });

  it('allows with no error, and denies with POLICY_DENIED (401, DENY) naming the policy', () => {
    expect(authorize(snapshot, server, conn(8080)).denied).toBeUndefined();
    const denied = authorize(snapshot, server, conn(9090));
    expect(denied.denied?.code).toBe('POLICY_DENIED');
    expect(denied.denied?.message).toBe('connection denied: denied by policy ns/deny-9090');
    expect(ERROR_DISPOSITIONS.POLICY_DENIED).toMatchObject({ httpStatus: 401, responseFlag: 'DENY' });
  });

  it('a re-check of a live connection denies with POLICY_CHANGED (the connection is closed, flag DENY)', () => {
    const recheck = authorize(snapshot, server, conn(9090), 'POLICY_CHANGED');
    expect(recheck.denied?.code).toBe('POLICY_CHANGED');
    expect(recheck.denied?.message).toMatch(/^connection closed due to policy change: denied by policy ns\/deny-9090/);
    expect(ERROR_DISPOSITIONS.POLICY_CHANGED).toMatchObject({ httpStatus: undefined, responseFlag: 'DENY' });
  });

  it('plaintext (no identity) and mTLS connections go through the same rules', () => {
    expect(authorize(snapshot, server, conn(9090, undefined)).denied?.code).toBe('POLICY_DENIED');
    expect(authorize(snapshot, server, conn(8080, undefined)).denied).toBeUndefined();
  });

  it('logs the decision when info logging is on, and always when a dry-run policy took part', () => {
    const lines: Array<{ obj: object; msg?: string }> = [];
    const log = { info: (obj: object, msg?: string) => void lines.push({ obj, ...(msg === undefined ? {} : { msg }) }) };
    const withDryRun = authorize(snapshot, server, conn(8080));
    expect(withDryRun.decision.dryRun.length).toBe(1);
    logDecision(log, withDryRun, false);
    expect(lines).toEqual([{ obj: { decision: withDryRun.reason }, msg: 'authorization decision' }]);
  });
});
