/**
 * Workload discovery and certificates end to end: our delta ADS client, WDS
 * handlers, translators and store, and our CA client and certificate manager,
 * against the local control plane over real gRPC + TLS 1.3 on loopback.
 */
import { readFile } from 'node:fs/promises';
import { create } from '@bufbuild/protobuf';
import { anyPack, StringValueSchema } from '@bufbuild/protobuf/wkt';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { parseControlEnv, type Env } from '../src/config/control-env.js';
import { startWorkloadDiscovery, type WorkloadDiscovery } from '../src/discovery.js';
import { IstioCaClient } from '../src/ca/ca-client.js';
import { CertManager } from '../src/ca/cert-manager.js';
import { CaError } from '../src/ca/types.js';
import { identityToString } from '../src/model/identity.js';
import { systemClock } from '../src/platform/clock.js';
import { formatRejections } from '../src/result.js';
import { allowPolicy, denyPolicy, service, startTestControlPlane, workload, type TestControlPlane } from '../src/testing/index.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/xds/type-urls.js';

const log = pino({ level: 'silent' });
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function controlPlane(): Promise<TestControlPlane> {
  const cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  return cp;
}

function ztunnelEnv(cp: TestControlPlane, token: string, extra: Env = {}): Env {
  return {
    XDS_ADDRESS: cp.url,
    CA_ADDRESS: cp.url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: token,
    POD_NAME: 'ztunnel-abcde',
    POD_NAMESPACE: 'istio-system',
    NODE_NAME: 'node-a',
    INSTANCE_IP: '10.0.0.9',
    ...extra,
  };
}

async function discovery(cp: TestControlPlane, extra: Env = {}): Promise<WorkloadDiscovery> {
  const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
  const env = ztunnelEnv(cp, token, extra);
  const config = parseControlEnv(env, { fileExists: () => false });
  if (!config.ok) throw new Error(formatRejections(config.errors));
  const started = await startWorkloadDiscovery({
    config: config.value,
    env,
    nodeType: 'ztunnel',
    clock: systemClock,
    log,
    readFile: (p) => readFile(p),
  });
  if (!started.ok) throw new Error(formatRejections(started.errors));
  cleanups.push(() => started.value.close());
  return started.value;
}

describe('workload discovery against the local control plane', () => {
  it('syncs both WDS types over TLS, becomes ready, and sends the node identity istiod checks', async () => {
    const cp = await controlPlane();
    cp.setWorkload(workload({ name: 'a', namespace: 'shop', serviceAccount: 'cart', ips: ['10.1.0.1'], services: { 'shop/cart.shop.svc.cluster.local': { 80: 8080 } } }));
    cp.setService(service({ name: 'cart', namespace: 'shop', vips: ['10.96.0.10'], ports: { 80: 8080 } }));
    cp.setPolicy(allowPolicy({ name: 'allow-cart', namespace: 'shop', scope: 'Namespace' }));

    const d = await discovery(cp);
    await d.ready;

    const first = cp.requests[0]?.request;
    expect(first?.node?.id).toBe('ztunnel~10.0.0.9~ztunnel-abcde.istio-system~istio-system.svc.cluster.local');
    // google.protobuf.Struct is a plain JSON object in protobuf-es.
    expect(first?.node?.metadata).toMatchObject({
      NAME: 'ztunnel-abcde',
      NAMESPACE: 'istio-system',
      NODE_NAME: 'node-a',
      INSTANCE_IPS: '10.0.0.9',
      CLUSTER_ID: 'Kubernetes',
    });
    const types = cp.requests.filter((r) => r.request.responseNonce === '').map((r) => r.request.typeUrl).sort();
    expect(types).toEqual([AUTHORIZATION_TYPE_URL, ADDRESS_TYPE_URL].sort());

    const snap = d.store.snapshot();
    const w = snap.workloadByAddress('', '10.1.0.1');
    expect(w?.identity).toEqual({ trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'cart' });
    expect(snap.serviceByVip('', '10.96.0.10')?.hostname).toBe('cart.shop.svc.cluster.local');
    expect(snap.endpoints('shop/cart.shop.svc.cluster.local').map((e) => e.workloadUid)).toEqual([w?.uid]);
    expect(snap.policy('shop/allow-cart')?.action).toBe('Allow');
  });

  it('applies updates and removals pushed while connected, and notifies subscribers', async () => {
    const cp = await controlPlane();
    const a = workload({ name: 'a', namespace: 'shop', ips: ['10.1.0.1'] });
    cp.setWorkload(a);
    const d = await discovery(cp);
    await d.ready;

    const changed = new Promise<ReadonlySet<string>>((resolve) => {
      const off = d.store.subscribe((change) => {
        if (change.workloads.size > 0) {
          off();
          resolve(change.workloads);
        }
      });
    });
    cp.setWorkload(workload({ name: 'a', namespace: 'shop', ips: ['10.1.0.2'] }));
    expect([...(await changed)]).toEqual([a.uid]);
    expect(d.store.snapshot().workloadByAddress('', '10.1.0.1')).toBeUndefined();
    expect(d.store.snapshot().workloadByAddress('', '10.1.0.2')?.uid).toBe(a.uid);

    cp.setPolicy(denyPolicy({ name: 'deny', namespace: 'shop', scope: 'Namespace' }));
    await cp.nextAck(AUTHORIZATION_TYPE_URL); // initial
    await cp.nextAck(AUTHORIZATION_TYPE_URL); // the push
    expect(d.store.snapshot().policy('shop/deny')?.action).toBe('Deny');

    cp.remove(ADDRESS_TYPE_URL, a.uid);
    cp.remove(AUTHORIZATION_TYPE_URL, 'shop/deny');
    await cp.nextResponse((r) => r.response.removedResources.includes('shop/deny'));
    await cp.nextAck(AUTHORIZATION_TYPE_URL);
    await cp.nextResponse((r) => r.response.removedResources.includes(a.uid));
    await expectEventually(() => d.store.snapshot().workload(a.uid) === undefined && d.store.snapshot().policy('shop/deny') === undefined);
  });

  it('NACKs a malformed resource by name while applying the good ones, and asks for it again on reconnect', async () => {
    const cp = await controlPlane();
    const good = workload({ name: 'good', namespace: 'shop', ips: ['10.1.0.1'] });
    cp.setWorkload(good);
    cp.setRaw(ADDRESS_TYPE_URL, 'Kubernetes//Pod/shop/bad', anyPack(StringValueSchema, create(StringValueSchema, { value: 'not an address' })));
    const d = await discovery(cp);

    const nack = await cp.nextNack(ADDRESS_TYPE_URL);
    expect(nack.message).toContain('Kubernetes//Pod/shop/bad');
    expect(nack.message).not.toContain(good.uid);
    expect(d.store.snapshot().workload(good.uid)?.name).toBe('good');

    // A control plane restart / stream drop: the client reconnects, tells the
    // server what it has (the good resource only) and keeps serving meanwhile.
    const beforeDrop = cp.requests.length;
    cp.dropStreams({ code: 14, details: 'transport is closing' });
    const again = await cp.nextRequest((r) => cp.requests.indexOf(r) >= beforeDrop && r.request.typeUrl === ADDRESS_TYPE_URL && r.request.responseNonce === '');
    expect(Object.keys(again.request.initialResourceVersions)).toEqual([good.uid]);
    expect(d.store.snapshot().workload(good.uid)?.name).toBe('good');
  });

  it('keeps serving the last good state while the control plane is gone, and resyncs when it returns', async () => {
    const cp = await controlPlane();
    cp.setWorkload(workload({ name: 'a', namespace: 'shop', ips: ['10.1.0.1'] }));
    const d = await discovery(cp);
    await d.ready;
    cp.dropStreams({ code: 14, details: 'connection reset' });
    await cp.nextDisconnection();
    expect(d.store.snapshot().workloadByAddress('', '10.1.0.1')?.name).toBe('a');
    cp.setWorkload(workload({ name: 'b', namespace: 'shop', ips: ['10.1.0.2'] }));
    await expectEventually(() => d.store.snapshot().workloadByAddress('', '10.1.0.2')?.name === 'b');
    expect(d.store.snapshot().workloadByAddress('', '10.1.0.1')?.name).toBe('a');
  });

  it('is not ready before the first sync and loads LOCAL_XDS with the same translators', async () => {
    const env: Env = {
      XDS_ADDRESS: '',
      FAKE_CA: 'true',
      LOCAL_XDS: [
        'workloads:',
        '  - uid: local//Pod/demo/x',
        '    name: x',
        '    namespace: demo',
        '    serviceAccount: x',
        '    trustDomain: cluster.local',
        '    workloadIps: ["127.0.0.20"]',
        '    protocol: HBONE',
        '    services: {}',
      ].join('\n'),
    };
    const config = parseControlEnv(env, { fileExists: () => false });
    if (!config.ok) throw new Error(formatRejections(config.errors));
    const d = await startWorkloadDiscovery({ config: config.value, env, nodeType: 'ztunnel', clock: systemClock, log, readFile: (p) => readFile(p) });
    if (!d.ok) throw new Error(formatRejections(d.errors));
    await d.value.ready;
    expect(d.value.store.snapshot().workloadByAddress('', '127.0.0.20')?.protocol).toBe('HBONE');

    const bad = parseControlEnv({ ...env, LOCAL_XDS: 'workloads:\n  - namespace: demo\n    workloadIps: ["nope"]\n    services: {}\n' }, { fileExists: () => false });
    if (!bad.ok) throw new Error('env should parse');
    const failed = await startWorkloadDiscovery({ config: bad.value, env, nodeType: 'ztunnel', clock: systemClock, log, readFile: (p) => readFile(p) });
    expect(failed.ok).toBe(false);
    if (!failed.ok) expect(formatRejections(failed.errors)).toMatch(/LOCAL_XDS.*workloadIps\[0\].*nope/);
  });
});

describe('certificates from the local control plane', () => {
  async function caClient(cp: TestControlPlane, token: string, clock = systemClock) {
    const created = await IstioCaClient.create({
      connection: { address: cp.url, roots: { kind: 'static', pem: cp.rootCaPem } },
      auth: { token: { kind: 'static', token }, clusterId: 'Kubernetes', extraHeaders: [] },
      clock,
      readFile: (p) => readFile(p),
      impersonate: true,
    });
    if (!created.ok) throw new Error(formatRejections(created.errors));
    cleanups.push(() => created.value.close());
    return created.value;
  }

  it('issues an impersonated identity for a workload on the caller\'s node', async () => {
    const cp = await controlPlane();
    cp.setWorkload(workload({ name: 'cart-0', namespace: 'shop', serviceAccount: 'cart', node: 'node-a', ips: ['10.1.0.1'] }));
    const client = await caClient(cp, cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' }));
    const id = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'cart' };
    const cert = await client.fetch(id);
    expect(cert.identity).toEqual(id);
    expect(cert.leaf.subjectAltName).toBe(`URI:${identityToString(id)}`);
    expect(cert.rootsPem.join('')).toContain(cp.rootCaPem.trim().split('\n')[1]);
    const seen = await cp.nextCaRequest();
    expect(seen.metadata).toMatchObject({ ImpersonatedIdentity: identityToString(id) });
    expect(seen.headers['authorization']).toMatch(/^Bearer /);
    expect(seen.headers['clusterid']).toBe('Kubernetes');
  });

  it('refuses impersonation with istiod\'s answer when no such workload runs on the caller\'s node, and when the caller is not a node agent', async () => {
    const cp = await controlPlane();
    cp.setWorkload(workload({ name: 'cart-0', namespace: 'shop', serviceAccount: 'cart', node: 'node-b', ips: ['10.1.0.1'] }));
    const id = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'cart' };

    const onWrongNode = await caClient(cp, cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' }));
    const e1 = await onWrongNode.fetch(id).catch((e: unknown) => e);
    expect(e1).toBeInstanceOf(CaError);
    expect((e1 as CaError).code).toBe('CA_REJECTED');
    expect((e1 as CaError).message).toContain('request impersonation authentication failure');

    const notTrusted = await caClient(cp, cp.token({ namespace: 'shop', serviceAccount: 'cart', node: 'node-b' }));
    const e2 = await notTrusted.fetch(id).catch((e: unknown) => e);
    expect((e2 as CaError).code).toBe('CA_REJECTED');
    expect((e2 as CaError).message).toContain('request impersonation authentication failure');

    const badToken = await caClient(cp, 'not-a-token');
    const e3 = await badToken.fetch(id).catch((e: unknown) => e);
    expect((e3 as CaError).code).toBe('CA_REJECTED');
  });

  it('rotates at half-life through the certificate manager, fetching a new certificate from the control plane', async () => {
    const cp = await controlPlane();
    cp.setWorkload(workload({ name: 'cart-0', namespace: 'shop', serviceAccount: 'cart', node: 'node-a', ips: ['10.1.0.1'] }));
    const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
    // The manager's timers run on a manual clock whose wall time tracks the real one,
    // so the control plane's certificates are valid for it.
    const clock = new ManualClock({ now: Date.now() });
    const client = await caClient(cp, token, systemClock);
    const manager = new CertManager({ fetcher: client, clock, log });
    cleanups.push(() => manager.close());
    const id = { trustDomain: 'cluster.local', namespace: 'shop', serviceAccount: 'cart' };

    const first = await manager.fetchCertificate(id);
    const lifetime = first.notAfter - first.notBefore;
    const rotated = new Promise<string>((resolve) => manager.onCertificate((_id, c) => resolve(c.leaf.serialNumber)));
    await clock.advance(first.notBefore + lifetime / 2 - clock.now() + 1);
    const serial = await rotated;
    expect(serial).not.toBe(first.leaf.serialNumber);
    expect(cp.caRequests.length).toBe(2);
    expect((await manager.fetchCertificate(id)).leaf.serialNumber).toBe(serial);
  });
});

async function expectEventually(check: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
