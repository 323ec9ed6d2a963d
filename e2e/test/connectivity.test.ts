// Pod to pod through the mesh: on the same node and across nodes, by pod IP
// and by service VIP (load balanced over the endpoints), the server app
// seeing the client's own pod IP (ztunnel's transparent upstream sockets).
import { describe, expect, it } from 'vitest';
import { EchoServer, exchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { APP_PORT, backs, count, describeTally, service, tally } from '../lib/scenario.js';

const echo = service('echo', 'demo', '10.96.1.10');
const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client', node: 'node-a', namespace: 'demo', serviceAccount: 'client' },
    { name: 'server-a', node: 'node-a', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
    { name: 'server-b', node: 'node-b', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
  ],
  services: [echo],
});

describe('pod to pod through the mesh', () => {
  it('reaches a pod on the same node by its IP, and the server sees the client pod IP', async () => {
    const c = cluster();
    for (const name of ['server-a', 'server-b']) await EchoServer.start(name, c.pod(name).net.netns, APP_PORT);
    const r = await exchange(c.pod('client').net.netns, c.pod('server-a').ip, APP_PORT, 'hello same node');
    expect(r.echoed).toBe('hello same node');
    expect(r.greeting).toMatchObject({ server: 'server-a', local: c.pod('server-a').ip });
    expect(r.greeting.peer, 'the address the server app sees').toBe(c.pod('client').ip);
  });

  it('reaches a pod on another node by its IP, and the server sees the client pod IP', async () => {
    const c = cluster();
    const r = await exchange(c.pod('client').net.netns, c.pod('server-b').ip, APP_PORT, 'hello other node');
    expect(r.echoed).toBe('hello other node');
    expect(r.greeting).toMatchObject({ server: 'server-b', local: c.pod('server-b').ip });
    expect(r.greeting.peer, 'the address the server app sees').toBe(c.pod('client').ip);
  });

  it('reaches a service VIP, load balanced over the endpoints on both nodes', async () => {
    const c = cluster();
    const t = tally();
    const peers = new Set<string>();
    for (let i = 0; i < 40 && (t.servers.size < 2 || t.ok < 10); i++) {
      const r = await exchange(c.pod('client').net.netns, echo.vip, 80, `vip ${i}`).catch((e: Error) => e);
      count(t, r);
      if (!(r instanceof Error)) {
        expect(r.echoed).toBe(`vip ${i}`);
        peers.add(r.greeting.peer);
      }
    }
    process.stdout.write(`VIP ${echo.vip}:80 -> ${describeTally(t)}\n`);
    expect(t.failed).toBe(0);
    expect([...t.servers.keys()].sort()).toEqual(['server-a', 'server-b']);
    expect([...peers]).toEqual([c.pod('client').ip]);
  });

  it('serves pods on the other node in the reverse direction too', async () => {
    const c = cluster();
    const r = await exchange(c.pod('server-b').net.netns, c.pod('server-a').ip, APP_PORT, 'b to a');
    expect(r.greeting.server).toBe('server-a');
    expect(r.greeting.peer, 'the address the server app sees').toBe(c.pod('server-b').ip);
  });
});
