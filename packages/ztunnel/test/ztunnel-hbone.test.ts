/**
 * HBONE end to end with two whole ztunnels in process: client app →
 * SOCKS5 (client ztunnel) → HBONE mTLS + HTTP/2 CONNECT → server ztunnel →
 * app, configured by the local control plane over TLS.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestControlPlane, workload, service, allowPolicy, type TestControlPlane } from '@ambient/control/testing';
import { roundTrip, socks5Connect, startEcho, startZtunnel } from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.10.20';
const SERVER_IP = '127.0.10.21';
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function mesh(): Promise<TestControlPlane> {
  const cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a', services: { 'demo/echo.demo.svc.cluster.local': { 80: 8080 } } }));
  cp.setService(service({ name: 'echo', namespace: 'demo', vips: ['127.10.10.30'], ports: { 80: 8080 } }));
  return cp;
}

async function twoZtunnels(cp: TestControlPlane) {
  const echo = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => echo.close());
  const server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' } });
  cleanups.push(() => server.close());
  const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' } });
  cleanups.push(() => client.close());
  return { echo, server, client };
}

describe('HBONE between two ztunnels', () => {
  it('carries bytes both ways by pod IP and by service VIP, with the server app seeing the client pod address', async () => {
    const cp = await mesh();
    const { echo, client } = await twoZtunnels(cp);
    const direct = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    expect(direct.reply).toBe(0);
    expect((await roundTrip(direct.socket, Buffer.from('hello over hbone'))).toString()).toBe('hello over hbone');

    const viaVip = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: '127.10.10.30', port: 80 }, CLIENT_IP);
    expect(viaVip.reply).toBe(0);
    expect((await roundTrip(viaVip.socket, Buffer.from('via the service'))).toString()).toBe('via the service');
    // The app sees the client pod's own address, not the ztunnel's.
    expect(echo.peers).toEqual([CLIENT_IP, CLIENT_IP]);
    void client;
  });

  it('is denied with 401 semantics (SOCKS5 "not allowed") when an ALLOW policy does not match, and allowed when it does', async () => {
    const cp = await mesh();
    cp.setPolicy(allowPolicy({ name: 'only-other', namespace: 'demo', scope: 'Namespace', rules: [[[{ principals: ['cluster.local/ns/demo/sa/other'] }]]] }));
    await twoZtunnels(cp);
    const denied = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    expect(denied.reply).not.toBe(0);
    cp.setPolicy(allowPolicy({ name: 'only-other', namespace: 'demo', scope: 'Namespace', rules: [[[{ principals: ['cluster.local/ns/demo/sa/client'] }]]] }));
    await cp.nextAck('type.googleapis.com/istio.security.Authorization');
    await cp.nextAck('type.googleapis.com/istio.security.Authorization');
    await cp.nextAck('type.googleapis.com/istio.security.Authorization');
    await cp.nextAck('type.googleapis.com/istio.security.Authorization');
    const allowed = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    expect(allowed.reply).toBe(0);
    expect((await roundTrip(allowed.socket, Buffer.from('ok'))).toString()).toBe('ok');
  });

  it("waits for the client's own workload when it connects out before its WDS entry arrives (ztunnel: up to 5 s)", async () => {
    const cp = await startTestControlPlane();
    cleanups.push(() => cp.close());
    cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    const server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' } });
    cleanups.push(() => server.close());
    const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' }, localWorkloadWaitMs: 5_000 });
    cleanups.push(() => client.close());

    const pending = socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    // The pod's entry arrives while its first connection is waiting.
    cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
    const conn = await pending;
    expect(conn.reply).toBe(0);
    expect((await roundTrip(conn.socket, Buffer.from('late but known'))).toString()).toBe('late but known');
    expect(echo.peers).toEqual([CLIENT_IP]);
  });
});
