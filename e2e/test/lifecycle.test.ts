// Pods and ztunnels coming and going under traffic:
// - a pod added and deleted on a node while other pods' traffic flows;
// - a bad ZDS request NACKed without disturbing the node's other pods;
// - ztunnel upgraded (the new process gets the CNI's snapshot and binds the
//   in-pod ports with SO_REUSEPORT before the old one drains): new connections
//   succeed throughout, measured;
// - ztunnel crashed and restarted: the CNI re-sends the snapshot on
//   reconnect; while it is down captured traffic fails closed;
// - ztunnel drained with SIGTERM: open connections keep working until the
//   deadline, new ones are refused, the process exits.
// The tests build on each other (generations of node-a's ztunnel) and run in order.
import { beforeAll, describe, expect, it } from 'vitest';
import { EchoServer, exchange, LongConnection, tryExchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { APP_PORT, backs, count, describeTally, service, tally, trafficLoop } from '../lib/scenario.js';
import { waitFor } from '../lib/wait.js';
import { DEFAULT_ZTUNNEL_PORTS } from '../lib/ztunnel.js';

const DRAIN_DEADLINE_MS = 4_000;
const echo = service('echo', 'demo', '10.96.1.10');
const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client', node: 'node-a', namespace: 'demo', serviceAccount: 'client' },
    { name: 'neighbour', node: 'node-a', namespace: 'demo', serviceAccount: 'neighbour' },
    { name: 'server', node: 'node-b', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
  ],
  services: [echo],
  ztunnelEnv: { CONNECTION_TERMINATION_DEADLINE: `${DRAIN_DEADLINE_MS / 1000}s` },
});

let serverApp: EchoServer;
beforeAll(async () => {
  serverApp = await EchoServer.start('server', cluster().pod('server').net.netns, APP_PORT);
});

describe('lifecycle under traffic', () => {
  it('adds and deletes a pod while other pods keep talking', async () => {
    const c = cluster();
    let done = false;
    const background = trafficLoop(c.pod('client').net.netns, c.pod('server').ip, APP_PORT, () => done, { maxMs: 40_000 });
    try {
      const late = await c.addPod({ name: 'late', node: 'node-b', namespace: 'demo', serviceAccount: 'late', app: 'echo', services: backs(echo) });
      await EchoServer.start('late', late.net.netns, APP_PORT);
      await c.ztunnel('node-a').waitForConfig('late is known', (d) => (d.workloads ?? []).some((w) => w.name === 'late'));
      // Reached through the mesh, by pod IP and as a new endpoint of the service ...
      const direct = await exchange(c.pod('client').net.netns, late.ip, APP_PORT, 'to late');
      expect(direct.greeting.server).toBe('late');
      const viaVip = tally();
      for (let i = 0; i < 40 && !viaVip.servers.has('late'); i++) count(viaVip, await tryExchange(c.pod('client').net.netns, echo.vip, 80));
      expect(viaVip.servers.has('late'), describeTally(viaVip)).toBe(true);
      // ... and its own outbound traffic is captured too.
      const out = await exchange(late.net.netns, c.pod('server').ip, APP_PORT, 'from late');
      expect(out.greeting.server).toBe('server');

      await c.deletePod('late');
      await c.ztunnel('node-b').waitForConfig('late has no proxy any more', (d) => !JSON.stringify(d.workloadState ?? {}).includes(late.podUid));
      expect(await tryExchange(c.pod('client').net.netns, late.ip, APP_PORT, 'to a deleted pod', 2_000)).toBeInstanceOf(Error);
    } finally {
      done = true;
    }
    const t = await background;
    process.stdout.write(`client -> server while a pod came and went: ${describeTally(t)}\n`);
    expect(t.ok).toBeGreaterThan(5);
    expect(t.failed).toBe(0);
  });

  it('NACKs an Add whose fd is not a network namespace, and the node\'s other pods keep working', async () => {
    const c = cluster();
    const cni = c.cni('node-a');
    const ack = await cni.sendRaw({ kind: 'add', uid: 'bogus-uid', info: { name: 'bogus', namespace: 'demo', serviceAccount: 'bogus' } }, '/etc/hostname');
    expect(ack).not.toBe('');
    process.stdout.write(`ztunnel's NACK for a non-netns fd: ${ack}\n`);
    const r = await exchange(c.pod('client').net.netns, c.pod('server').ip, APP_PORT, 'after a bad add');
    expect(r.echoed).toBe('after a bad add');
  });

  it('upgrades ztunnel under traffic: new connections succeed throughout', async () => {
    const c = cluster();
    const cni = c.cni('node-a');
    const old = c.ztunnel('node-a');
    const snapshotsBefore = cni.snapshotsSent;
    let done = false;
    const progress = tally();
    const background = trafficLoop(c.pod('client').net.netns, c.pod('server').ip, APP_PORT, () => done, { maxMs: 45_000, into: progress });
    let phases = '';
    try {
      await waitFor('traffic flowing through the old ztunnel', async () => (progress.ok >= 5 ? true : undefined));
      const next = c.startNextZtunnel('node-a', { admin: 15100, stats: 15120, readiness: 15121 });
      await cni.waitForSnapshots(snapshotsBefore + 1);
      await next.ready();
      phases += `new ztunnel ready; `;
      const exit = await old.stop('SIGTERM', DRAIN_DEADLINE_MS + 5_000);
      phases += `old ztunnel exited (${exit.signal ?? exit.code}); `;
      // And some more traffic on the new one alone.
      const after = tally();
      for (let i = 0; i < 20; i++) count(after, await tryExchange(c.pod('client').net.netns, c.pod('server').ip, APP_PORT));
      expect(after.failed, describeTally(after)).toBe(0);
    } finally {
      done = true;
    }
    const t = await background;
    const ratio = t.ok / Math.max(1, t.ok + t.failed);
    process.stdout.write(`ztunnel upgrade on node-a (${phases}): ${describeTally(t)}\n`);
    expect(t.ok + t.failed).toBeGreaterThan(20);
    expect(ratio).toBeGreaterThanOrEqual(0.99);
  });

  it('restarts a crashed ztunnel: the CNI re-sends the snapshot, and captured traffic fails closed meanwhile', async () => {
    const c = cluster();
    const cni = c.cni('node-a');
    const snapshotsBefore = cni.snapshotsSent;
    const server = c.pod('server');
    const crashed = c.ztunnel('node-a');
    await crashed.stop('SIGKILL');

    const peersBefore = serverApp.peers.length;
    const whileDown = tally();
    for (let i = 0; i < 5; i++) count(whileDown, await tryExchange(c.pod('client').net.netns, server.ip, APP_PORT, 'while down', 2_000));
    process.stdout.write(`while node-a's ztunnel is down: ${describeTally(whileDown)}\n`);
    expect(whileDown.ok).toBe(0);
    expect(serverApp.peers.length, 'a connection reached the server while the client\'s ztunnel was down').toBe(peersBefore);

    const restarted = c.startNextZtunnel('node-a', DEFAULT_ZTUNNEL_PORTS);
    await cni.waitForSnapshots(snapshotsBefore + 1);
    await restarted.ready();
    const after = tally();
    for (let i = 0; i < 10; i++) count(after, await tryExchange(c.pod('client').net.netns, server.ip, APP_PORT, 'after restart'));
    process.stdout.write(`after the restart: ${describeTally(after)}\n`);
    expect(after.failed).toBe(0);
    expect(cni.problems).toEqual([]);
  });

  it('drains on SIGTERM: open connections keep working until the deadline, new ones are refused, then it exits', async () => {
    const c = cluster();
    const z = c.ztunnel('node-a');
    const conn = await LongConnection.open(c.pod('client').net.netns, c.pod('server').ip, APP_PORT);
    expect(await conn.ping('before')).toBe('before');
    const t0 = Date.now();
    z.process.signal('SIGTERM');
    try {
      expect(await conn.ping('during the drain')).toBe('during the drain');
      await waitFor('new connections are refused', async () =>
        (await tryExchange(c.pod('client').net.netns, c.pod('server').ip, APP_PORT, 'new', 1_000)) instanceof Error ? true : undefined, { timeoutMs: 3_000 });
      const closed = await Promise.race([conn.closed, new Promise<string>((r) => setTimeout(() => r('still open'), DRAIN_DEADLINE_MS + 3_000))]);
      const closedAfter = Date.now() - t0;
      const exit = await Promise.race([z.process.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), DRAIN_DEADLINE_MS + 5_000))]);
      process.stdout.write(`drain: connection ended after ${closedAfter} ms (${closed}); process exit ${JSON.stringify(exit)} after ${Date.now() - t0} ms\n`);
      expect(closed).not.toBe('still open');
      expect(exit).toEqual({ code: 0, signal: null });
    } finally {
      conn.close();
    }
  });
});
