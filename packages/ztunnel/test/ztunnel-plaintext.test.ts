/**
 * Plaintext inbound (15006) of a whole ztunnel: traffic for the pod that did
 * not come over HBONE. Traffic capture is not available in process, so the
 * test stands in for the pod's iptables REDIRECT with the app's
 * original-destination seam (AppDeps.originalDestination): connections to the
 * 15006 listener report the pod's app port as where they were going, as
 * SO_ORIGINAL_DST would. A STRICT PeerAuthentication (which istiod sends as a
 * DENY policy matching `notPrincipals: [presence]`, selected by the workload)
 * refuses that traffic while HBONE from another ztunnel keeps working.
 */
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { denyPolicy, service, startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import { localAddressAsOriginalDestination, type OriginalDestination } from '@ambient/dataplane';
import {
  closed,
  roundTrip,
  sampleSum,
  socks5Connect,
  startEcho,
  startZtunnel,
  waitForState,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.12.20';
const SERVER_IP = '127.0.12.21';
const OUTSIDER_IP = '127.0.12.30'; // a client that is not in the mesh
const STRICT = 'demo/converted-peer-authentication-strict';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

/** What iptables' REDIRECT to 15006 would report as the original destination: the pod's app port. */
const captured: OriginalDestination = (socket) => {
  const local = localAddressAsOriginalDestination(socket);
  return local?.port === 15006 ? { ip: local.ip, port: 8080 } : local;
};

async function mesh(o: { strict: boolean }) {
  const cp: TestControlPlane = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  if (o.strict) strict(cp);
  cp.setWorkload(serverWorkload(o.strict));
  cp.setService(service({ name: 'echo', namespace: 'demo', vips: ['127.12.0.30'], ports: { 80: 8080 } }));
  const echo = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => echo.close());
  const server = await startZtunnel(cp, {
    ip: SERVER_IP,
    workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' },
    originalDestination: captured,
  });
  cleanups.push(() => server.close());
  return { cp, echo, server };
}

function serverWorkload(strict: boolean) {
  return workload({
    name: 'server-0',
    namespace: 'demo',
    serviceAccount: 'server',
    ips: [SERVER_IP],
    node: 'node-a',
    services: { 'demo/echo.demo.svc.cluster.local': { 80: 8080 } },
    ...(strict ? { authorizationPolicies: [STRICT] } : {}),
  });
}

/** PeerAuthentication STRICT as istiod converts it for ztunnel. */
function strict(cp: TestControlPlane): void {
  cp.setPolicy(
    denyPolicy({ name: 'converted-peer-authentication-strict', namespace: 'demo', scope: 'WorkloadSelector', rules: [[[{ notPrincipals: ['*'] }]]] }),
  );
}

async function plaintext(to: string, port: number): Promise<Socket> {
  const socket = connect({ host: to, port, localAddress: OUTSIDER_IP });
  socket.on('error', () => {});
  cleanups.push(async () => void socket.destroy());
  await once(socket, 'connect');
  return socket;
}

/** Writes, half-closes and collects what comes back until the connection closes. */
async function refusedExchange(socket: Socket, payload: Buffer): Promise<Buffer> {
  const chunks: Buffer[] = [];
  socket.on('data', (d: Buffer) => chunks.push(d));
  socket.end(payload);
  await closed(socket);
  return Buffer.concat(chunks);
}

describe('plaintext inbound (15006)', () => {
  it('relays captured plaintext traffic to the app with the client address, recording it as not mutual TLS', async () => {
    const { echo, server } = await mesh({ strict: false });
    const socket = await plaintext(SERVER_IP, 15006);
    expect((await roundTrip(socket, Buffer.from('plain hello'))).toString()).toBe('plain hello');
    expect(echo.peers).toEqual([OUTSIDER_IP]);
    await server.waitForLog((r) => r.message === 'connection complete' && r['direction'] === 'inbound', 'for the plaintext connection');
    const metrics = (await server.get('stats', '/metrics')).body;
    const labels = {
      reporter: 'destination',
      connection_security_policy: 'unknown',
      source_principal: 'unknown',
      destination_workload: 'server',
      destination_workload_namespace: 'demo',
      destination_service: 'echo.demo.svc.cluster.local',
      response_flags: '-',
    };
    expect(sampleSum(metrics, 'istio_tcp_connections_opened_total', labels)).toBe(1);
    expect(sampleSum(metrics, 'istio_tcp_received_bytes_total', labels)).toBe('plain hello'.length);
  });

  it('closes a connection made straight to 15006 without capture: the destination is ztunnel itself', async () => {
    const cp = await startTestControlPlane();
    cleanups.push(() => cp.close());
    cp.setWorkload(serverWorkload(false));
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    // No capture stand-in: the original destination is the listener's own address.
    const server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' } });
    cleanups.push(() => server.close());
    const socket = await plaintext(SERVER_IP, 15006);
    expect((await refusedExchange(socket, Buffer.from('loop?'))).length).toBe(0);
    await server.waitForLog((r) => r['code'] === 'SELF_CALL', 'naming the self call');
    expect(echo.peers).toEqual([]);
  });

  it('refuses plaintext under a STRICT PeerAuthentication policy while HBONE from a mesh client still works', async () => {
    const { cp, echo, server } = await mesh({ strict: true });
    const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' } });
    cleanups.push(() => client.close());

    const socket = await plaintext(SERVER_IP, 15006);
    expect((await refusedExchange(socket, Buffer.from('let me in'))).length).toBe(0);
    expect(echo.peers).toEqual([]);
    expect(echo.received()).toBe(0);
    const denied = await server.waitForLog((r) => r.message === 'connection complete' && typeof r['error'] === 'string', 'for the denied plaintext connection');
    expect(String(denied['error'])).toContain('denied');
    const metrics = (await server.get('stats', '/metrics')).body;
    expect(sampleSum(metrics, 'istio_tcp_connections_failed_total', { reporter: 'destination', response_flags: 'DENY', connection_security_policy: 'unknown' })).toBe(1);

    const viaHbone = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    expect(viaHbone.reply).toBe(0);
    expect((await roundTrip(viaHbone.socket, Buffer.from('mtls ok'))).toString()).toBe('mtls ok');
    expect(echo.peers).toEqual([CLIENT_IP]);
  });

  it('starts refusing plaintext as soon as STRICT arrives, leaving HBONE alone', async () => {
    const { cp, echo, server } = await mesh({ strict: false });
    const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' } });
    cleanups.push(() => client.close());
    const before = await plaintext(SERVER_IP, 15006);
    expect((await roundTrip(before, Buffer.from('still open'))).toString()).toBe('still open');

    strict(cp);
    cp.setWorkload(serverWorkload(true));
    await waitForState(server, (s) => {
      const w = s.workload('Kubernetes//Pod/demo/server-0');
      return w !== undefined && s.policiesFor(w).policies.some((p) => p.name === 'converted-peer-authentication-strict') && s.policiesFor(w).missing.length === 0;
    }, 'the STRICT policy applied to server-0');

    const after = await plaintext(SERVER_IP, 15006);
    expect((await refusedExchange(after, Buffer.from('now?'))).length).toBe(0);
    expect(echo.peers).toEqual([OUTSIDER_IP]);
    const viaHbone = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    expect(viaHbone.reply).toBe(0);
    expect((await roundTrip(viaHbone.socket, Buffer.from('mtls ok'))).toString()).toBe('mtls ok');
  });
});
