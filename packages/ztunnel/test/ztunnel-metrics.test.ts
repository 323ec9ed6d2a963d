/**
 * What a user (or Prometheus, Kiali, the Istio ztunnel dashboard) reads from
 * two whole ztunnels after traffic: `/metrics` with the istio_tcp_* families
 * from both reporters, every workload / service / principal label filled from
 * workload discovery, and istio_build; `/config_dump` with workloads,
 * services, policies, certificates and config, and no secret (private key or
 * token) anywhere in it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowPolicy, service, startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import {
  roundTrip,
  sampleSum,
  samples,
  socks5Connect,
  startEcho,
  startZtunnel,
  type ZtunnelUnderTest,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.17.20';
const SERVER_IP = '127.0.17.21';
const VIP = '127.17.0.30';
const HOST = 'echo.demo.svc.cluster.local';
const PAYLOAD = Buffer.alloc(1000, 'm');

let cp: TestControlPlane;
let client: ZtunnelUnderTest;
let server: ZtunnelUnderTest;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(
    workload({ name: 'sleep-7d9f', namespace: 'demo', serviceAccount: 'sleeper', ips: [CLIENT_IP], node: 'node-a', canonicalName: 'sleep', canonicalRevision: 'v1', workloadName: 'sleep' }),
  );
  cp.setWorkload(
    workload({
      name: 'echo-5c6b',
      namespace: 'demo',
      serviceAccount: 'echoer',
      ips: [SERVER_IP],
      node: 'node-a',
      canonicalName: 'echo-app',
      canonicalRevision: 'v2',
      workloadName: 'echo',
      services: { [`demo/${HOST}`]: { 80: 8080 } },
    }),
  );
  cp.setService(service({ name: 'echo', namespace: 'demo', vips: [VIP], ports: { 80: 8080 } }));
  cp.setPolicy(allowPolicy({ name: 'sleeper-only', namespace: 'demo', rules: [[[{ principals: ['cluster.local/ns/demo/sa/sleeper'] }]]] }));
  const echo = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => echo.close());
  server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'echo-5c6b', serviceAccount: 'echoer' } });
  cleanups.push(() => server.close());
  client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'sleep-7d9f', serviceAccount: 'sleeper' } });
  cleanups.push(() => client.close());

  const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: VIP, port: 80 }, CLIENT_IP);
  cleanups.push(async () => void c.socket.destroy());
  expect(c.reply).toBe(0);
  expect((await roundTrip(c.socket, PAYLOAD)).length).toBe(PAYLOAD.length);
  const complete = (zt: ZtunnelUnderTest) => zt.waitForLog((r) => r.message === 'connection complete', 'for the connection');
  await Promise.all([complete(client), complete(server)]);
});

afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const SOURCE = {
  source_workload: 'sleep',
  source_canonical_service: 'sleep',
  source_canonical_revision: 'v1',
  source_workload_namespace: 'demo',
  source_principal: 'spiffe://cluster.local/ns/demo/sa/sleeper',
  source_app: 'sleep',
  source_version: 'v1',
  source_cluster: 'Kubernetes',
};
const DESTINATION = {
  destination_service: HOST,
  destination_service_namespace: 'demo',
  destination_service_name: 'echo',
  destination_workload: 'echo',
  destination_canonical_service: 'echo-app',
  destination_canonical_revision: 'v2',
  destination_workload_namespace: 'demo',
  destination_principal: 'spiffe://cluster.local/ns/demo/sa/echoer',
  destination_app: 'echo-app',
  destination_version: 'v2',
  destination_cluster: 'Kubernetes',
};

describe('metrics after traffic', () => {
  for (const [side, reporter] of [['client', 'source'], ['server', 'destination']] as const) {
    it(`the ${side} ztunnel reports the connection with reporter="${reporter}" and every label filled from WDS`, async () => {
      const zt = side === 'client' ? client : server;
      const reply = await zt.get('stats', '/metrics');
      expect(reply.status).toBe(200);
      const body = reply.body;
      const labels = {
        reporter,
        ...SOURCE,
        ...DESTINATION,
        request_protocol: 'tcp',
        response_flags: '-',
        connection_security_policy: 'mutual_tls',
      };
      expect(samples(body, 'istio_tcp_connections_opened_total', labels)).toHaveLength(1);
      expect(sampleSum(body, 'istio_tcp_connections_opened_total', labels)).toBe(1);
      expect(sampleSum(body, 'istio_tcp_connections_closed_total', labels)).toBe(1);
      expect(sampleSum(body, 'istio_tcp_received_bytes_total', labels)).toBe(PAYLOAD.length);
      expect(sampleSum(body, 'istio_tcp_sent_bytes_total', labels)).toBe(PAYLOAD.length);
      // Nothing failed, and nothing was reported from the other side's point of view.
      expect(sampleSum(body, 'istio_tcp_connections_failed_total')).toBe(0);
      expect(samples(body, 'istio_tcp_connections_opened_total', { reporter: reporter === 'source' ? 'destination' : 'source' })).toEqual([]);

      expect(samples(body, 'istio_build', { component: 'ztunnel' }).map((s) => s.value)).toEqual([1]);
      // The socket gauge (Resource Usage panel): the app's socket to the client ztunnel is closed (0); the
      // server still holds the pooled HBONE connection the client ztunnel keeps for reuse (1).
      expect(samples(body, 'istio_tcp_sockets_open', { reporter }).map((s) => s.value)).toEqual([reporter === 'source' ? 0 : 1]);
      // Labels Prometheus would overwrite or that collide with target labels are never emitted.
      const names = new Set<string>();
      for (const m of body.matchAll(/[{,]([a-zA-Z_][a-zA-Z0-9_]*)="/g)) names.add(m[1] as string);
      for (const forbidden of ['pod', 'namespace', 'app', 'node', 'job', 'instance']) expect(names.has(forbidden)).toBe(false);
      // The stable families say so in their HELP text.
      for (const family of ['istio_tcp_connections_opened', 'istio_tcp_connections_closed', 'istio_tcp_received_bytes', 'istio_tcp_sent_bytes', 'istio_build']) {
        // (Prometheus text format names counter families with their `_total` sample name.)
        const help = new RegExp(`^# HELP ${family}(?:_total)? (.*)$`, 'm').exec(body);
        expect(help?.[1], family).toBeDefined();
        expect(help?.[1]).not.toContain('unstable');
      }
      // /stats/prometheus serves the same families.
      const alias = await zt.get('stats', '/stats/prometheus');
      expect(alias.status).toBe(200);
      expect(sampleSum(alias.body, 'istio_tcp_connections_closed_total', labels)).toBe(1);
    });
  }
});

interface Dump {
  workloads: Array<{ uid: string; name: string; workloadIps: string[]; serviceAccount: string; canonicalName: string }>;
  services: Array<{ hostname: string; vips: string[] }>;
  policies: Array<{ name: string; namespace: string; action: string; scope: string }>;
  certificates: Array<{ identity: string; state: string; certChain: Array<{ pem: string; serialNumber: string; expirationTime: string }>; rootCerts: unknown[] }>;
  config: Record<string, unknown>;
  version: unknown;
}

describe('config dump', () => {
  it('lists workloads, services, policies, certificates and config, without any private key or token', async () => {
    const reply = await server.get('admin', '/config_dump');
    expect(reply.status).toBe(200);
    expect(String(reply.headers['content-type'])).toContain('application/json');
    const dump = JSON.parse(reply.body) as Dump;

    expect(dump.workloads.map((w) => w.name).sort()).toEqual(['echo-5c6b', 'sleep-7d9f']);
    expect(dump.workloads.find((w) => w.name === 'echo-5c6b')).toMatchObject({ workloadIps: [SERVER_IP], serviceAccount: 'echoer', canonicalName: 'echo-app' });
    expect(dump.services).toEqual([expect.objectContaining({ hostname: HOST, vips: [`/${VIP}`] })]);
    expect(dump.policies).toEqual([expect.objectContaining({ name: 'sleeper-only', namespace: 'demo', action: 'Allow', scope: 'Namespace' })]);
    expect(dump.config).toBeTypeOf('object');
    expect(dump.version).toBeDefined();

    // The certificate this ztunnel serves with, as installed.
    const served = await server.app.certificates.fetchCertificate({ trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'echoer' });
    const cert = dump.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/demo/sa/echoer');
    expect(cert?.state).toBe('Available');
    expect(cert?.certChain[0]?.serialNumber).toBe(BigInt(`0x${served.leaf.serialNumber}`).toString());
    expect(Buffer.from(cert?.certChain[0]?.pem ?? '', 'base64').toString()).toContain('-----BEGIN CERTIFICATE-----');

    // No secret in any form: not the key PEM, not its base64 body, not base64 of the PEM, not the token.
    const text = reply.body;
    expect(text).not.toMatch(/PRIVATE KEY/);
    const keyBody = served.privateKeyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
    expect(text).not.toContain(keyBody.slice(0, 40));
    expect(text).not.toContain(Buffer.from(served.privateKeyPem).toString('base64').slice(0, 40));
    for (const s of text.matchAll(/"([A-Za-z0-9+/=]{64,})"/g)) expect(Buffer.from(s[1] as string, 'base64').toString('latin1')).not.toMatch(/PRIVATE KEY/);
    expect(text).not.toMatch(/test-[0-9a-f]{24}/); // the control plane's bearer tokens
  });
});
