// Calls a captured pod (or a neighbour) can make at ztunnel's own sockets,
// which must all fail without a proxy loop, without reaching an app and
// without disturbing the pod's traffic (ztunnel's `malicious_calls_inpod`,
// reliability.md BI-01/BI-09, CVE-2026-31838): the in-pod listeners called
// directly, plaintext bytes on the HBONE port, and ztunnel's admin port,
// which only listens on localhost in ztunnel's own namespace.
import { beforeAll, describe, expect, it } from 'vitest';
import { EchoServer, exchange, tryExchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { connectFrom } from '../lib/netns-sockets.js';
import { APP_PORT } from '../lib/scenario.js';

const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'mesh-a', node: 'node-a', namespace: 'demo', serviceAccount: 'mesh-a' },
    { name: 'mesh-b', node: 'node-b', namespace: 'demo', serviceAccount: 'mesh-b' },
    { name: 'plain-b', node: 'node-b', namespace: 'legacy', mode: 'plain' },
  ],
});

beforeAll(async () => {
  const c = cluster();
  for (const name of ['mesh-a', 'mesh-b', 'plain-b']) await EchoServer.start(name, c.pod(name).net.netns, APP_PORT);
});

describe("calls at ztunnel's own sockets", () => {
  it("from inside a captured pod, its in-pod listeners called directly never reach an app (no self-call loop)", async () => {
    const c = cluster();
    const a = c.pod('mesh-a');
    for (const [host, port] of [
      ['127.0.0.1', 15001],
      ['127.0.0.1', 15006],
      ['127.0.0.1', 15008],
      [a.ip, 15001],
      [a.ip, 15006],
    ] as const) {
      const r = await tryExchange(a.net.netns, host, port, 'loop?', 3_000);
      expect(r, `${host}:${port} from inside mesh-a`).toBeInstanceOf(Error);
      // 15001/15006 refuse at once (SelfCall / illegal destination port); 15008 waits for a TLS ClientHello and
      // never speaks first, so the app's greeting never comes.
      expect((r as Error).message).toMatch(port === 15008 ? /no the greeting/ : /connection closed while waiting for the greeting/);
    }
    // The pod's own traffic is undisturbed.
    expect((await exchange(a.net.netns, c.pod('mesh-b').ip, APP_PORT, 'still fine')).echoed).toBe('still fine');
  });

  it('from a neighbour, the outbound and plaintext ports of a mesh pod never reach its app', async () => {
    const c = cluster();
    for (const port of [15001, 15006]) {
      const r = await tryExchange(c.pod('plain-b').net.netns, c.pod('mesh-b').ip, port, 'loop?', 3_000);
      expect(r, `plain-b -> mesh-b:${port}`).toBeInstanceOf(Error);
    }
  });

  it('plaintext bytes on the HBONE port get the connection closed, with no HTTP answer', async () => {
    const c = cluster();
    const socket = await connectFrom(c.pod('plain-b').net.netns, c.pod('mesh-b').ip, 15008);
    const answer = await new Promise<string>((resolve, reject) => {
      let got = '';
      socket.setTimeout(5_000, () => {
        socket.destroy();
        reject(new Error('the HBONE port kept a plaintext connection open for 5 s'));
      });
      socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
      socket.on('error', () => {});
      socket.on('close', () => resolve(got));
      socket.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    expect(answer).not.toContain('HTTP/1.1');
    expect(answer).not.toContain('server');
  });

  it("ztunnel's admin port is not reachable from a pod (it listens on localhost in ztunnel's namespace)", async () => {
    const c = cluster();
    const a = c.pod('mesh-a');
    const r = await tryExchange(a.net.netns, a.net.node.ip, 15000, 'config_dump?', 3_000);
    expect(r).toBeInstanceOf(Error);
  });
});
