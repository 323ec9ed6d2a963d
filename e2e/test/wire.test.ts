// What crosses the wire between nodes: for mesh pods only TLS to port 15008
// (HBONE), never the application's bytes. tcpdump runs on node-b's uplink
// (its veth's fabric end; the bridge device itself only sees frames for the
// fabric's own address) while a client on node-a talks to a server on node-b by pod IP and by VIP;
// a pair of plain (uncaptured) pods shows the capture would see plaintext.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EchoServer, exchange } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { Capture } from '../lib/pcap.js';
import { APP_PORT, backs, service } from '../lib/scenario.js';

const echo = service('echo', 'demo', '10.96.1.10');
const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client', node: 'node-a', namespace: 'demo', serviceAccount: 'client' },
    { name: 'server', node: 'node-b', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
    { name: 'plain-a', node: 'node-a', namespace: 'legacy', mode: 'unknown' },
    { name: 'plain-b', node: 'node-b', namespace: 'legacy', mode: 'unknown' },
  ],
  services: [echo],
});

describe('on the wire between nodes', () => {
  it('mesh traffic is only TLS to port 15008, and the payload never appears in clear', async () => {
    const c = cluster();
    const client = c.pod('client');
    const server = c.pod('server');
    await EchoServer.start('server', server.net.netns, APP_PORT);
    await EchoServer.start('plain-b', c.pod('plain-b').net.netns, APP_PORT);
    const secret = `MESH-SECRET-${randomBytes(8).toString('hex')}`;
    const visible = `PLAIN-VISIBLE-${randomBytes(8).toString('hex')}`;

    const uplink = `fab-${c.topology.node('node-b').index}`;
    const capture = await Capture.start(c.topology.fabric, uplink, join(c.topology.tmpDir, 'wire.pcap'), 'ip and net 10.10.0.0/16');
    try {
      const byIp = await exchange(client.net.netns, server.ip, APP_PORT, `${secret} by pod ip`);
      const byVip = await exchange(client.net.netns, echo.vip, 80, `${secret} by vip`);
      expect(byIp.echoed).toContain(secret);
      expect(byVip.echoed).toContain(secret);
      // The control: uncaptured pods talking in the clear across the same bridge.
      const plain = await exchange(c.pod('plain-a').net.netns, c.pod('plain-b').ip, APP_PORT, visible);
      expect(plain.echoed).toBe(visible);
      // The last packets of the run (the plain echo back to plain-a) are on file before tcpdump stops.
      await capture.waitForPacket('the plain echo', (p) => p.dst === c.pod('plain-a').ip && p.payload.includes(visible));
    } finally {
      process.stdout.write(`tcpdump: ${(await capture.stop()).trim().replace(/\n/g, '; ')}\n`);
    }

    const packets = capture.packets();
    const mesh = packets.filter((p) => [p.src, p.dst].sort().join() === [client.ip, server.ip].sort().join());
    const summary = [...new Set(mesh.map((p) => `${p.src}:${p.srcPort} > ${p.dst}:${p.dstPort} proto ${p.protocol}`))];
    process.stdout.write(`captured ${packets.length} packets, ${mesh.length} between the mesh pods:\n  ${summary.slice(0, 12).join('\n  ')}\n`);

    expect(mesh.length).toBeGreaterThan(6);
    for (const p of mesh) {
      expect(p.protocol).toBe(6);
      const toServer = p.dst === server.ip && p.dstPort === 15008;
      const fromServer = p.src === server.ip && p.srcPort === 15008;
      expect(toServer || fromServer, `${p.src}:${p.srcPort} > ${p.dst}:${p.dstPort}`).toBe(true);
    }
    // Every connection to 15008 opens with a TLS handshake record (ClientHello).
    const firstPayloads = mesh.filter((p) => p.dst === server.ip && p.payload.length > 0);
    expect(firstPayloads.length).toBeGreaterThan(0);
    expect(firstPayloads[0]?.payload[0]).toBe(0x16);
    expect(firstPayloads[0]?.payload[1]).toBe(0x03);
    const all = Buffer.concat(packets.map((p) => p.payload));
    expect(all.includes(Buffer.from('MESH-SECRET-'))).toBe(false);
    expect(all.includes(Buffer.from(secret))).toBe(false);
    // ... while the same capture does show plaintext when there is some.
    expect(all.includes(Buffer.from(visible))).toBe(true);
  });
});
