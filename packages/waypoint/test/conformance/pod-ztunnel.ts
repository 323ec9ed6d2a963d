/**
 * One pod's ztunnel for the conformance mesh: the real ztunnel in dedicated
 * mode as the pod's own workload, against the test control plane over TLS,
 * with every listener on the pod's loopback IP (15001/15006/15008, SOCKS5
 * 15080, readiness 15021, the DNS proxy 15053, admin/stats on free ports)
 * and `UNSTABLE_ENABLE_SOCKS5=true` standing in for traffic capture.
 *
 * It runs as the `ztunnel` binary of @ambient/ztunnel's build
 * (dist/bin/ztunnel.js; the waypoint's test task builds its dependencies
 * first, and a build older than the ztunnel sources is refused) in its own
 * Node process, as each pod's ztunnel is in a cluster: the proxies of a mesh
 * share the machine's cores instead of one event loop with the client, the
 * echo backends and the waypoint, which the weight checks' budget (500
 * requests in 5 s) needs. Ready when its readiness endpoint answers 200;
 * closed with SIGTERM (SIGKILL after a deadline, and when the test process
 * exits).
 *
 * Logs are kept in memory (the last LOG_LINES lines) and printed on close when
 * `WAYPOINT_CONFORMANCE_LOGS` is set, so a failing case can be debugged.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Env } from '@ambient/control';
import type { TestControlPlane } from '@ambient/control/testing';

const LOG_LINES = 2000;
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;

export interface PodZtunnel {
  readonly ip: string;
  /** The SOCKS5 listener the pod's client traffic enters through. */
  readonly socks5: { readonly ip: string; readonly port: number };
  /** The last log lines (JSON). */
  readonly logs: readonly string[];
  close(): Promise<void>;
}

export interface PodZtunnelOptions {
  readonly ip: string;
  readonly namespace: string;
  readonly podName: string;
  readonly serviceAccount: string;
  readonly node: string;
}

export async function startPodZtunnel(cp: TestControlPlane, o: PodZtunnelOptions): Promise<PodZtunnel> {
  const env: Env = {
    XDS_ADDRESS: cp.url,
    CA_ADDRESS: cp.url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: cp.token({ namespace: o.namespace, serviceAccount: o.serviceAccount, node: o.node }),
    NODE_NAME: o.node,
    POD_NAME: o.podName,
    POD_NAMESPACE: o.namespace,
    PROXY_MODE: 'dedicated',
    PROXY_WORKLOAD_INFO: `${o.namespace}/${o.podName}/${o.serviceAccount}`,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${o.ip}:0`,
    ZTUNNEL_STATS_ADDR: `${o.ip}:0`,
    ZTUNNEL_INBOUND_ADDR: `${o.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${o.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${o.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${o.ip}:15080`,
    ZTUNNEL_READINESS_ADDR: `${o.ip}:15021`,
    ISTIO_META_DNS_PROXY_ADDR: `${o.ip}:15053`,
    TERMINATION_GRACE_PERIOD_SECONDS: '2',
  };
  return startProcess(o, env);
}

/** The directory of an installed package (found as Node finds it: node_modules upwards from here). */
function packageDir(pkg: string): string {
  for (let dir = path.dirname(fileURLToPath(import.meta.url)); ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'node_modules', pkg);
    if (existsSync(path.join(candidate, 'package.json'))) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`${pkg} is not installed (npm ci)`);
  }
}

/** The built ztunnel binary (its package's `bin`), refused when older than any source file of ztunnel or of the packages it runs on. */
function ztunnelBinary(): string {
  const manifest = (pkg: string) => JSON.parse(readFileSync(path.join(packageDir(pkg), 'package.json'), 'utf8')) as { bin?: Record<string, string>; exports?: { '.'?: { default?: string } } };
  const binRel = manifest('@ambient/ztunnel').bin?.['ztunnel'];
  if (binRel === undefined) throw new Error('@ambient/ztunnel declares no ztunnel binary');
  const bin = path.join(packageDir('@ambient/ztunnel'), binRel);
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build @ambient/ztunnel (npx turbo run build --filter=@ambient/ztunnel), or run the suite through npm test`);
  for (const pkg of ['@ambient/ztunnel', '@ambient/dataplane', '@ambient/control']) {
    const entry = manifest(pkg).exports?.['.']?.default;
    const built = entry === undefined ? undefined : path.join(packageDir(pkg), entry);
    if (built === undefined || !existsSync(built)) throw new Error(`${pkg} is not built: npx turbo run build --filter=@ambient/ztunnel`);
    const stale = newerSource(path.join(packageDir(pkg), 'src'), statSync(built).mtimeMs);
    if (stale) throw new Error(`the build of ${pkg} is older than ${stale}: npx turbo run build --filter=@ambient/ztunnel`);
  }
  return bin;
}

/** A non-test .ts file under `dir` modified after `since`, if any. */
function newerSource(dir: string, since: number): string | undefined {
  if (!existsSync(dir)) return undefined;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      const found = newerSource(p, since);
      if (found) return found;
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') && statSync(p).mtimeMs > since) return p;
  }
  return undefined;
}

async function startProcess(o: PodZtunnelOptions, env: Env): Promise<PodZtunnel> {
  const logs: string[] = [];
  const keep = (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) if (line !== '') logs.push(`${line}\n`);
    if (logs.length > LOG_LINES) logs.splice(0, logs.length - LOG_LINES);
  };
  const child: ChildProcess = spawn(process.execPath, [ztunnelBinary()], {
    env: { PATH: process.env['PATH'] ?? '', LOG_FORMAT: 'json', RUST_LOG: process.env['WAYPOINT_CONFORMANCE_LOG_LEVEL'] ?? 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const stop = async () => {
    process.off('exit', killOnExit);
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([exited, new Promise<void>((resolve) => (timer = setTimeout(() => (child.kill('SIGKILL'), resolve()), STOP_TIMEOUT_MS)))]);
    clearTimeout(timer);
    await exited;
  };
  const deadline = performance.now() + START_TIMEOUT_MS;
  const readyUrl = `http://${o.ip}:15021/healthz/ready`;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`ztunnel for ${o.namespace}/${o.podName} exited with ${child.exitCode} before it was ready:\n${logs.join('')}`);
    }
    const status = await fetch(readyUrl).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) break;
    if (performance.now() > deadline) {
      await stop();
      throw new Error(`ztunnel for ${o.namespace}/${o.podName} on ${o.ip} was not ready within ${START_TIMEOUT_MS} ms (${readyUrl}: ${status}):\n${logs.join('')}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    ip: o.ip,
    socks5: { ip: o.ip, port: 15080 },
    logs,
    close: async () => {
      await stop();
      if (process.env['WAYPOINT_CONFORMANCE_LOGS']) process.stderr.write(`--- ztunnel ${o.namespace}/${o.podName} ${o.ip}\n${logs.join('')}`);
    },
  };
}
