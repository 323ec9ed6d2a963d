// The cluster network on its own, before any mesh: pods reach each other on
// the same node and across nodes, and reach the fabric, with their own
// addresses. If this fails, the mesh scenarios cannot mean anything.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EchoServer, exchange } from '../lib/apps.js';
import { runAll } from '../lib/cleanup.js';
import { FABRIC_IP, Topology, type PodNet } from '../lib/topology.js';

let topology: Topology;
let p1: PodNet;
let p2: PodNet;
let p3: PodNet;

beforeAll(async () => {
  topology = await Topology.create(['node-a', 'node-b']);
  p1 = await topology.addPod('node-a', 'net-1');
  p2 = await topology.addPod('node-a', 'net-2');
  p3 = await topology.addPod('node-b', 'net-3');
  for (const p of [p1, p2, p3]) await EchoServer.start(p.name, p.netns, 8080);
  await EchoServer.start('outside', topology.fabric, 9090, FABRIC_IP);
});

afterAll(() => runAll());

describe('the cluster network without the mesh', () => {
  it('connects pods on the same node, each seeing the other\'s pod IP', async () => {
    const r = await exchange(p1.netns, p2.ip, 8080, 'same-node');
    expect(r.greeting).toMatchObject({ server: 'net-2', peer: p1.ip, local: p2.ip });
    expect(r.echoed).toBe('same-node');
  });

  it('routes pod to pod across nodes through the fabric bridge', async () => {
    const r = await exchange(p1.netns, p3.ip, 8080, 'cross-node');
    expect(r.greeting).toMatchObject({ server: 'net-3', peer: p1.ip });
    const back = await exchange(p3.netns, p2.ip, 8080, 'and-back');
    expect(back.greeting).toMatchObject({ server: 'net-2', peer: p3.ip });
  });

  it('routes pods to the fabric (where the control plane and upstream DNS live)', async () => {
    const r = await exchange(p3.netns, FABRIC_IP, 9090, 'outside');
    expect(r.greeting).toMatchObject({ server: 'outside', peer: p3.ip });
  });

  it('deletes a pod with its namespace and veth', async () => {
    await topology.removePod('net-2');
    await expect(exchange(p1.netns, p2.ip, 8080, 'gone', 1_000)).rejects.toThrow();
  });
});
