/**
 * The control plane's delta ADS endpoint, driven over real TLS 1.3 + HTTP/2
 * by a raw gRPC client: wildcard and on-demand subscriptions, pushes,
 * removals, reconnects with initial_resource_versions, NACKs, and the stream
 * errors istiod gives for malformed or unauthorized streams.
 */
import { connect as tlsConnect } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import { fromBinary } from '@bufbuild/protobuf';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { DeltaDiscoveryResponse } from '../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { AddressSchema } from '../src/gen/istio/workload/workload_pb.js';
import { allowPolicy, service, startTestControlPlane, workload, ztunnelNode, type TestControlPlane } from '../src/testing/index.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/xds/type-urls.js';
import { RawAdsStream } from './control-plane-raw-client.js';

const names = (r: DeltaDiscoveryResponse) => r.resources.map((x) => x.name);
const versions = (r: DeltaDiscoveryResponse) => Object.fromEntries(r.resources.map((x) => [x.name, x.version]));

let cp: TestControlPlane;
const streams: RawAdsStream[] = [];

beforeEach(async () => {
  cp = await startTestControlPlane();
});

afterEach(async () => {
  for (const s of streams.splice(0)) s.close();
  await cp.close();
});

function ztunnelToken(node = 'node-a'): string {
  return cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node });
}

/** Opens a stream; `token` null sends no authorization header. */
function open(token: string | null = ztunnelToken(), headers?: Record<string, string>): RawAdsStream {
  const s = new RawAdsStream({ port: cp.port, rootCaPem: cp.rootCaPem, ...(token !== null ? { token } : {}), ...(headers ? { headers } : {}) });
  streams.push(s);
  return s;
}

/** Opens a stream subscribed (wildcard) to both types and returns the first responses. */
async function syncedStream(node = ztunnelNode()) {
  const s = open();
  s.send({ node, typeUrl: ADDRESS_TYPE_URL });
  s.send({ typeUrl: AUTHORIZATION_TYPE_URL });
  const addresses = await s.next(ADDRESS_TYPE_URL);
  const policies = await s.next(AUTHORIZATION_TYPE_URL);
  s.ack(addresses);
  s.ack(policies);
  await cp.nextAck(ADDRESS_TYPE_URL);
  await cp.nextAck(AUTHORIZATION_TYPE_URL);
  return { s, addresses, policies };
}

const podA = workload({ name: 'a-0', ips: ['10.0.0.1'], serviceAccount: 'a' });
const podB = workload({ name: 'b-0', ips: ['10.0.0.2'], serviceAccount: 'b' });
const svc = service({ name: 'app', vips: ['10.96.0.1'] });
const policy = allowPolicy({ name: 'allow-all' });

describe('wildcard subscription', () => {
  it('sends every resource of both types on the first request, with versions, aliases and unique nonces', async () => {
    cp.setWorkload(podA);
    cp.setService(svc);
    cp.setPolicy(policy);
    const { addresses, policies } = await syncedStream();

    expect(names(addresses)).toEqual([podA.uid, 'default/app.default.svc.cluster.local']);
    expect(addresses.removedResources).toEqual([]);
    const wl = addresses.resources[0]!;
    expect(wl.version).not.toBe('');
    expect(wl.aliases).toEqual(['/10.0.0.1']);
    expect(wl.resource?.typeUrl).toBe(ADDRESS_TYPE_URL);
    const decoded = fromBinary(AddressSchema, wl.resource!.value);
    expect(decoded.type.case === 'workload' && decoded.type.value.uid).toBe(podA.uid);
    expect(addresses.resources[1]!.aliases).toEqual(['/10.96.0.1']);

    expect(names(policies)).toEqual(['default/allow-all']);
    expect(addresses.nonce).not.toBe('');
    expect(addresses.nonce).not.toBe(policies.nonce);
  });

  it('answers the first request even when there is nothing to send, so the client can ACK and become ready', async () => {
    const { addresses, policies } = await syncedStream();
    expect(addresses.resources).toEqual([]);
    expect(policies.resources).toEqual([]);
  });

  it('pushes only what changed, and removals, to a synced stream', async () => {
    cp.setWorkload(podA);
    cp.setPolicy(policy);
    const { s, addresses } = await syncedStream();

    cp.setWorkload(podB);
    const added = await s.next(ADDRESS_TYPE_URL);
    expect(names(added)).toEqual([podB.uid]);
    expect(added.removedResources).toEqual([]);
    s.ack(added);

    // Setting an identical resource pushes nothing: the next push carries only the real change.
    cp.setWorkload(podA);
    cp.setWorkload(workload({ name: 'a-0', ips: ['10.0.0.11'], serviceAccount: 'a' }));
    const changed = await s.next(ADDRESS_TYPE_URL);
    expect(names(changed)).toEqual([podA.uid]);
    expect(changed.resources[0]!.version).not.toBe(versions(addresses)[podA.uid]);
    expect(changed.resources[0]!.aliases).toEqual(['/10.0.0.11']);

    cp.remove(ADDRESS_TYPE_URL, podA.uid);
    const removed = await s.next(ADDRESS_TYPE_URL);
    expect(removed.resources).toEqual([]);
    expect(removed.removedResources).toEqual([podA.uid]);

    cp.remove(AUTHORIZATION_TYPE_URL, 'default/allow-all');
    const policyRemoved = await s.next(AUTHORIZATION_TYPE_URL);
    expect(policyRemoved.removedResources).toEqual(['default/allow-all']);
    expect(s.pending()).toEqual([]);
  });

  it('does not answer an ACK', async () => {
    cp.setWorkload(podA);
    const { s } = await syncedStream();
    cp.setWorkload(podB);
    const push = await s.next(ADDRESS_TYPE_URL);
    s.ack(push);
    await cp.nextAck(ADDRESS_TYPE_URL);
    cp.setPolicy(policy);
    // The next thing on the wire is the policy push, not a reply to the ACK.
    expect(names(await s.next())).toEqual(['default/allow-all']);
  });
});

describe('reconnect with initial_resource_versions', () => {
  it('sends only resources whose version differs and removes names the client holds that are gone', async () => {
    const podC = workload({ name: 'c-0', ips: ['10.0.0.3'] });
    cp.setWorkload(podA);
    cp.setWorkload(podB);
    cp.setWorkload(podC);
    const first = await syncedStream();
    const held = versions(first.addresses);
    first.s.close();
    await cp.nextDisconnection();

    // While the client is away: A changes, B goes, C stays, D appears.
    cp.setWorkload(workload({ name: 'a-0', ips: ['10.0.0.21'], serviceAccount: 'a' }));
    cp.remove(ADDRESS_TYPE_URL, podB.uid);
    const podD = workload({ name: 'd-0', ips: ['10.0.0.4'] });
    cp.setWorkload(podD);

    const s = open();
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL, initialResourceVersions: held });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(names(r)).toEqual([podA.uid, podD.uid]);
    expect(r.removedResources).toEqual([podB.uid]);
    const req = await cp.nextRequest((q) => Object.keys(q.request.initialResourceVersions).length > 0);
    expect(req.request.initialResourceVersions).toEqual(held);
  });

  it('resends a resource the client holds with an empty version (one it rejected or only asked for)', async () => {
    cp.setWorkload(podA);
    cp.setWorkload(podB);
    const first = await syncedStream();
    const held = versions(first.addresses);
    first.s.close();

    const s = open();
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL, initialResourceVersions: { ...held, [podB.uid]: '' } });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(names(r)).toEqual([podB.uid]);
    expect(r.removedResources).toEqual([]);
  });

  it('answers with nothing when the client already holds everything', async () => {
    cp.setWorkload(podA);
    const first = await syncedStream();
    first.s.close();
    const s = open();
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL, initialResourceVersions: versions(first.addresses) });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(r.resources).toEqual([]);
    expect(r.removedResources).toEqual([]);
  });
});

describe('on-demand subscription (subscribe ["*"] + unsubscribe ["*"])', () => {
  const remote1 = workload({ name: 'r1-0', ips: ['10.0.1.1'], node: 'node-b' });
  const remote2 = workload({
    name: 'r2-0',
    ips: ['10.0.1.2'],
    node: 'node-b',
    services: { 'default/app.default.svc.cluster.local': { 80: 8080 } },
  });
  const onDemandSvc = service({ name: 'app', vips: ['10.96.0.10'] });

  async function onDemandStream() {
    const s = open();
    s.send({
      node: ztunnelNode({ nodeName: 'node-a' }),
      typeUrl: ADDRESS_TYPE_URL,
      resourceNamesSubscribe: ['*'],
      resourceNamesUnsubscribe: ['*'],
    });
    const first = await s.next(ADDRESS_TYPE_URL);
    s.ack(first);
    return { s, first };
  }

  beforeEach(() => {
    cp.setWorkload(remote1);
    cp.setWorkload(remote2);
    cp.setService(onDemandSvc);
  });

  it('sends nothing until asked, then exactly what was asked for by uid', async () => {
    const { s, first } = await onDemandStream();
    expect(first.resources).toEqual([]);
    expect(first.removedResources).toEqual([]);

    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: [remote1.uid] });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(names(r)).toEqual([remote1.uid]);

    // A subscribed resource is kept up to date; others are not pushed.
    cp.setWorkload(workload({ name: 'other-0', ips: ['10.0.1.9'], node: 'node-b' }));
    cp.setWorkload(workload({ name: 'r1-0', ips: ['10.0.1.11'], node: 'node-b' }));
    expect(names(await s.next(ADDRESS_TYPE_URL))).toEqual([remote1.uid]);
  });

  it('resolves a network/ip alias to the workload or service that has that address', async () => {
    const { s } = await onDemandStream();
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['/10.0.1.2'] });
    const byPodIp = await s.next(ADDRESS_TYPE_URL);
    expect(names(byPodIp)).toEqual([remote2.uid]);
    expect(byPodIp.resources[0]!.aliases).toContain('/10.0.1.2');
    expect(byPodIp.removedResources).toEqual([]);

    // A VIP resolves to the service; its endpoints come along (istiod AdditionalPodSubscriptions),
    // except those the client already holds at the current version.
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['/10.96.0.10'] });
    const byVip = await s.next(ADDRESS_TYPE_URL);
    expect(names(byVip)).toEqual(['default/app.default.svc.cluster.local']);
  });

  it('sends the endpoints of a service subscribed by name', async () => {
    const { s } = await onDemandStream();
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['default/app.default.svc.cluster.local'] });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(names(r)).toEqual([remote2.uid, 'default/app.default.svc.cluster.local']);
  });

  it('reports a name that matches nothing as removed, and sends it once it exists', async () => {
    const { s } = await onDemandStream();
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: ['/10.9.9.9'] });
    const r = await s.next(ADDRESS_TYPE_URL);
    expect(r.resources).toEqual([]);
    expect(r.removedResources).toEqual(['/10.9.9.9']);

    const late = workload({ name: 'late-0', ips: ['10.9.9.9'], node: 'node-b' });
    cp.setWorkload(late);
    const appeared = await s.next(ADDRESS_TYPE_URL);
    expect(names(appeared)).toEqual([late.uid]);
  });

  it('also sends workloads on the client node, as istiod does for node proxies', async () => {
    const { s } = await onDemandStream();
    const local = workload({ name: 'local-0', ips: ['10.0.2.1'], node: 'node-a' });
    cp.setWorkload(local);
    expect(names(await s.next(ADDRESS_TYPE_URL))).toEqual([local.uid]);
  });

  it('stops pushing a resource after unsubscribe, without reporting it removed', async () => {
    const { s } = await onDemandStream();
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesSubscribe: [remote1.uid] });
    s.ack(await s.next(ADDRESS_TYPE_URL));
    s.send({ typeUrl: ADDRESS_TYPE_URL, resourceNamesUnsubscribe: [remote1.uid] });
    await cp.nextRequest((q) => q.request.resourceNamesUnsubscribe.includes(remote1.uid));
    cp.remove(ADDRESS_TYPE_URL, remote1.uid);
    const local = workload({ name: 'local-0', ips: ['10.0.2.1'], node: 'node-a' });
    cp.setWorkload(local);
    const next = await s.next(ADDRESS_TYPE_URL);
    expect(names(next)).toEqual([local.uid]);
    expect(next.removedResources).toEqual([]);
  });
});

describe('NACK', () => {
  it('records the error detail and does not resend the rejected version; a new version is sent', async () => {
    cp.setWorkload(podA);
    cp.setRaw(ADDRESS_TYPE_URL, 'broken', { $typeName: 'google.protobuf.Any', typeUrl: ADDRESS_TYPE_URL, value: new Uint8Array([0x0a, 0xff]) });
    const s = open();
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL });
    const first = await s.next(ADDRESS_TYPE_URL);
    expect(names(first)).toEqual([podA.uid, 'broken']);
    s.nack(first, 'broken: failed to decode Address');

    const detail = await cp.nextNack(ADDRESS_TYPE_URL);
    expect(detail.message).toBe('broken: failed to decode Address');
    const stream = cp.connections[0]!;
    expect(cp.plane.subscriptions(stream.id)?.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.lastError).toBe(
      'broken: failed to decode Address',
    );

    // No reply to the NACK and no resend: the next response is only the next change.
    cp.setWorkload(podB);
    const push = await s.next(ADDRESS_TYPE_URL);
    expect(names(push)).toEqual([podB.uid]);
    s.ack(push);
    await cp.nextAck(ADDRESS_TYPE_URL);
    expect(cp.plane.subscriptions(stream.id)?.find((x) => x.typeUrl === ADDRESS_TYPE_URL)?.lastError).toBe('');

    // Fixing the resource gives it a new version, which is sent.
    cp.setRaw(ADDRESS_TYPE_URL, 'broken', { $typeName: 'google.protobuf.Any', typeUrl: ADDRESS_TYPE_URL, value: new Uint8Array() });
    expect(names(await s.next(ADDRESS_TYPE_URL))).toEqual(['broken']);
  });
});

describe('stream errors', () => {
  it('ends a stream whose first request has no node with INVALID_ARGUMENT "missing node information"', async () => {
    const s = open();
    s.send({ typeUrl: ADDRESS_TYPE_URL });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain('missing node information');
  });

  it('ends a stream whose request has no type_url with INVALID_ARGUMENT', async () => {
    const s = open();
    s.send({ node: ztunnelNode() });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(status.details).toContain('type_url is required');
  });

  it('refuses a stream without a token, or with an unknown one, with UNAUTHENTICATED', async () => {
    for (const token of [null, 'not-a-token']) {
      const s = open(token);
      s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL });
      const status = await s.status;
      expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
      expect(status.details).toMatch(/^authentication failure: /);
    }
  });

  it('refuses a caller whose namespace is not the node metadata NAMESPACE with PERMISSION_DENIED', async () => {
    const s = open(cp.token({ namespace: 'default', serviceAccount: 'sleep' }));
    s.send({ node: ztunnelNode({ namespace: 'istio-system' }), typeUrl: ADDRESS_TYPE_URL });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(status.details).toBe(
      'authorization failed: no identities ([spiffe://cluster.local/ns/default/sa/sleep]) matched istio-system/',
    );
  });

  it('refuses a clusterid header naming another cluster', async () => {
    await cp.close();
    cp = await startTestControlPlane({ clusterId: 'east' });
    const s = open(ztunnelToken(), { clusterid: 'west' });
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL });
    const status = await s.status;
    expect(status.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(status.details).toContain('client claims to be in cluster "west", but we only know about local cluster "east"');
  });

  it('ignores a type it does not serve and keeps the stream up', async () => {
    cp.setWorkload(podA);
    const s = open();
    s.send({ node: ztunnelNode(), typeUrl: 'type.googleapis.com/envoy.config.cluster.v3.Cluster' });
    s.send({ typeUrl: ADDRESS_TYPE_URL });
    const r = await s.next();
    expect(r.typeUrl).toBe(ADDRESS_TYPE_URL);
    expect(names(r)).toEqual([podA.uid]);
    expect(cp.responses.every((x) => x.response.typeUrl !== 'type.googleapis.com/envoy.config.cluster.v3.Cluster')).toBe(true);
  });

  it('accepts streams without a token when anonymous xDS is enabled', async () => {
    await cp.close();
    cp = await startTestControlPlane({ anonymousXds: true });
    const s = open(null);
    s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL });
    expect((await s.next(ADDRESS_TYPE_URL)).typeUrl).toBe(ADDRESS_TYPE_URL);
  });
});

describe('connections', () => {
  it('dropStreams ends every stream with the chosen status', async () => {
    const { s } = await syncedStream();
    expect(cp.connections).toHaveLength(1);
    expect(cp.connections[0]!.nodeId).toBe(ztunnelNode().id);
    expect(cp.dropStreams({ code: grpc.status.UNAVAILABLE, details: 'test says goodbye' })).toBe(1);
    const status = await s.status;
    expect(status.code).toBe(grpc.status.UNAVAILABLE);
    expect(status.details).toBe('test says goodbye');
    expect(cp.connections).toHaveLength(0);
  });

  it('serves TLS 1.3 only', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = tlsConnect({
        host: '127.0.0.1',
        port: cp.port,
        servername: 'localhost',
        ca: cp.rootCaPem,
        maxVersion: 'TLSv1.2',
        ALPNProtocols: ['h2'],
      });
      socket.once('secureConnect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    });
    expect(outcome).not.toBe('connected');
    const ok = await new Promise<string>((resolve) => {
      const socket = tlsConnect({ host: '127.0.0.1', port: cp.port, servername: 'localhost', ca: cp.rootCaPem, ALPNProtocols: ['h2'] });
      socket.once('secureConnect', () => {
        resolve(`${socket.getProtocol()} ${socket.alpnProtocol}`);
        socket.destroy();
      });
      socket.once('error', (err) => resolve(err.message));
    });
    expect(ok).toBe('TLSv1.3 h2');
  });
});
