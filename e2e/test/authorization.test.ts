// L4 AuthorizationPolicy enforced by the server's ztunnel (node-b) for
// clients on node-a: allow by principal, namespace and port; DENY wins over
// ALLOW; once any ALLOW exists everything else is denied; STRICT mTLS
// (istiod's converted PeerAuthentication) turns away a non-mesh client; and a
// policy change closes a live connection it no longer allows. A denied
// connection never reaches the server application.
import { afterEach, describe, expect, it } from 'vitest';
import { EchoServer, LongConnection, tryExchange } from '../lib/apps.js';
import { useCluster, type Cluster } from '../lib/cluster.js';
import type { MeshPolicy, PolicyMatch } from '../lib/mesh.js';
import { APP_PORT } from '../lib/scenario.js';
import { waitFor } from '../lib/wait.js';

const OTHER_PORT = 9090;
const STRICT = 'istio-system/istio_converted_static_strict';

const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client-a', node: 'node-a', namespace: 'demo', serviceAccount: 'client-a' },
    { name: 'client-b', node: 'node-a', namespace: 'other', serviceAccount: 'client-b' },
    { name: 'legacy', node: 'node-a', namespace: 'legacy', mode: 'plain' },
    { name: 'server', node: 'node-b', namespace: 'demo', serviceAccount: 'server' },
  ],
});

let step = 0;
let servers: { main: EchoServer; other: EchoServer } | undefined;

function policy(action: 'Allow' | 'Deny', ...matches: PolicyMatch[]): MeshPolicy {
  return { name: `${action.toLowerCase()}-${++step}`, namespace: 'demo', scope: 'Namespace', action, rules: [[matches]] };
}

async function apply(c: Cluster, policies: MeshPolicy[]): Promise<void> {
  c.setPolicies(policies);
  await c.waitForPolicies();
}

async function echoServers(c: Cluster): Promise<{ main: EchoServer; other: EchoServer }> {
  servers ??= {
    main: await EchoServer.start('server', c.pod('server').net.netns, APP_PORT),
    other: await EchoServer.start('server-9090', c.pod('server').net.netns, OTHER_PORT),
  };
  return servers;
}

/** Whether `client` gets through to the server app on `port`; a refusal must not reach the app. */
async function reaches(c: Cluster, client: string, port = APP_PORT): Promise<boolean> {
  const s = await echoServers(c);
  const app = port === APP_PORT ? s.main : s.other;
  const before = app.peers.length;
  const r = await tryExchange(c.pod(client).net.netns, c.pod('server').ip, port, `from ${client}`, 5_000);
  if (r instanceof Error) {
    expect(app.peers.length, `a denied connection from ${client} reached the app`).toBe(before);
    return false;
  }
  expect(r.echoed).toBe(`from ${client}`);
  return true;
}

const principal = (ns: string, sa: string) => ({ Exact: `cluster.local/ns/${ns}/sa/${sa}` });

afterEach(async () => {
  const c = cluster();
  if (c.mesh.policies.length > 0) await apply(c, []);
});

describe('L4 authorization at the destination ztunnel', () => {
  it('allows everyone, mesh or not, when no policy exists (PERMISSIVE)', async () => {
    const c = cluster();
    expect(await reaches(c, 'client-a')).toBe(true);
    expect(await reaches(c, 'client-b')).toBe(true);
    expect(await reaches(c, 'legacy')).toBe(true);
  });

  it('allows by principal, and then denies everyone else (default deny once an ALLOW exists)', async () => {
    const c = cluster();
    await apply(c, [policy('Allow', { principals: [principal('demo', 'client-a')] })]);
    expect(await reaches(c, 'client-a')).toBe(true);
    expect(await reaches(c, 'client-b')).toBe(false);
    expect(await reaches(c, 'legacy')).toBe(false);
  });

  it('allows by source namespace', async () => {
    const c = cluster();
    await apply(c, [policy('Allow', { namespaces: [{ Exact: 'other' }] })]);
    expect(await reaches(c, 'client-b')).toBe(true);
    expect(await reaches(c, 'client-a')).toBe(false);
  });

  it('allows by destination port (the application port, not 15008)', async () => {
    const c = cluster();
    await apply(c, [policy('Allow', { destinationPorts: [OTHER_PORT] })]);
    expect(await reaches(c, 'client-a', OTHER_PORT)).toBe(true);
    expect(await reaches(c, 'client-a', APP_PORT)).toBe(false);
  });

  it('lets a DENY win over an ALLOW that also matches', async () => {
    const c = cluster();
    await apply(c, [
      policy('Allow', { namespaces: [{ Exact: 'demo' }, { Exact: 'other' }] }),
      policy('Deny', { principals: [principal('demo', 'client-a')] }),
    ]);
    expect(await reaches(c, 'client-a')).toBe(false);
    expect(await reaches(c, 'client-b')).toBe(true);
  });

  it('denies everything when the only ALLOW matches nobody', async () => {
    const c = cluster();
    await apply(c, [policy('Allow', { principals: [principal('nowhere', 'nobody')] })]);
    expect(await reaches(c, 'client-a')).toBe(false);
    expect(await reaches(c, 'client-b')).toBe(false);
  });

  it('enforces STRICT mTLS (PeerAuthentication) against a non-mesh client only', async () => {
    const c = cluster();
    const strict: MeshPolicy = {
      name: 'istio_converted_static_strict',
      namespace: 'istio-system',
      scope: 'WorkloadSelector',
      action: 'Deny',
      rules: [[[{ notPrincipals: [{ Presence: [] }] }]]],
    };
    c.updateMesh((m) => ({
      ...m,
      policies: [strict],
      workloads: m.workloads.map((w) => (w.name === 'server' ? { ...w, authorizationPolicies: [STRICT] } : w)),
    }));
    await c.waitForPolicies();
    await c.ztunnel('node-b').waitForConfig('server selects the STRICT policy', (d) =>
      (d.workloads ?? []).some((w) => w.name === 'server' && JSON.stringify(w).includes(STRICT)),
    );
    try {
      expect(await reaches(c, 'legacy')).toBe(false);
      expect(await reaches(c, 'client-a')).toBe(true);
      expect(await reaches(c, 'client-b')).toBe(true);
    } finally {
      c.updateMesh((m) => ({ ...m, workloads: m.workloads.map((w) => (w.name === 'server' ? { ...w, authorizationPolicies: [] } : w)) }));
    }
  });

  it('closes a live connection that a new policy denies, and keeps the ones it still allows', async () => {
    const c = cluster();
    await echoServers(c);
    const denied = await LongConnection.open(c.pod('client-a').net.netns, c.pod('server').ip, APP_PORT);
    const kept = await LongConnection.open(c.pod('client-b').net.netns, c.pod('server').ip, APP_PORT);
    try {
      expect(await denied.ping('before')).toBe('before');
      expect(await kept.ping('before')).toBe('before');
      const changedAt = Date.now();
      await apply(c, [policy('Deny', { principals: [principal('demo', 'client-a')] })]);
      const reason = await Promise.race([denied.closed, new Promise<string>((r) => setTimeout(() => r('still open after 10 s'), 10_000))]);
      process.stdout.write(`live connection from client-a ended ${Date.now() - changedAt} ms after the policy change (${reason})\n`);
      expect(reason).not.toBe('still open after 10 s');
      expect(await kept.ping('after')).toBe('after');
      await waitFor('a new connection from client-a is refused', async () => ((await reaches(c, 'client-a')) ? undefined : true), { timeoutMs: 5_000 });
    } finally {
      denied.close();
      kept.close();
    }
  });
});
