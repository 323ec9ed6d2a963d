/**
 * Waypoint and passthrough paths through whole ztunnels.
 *
 * Waypoints: a real waypoint is an Envoy; here the waypoint workload is a pod
 * in the mesh served by its own ztunnel, with a TCP echo standing in for the
 * waypoint proxy. That is the "sandwich" deployment (ztunnel terminating HBONE
 * in front of a waypoint), and it is what lets the test check both halves of
 * the plan: the client ztunnel sends HBONE to the waypoint with the ORIGINAL
 * destination (service VIP:port, or pod IP:port for a workload waypoint) as
 * :authority, and the waypoint's ztunnel accepts an authority that is not its
 * own address only because that service / workload names it as waypoint
 * (a CONNECT for a destination without that waypoint gets 400). The
 * application-tunnel variant (PROXY protocol to the waypoint) needs
 * Workload.application_tunnel, which the test builders do not offer.
 *
 * Passthrough: a destination outside the mesh, and a service with load
 * balancing mode PASSTHROUGH, are reached over plain TCP at the original
 * destination, without HBONE.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { service, startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import {
  issueCertificate,
  rawHboneClient,
  readAll,
  roundTrip,
  sampleSum,
  socks5Connect,
  startEcho,
  startZtunnel,
  type Echo,
  type ZtunnelUnderTest,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.14.20';
const SERVER_IP = '127.0.14.21';
const WAYPOINT_IP = '127.0.14.22';
const WAYPOINTED_POD_IP = '127.0.14.23'; // a pod with a workload waypoint
const OUTSIDE_IP = '127.0.14.50'; // not in the mesh
const VIP = '127.14.0.30'; // service with a waypoint
const PLAIN_VIP = '127.14.0.31'; // service without one
const PASSTHROUGH_VIP = '127.14.0.40';
const HOST = 'echo.demo.svc.cluster.local';

let cp: TestControlPlane;
let client: ZtunnelUnderTest;
let waypoint: ZtunnelUnderTest;
let serverApp: Echo;
let waypointProxy: Echo; // stands in for the waypoint's Envoy
let waypointProxyForPods: Echo;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(
    workload({
      name: 'server-0',
      namespace: 'demo',
      serviceAccount: 'server',
      ips: [SERVER_IP],
      node: 'node-a',
      services: { [`demo/${HOST}`]: { 9080: 8080 }, 'demo/plain.demo.svc.cluster.local': { 9080: 8080 }, 'demo/pt.demo.svc.cluster.local': { 7001: 8080 } },
    }),
  );
  cp.setWorkload(workload({ name: 'waypoint-0', namespace: 'demo', serviceAccount: 'waypoint', ips: [WAYPOINT_IP], node: 'node-a' }));
  cp.setWorkload(
    workload({ name: 'pod-0', namespace: 'demo', serviceAccount: 'pod', ips: [WAYPOINTED_POD_IP], node: 'node-a', waypoint: { destination: WAYPOINT_IP } }),
  );
  cp.setService(service({ name: 'echo', namespace: 'demo', vips: [VIP], ports: { 9080: 8080 }, waypoint: { destination: WAYPOINT_IP } }));
  cp.setService(service({ name: 'plain', namespace: 'demo', vips: [PLAIN_VIP], ports: { 9080: 8080 } }));
  const pt = service({ name: 'pt', namespace: 'demo', vips: [PASSTHROUGH_VIP], ports: { 7001: 8080 } });
  pt.loadBalancing = { $typeName: 'istio.workload.LoadBalancing', routingPreference: [], mode: 3 /* PASSTHROUGH */, healthPolicy: 0 };
  cp.setService(pt);

  serverApp = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => serverApp.close());
  waypointProxy = await startEcho(WAYPOINT_IP, 9080);
  cleanups.push(() => waypointProxy.close());
  waypointProxyForPods = await startEcho(WAYPOINT_IP, 8080);
  cleanups.push(() => waypointProxyForPods.close());
  waypoint = await startZtunnel(cp, { ip: WAYPOINT_IP, workload: { namespace: 'demo', name: 'waypoint-0', serviceAccount: 'waypoint' } });
  cleanups.push(() => waypoint.close());
  client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' } });
  cleanups.push(() => client.close());
});

afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function through(dst: { ip: string; port: number }, payload: string): Promise<string> {
  const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, dst, CLIENT_IP);
  cleanups.push(async () => void c.socket.destroy());
  expect(c.reply).toBe(0);
  return (await roundTrip(c.socket, Buffer.from(payload))).toString();
}

describe('service and workload waypoints', () => {
  it('sends service traffic to the waypoint over HBONE with the service VIP:port as authority, never straight to the endpoint', async () => {
    expect(await through({ ip: VIP, port: 9080 }, 'via waypoint')).toBe('via waypoint');
    expect(waypointProxy.peers).toEqual([CLIENT_IP]);
    expect(serverApp.peers).toEqual([]);

    // What the waypoint's ztunnel saw: the original destination as authority, from the client's identity.
    const seen = await waypoint.waitForLog((r) => r.message === 'connection complete' && r['direction'] === 'inbound' && r['dst.hbone_addr'] === `${VIP}:9080`, 'for the waypoint hop');
    expect(seen['src.identity']).toBe('spiffe://cluster.local/ns/demo/sa/client');
    expect(seen['error']).toBeUndefined();

    // The client reports the waypoint as the workload it reached and the service it meant.
    await client.waitForLog((r) => r.message === 'connection complete' && r['dst.hbone_addr'] === `${VIP}:9080`, 'for the outbound leg');
    const metrics = (await client.get('stats', '/metrics')).body;
    expect(
      sampleSum(metrics, 'istio_tcp_connections_closed_total', {
        reporter: 'source',
        destination_workload: 'waypoint',
        destination_principal: 'spiffe://cluster.local/ns/demo/sa/waypoint',
        destination_service: HOST,
        destination_service_name: 'echo',
        connection_security_policy: 'mutual_tls',
        response_flags: '-',
      }),
    ).toBe(1);
  });

  it('sends traffic addressed to a pod with a workload waypoint to that waypoint, with the pod IP:port as authority', async () => {
    const before = waypointProxyForPods.peers.length;
    expect(await through({ ip: WAYPOINTED_POD_IP, port: 8080 }, 'pod via waypoint')).toBe('pod via waypoint');
    expect(waypointProxyForPods.peers.slice(before)).toEqual([CLIENT_IP]);
    await waypoint.waitForLog((r) => r.message === 'connection complete' && r['dst.hbone_addr'] === `${WAYPOINTED_POD_IP}:8080`, 'for the workload waypoint hop');
  });

  it('has the waypoint ztunnel refuse (400) a CONNECT for a destination it is not the waypoint of', async () => {
    const cert = await issueCertificate(cp, { namespace: 'demo', serviceAccount: 'client' });
    const raw = await rawHboneClient({ ip: WAYPOINT_IP, port: 15008 }, cert, CLIENT_IP);
    cleanups.push(() => raw.close());
    const before = waypointProxy.received();
    for (const authority of [`${PLAIN_VIP}:9080`, `${SERVER_IP}:8080`]) {
      const answer = await raw.request(authority, { earlyData: Buffer.from('sneak') });
      expect(answer.status).toBe(400);
      await readAll(answer.stream);
      await waypoint.waitForLog((r) => r['code'] === 'IP_MISMATCH' && String(r['error']).includes(authority), `refusing ${authority}`);
    }
    // And accepts the one it is the waypoint of.
    const ok = await raw.request(`${VIP}:9080`, { earlyData: Buffer.from('fine') });
    expect(ok.status).toBe(200);
    ok.stream.end();
    expect((await readAll(ok.stream)).toString()).toBe('fine');
    expect(waypointProxy.received() - before).toBe('fine'.length);
  });
});

describe('passthrough', () => {
  it('relays traffic to a destination outside the mesh as plain TCP to the original destination', async () => {
    const outside = await startEcho(OUTSIDE_IP, 7000);
    cleanups.push(() => outside.close());
    expect(await through({ ip: OUTSIDE_IP, port: 7000 }, 'to the internet')).toBe('to the internet');
    expect(outside.received()).toBe('to the internet'.length);
    await client.waitForLog((r) => r.message === 'connection complete' && r['dst.addr'] === `${OUTSIDE_IP}:7000`, 'for the passthrough connection');
    const metrics = (await client.get('stats', '/metrics')).body;
    expect(
      sampleSum(metrics, 'istio_tcp_connections_closed_total', {
        reporter: 'source',
        source_workload: 'client',
        destination_workload: 'unknown',
        destination_service: 'unknown',
        connection_security_policy: 'unknown',
      }),
    ).toBe(1);
  });

  it('relays traffic to a PASSTHROUGH service VIP as plain TCP to the VIP itself, not to its endpoints', async () => {
    const atVip = await startEcho(PASSTHROUGH_VIP, 7001);
    cleanups.push(() => atVip.close());
    const endpointBefore = serverApp.peers.length;
    expect(await through({ ip: PASSTHROUGH_VIP, port: 7001 }, 'passthrough service')).toBe('passthrough service');
    expect(atVip.received()).toBe('passthrough service'.length);
    expect(serverApp.peers.length).toBe(endpointBefore);
    const log = await client.waitForLog((r) => r.message === 'connection complete' && r['dst.addr'] === `${PASSTHROUGH_VIP}:7001`, 'for the passthrough service');
    expect(log['dst.hbone_addr']).toBeUndefined();
  });
});
