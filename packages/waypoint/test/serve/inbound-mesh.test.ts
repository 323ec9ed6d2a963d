/**
 * The whole waypoint data path with the real upstream side: a mesh client
 * (real HBONE with its certificate) → the waypoint's 15008 (serve/) → the
 * real Forwarder (upstream/) → HBONE with the waypoint's identity to the
 * endpoint's "ztunnel" (the dataplane HboneServer on <podIP>:15008) → a
 * real HTTP/1.1 or h2c backend. Pod IPs: 127.0.91.x.
 */
import http2 from 'node:http2';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '@ambient/control';
import { vip } from '@ambient/control/testing';
import { nodeSocketFactory } from '@ambient/dataplane';
import { id } from '@ambient/dataplane/testing';
import { computeBindings } from '../../src/bindings.js';
import { startWaypointInbound, type WaypointInbound } from '../../src/serve/inbound.js';
import { SERVICE_HOST, startMesh, WAYPOINT_URI, type EndpointSpec, type Mesh } from '../support/upstream-destination.js';
import { cert, compile, h1Request, quietLog, RecordingTelemetry, CLIENT_SPIFFE } from './harness.js';
import { dialHbone, TlsMaterial } from '@ambient/dataplane';
import { bufferOnlyWrites } from '../../src/serve/http1.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

const VIP = '10.96.91.1';
const WAYPOINT_HOSTNAME = 'waypoint.apps.svc.cluster.local';

async function world(endpoints: readonly EndpointSpec[]): Promise<{ mesh: Mesh; inbound: WaypointInbound; telemetry: RecordingTelemetry }> {
  const mesh = await startMesh(
    {
      clock: systemClock,
      endpoints,
      serviceOverrides: { vips: [vip(VIP)], waypoint: { destination: { kind: 'hostname', namespace: 'apps', hostname: WAYPOINT_HOSTNAME }, hboneMtlsPort: 15008 } },
    },
    cleanup,
  );
  // The support's endpoint "ztunnels" serve node:http on the tunnel stream, where Node 20 corrupts string
  // writes (see serve/http1.ts): give their tunnels the same Buffer-only writes the waypoint uses.
  for (const ep of mesh.endpoints) {
    const open = ep.open;
    open.add = (tunnel) => {
      bufferOnlyWrites(tunnel);
      return Set.prototype.add.call(open, tunnel) as typeof open;
    };
  }
  const telemetry = new RecordingTelemetry();
  const waypointCert = await cert(WAYPOINT_URI);
  const routes = compile([], [mesh.service]);
  const inbound = await startWaypointInbound(
    {
      clock: systemClock,
      random: Math.random,
      randomBytes: (n) => new Uint8Array(n).fill(7),
      log: quietLog,
      routes: () => routes,
      snapshot: () => mesh.store.snapshot(),
      bindings: () => computeBindings(mesh.store.snapshot(), { namespace: 'apps', hostname: WAYPOINT_HOSTNAME, podIps: [], network: '' }),
      forwarder: mesh.forwarder,
      telemetry,
      identity: id(WAYPOINT_URI),
      xfccClientIdentity: false,
      clusterDomain: 'cluster.local',
      sockets: nodeSocketFactory,
      certificate: () => Promise.resolve(waypointCert),
      network: '',
    },
    { host: '127.0.0.1', port: 0 },
  );
  cleanup.push(() => inbound.close());
  return { mesh, inbound, telemetry };
}

async function tunnelTo(inbound: WaypointInbound, ip: string, port: number) {
  const conn = await dialHbone({
    material: TlsMaterial.from(await cert(CLIENT_SPIFFE)),
    expected: [id(WAYPOINT_URI)],
    nextHop: { ip: '127.0.0.1', port: inbound.port },
    sockets: nodeSocketFactory,
    connectTimeoutMs: 5000,
    clock: systemClock,
  });
  cleanup.push(() => conn.destroy());
  const { stream } = await conn.openStream({ connect: { authority: { kind: 'address', ip, port } } });
  bufferOnlyWrites(stream);
  return stream;
}

describe('client → waypoint → real Forwarder → endpoint ztunnel → backend', () => {
  it('HTTP/1.1: the endpoint sees the waypoint\'s identity, the client sees the backend\'s answer', async () => {
    const { mesh, inbound, telemetry } = await world([{ ip: '127.0.91.1', name: 'b1' }]);
    const res = await h1Request(await tunnelTo(inbound, VIP, 80), { path: '/through', headers: [['Host', `${SERVICE_HOST}:80`]] });
    expect(res.status).toBe(200);
    expect(JSON.parse(res.body)).toMatchObject({ endpoint: 'b1', path: '/through' });
    expect(res.header('server')).toBe('istio-envoy');
    const ep = mesh.endpoints[0];
    expect(ep?.peers).toEqual([WAYPOINT_URI]);
    expect(ep?.authorities).toEqual(['127.0.91.1:8080']);
    expect(ep?.seen[0]?.['x-envoy-attempt-count']).toBe('1');
    const [record] = await telemetry.httpRecords(1);
    expect(record).toMatchObject({
      responseCode: 200,
      source: { identity: id(CLIENT_SPIFFE) },
      destination: { identity: id('spiffe://cluster.local/ns/apps/sa/b1') },
      upstreamHost: '127.0.91.1:8080',
      upstreamCluster: `inbound-vip|80|http|${SERVICE_HOST}`,
    });
  });

  it('h2c: a downstream HTTP/2 stream goes upstream as HTTP/2', async () => {
    const { inbound } = await world([{ ip: '127.0.91.2', name: 'b2', backend: 'h2c' }]);
    const tunnel = await tunnelTo(inbound, VIP, 80);
    const s2 = http2.connect('http://x', { createConnection: () => tunnel });
    cleanup.push(() => s2.destroy());
    const body = await new Promise<string>((resolve, reject) => {
      const r = s2.request({ ':path': '/h2', ':authority': `${SERVICE_HOST}:80` });
      let b = '';
      r.on('data', (d: Buffer) => (b += d.toString()));
      r.on('end', () => resolve(b));
      r.on('error', reject);
    });
    expect(JSON.parse(body)).toMatchObject({ endpoint: 'b2', path: '/h2', method: 'GET' });
  });

  it('an endpoint that is down: 503 UF with Envoy\'s body', async () => {
    const { inbound, telemetry } = await world([{ ip: '127.0.91.3', name: 'down', down: true }]);
    const res = await h1Request(await tunnelTo(inbound, VIP, 80), { headers: [['Host', `${SERVICE_HOST}:80`]] });
    expect(res.status).toBe(503);
    expect(res.body).toMatch(/^upstream connect error or disconnect\/reset before headers\. (retried and the latest )?reset reason: /);
    const [record] = await telemetry.httpRecords(1);
    expect(record?.flags).toContain('UF');
  });
});
