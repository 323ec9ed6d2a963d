/**
 * Draining whole ztunnels (SIGTERM / POST /quitquitquit run app.drain()):
 * - graceful: readiness turns 500, new connections are refused, the open
 *   connection keeps carrying bytes, and the drain completes as soon as it
 *   closes (well before the deadline);
 * - forced: a connection still open at the deadline derived from
 *   TERMINATION_GRACE_PERIOD_SECONDS is cut, and the drain completes.
 * Both on the destination side (HBONE inbound) and the source side (SOCKS5
 * outbound).
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestControlPlane, workload } from '@ambient/control/testing';
import type { Env } from '@ambient/control';
import {
  WAIT_MS,
  closed,
  echoOnce,
  roundTrip,
  socks5Connect,
  startEcho,
  startZtunnel,
  tcpAccepts,
  withTimeout,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.16.20';
const SERVER_IP = '127.0.16.21';
const OUTSIDE_IP = '127.0.16.50'; // not in the mesh

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function setup(o: { serverEnv?: Env; clientEnv?: Env }) {
  const cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
  const echo = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => echo.close());
  const server = await startZtunnel(cp, {
    ip: SERVER_IP,
    workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' },
    ...(o.serverEnv ? { env: o.serverEnv } : {}),
  });
  cleanups.push(() => server.close());
  const client = await startZtunnel(cp, {
    ip: CLIENT_IP,
    workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' },
    ...(o.clientEnv ? { env: o.clientEnv } : {}),
  });
  cleanups.push(() => client.close());
  const open = async () => {
    const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    cleanups.push(async () => void c.socket.destroy());
    return c;
  };
  return { echo, server, client, open };
}

/** Tracks whether a promise has settled, without waiting for it. */
function track(p: Promise<void>): { readonly done: boolean; readonly promise: Promise<void> } {
  const state = { done: false, promise: p };
  p.then(
    () => (state.done = true),
    () => (state.done = true),
  );
  return state;
}

describe('graceful drain', () => {
  it('on the destination ztunnel: refuses new connections, keeps the open one working, and completes when it closes', async () => {
    const { server, open } = await setup({ serverEnv: { CONNECTION_TERMINATION_DEADLINE: '20s' } });
    const live = await open();
    expect(live.reply).toBe(0);
    expect((await echoOnce(live.socket, Buffer.from('before'))).toString()).toBe('before');

    const startedAt = performance.now();
    const drain = track(server.app.drain());
    const ready = await server.get('readiness', '/healthz/ready');
    expect(ready.status).toBe(500);
    expect(ready.body).toContain('draining');

    // New connections are refused: straight to 15008, and through the client ztunnel.
    expect(await tcpAccepts(SERVER_IP, 15008)).toBe(false);
    const refused = await open();
    expect(refused.reply).not.toBe(0);

    // The open connection keeps working while the drain waits for it.
    expect((await echoOnce(live.socket, Buffer.from('during'))).toString()).toBe('during');
    expect(drain.done).toBe(false);

    expect((await roundTrip(live.socket, Buffer.from('last words'))).toString()).toBe('last words');
    await withTimeout(drain.promise, WAIT_MS, () => `the drain did not complete after the last connection closed:\n${server.logs.join('')}`);
    // Completed because the connection closed, not at the 20 s deadline.
    expect(performance.now() - startedAt).toBeLessThan(WAIT_MS);
    expect(server.records().some((r) => String(r.message).includes('deadline reached'))).toBe(false);
    const complete = server.records().filter((r) => r.message === 'connection complete');
    expect(complete.map((r) => r['error'])).toEqual([undefined]);
  });

  it('on the source ztunnel: refuses new SOCKS5 connections, keeps the open one working, and completes when it closes', async () => {
    const { client, open } = await setup({ clientEnv: { CONNECTION_TERMINATION_DEADLINE: '20s' } });
    const live = await open();
    expect(live.reply).toBe(0);
    expect((await echoOnce(live.socket, Buffer.from('before'))).toString()).toBe('before');

    const drain = track(client.app.drain());
    expect(await tcpAccepts(CLIENT_IP, 15080)).toBe(false);
    expect(await tcpAccepts(CLIENT_IP, 15001)).toBe(false);

    expect((await echoOnce(live.socket, Buffer.from('during'))).toString()).toBe('during');
    expect(drain.done).toBe(false);

    expect((await roundTrip(live.socket, Buffer.from('last words'))).toString()).toBe('last words');
    await withTimeout(drain.promise, WAIT_MS, () => `the drain did not complete after the last connection closed:\n${client.logs.join('')}`);
    expect(client.records().some((r) => String(r.message).includes('deadline reached'))).toBe(false);
  });
});

describe('forced drain', () => {
  it('cuts a connection still open at the deadline derived from TERMINATION_GRACE_PERIOD_SECONDS', async () => {
    // terminationGracePeriodSeconds 2 → ztunnel's deadline max(2 - 1, 1) = 1 s.
    const { server, open } = await setup({ serverEnv: { TERMINATION_GRACE_PERIOD_SECONDS: '2' } });
    const dump = JSON.parse((await server.get('admin', '/config_dump')).body) as { config: { terminationDeadlineMs: number } };
    expect(dump.config.terminationDeadlineMs).toBe(1000);
    const live = await open();
    expect(live.reply).toBe(0);
    expect((await echoOnce(live.socket, Buffer.from('hold'))).toString()).toBe('hold');

    const startedAt = performance.now();
    const drain = track(server.app.drain());
    await closed(live.socket);
    const cutAfter = performance.now() - startedAt;
    expect(cutAfter).toBeGreaterThanOrEqual(900);
    expect(cutAfter).toBeLessThan(WAIT_MS);
    await withTimeout(drain.promise, WAIT_MS, () => `the forced drain did not complete:\n${server.logs.join('')}`);
    expect(server.records().some((r) => String(r.message).includes('drain deadline reached'))).toBe(true);
    const cut = await server.waitForLog((r) => r.message === 'connection complete', 'for the cut connection');
    expect(String(cut['error'])).toContain('shutting down');
  });

  it('cuts outbound connections (HBONE and plain TCP passthrough) at the deadline on the source ztunnel too', async () => {
    const { client, open } = await setup({ clientEnv: { CONNECTION_TERMINATION_DEADLINE: '1s' } });
    const outside = await startEcho(OUTSIDE_IP, 7000);
    cleanups.push(() => outside.close());
    const hbone = await open();
    expect(hbone.reply).toBe(0);
    const passthrough = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: OUTSIDE_IP, port: 7000 }, CLIENT_IP);
    cleanups.push(async () => void passthrough.socket.destroy());
    expect(passthrough.reply).toBe(0);
    for (const c of [hbone, passthrough]) expect((await echoOnce(c.socket, Buffer.from('hold'))).toString()).toBe('hold');

    const startedAt = performance.now();
    const drain = track(client.app.drain());
    // Both still work before the deadline.
    for (const c of [hbone, passthrough]) expect((await echoOnce(c.socket, Buffer.from('still'))).toString()).toBe('still');
    await Promise.all([closed(hbone.socket), closed(passthrough.socket)]);
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(900);
    await withTimeout(drain.promise, WAIT_MS, () => `the forced drain did not complete:\n${client.logs.join('')}`);
    expect(client.records().some((r) => String(r.message).includes('drain deadline reached'))).toBe(true);
  });
});
