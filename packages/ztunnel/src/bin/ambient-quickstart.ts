#!/usr/bin/env node
/**
 * The quick start: the whole mesh on one machine, no root, no cluster.
 *
 * Starts, as separate processes, the local control plane (example mesh) and
 * two ztunnels in dedicated mode — one for `demo/client-0` on 127.0.0.20 and
 * one for `demo/server-0` on 127.0.0.21 — plus the demo server app on
 * 127.0.0.21:8080; then sends a request from the client through SOCKS5 →
 * HBONE (mTLS + HTTP/2 CONNECT) → the server's ztunnel → the app, and prints
 * where to look. Ctrl-C stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { request as httpRequest, createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ZTUNNEL_NODE_ENV, ZTUNNEL_NODE_FLAGS } from './node-flags.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const controlBin = join(repo, 'packages/control/dist/bin/ambient-control-plane.js');
const ztunnelBin = join(repo, 'packages/ztunnel/dist/bin/ztunnel.js');
const mesh = join(repo, 'packages/control/examples/mesh.yaml');
const tokens = join(repo, 'packages/control/examples/tokens.yaml');
const stateDir = join(repo, '.ambient');
const rootCert = join(stateDir, 'root-cert.pem');

const CLIENT = { ip: '127.0.0.20', name: 'client-0', sa: 'client', token: 'demo-client-0' };
const SERVER = { ip: '127.0.0.21', name: 'server-0', sa: 'server', token: 'demo-server-0' };
const VIP = { ip: '127.10.0.30', port: 80 };
const children: ChildProcess[] = [];
const color = (c: number, s: string) => (process.stdout.isTTY ? `\x1b[${c}m${s}\x1b[0m` : s);

function start(name: string, args: string[], env: NodeJS.ProcessEnv, tint: number): ChildProcess {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const prefix = color(tint, `[${name}]`);
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream?.on('data', (d: Buffer) => {
      const lines = (rest + d.toString()).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') process.stdout.write(`${prefix} ${line}\n`);
    });
  }
  child.on('exit', (code, signal) => {
    if (!stopping) process.stdout.write(`${prefix} exited (${signal ?? code})\n`);
  });
  return child;
}

function ztunnel(w: typeof CLIENT, tint: number): ChildProcess {
  // The same node flags and malloc settings as the image.
  return start(`ztunnel ${w.name}`, [...ZTUNNEL_NODE_FLAGS, ztunnelBin], {
    ...ZTUNNEL_NODE_ENV,
    XDS_ADDRESS: 'https://localhost:15012',
    CA_ADDRESS: 'https://localhost:15012',
    XDS_ROOT_CA: rootCert,
    CA_ROOT_CA: rootCert,
    AUTH_TOKEN: w.token,
    POD_NAME: w.name,
    POD_NAMESPACE: 'demo',
    NODE_NAME: 'node-a',
    INSTANCE_IP: w.ip,
    PROXY_MODE: 'dedicated',
    PROXY_WORKLOAD_INFO: `demo/${w.name}/${w.sa}`,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${w.ip}:15000`,
    ZTUNNEL_STATS_ADDR: `${w.ip}:15020`,
    ZTUNNEL_READINESS_ADDR: `${w.ip}:15021`,
    ZTUNNEL_INBOUND_ADDR: `${w.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${w.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${w.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${w.ip}:15080`,
    // The DNS proxy of each dedicated ztunnel on its own address (both would want localhost:15053).
    ISTIO_META_DNS_PROXY_ADDR: `${w.ip}:15053`,
    LOG_FORMAT: 'plain',
  }, tint);
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolveGet, reject) => {
    const req = httpRequest(url, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolveGet({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setTimeout(2000, () => req.destroy(new Error('timeout')));
    req.end();
  });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what} did not become ready within ${timeoutMs / 1000}s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** An HTTP GET sent through the client's SOCKS5 listener: the request crosses the mesh. */
async function getThroughMesh(path: string): Promise<string> {
  const socket: Socket = connect({ host: CLIENT.ip, port: 15080, localAddress: CLIENT.ip });
  await once(socket, 'connect');
  const read = (n: number) =>
    new Promise<Buffer>((res, rej) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= n) {
          socket.off('data', onData);
          res(buf);
        }
      };
      socket.on('data', onData);
      socket.once('error', rej);
    });
  socket.write(Buffer.from([5, 1, 0]));
  await read(2);
  socket.write(Buffer.from([5, 1, 0, 1, ...VIP.ip.split('.').map(Number), VIP.port >> 8, VIP.port & 255]));
  const reply = await read(10);
  if (reply[1] !== 0) throw new Error(`SOCKS5 CONNECT refused by the client ztunnel (reply ${reply[1]})`);
  socket.write(`GET ${path} HTTP/1.1\r\nHost: echo.demo.svc.cluster.local\r\nConnection: close\r\n\r\n`);
  let out = '';
  socket.on('data', (d: Buffer) => (out += d.toString()));
  await once(socket, 'end');
  return out;
}

let stopping = false;
async function stop(code: number): Promise<never> {
  stopping = true;
  for (const c of children) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null ? once(c, 'exit') : Promise.resolve())));
  process.exit(code);
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void stop(0));
  process.on('SIGTERM', () => void stop(0));
  mkdirSync(stateDir, { recursive: true });

  const app = createServer((req, res) => {
    res.setHeader('content-type', 'text/plain');
    res.end(`hello from demo/server-0: you are ${req.socket.remoteAddress}, you asked for ${req.url}\n`);
  });
  app.listen(8080, SERVER.ip);
  await once(app, 'listening');

  // A stale root certificate from an earlier run must not be mistaken for this control plane's.
  rmSync(rootCert, { force: true });
  const cp = start('control-plane', [controlBin, '--mesh', mesh, '--tokens', tokens, '--root-cert-out', rootCert, '--log-level', 'warn'], {}, 35);
  const cpExited = once(cp, 'exit').then(() => {
    throw new Error('the control plane exited (is another one already listening on 127.0.0.1:15012? see its log above)');
  });
  await Promise.race([waitFor('the control plane', async () => existsSync(rootCert)), cpExited]);
  const proxies = [ztunnel(SERVER, 33), ztunnel(CLIENT, 36)];
  const proxyExited = Promise.race(proxies.map((p) => once(p, 'exit'))).then(() => {
    throw new Error('a ztunnel exited (a port in use? see its log above)');
  });
  for (const w of [SERVER, CLIENT]) {
    await Promise.race([waitFor(`ztunnel ${w.name}`, async () => (await get(`http://${w.ip}:15021/healthz/ready`)).status === 200), proxyExited, cpExited]);
  }
  void cpExited.catch((err: unknown) => stopping || process.stdout.write(`${String(err)}\n`));
  void proxyExited.catch((err: unknown) => stopping || process.stdout.write(`${String(err)}\n`));

  const response = await getThroughMesh('/quickstart');
  const body = response.split('\r\n\r\n')[1] ?? response;
  const line = '-'.repeat(78);
  process.stdout.write(`
${line}
The mesh works. demo/client-0 (${CLIENT.ip}) asked echo.demo.svc.cluster.local (${VIP.ip}:${VIP.port})
through its ztunnel (SOCKS5 ${CLIENT.ip}:15080) -> HBONE mTLS + HTTP/2 CONNECT to
${SERVER.ip}:15008 -> demo/server-0's ztunnel -> the app on ${SERVER.ip}:8080, which answered:

  ${body.trim()}

Look around:
  metrics       curl http://${CLIENT.ip}:15020/metrics   (reporter="source")
                curl http://${SERVER.ip}:15020/metrics   (reporter="destination")
  config dump   curl http://${CLIENT.ip}:15000/config_dump
  readiness     curl http://${SERVER.ip}:15021/healthz/ready
  access logs   the [ztunnel ...] lines above ("connection complete")
  more traffic  curl --socks5-hostname ${CLIENT.ip}:15080 http://${VIP.ip}/hello
  policy        edit packages/control/examples/mesh.yaml (e.g. the allowed port) and retry:
                the control plane pushes the change and the server's ztunnel enforces it.
Ctrl-C stops everything.
${line}
`);
}

main().catch(async (err: unknown) => {
  process.stderr.write(`quickstart failed: ${err instanceof Error ? err.message : String(err)}\n`);
  await stop(1);
});
