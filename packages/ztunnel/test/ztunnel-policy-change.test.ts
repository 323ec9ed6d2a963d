/**
 * A policy change reaching a whole ztunnel while connections are live: the
 * connection the new policy denies is closed (and counted with response flag
 * DENY), the one it still allows keeps carrying bytes, although both share
 * one pooled HBONE (HTTP/2) connection between the two ztunnels.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { allowPolicy, denyPolicy, startTestControlPlane, workload } from '@ambient/control/testing';
import {
  closed,
  echoOnce,
  roundTrip,
  sampleSum,
  socks5Connect,
  startEcho,
  startZtunnel,
  waitForState,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.13.20';
const SERVER_IP = '127.0.13.21';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup() {
  const cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
  for (const port of [8080, 8081]) {
    const echo = await startEcho(SERVER_IP, port);
    cleanups.push(() => echo.close());
  }
  const server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' } });
  cleanups.push(() => server.close());
  const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' } });
  cleanups.push(() => client.close());
  const open = async (port: number) => {
    const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port }, CLIENT_IP);
    cleanups.push(async () => void c.socket.destroy());
    expect(c.reply).toBe(0);
    expect((await echoOnce(c.socket, Buffer.from(`hello ${port}`))).toString()).toBe(`hello ${port}`);
    return c.socket;
  };
  return { cp, server, client, open };
}

describe('a policy change with live connections', () => {
  it('closes the connection a new DENY policy covers, leaves the allowed one alone, and records DENY', async () => {
    const { cp, server, open } = await setup();
    const allowed = await open(8080);
    const doomed = await open(8081);

    cp.setPolicy(denyPolicy({ name: 'no-8081', namespace: 'demo', rules: [[[{ destinationPorts: [8081] }]]] }));
    await closed(doomed);
    const log = await server.waitForLog((r) => r.message === 'connection complete' && String(r['error']).includes('policy change'), 'for the connection the policy closed');
    expect(log['dst.addr']).toBe(`${SERVER_IP}:8081`);
    await server.waitForLog((r) => r.message === 'connection closed due to policy change', 'from the connection manager');

    // The allowed connection still carries bytes both ways, and ends cleanly.
    expect((await echoOnce(allowed, Buffer.from('still here'))).toString()).toBe('still here');
    expect((await roundTrip(allowed, Buffer.from('bye'))).toString()).toBe('bye');
    await server.waitForLog((r) => r.message === 'connection complete' && r['dst.addr'] === `${SERVER_IP}:8080`, 'for the allowed connection');

    const metrics = (await server.get('stats', '/metrics')).body;
    const from = { reporter: 'destination', source_principal: 'spiffe://cluster.local/ns/demo/sa/client', connection_security_policy: 'mutual_tls' };
    expect(sampleSum(metrics, 'istio_tcp_connections_closed_total', { ...from, response_flags: 'DENY' })).toBe(1);
    expect(sampleSum(metrics, 'istio_tcp_connections_failed_total', { ...from, response_flags: 'DENY' })).toBe(1);
    expect(sampleSum(metrics, 'istio_tcp_connections_closed_total', { ...from, response_flags: '-' })).toBe(1);

    // New connections to the denied port are refused from now on.
    const again = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8081 }, CLIENT_IP);
    cleanups.push(async () => void again.socket.destroy());
    expect(again.reply).not.toBe(0);
  });

  it('closes live connections when an ALLOW policy that no longer admits the client replaces one that did', async () => {
    const { cp, server, open } = await setup();
    cp.setPolicy(allowPolicy({ name: 'who', namespace: 'demo', rules: [[[{ principals: ['cluster.local/ns/demo/sa/client'] }]]] }));
    // The ztunnel must have the ALLOW policy before the connections open, or they would be judged without it.
    await waitForState(server, (s) => [...s.policies()].some((p) => p.name === 'who'), 'the ALLOW policy');
    const a = await open(8080);
    const b = await open(8081);
    cp.setPolicy(allowPolicy({ name: 'who', namespace: 'demo', rules: [[[{ principals: ['cluster.local/ns/demo/sa/someone-else'] }]]] }));
    await Promise.all([closed(a), closed(b)]);
    await server.waitForLog((r) => r.message === 'connection complete' && r['dst.addr'] === `${SERVER_IP}:8081` && String(r['error']).includes('policy change'), 'for 8081');
    await server.waitForLog((r) => r.message === 'connection complete' && r['dst.addr'] === `${SERVER_IP}:8080` && String(r['error']).includes('policy change'), 'for 8080');
    const metrics = (await server.get('stats', '/metrics')).body;
    expect(sampleSum(metrics, 'istio_tcp_connections_closed_total', { reporter: 'destination', response_flags: 'DENY' })).toBe(2);
  });
});
