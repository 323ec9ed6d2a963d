/**
 * The `ztunnel` binary as a process (built by turbo before the tests): the
 * Helm chart's arguments, readiness over HTTP, graceful drain on SIGTERM with
 * exit code 0, an immediate exit on a second signal, and a configuration
 * error that names every bad variable and exits 2.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import { httpGet, socks5Connect, startEcho, withTimeout, WAIT_MS } from './support/ztunnel-harness.js';

const BIN = fileURLToPath(new URL('../dist/bin/ztunnel.js', import.meta.url));
const CLIENT_IP = '127.0.19.20';
const SERVER_IP = '127.0.19.21';
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

function spawnZtunnel(cp: TestControlPlane, ip: string, name: string, sa: string, extra: Record<string, string> = {}): { child: ChildProcess; output: () => string } {
  const token = cp.token({ namespace: 'demo', serviceAccount: sa, node: 'node-a' });
  let out = '';
  const child = spawn(process.execPath, [BIN, 'proxy', 'ztunnel'], {
    env: {
      PATH: process.env['PATH'] ?? '',
      XDS_ADDRESS: cp.url,
      CA_ADDRESS: cp.url,
      XDS_ROOT_CA: cp.rootCaPem,
      CA_ROOT_CA: cp.rootCaPem,
      AUTH_TOKEN: token,
      POD_NAME: name,
      POD_NAMESPACE: 'demo',
      NODE_NAME: 'node-a',
      PROXY_MODE: 'dedicated',
      PROXY_WORKLOAD_INFO: `demo/${name}/${sa}`,
      UNSTABLE_ENABLE_SOCKS5: 'true',
      ZTUNNEL_ADMIN_ADDR: `${ip}:15000`,
      ZTUNNEL_STATS_ADDR: `${ip}:15020`,
      ZTUNNEL_READINESS_ADDR: `${ip}:15021`,
      ZTUNNEL_INBOUND_ADDR: `${ip}:15008`,
      ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${ip}:15006`,
      ZTUNNEL_OUTBOUND_ADDR: `${ip}:15001`,
      ZTUNNEL_SOCKS5_ADDR: `${ip}:15080`,
      ISTIO_META_DNS_PROXY_ADDR: `${ip}:15053`,
      LOG_FORMAT: 'json',
      ...extra,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, output: () => out };
}

async function ready(ip: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const r = await httpGet(`http://${ip}:15021/healthz/ready`).catch(() => undefined);
    if (r?.status === 200) return;
    if (Date.now() > deadline) throw new Error(`ztunnel on ${ip} not ready in time`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

const exitOf = (child: ChildProcess) => once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as string | null }));

/** The control plane, the app, a client and a server ztunnel process, and one connection across them. */
async function meshOfTwo(env: { client?: Record<string, string>; server?: Record<string, string> }) {
  const cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
  const echo = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => echo.close());
  const server = spawnZtunnel(cp, SERVER_IP, 'server-0', 'server', env.server);
  const client = spawnZtunnel(cp, CLIENT_IP, 'client-0', 'client', env.client);
  await ready(SERVER_IP);
  await ready(CLIENT_IP);
  const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
  expect(c.reply).toBe(0);
  return { client, server, c };
}

describe('the ztunnel process', () => {
  it('starts with the Helm args, serves traffic, drains on SIGTERM and exits 0', async () => {
    const { server, c } = await meshOfTwo({ server: { TERMINATION_GRACE_PERIOD_SECONDS: '3' } });
    c.socket.destroy();

    const exited = exitOf(server.child);
    server.child.kill('SIGTERM');
    const { code } = await withTimeout(exited, WAIT_MS, () => 'ztunnel exit after SIGTERM');
    expect(code).toBe(0);
    expect(server.output()).toContain('shutting down gracefully');
  });

  it('exits at once on a second signal while a connection holds the drain open', async () => {
    const { client, c } = await meshOfTwo({ client: { TERMINATION_GRACE_PERIOD_SECONDS: '60' } });
    cleanups.push(() => void c.socket.destroy());

    const exited = exitOf(client.child);
    client.child.kill('SIGTERM');
    // The open connection keeps the (55 s) drain going; a second signal ends it now.
    await withTimeout(
      (async () => {
        while (!client.output().includes('shutting down gracefully')) await new Promise((r) => setTimeout(r, 20));
      })(),
      WAIT_MS,
      () => 'drain start',
    );
    client.child.kill('SIGINT');
    const { code } = await withTimeout(exited, 5_000, () => 'ztunnel exit after a second signal');
    expect(code).toBe(130);
    expect(client.output()).toContain('second signal');
  });

  it('refuses a bad configuration listing every problem, exit code 2', async () => {
    const child = spawn(process.execPath, [BIN], {
      env: { PATH: process.env['PATH'] ?? '', PROXY_MODE: 'sideways', SECRET_TTL: 'soon', UNSTABLE_ENABLE_SOCKS5: 'maybe' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    const [code] = (await once(child, 'exit')) as [number];
    expect(code).toBe(2);
    expect(err).toContain('PROXY_MODE');
    expect(err).toContain('SECRET_TTL');
    expect(err).toContain('UNSTABLE_ENABLE_SOCKS5');
  });
});
