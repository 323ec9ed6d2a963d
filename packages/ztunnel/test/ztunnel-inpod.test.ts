/**
 * A whole ztunnel in shared (in-pod) mode, in process, against the real
 * kernel: the test plays the istio-cni node agent on a real SOCK_SEQPACKET
 * socket (ZDS), hands over real network namespace fds with SCM_RIGHTS, and
 * checks what a user of the node agent would see: the Acks and NACKs, the
 * listeners appearing inside the pod's namespace with ztunnel's mark, pods
 * removed on Del and on a snapshot that no longer names them, readiness,
 * the config dump's workloadState and the workload_manager_* metrics.
 * Traffic through captured pods is the e2e suite's job (e2e/).
 * Runs as root (CI does); fails loudly otherwise.
 */
import { mkdtempSync, openSync, closeSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeZdsHello, decodeZdsResponse, encodeZdsRequest, type ZdsNodeAgentRequest } from '@ambient/control';
import { startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { nativeInpodPlatform } from '../src/inpod/native-platform.js';
import { parseConfig } from '../src/config.js';
import type { Native, SeqpacketPacket, SeqpacketSocket } from '../src/platform/native.js';
import { Cleanup, createNetns, requireRootAndNative, type TestNetns } from './support/native-netns.js';
import { issueCertificate, rawHboneClient, readAll, startZtunnel, waitForState, WAIT_MS, type ZtunnelUnderTest } from './support/ztunnel-harness.js';

const ZT_IP = '127.0.18.1';
const cleanup = new Cleanup();
afterEach(() => cleanup.run());

/** The node agent's side of one ZDS connection: requests out, acks in, with a deadline like istio-cni's 5 s. */
class NodeAgentConnection {
  readonly #packets: SeqpacketPacket[] = [];
  readonly #waiters: Array<(p: SeqpacketPacket) => void> = [];
  constructor(readonly socket: SeqpacketSocket) {
    socket.onPacket((p) => {
      const w = this.#waiters.shift();
      if (w) w(p);
      else this.#packets.push(p);
    });
  }
  next(what: string): Promise<SeqpacketPacket> {
    const p = this.#packets.shift();
    if (p) return Promise.resolve(p);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${what} from ztunnel within 5 s`)), 5_000);
      this.#waiters.push((pkt) => {
        clearTimeout(timer);
        resolve(pkt);
      });
    });
  }
  /** Sends a request (with fds) and returns the Ack's error text ('' = Ack). */
  async request(req: ZdsNodeAgentRequest, fds: number[] = []): Promise<string> {
    this.socket.send(encodeZdsRequest(req), fds);
    const decoded = decodeZdsResponse((await this.next(`ack for ${req.kind}`)).data);
    if (!decoded.ok) throw new Error('ztunnel sent something that is not a WorkloadResponse');
    return decoded.value.error;
  }
}

async function setup(native: Native, extraEnv: Record<string, string> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'amb-inpod-'));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  const uds = join(dir, 'ztunnel.sock');
  const server = native.seqpacketListen(uds);
  cleanup.add(() => server.close());
  const connections: NodeAgentConnection[] = [];
  const waiters: Array<(c: NodeAgentConnection) => void> = [];
  server.onConnection((s) => {
    cleanup.add(() => s.close());
    const c = new NodeAgentConnection(s);
    const w = waiters.shift();
    if (w) w(c);
    else connections.push(c);
  });
  const nextConnection = async (): Promise<NodeAgentConnection> => {
    const c = connections.shift() ?? (await new Promise<NodeAgentConnection>((resolve) => waiters.push(resolve)));
    const hello = decodeZdsHello((await c.next('ZdsHello')).data);
    expect(hello).toEqual({ ok: true, value: { version: 1 } });
    return c;
  };

  const cp: TestControlPlane = await startTestControlPlane();
  cleanup.add(() => cp.close());
  cp.setWorkload(workload({ name: 'pod-a', namespace: 'demo', serviceAccount: 'client', ips: ['10.244.7.2'], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'pod-b', namespace: 'demo', serviceAccount: 'server', ips: ['10.244.7.3'], node: 'node-a' }));

  const env = { INPOD_UDS: uds, UNSTABLE_ENABLE_SOCKS5: 'false', ISTIO_META_DNS_CAPTURE: 'false', ...extraEnv };
  const parsed = parseConfig({ PROXY_MODE: 'shared', ...env }, { fileExists: () => false, cpuCount: 2 }, []);
  if (!parsed.ok) throw new Error('bad test config');
  const zt: ZtunnelUnderTest = await startZtunnel(cp, {
    ip: ZT_IP,
    workload: { namespace: 'istio-system', name: 'ztunnel-node-a', serviceAccount: 'ztunnel' },
    inpod: nativeInpodPlatform(native, parsed.value),
    env,
  });
  cleanup.add(() => zt.close());
  const podA = createNetns(native, 'pod-a');
  cleanup.add(() => podA.delete());
  const podB = createNetns(native, 'pod-b');
  cleanup.add(() => podB.delete());
  return { zt, cp, nextConnection, podA, podB };
}

/** TCP listeners inside a namespace, with their fwmark, as `ss -ltne` shows them. */
function listeners(ns: TestNetns): Array<{ port: number; mark: string | undefined }> {
  return ns
    .exec('ss', ['-Hltne'])
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const local = l.trim().split(/\s+/)[3] ?? '';
      return { port: Number(local.slice(local.lastIndexOf(':') + 1)), mark: /fwmark:(0x[0-9a-f]+)/.exec(l)?.[1] };
    });
}

async function eventually(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const until = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const addA = { kind: 'add', uid: 'uid-a', info: { name: 'pod-a', namespace: 'demo', serviceAccount: 'client' } } as const;
const addB = { kind: 'add', uid: 'uid-b', info: { name: 'pod-b', namespace: 'demo', serviceAccount: 'server' } } as const;

describe('ztunnel in shared (in-pod) mode with a node agent on ZDS', () => {
  it('starts marked listeners inside each pod namespace, is ready after the snapshot, and shows the pods in config dump and metrics', async () => {
    const native = requireRootAndNative();
    const { zt, nextConnection, podA, podB } = await setup(native);
    const agent = await nextConnection();
    expect((await zt.get('readiness', '/healthz/ready')).status).toBe(500);

    expect(await agent.request(addA, [podA.fd])).toBe('');
    expect(await agent.request(addB, [podB.fd])).toBe('');
    expect(await agent.request({ kind: 'snapshot-sent' })).toBe('');

    for (const ns of [podA, podB]) {
      const ls = listeners(ns);
      for (const port of [15001, 15006, 15008]) expect(ls.find((l) => l.port === port), `port ${port} in ${ns.name}`).toEqual({ port, mark: '0x539' });
    }
    await eventually(async () => (await zt.get('readiness', '/healthz/ready')).status === 200, 'readiness after the snapshot');
    const dump = JSON.parse((await zt.get('admin', '/config_dump')).body) as { workloadState: Record<string, { state: string; info: unknown }> };
    expect(dump.workloadState['uid-a']).toMatchObject({ state: 'Up', info: { name: 'pod-a', namespace: 'demo', serviceAccount: 'client' } });
    expect(dump.workloadState['uid-b']?.state).toBe('Up');
    const metrics = (await zt.get('stats', '/metrics')).body;
    expect(metrics).toMatch(/^workload_manager_active_proxy_count 2$/m);
    expect(metrics).toMatch(/^workload_manager_pending_proxy_count 0$/m);
    expect(metrics).toMatch(/^workload_manager_proxies_started_total 2$/m);
  });

  it('answers protocol violations with an error Ack and keeps serving the other pods', async () => {
    const native = requireRootAndNative();
    const { nextConnection, podA, podB } = await setup(native);
    const agent = await nextConnection();
    expect(await agent.request(addA, [podA.fd])).toBe('');

    // Add without its netns fd.
    expect(await agent.request(addB)).toMatch(/Add must carry exactly one network namespace fd, got 0/);
    // An fd that is not a network namespace (a regular file).
    const file = openSync(fileURLToPath(import.meta.url), 'r');
    try {
      expect(await agent.request(addB, [file])).toMatch(/not a network namespace/);
    } finally {
      closeSync(file);
    }
    // An fd on a message that must not carry one.
    expect(await agent.request({ kind: 'snapshot-sent' }, [podB.fd])).toMatch(/SnapshotSent must not carry file descriptors/);
    expect(await agent.request({ kind: 'snapshot-sent' })).toBe('');
    expect(await agent.request({ kind: 'keep', uid: 'uid-a' })).toMatch(/Keep is only valid before SnapshotSent/);
    expect(await agent.request({ kind: 'del', uid: 'nobody' })).toMatch(/does not know/);
    // A packet that is not a WorkloadRequest at all.
    agent.socket.send(new Uint8Array([0xff, 0xff, 0xff]));
    const garbage = decodeZdsResponse((await agent.next('ack for garbage')).data);
    expect(garbage.ok && garbage.value.error).toMatch(/invalid ZDS request/);

    // Pod A's proxy was never disturbed.
    expect(listeners(podA).map((l) => l.port)).toEqual(expect.arrayContaining([15001, 15006, 15008]));
  });

  it('removes a pod on Del, and on reconnect drains the pods the new snapshot does not name', async () => {
    const native = requireRootAndNative();
    const { zt, nextConnection, podA, podB } = await setup(native);
    const agent = await nextConnection();
    expect(await agent.request(addA, [podA.fd])).toBe('');
    expect(await agent.request(addB, [podB.fd])).toBe('');
    expect(await agent.request({ kind: 'snapshot-sent' })).toBe('');

    // The same pod again with the same namespace: idempotent.
    expect(await agent.request(addA, [podA.fd])).toBe('');
    expect(await agent.request({ kind: 'del', uid: 'uid-b' })).toBe('');
    await eventually(() => !listeners(podB).some((l) => l.port === 15008), 'pod-b listeners closed after Del');
    expect(listeners(podA).some((l) => l.port === 15008)).toBe(true);

    // The node agent restarts: ztunnel reconnects and gets a snapshot that keeps nobody.
    agent.socket.close();
    const again = await nextConnection();
    await eventually(async () => (await zt.get('readiness', '/healthz/ready')).status === 500, 'not ready while the snapshot is incomplete');
    expect(await again.request({ kind: 'snapshot-sent' })).toBe('');
    await eventually(() => !listeners(podA).some((l) => l.port === 15008), 'pod-a drained: the new snapshot does not name it');
    const metrics = (await zt.get('stats', '/metrics')).body;
    expect(metrics).toMatch(/^workload_manager_active_proxy_count 0$/m);
    expect(metrics).toMatch(/^workload_manager_proxies_stopped_total 2$/m);
  });

  it('keeps a pod whose port is taken pending (NACK, not ready) and starts it on the 5 s retry once the port is free', async () => {
    const native = requireRootAndNative();
    const { zt, nextConnection, podA } = await setup(native);
    const agent = await nextConnection();
    // Something else in the pod holds 15008 without SO_REUSEPORT (e.g. an old proxy that did not use it).
    const blocker = native.tcpListener({ netns: podA.fd, host: '0.0.0.0', port: 15008, backlog: 1 });
    let blocked = true;
    cleanup.add(() => blocked && native.closeFd(blocker));
    expect(await agent.request(addA, [podA.fd])).toMatch(/starting the proxy for pod demo\/pod-a \(uid-a\) failed: .*EADDRINUSE/);
    expect(await agent.request({ kind: 'snapshot-sent' })).toBe('');
    const dump = JSON.parse((await zt.get('admin', '/config_dump')).body) as { workloadState: Record<string, { state: string }> };
    expect(dump.workloadState['uid-a']?.state).toBe('Pending');
    expect((await zt.get('stats', '/metrics')).body).toMatch(/^workload_manager_pending_proxy_count 1$/m);
    expect((await zt.get('readiness', '/healthz/ready')).status).toBe(500);
    // No listener of the failed attempt is left behind.
    expect(listeners(podA).filter((l) => l.mark === '0x539')).toEqual([]);

    native.closeFd(blocker);
    blocked = false;
    await eventually(() => listeners(podA).some((l) => l.port === 15008 && l.mark === '0x539'), 'the retried proxy listening on 15008');
    await eventually(async () => (await zt.get('readiness', '/healthz/ready')).status === 200, 'ready once nothing is pending');
    expect((await zt.get('stats', '/metrics')).body).toMatch(/^workload_manager_pending_proxy_count 0$/m);
  });

  it('serves its own endpoints over HBONE with its own identity (the self-proxy) when POD_NAME, POD_NAMESPACE and SERVICE_ACCOUNT are set', async () => {
    const native = requireRootAndNative();
    const { zt, cp } = await setup(native, { SERVICE_ACCOUNT: 'ztunnel' });
    const self = { namespace: 'istio-system', name: 'ztunnel-node-a', serviceAccount: 'ztunnel' };
    cp.setWorkload(workload({ ...self, ips: [ZT_IP], node: 'node-a' }));
    await waitForState(zt, (s) => s.findLocalWorkload(self) !== undefined, "ztunnel's own workload");
    await eventually(() => zt.app.addresses['selfInbound'] !== undefined, 'the self-proxy listener');

    const cert = await issueCertificate(cp, { namespace: 'demo', serviceAccount: 'client' });
    const client = await rawHboneClient({ ip: ZT_IP, port: 15008 }, cert);
    cleanup.add(() => client.close());
    expect(client.peerCertificate.subjectaltname).toBe('URI:spiffe://cluster.local/ns/istio-system/sa/ztunnel');
    const statsPort = Number((zt.app.addresses['stats'] ?? '').split(':').pop());
    const answer = await client.request(`${ZT_IP}:${statsPort}`);
    expect(answer.status).toBe(200);
    answer.stream.end('GET /metrics HTTP/1.1\r\nHost: ztunnel\r\nConnection: close\r\n\r\n');
    const reply = (await readAll(answer.stream)).toString();
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(reply).toContain('istio_build{component="ztunnel"');
  });
});
