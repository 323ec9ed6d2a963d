// The mesh's edges: a pod that is not captured (no istio-cni rules, not sent
// over ZDS) talks to a mesh pod, which accepts plaintext (PERMISSIVE) through
// its ztunnel's 15006 capture; and a mesh pod talks to destinations outside
// the mesh (a plain pod, a pod WDS does not know, a server outside the
// cluster), which ztunnel passes through from inside the pod's namespace,
// with the pod's own address.
import { beforeAll, describe, expect, it } from 'vitest';
import { EchoServer, exchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { APP_PORT } from '../lib/scenario.js';
import { FABRIC_IP } from '../lib/topology.js';

const OUTSIDE_PORT = 9443;
const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'mesh-a', node: 'node-a', namespace: 'demo', serviceAccount: 'mesh-a' },
    { name: 'mesh-b', node: 'node-b', namespace: 'demo', serviceAccount: 'mesh-b' },
    // Known to WDS as a plain TCP workload (a pod in a namespace without ambient).
    { name: 'plain-a', node: 'node-a', namespace: 'legacy', mode: 'plain' },
    { name: 'plain-b', node: 'node-b', namespace: 'legacy', mode: 'plain' },
    // Not in WDS at all (say, a host-network or foreign address).
    { name: 'stranger', node: 'node-b', namespace: 'legacy', mode: 'unknown' },
  ],
});

beforeAll(async () => {
  const c = cluster();
  for (const name of ['mesh-a', 'mesh-b', 'plain-a', 'plain-b', 'stranger']) await EchoServer.start(name, c.pod(name).net.netns, APP_PORT);
  await EchoServer.start('outside', c.topology.fabric, OUTSIDE_PORT, FABRIC_IP);
});

describe('a non-mesh pod talking to the mesh (PERMISSIVE)', () => {
  it('reaches a mesh pod on another node in plaintext, seen with its own address', async () => {
    const c = cluster();
    const r = await exchange(c.pod('plain-a').net.netns, c.pod('mesh-b').ip, APP_PORT, 'plain to mesh');
    expect(r.echoed).toBe('plain to mesh');
    expect(r.greeting.server).toBe('mesh-b');
    expect(r.greeting.peer, 'the address the server app sees').toBe(c.pod('plain-a').ip);
  });

  it('reaches a mesh pod on its own node', async () => {
    const c = cluster();
    const r = await exchange(c.pod('plain-a').net.netns, c.pod('mesh-a').ip, APP_PORT, 'plain to mesh, same node');
    expect(r.greeting.server).toBe('mesh-a');
    expect(r.greeting.peer, 'the address the server app sees').toBe(c.pod('plain-a').ip);
  });
});

describe('a mesh pod talking outside the mesh (passthrough)', () => {
  it('reaches a plain pod known to WDS, directly in plaintext, with the pod IP as source', async () => {
    const c = cluster();
    const r = await exchange(c.pod('mesh-a').net.netns, c.pod('plain-b').ip, APP_PORT, 'mesh to plain');
    expect(r.echoed).toBe('mesh to plain');
    expect(r.greeting).toMatchObject({ server: 'plain-b', peer: c.pod('mesh-a').ip });
  });

  it('reaches a pod WDS does not know', async () => {
    const c = cluster();
    const r = await exchange(c.pod('mesh-a').net.netns, c.pod('stranger').ip, APP_PORT, 'mesh to stranger');
    expect(r.greeting).toMatchObject({ server: 'stranger', peer: c.pod('mesh-a').ip });
  });

  it('reaches a server outside the cluster', async () => {
    const c = cluster();
    const r = await exchange(c.pod('mesh-b').net.netns, FABRIC_IP, OUTSIDE_PORT, 'mesh to outside');
    expect(r.echoed).toBe('mesh to outside');
    expect(r.greeting).toMatchObject({ server: 'outside', peer: c.pod('mesh-b').ip });
  });
});
