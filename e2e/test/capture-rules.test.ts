// istio-cni's in-pod rules on this kernel, without ztunnel: the test plays
// ztunnel's part with its own sockets in the pod namespace (listeners on
// 15001/15006/15008/15053, marked 0x539 upstream sockets, a transparent
// socket spoofing the client's address) and checks where each packet goes.
// This is the capture path ARCHITECTURE.md describes, proven rule by rule.
import { createSocket } from 'node:dgram';
import { once } from 'node:events';
import { createServer, Socket, type Server } from 'node:net';
import * as dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dnsQuery, EchoServer, exchange } from '../lib/apps.js';
import { installInpodCapture, INPOD_MARK } from '../lib/capture-rules.js';
import { registerCleanup, runAll } from '../lib/cleanup.js';
import { getNative } from '../lib/netns-sockets.js';
import { KUBE_DNS } from '../lib/scenario.js';
import { Topology, type PodNet } from '../lib/topology.js';

let topology: Topology;
let pod: PodNet;
let peer: PodNet;
/** What each of "ztunnel's" listeners in the pod accepted: local port -> [original destination, peer]. */
const accepted = new Map<number, Array<{ originalDst: string; peer: string }>>();

function fdOf(s: Socket): number {
  return (s as unknown as { _handle: { fd: number } })._handle.fd;
}

async function ztunnelListener(port: number): Promise<Server> {
  const n = getNative();
  const ns = n.openNetns(pod.netns.path);
  let fd: number;
  try {
    fd = n.tcpListener({ netns: ns, host: '0.0.0.0', port, backlog: 64, mark: INPOD_MARK, reusePort: true, transparent: true });
  } finally {
    n.closeFd(ns);
  }
  const server = createServer((s) => {
    const dst = n.originalDestination(fdOf(s));
    const list = accepted.get(port) ?? [];
    list.push({ originalDst: dst ? `${dst.ip}:${dst.port}` : 'none', peer: s.remoteAddress ?? '' });
    accepted.set(port, list);
    s.end(`captured by ${port}\n`);
  });
  server.listen({ fd });
  await once(server, 'listening');
  registerCleanup({ what: `listener ${port}`, run: () => new Promise<void>((r) => server.close(() => r())) });
  return server;
}

/** A socket in the pod marked like ztunnel's own, optionally transparent and bound to a foreign address. */
async function markedConnect(host: string, port: number, bind?: string): Promise<Socket> {
  const n = getNative();
  const ns = n.openNetns(pod.netns.path);
  let fd: number;
  try {
    fd = n.tcpSocket({ netns: ns, family: 4, mark: INPOD_MARK, ...(bind ? { transparent: true, freebind: true, bind: { ip: bind, port: 0 } } : {}) });
  } finally {
    n.closeFd(ns);
  }
  const s = new Socket({ fd, manualStart: true } as ConstructorParameters<typeof Socket>[0]);
  s.connect({ host, port });
  await once(s, 'connect');
  return s;
}

function readLine(s: Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    s.on('data', (d: Buffer) => {
      buf += d.toString();
      const i = buf.indexOf('\n');
      if (i >= 0) resolve(buf.slice(0, i));
    });
    s.on('error', reject);
    s.on('close', () => reject(new Error(`closed before a line (${buf})`)));
  });
}

beforeAll(async () => {
  topology = await Topology.create(['node-a', 'node-b']);
  pod = await topology.addPod('node-a', 'captured');
  peer = await topology.addPod('node-b', 'peer');
  await installInpodCapture(pod.netns.name);
  for (const port of [15001, 15006, 15008]) await ztunnelListener(port);
  await EchoServer.start('peer', peer.netns, 8080);
  await EchoServer.start('app', pod.netns, 8080);
});

afterAll(() => runAll());

describe('istio-cni in-pod rules', () => {
  it('redirect the application\'s outbound TCP to 15001, keeping the original destination', async () => {
    const s = await exchange(pod.netns, peer.ip, 8080, '').catch((e: Error) => e);
    expect(s).toBeInstanceOf(Error); // our fake 15001 answers with a line and closes: not an echo greeting
    expect(accepted.get(15001)?.at(-1)).toEqual({ originalDst: `${peer.ip}:8080`, peer: pod.ip });
  });

  it('let sockets marked 0x539 (ztunnel\'s own) out unchanged', async () => {
    const s = await markedConnect(peer.ip, 8080);
    const greeting = JSON.parse(await readLine(s)) as { server: string; peer: string };
    s.destroy();
    expect(greeting).toMatchObject({ server: 'peer', peer: pod.ip });
  });

  it('redirect inbound TCP to 15006, except 15008 which reaches ztunnel\'s HBONE listener directly', async () => {
    const to8080 = await exchange(peer.netns, pod.ip, 8080, '').catch((e: Error) => e);
    expect(to8080).toBeInstanceOf(Error);
    expect(accepted.get(15006)?.at(-1)).toEqual({ originalDst: `${pod.ip}:8080`, peer: peer.ip });
    const to15008 = await exchange(peer.netns, pod.ip, 15008, '').catch((e: Error) => e);
    expect(to15008).toBeInstanceOf(Error);
    expect(accepted.get(15008)?.at(-1)?.peer).toBe(peer.ip);
    expect(accepted.get(15006)?.length).toBe(1);
  });

  it('route the application\'s replies to a spoofed-source connection back to ztunnel (connmark 0x111, table 100)', async () => {
    // ztunnel's inbound upstream: transparent, marked, bound to the remote client's address.
    const s = await markedConnect(pod.ip, 8080, peer.ip);
    const greeting = JSON.parse(await readLine(s)) as { server: string; peer: string };
    s.destroy();
    expect(greeting).toMatchObject({ server: 'app', peer: peer.ip });
  });

  it('redirect DNS over UDP to 15053, the answer appearing to come from the server the pod asked', async () => {
    const n = getNative();
    const ns = n.openNetns(pod.netns.path);
    let fd: number;
    try {
      fd = n.udpSocket({ netns: ns, host: '127.0.0.1', port: 15053, mark: INPOD_MARK });
    } finally {
      n.closeFd(ns);
    }
    const dns = createSocket('udp4');
    await new Promise<void>((resolve) => dns.bind({ fd }, resolve));
    registerCleanup({ what: 'udp 15053', run: () => void dns.close() });
    dns.on('message', (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      const answer = dnsPacket.encode({
        type: 'response',
        id: q.id ?? 0,
        flags: dnsPacket.AUTHORITATIVE_ANSWER,
        questions: q.questions ?? [],
        answers: [{ type: 'A', name: q.questions?.[0]?.name ?? '', ttl: 30, class: 'IN', data: '10.96.7.7' }],
      });
      dns.send(answer, rinfo.port, rinfo.address);
    });
    const r = await dnsQuery(pod.netns, KUBE_DNS, 'anything.example', 'A');
    expect(r.answers.map((a) => (a.type === 'A' ? a.data : ''))).toEqual(['10.96.7.7']);
    expect(r.from).toBe(`${KUBE_DNS}:53`);
  });
});
