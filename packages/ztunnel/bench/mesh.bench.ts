/**
 * The ztunnel benchmark the issue asks for (not a test): the same traffic
 * four ways — direct to the app, through a C mTLS tunnel pair (HAProxy, TCP
 * mode, TLS 1.3 both sides), through the Node.js floor (the same mTLS relay
 * pair written with node:tls alone, run like ztunnel: what any Node proxy pays
 * before doing HBONE; see tls-relay.ts), and through two ztunnels (SOCKS5 →
 * HBONE → app) — reporting single-stream throughput, p50/p90/p99 latency of 1 KB
 * HTTP/1.1 at a fixed 1000 rps over 4 keep-alive connections with the latency
 * added over direct, and CPU (vCPU per 1000 rps) and RSS of every proxy
 * process, with ratios against HAProxy and the issue's targets.
 *
 * Every proxy and the app are their own processes (CPU and RSS read from
 * /proc); the control plane and the load generator run here. Phases are
 * interleaved by round and each figure is the median over rounds. Everything
 * is on loopback. Every loop is bounded; every child and temp file is removed
 * on success, failure and SIGINT/SIGTERM.
 *
 * Knobs (env): BENCH_ROUNDS (2), BENCH_RPS (1000), BENCH_CONNECTIONS (4),
 * BENCH_DURATION_S (20), BENCH_WARMUP_S (3), BENCH_STREAM_MB (1024),
 * BENCH_STREAM_S (15), BENCH_PATHS (direct,haproxy,node-tls,ztunnel), BENCH_PHASES
 * (stream,rate: `rate` alone measures RSS without a bulk transfer before it, or
 * profiles only the 1000 rps load), BENCH_JSON (write
 * the raw samples there), BENCH_KEEP=1 (keep the temp dir with logs),
 * BENCH_ZTUNNEL_NODE_OPTIONS (NODE_OPTIONS for the ztunnel processes),
 * BENCH_ZTUNNEL_NODE_ARGS (space-separated node flags placed before the script;
 * default: the image's flags, see SHIPPED_NODE_ARGS; set it to e.g.
 * `--max-semi-space-size=2 --cpu-prof --cpu-prof-dir=/tmp/prof` to profile),
 * BENCH_ZTUNNEL_ENV (comma-separated NAME=value pairs added to the ztunnels'
 * environment; default: the image's, see SHIPPED_ENV; the node flags and
 * environment knobs apply to the Node.js floor's processes too), BENCH_ZTUNNEL_BIN (the
 * ztunnel entry script, e.g. to compare two builds; default: dist/bin/ztunnel.js
 * bundled and minified into dist/bench/ztunnel.bundle.mjs exactly as the image
 * does; BENCH_ZTUNNEL_BIN=dist/bin/ztunnel.js runs the unbundled modules).
 *
 * The ztunnels run the way deploy/ztunnel/Dockerfile ships them unless the
 * knobs above say otherwise.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { socks5Connect, tcpConnect, type Dialer } from './connect.js';
import { haproxyVersion, startHaproxyPair } from './haproxy.js';
import { startNodeTlsPair } from './node-tls-pair.js';
import { pushStream, runFixedRate, type RateResult, type StreamResult } from './load.js';
import { httpText, startMesh, startZtunnelProcess, type WorkloadRef } from './mesh.js';
import { assertAlive, canConnect, ProcessMeter, rssBytes, spawnChild, stopAll, stopChild, waitUntil, type Child } from './processes.js';
import { fmt, median, ratio, signed, table } from './report.js';

const CLIENT: WorkloadRef = { name: 'client-0', namespace: 'bench', serviceAccount: 'client', ip: '127.0.20.1' };
const SERVER: WorkloadRef = { name: 'server-0', namespace: 'bench', serviceAccount: 'server', ip: '127.0.20.2' };
const HAPROXY_CLIENT_IP = '127.0.20.3';
const HAPROXY_SERVER_IP = '127.0.20.4';
const NODE_TLS_CLIENT_IP = '127.0.20.5';
const NODE_TLS_SERVER_IP = '127.0.20.6';
const VIP = '127.0.21.1';
const HTTP_PORT = 8080;
const SINK_PORT = 9000;
const PORT_OF = { http: HTTP_PORT, sink: SINK_PORT } as const;
const MB = 1e6;

type PathName = 'direct' | 'haproxy' | 'node-tls' | 'ztunnel';
const PATH_NAMES: readonly PathName[] = ['direct', 'haproxy', 'node-tls', 'ztunnel'];
interface PathUnderTest {
  readonly name: PathName;
  readonly label: string;
  readonly dial: Dialer;
  /** Where each proxy serves Prometheus metrics (ztunnel), to read its event-loop gauges. */
  readonly metricsIps?: readonly string[];
  /** Client-side proxy first. */
  readonly proxies: readonly Child[];
}

interface ProxyFigures {
  readonly name: string;
  readonly cpuSeconds: number;
  readonly vcpu: number;
  readonly maxRssBytes: number;
  readonly anonAtMaxBytes: number;
  readonly fileAtMaxBytes: number;
  readonly readCalls: number;
  readonly writeCalls: number;
}
interface RateSample {
  readonly path: PathName;
  readonly round: number;
  readonly rate: RateResult;
  /** ztunnel only: its own event-loop delay gauges over the window (sampled every 10 ms, so 10 ms = no lag). */
  readonly loopDelay?: ReadonlyArray<{ readonly p99Ms: number; readonly maxMs: number }>;
  readonly proxies: readonly ProxyFigures[];
}
interface StreamSample {
  readonly path: PathName;
  readonly round: number;
  readonly stream: StreamResult;
  readonly proxies: readonly ProxyFigures[];
}

function intEnv(name: string, dflt: number, min: number, max: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new Error(`${name}=${raw}: expected an integer in [${min}, ${max}]`);
  return n;
}

const opts = {
  rounds: intEnv('BENCH_ROUNDS', 2, 1, 9),
  rps: intEnv('BENCH_RPS', 1000, 1, 20_000),
  connections: intEnv('BENCH_CONNECTIONS', 4, 1, 256),
  durationS: intEnv('BENCH_DURATION_S', 20, 1, 600),
  warmupS: intEnv('BENCH_WARMUP_S', 3, 0, 60),
  streamMB: intEnv('BENCH_STREAM_MB', 1024, 1, 16_384),
  streamS: intEnv('BENCH_STREAM_S', 15, 1, 300),
  phases: (process.env['BENCH_PHASES'] ?? 'stream,rate').split(',').map((s) => s.trim()).filter((s) => s !== ''),
  paths: (process.env['BENCH_PATHS'] ?? PATH_NAMES.join(',')).split(',').map((s) => s.trim()).filter((s) => s !== ''),
};

const here = dirname(fileURLToPath(import.meta.url));
const packageRoot = join(here, '..', '..');
const ZTUNNEL_ENTRY = join(packageRoot, 'dist', 'bin', 'ztunnel.js');
/** Beside dist/bin (two levels under the package root), so the native addon is found as from dist/bin. */
const ZTUNNEL_BUNDLE = join(packageRoot, 'dist', 'bench', 'ztunnel.bundle.mjs');
const ZTUNNEL_BIN = process.env['BENCH_ZTUNNEL_BIN'] || ZTUNNEL_BUNDLE;
/**
 * The node flags and environment the image runs ztunnel with, read from
 * deploy/ztunnel/Dockerfile (its ENTRYPOINT and ENV lines; src/bin/node-flags.ts
 * holds the same for the other launchers, and a test keeps the two equal).
 */
const DOCKERFILE = readFileSync(join(packageRoot, '..', '..', 'deploy', 'ztunnel', 'Dockerfile'), 'utf8').split('\n');
const SHIPPED_NODE_ARGS = (JSON.parse(DOCKERFILE.find((l) => l.startsWith('ENTRYPOINT '))?.slice('ENTRYPOINT '.length) ?? '[]') as string[])
  .filter((a) => a.startsWith('--')).join(' ');
const SHIPPED_ENV = DOCKERFILE.filter((l) => l.startsWith('ENV ')).map((l) => l.slice('ENV '.length).trim()).join(',');
const APP_BIN = join(here, 'app-server.js');

let cleanupStarted: Promise<void> | undefined;
let interrupted = false;
let tempDir: string | undefined;
const closers: Array<() => Promise<void>> = [];

function cleanup(): Promise<void> {
  cleanupStarted ??= (async () => {
    await stopAll();
    while (closers.length > 0) await closers.pop()?.().catch(() => {});
    if (tempDir !== undefined) {
      if (process.env['BENCH_KEEP'] === '1') console.log(`logs and configs kept in ${tempDir}`);
      else rmSync(tempDir, { recursive: true, force: true });
    }
  })();
  return cleanupStarted;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    console.error(`\n${signal}: stopping every child process`);
    void cleanup().finally(() => process.exit(130));
  });
}

function log(msg: string): void {
  console.log(`[${new Date().toISOString().slice(11, 19)}] ${msg}`);
}

async function main(): Promise<number> {
  for (const p of opts.paths) if (!(PATH_NAMES as readonly string[]).includes(p)) throw new Error(`BENCH_PATHS: unknown path "${p}" (expected some of ${PATH_NAMES.join(', ')})`);
  for (const p of opts.phases) if (!['stream', 'rate'].includes(p)) throw new Error(`BENCH_PHASES: unknown phase "${p}"`);
  if (opts.paths.includes('ztunnel') && ZTUNNEL_BIN === ZTUNNEL_BUNDLE) {
    if (!existsSync(ZTUNNEL_ENTRY)) throw new Error(`${ZTUNNEL_ENTRY} is missing: build first (npx turbo run build)`);
    // The same command as deploy/ztunnel/Dockerfile (rolldown is a devDependency of this package).
    execFileSync('npx', ['--no-install', 'rolldown', `./${relative(packageRoot, ZTUNNEL_ENTRY)}`, '--platform', 'node', '--format', 'esm', '--minify', '--charset', 'ascii', '-o', ZTUNNEL_BUNDLE], {
      cwd: packageRoot,
      stdio: ['ignore', 'ignore', 'inherit'],
      timeout: 120_000,
    });
  }
  if (opts.paths.includes('ztunnel') && !existsSync(ZTUNNEL_BIN)) throw new Error(`${ZTUNNEL_BIN} is missing: build first (npx turbo run build)`);
  const haproxy = haproxyVersion();
  if (opts.paths.includes('haproxy') && haproxy === undefined) throw new Error('haproxy is not installed: apt-get install -y haproxy (or BENCH_PATHS=direct,ztunnel)');
  for (const ip of [CLIENT.ip, SERVER.ip, HAPROXY_CLIENT_IP, HAPROXY_SERVER_IP, NODE_TLS_CLIENT_IP, NODE_TLS_SERVER_IP]) {
    for (const port of [HTTP_PORT, SINK_PORT, 15008, 15080]) {
      if (await canConnect(ip, port)) throw new Error(`${ip}:${port} is already in use (another benchmark running?)`);
    }
  }

  tempDir = mkdtempSync(join(tmpdir(), 'ztunnel-bench-'));
  const dir = tempDir;
  const cpu = cpus();
  console.log(`ztunnel benchmark: node ${process.version}, ${cpu.length} x ${cpu[0]?.model ?? '?'}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log(`${haproxy ?? 'haproxy: not installed'}`);
  console.log(`${opts.rounds} rounds; ${opts.rps} rps of 1 KB HTTP/1.1 GET over ${opts.connections} keep-alive connections, ${opts.warmupS}s warm-up + ${opts.durationS}s measured; single stream of up to ${opts.streamMB} MB or ${opts.streamS}s\n`);

  log('starting the app (its own process)');
  const app = spawnChild('app', process.execPath, [APP_BIN, SERVER.ip, String(HTTP_PORT), String(SINK_PORT)], { logPath: join(dir, 'app.log'), stdin: 'pipe' });
  await waitUntil('app', async () => (await canConnect(SERVER.ip, HTTP_PORT)) && (await canConnect(SERVER.ip, SINK_PORT)), { timeoutMs: 10_000, child: app });

  const paths: PathUnderTest[] = [];
  if (opts.paths.includes('direct')) {
    paths.push({ name: 'direct', label: 'direct (no mesh)', dial: (p) => tcpConnect({ ip: SERVER.ip, port: PORT_OF[p] }, CLIENT.ip), proxies: [] });
  }

  log('starting the control plane (in this process)');
  const mesh = await startMesh({ client: CLIENT, server: SERVER, vip: VIP, ports: { [HTTP_PORT]: HTTP_PORT, [SINK_PORT]: SINK_PORT } });
  closers.push(() => mesh.cp.close());
  // The reference pairs (HAProxy, Node.js floor) use the workloads' SPIFFE certificates from the mesh CA.
  const referencePair = async () => ({
    dir,
    appIp: SERVER.ip,
    ports: [HTTP_PORT, SINK_PORT],
    clientCert: await mesh.certificate(CLIENT.namespace, CLIENT.serviceAccount),
    serverCert: await mesh.certificate(SERVER.namespace, SERVER.serviceAccount),
  });

  if (opts.paths.includes('haproxy')) {
    log('starting the HAProxy pair');
    const pair = await startHaproxyPair({ ...(await referencePair()), clientIp: HAPROXY_CLIENT_IP, serverIp: HAPROXY_SERVER_IP });
    paths.push({ name: 'haproxy', label: 'HAProxy pair (TLS 1.3)', dial: (p) => tcpConnect({ ip: HAPROXY_CLIENT_IP, port: PORT_OF[p] }, CLIENT.ip), proxies: [pair.client, pair.server] });
  }

  // The ztunnels and the Node.js floor run with the image's node flags and environment (or the knobs').
  const nodeOptions = process.env['BENCH_ZTUNNEL_NODE_OPTIONS'];
  const extraEnv: NodeJS.ProcessEnv = nodeOptions === undefined || nodeOptions === '' ? {} : { NODE_OPTIONS: nodeOptions };
  const envPairs = process.env['BENCH_ZTUNNEL_ENV'] ?? SHIPPED_ENV;
  for (const pair of envPairs.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`BENCH_ZTUNNEL_ENV: expected NAME=value, got "${pair}"`);
    extraEnv[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  const nodeArgs = (process.env['BENCH_ZTUNNEL_NODE_ARGS'] ?? SHIPPED_NODE_ARGS).split(' ').filter((a) => a !== '');

  if (opts.paths.includes('node-tls')) {
    log('starting the Node.js floor (node:tls relay pair, own processes)');
    const pair = await startNodeTlsPair({ ...(await referencePair()), clientIp: NODE_TLS_CLIENT_IP, serverIp: NODE_TLS_SERVER_IP, nodeArgs, env: extraEnv });
    paths.push({ name: 'node-tls', label: 'Node.js floor (node:tls pair)', dial: (p) => tcpConnect({ ip: NODE_TLS_CLIENT_IP, port: PORT_OF[p] }, CLIENT.ip), proxies: [pair.client, pair.server] });
  }

  let ztunnels: { client: Child; server: Child } | undefined;
  if (opts.paths.includes('ztunnel')) {
    log('starting the two ztunnels (own processes)');
    if (envPairs) console.log(`ztunnel processes get ${envPairs} in their environment`);
    if (nodeOptions) console.log(`ztunnel processes run with NODE_OPTIONS=${nodeOptions}`);
    console.log(`ztunnel processes run as node ${nodeArgs.join(' ')} ${ZTUNNEL_BIN}`);
    const server = await startZtunnelProcess(mesh, SERVER, { bin: ZTUNNEL_BIN, dir, extraEnv, nodeArgs });
    const client = await startZtunnelProcess(mesh, CLIENT, { bin: ZTUNNEL_BIN, dir, extraEnv, nodeArgs });
    ztunnels = { client, server };
    paths.push({
      name: 'ztunnel',
      label: 'ztunnel pair (HBONE)',
      dial: (p) => socks5Connect({ ip: CLIENT.ip, port: 15080 }, { ip: VIP, port: PORT_OF[p] }, CLIENT.ip),
      proxies: [client, server],
      metricsIps: [CLIENT.ip, SERVER.ip],
    });
  }
  const startRss = new Map(paths.flatMap((p) => p.proxies).map((c) => [c.name, rssBytes(c.pid)]));

  const alive = (p: PathUnderTest) => {
    if (interrupted) throw new Error('interrupted');
    assertAlive(app);
    for (const c of p.proxies) assertAlive(c);
  };
  const figures = (p: PathUnderTest, m: ReturnType<ProcessMeter['stop']>): ProxyFigures[] =>
    p.proxies.map((c, i) => {
      const f = m.perProcess[i];
      return {
        name: c.name,
        cpuSeconds: f?.cpuSeconds ?? NaN,
        vcpu: f?.vcpu ?? NaN,
        maxRssBytes: f?.maxRssBytes ?? NaN,
        anonAtMaxBytes: f?.anonAtMaxBytes ?? NaN,
        fileAtMaxBytes: f?.fileAtMaxBytes ?? NaN,
        readCalls: f?.readCalls ?? NaN,
        writeCalls: f?.writeCalls ?? NaN,
      };
    });
  // Alternate the order each round so no path always runs first (warmer machine, page cache).
  const ordered = (round: number) => (round % 2 === 0 ? paths : [...paths].reverse());

  const streams: StreamSample[] = [];
  const rates: RateSample[] = [];
  const problems: string[] = [];
  for (let round = 0; round < opts.rounds; round++) {
    for (const p of opts.phases.includes('stream') ? ordered(round) : []) {
      log(`round ${round + 1}/${opts.rounds}: single stream via ${p.label}`);
      alive(p);
      const meter = new ProcessMeter(p.proxies.map((c) => c.pid));
      const stream = await pushStream(p.dial, { maxBytes: opts.streamMB * MB, maxMs: opts.streamS * 1000 });
      const m = meter.stop();
      if (stream.error !== undefined) problems.push(`${p.label}, round ${round + 1}, stream: ${stream.error}`);
      if (stream.error !== undefined) await new Promise((resolve) => setTimeout(resolve, 500));
      streams.push({ path: p.name, round, stream, proxies: figures(p, m) });
      log(`  ${fmt(stream.bytes / MB, 0)} MB in ${fmt(stream.seconds)} s = ${fmt(stream.megabytesPerSecond, 1)} MB/s${stream.error === undefined ? '' : ` (ERROR: ${stream.error})`}`);
      alive(p);
    }
    for (const p of opts.phases.includes('rate') ? ordered(round) : []) {
      log(`round ${round + 1}/${opts.rounds}: ${opts.rps} rps via ${p.label}`);
      alive(p);
      let meter: ProcessMeter | undefined;
      let measured: ReturnType<ProcessMeter['stop']> | undefined;
      const rate = await runFixedRate(p.dial, {
        rps: opts.rps,
        connections: opts.connections,
        warmupMs: opts.warmupS * 1000,
        durationMs: opts.durationS * 1000,
        requestTimeoutMs: 10_000,
        hostHeader: `app.${SERVER.namespace}.svc.cluster.local`,
      }, {
        onStart: () => {
          meter = new ProcessMeter(p.proxies.map((c) => c.pid));
          // A scrape resets the ztunnel's event-loop delay histogram: the next one covers the window.
          for (const ip of p.metricsIps ?? []) void httpText(ip, 15020, '/metrics').catch(() => '');
        },
        onEnd: () => (measured = meter?.stop()),
      });
      if (measured === undefined) throw new Error('internal: the measurement window never closed');
      for (const e of rate.errors) problems.push(`${p.label}, round ${round + 1}, ${opts.rps} rps: ${e}`);
      // A proxy that died shows up as connection errors first; let its exit event arrive before checking.
      if (rate.errors.length > 0) await new Promise((resolve) => setTimeout(resolve, 500));
      const proxies = figures(p, measured);
      const loopDelay = p.metricsIps === undefined ? undefined : await Promise.all(p.metricsIps.map(async (ip) => {
        const text = await httpText(ip, 15020, '/metrics').catch(() => '');
        return { p99Ms: gauge(text, 'nodejs_eventloop_lag_p99_seconds') * 1000, maxMs: gauge(text, 'nodejs_eventloop_lag_max_seconds') * 1000 };
      }));
      rates.push({ path: p.name, round, rate, proxies, ...(loopDelay === undefined ? {} : { loopDelay }) });
      log(`  ${fmt(rate.achievedRps, 0)} rps, p50 ${fmt(rate.p50Ms, 3)} ms, p99 ${fmt(rate.p99Ms, 3)} ms, max ${fmt(rate.maxMs, 1)} ms` +
        proxies.map((f, i) => `; ${f.name} ${fmt(f.vcpu, 3)} vCPU ${fmt(f.maxRssBytes / MB, 1)} MB` +
          (loopDelay?.[i] === undefined ? '' : `, loop delay p99 ${fmt(loopDelay[i].p99Ms, 1)} max ${fmt(loopDelay[i].maxMs, 1)} ms`)).join('') +
        (rate.errors.length > 0 ? ` (${rate.errors.length} ERRORS)` : ''));
      alive(p);
    }
  }

  // Leak and health checks on the ztunnels after all the traffic.
  const after: string[] = [];
  if (ztunnels !== undefined) {
    for (const c of [ztunnels.client, ztunnels.server]) {
      after.push(`${c.name}: RSS ${fmt((startRss.get(c.name) ?? NaN) / MB, 1)} MB after start -> ${fmt(rssBytes(c.pid) / MB, 1)} MB after all phases`);
    }
    for (const w of [CLIENT, SERVER]) {
      const text = await httpText(w.ip, 15020, '/metrics').catch(() => '');
      const heap = /^nodejs_heap_used_bytes (\S+)$/m.exec(text)?.[1];
      if (heap !== undefined) after.push(`ztunnel ${w.name}: nodejs_heap_used_bytes ${fmt(Number(heap) / MB, 1)} MB`);
    }
    const metrics = await httpText(CLIENT.ip, 15020, '/metrics').catch((e: unknown) => `unavailable: ${String(e)}`);
    const opened = metrics.split('\n').filter((l) => l.startsWith('istio_tcp_connections_opened_total')).map((l) => Number(l.split(' ').pop())).reduce((a, b) => a + b, 0);
    const sockets = metrics.split('\n').filter((l) => l.startsWith('istio_tcp_sockets_open')).map((l) => l.trim());
    after.push(`client ztunnel metrics: istio_tcp_connections_opened_total (all series) = ${opened}; ${sockets.length > 0 ? sockets.join('; ') : 'istio_tcp_sockets_open absent'}`);
    for (const c of [ztunnels.client, ztunnels.server]) {
      if (c.exit !== undefined) {
        problems.push(`${c.name} exited on its own (code ${c.exit.code}, signal ${c.exit.signal}); last log lines:\n${c.tail(10)}`);
        continue;
      }
      const stopped = await stopChild(c, 8_000);
      after.push(`${c.name}: SIGTERM -> exit in ${fmt(stopped.ms, 0)} ms${stopped.killed ? ' (did not exit: SIGKILLed)' : ''}, ${exitText(c)}`);
    }
  }

  after.push(`load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  printReport(paths, streams, rates, after, problems);
  const json = process.env['BENCH_JSON'];
  if (json !== undefined && json !== '') {
    writeFileSync(json, JSON.stringify({ options: opts, node: process.version, haproxy, streams, rates, after, problems }, null, 2));
    console.log(`raw samples written to ${json}`);
  }
  return problems.length > 0 ? 1 : 0;
}

/** The value of an unlabelled sample in Prometheus text, NaN when absent. */
function gauge(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? NaN : Number(line.slice(name.length + 1));
}

function exitText(c: Child): string {
  const e = c.exit;
  return e === undefined ? 'still running' : `code ${e.code ?? '-'}${e.signal === null ? '' : `, signal ${e.signal}`}`;
}

function printReport(paths: readonly PathUnderTest[], streams: readonly StreamSample[], rates: readonly RateSample[], after: readonly string[], problems: readonly string[]): void {
  const by = <T extends { path: PathName }>(xs: readonly T[], p: PathName) => xs.filter((x) => x.path === p);
  const runs = (xs: readonly number[], d: number) => `[${xs.map((x) => fmt(x, d)).join(', ')}]`;
  const mbps = (p: PathName) => median(by(streams, p).map((s) => s.stream.megabytesPerSecond));
  const proxyMedian = <T extends { proxies: readonly ProxyFigures[] }>(xs: readonly T[], i: number, f: (x: T, pf: ProxyFigures) => number) =>
    median(xs.flatMap((x) => (x.proxies[i] === undefined ? [] : [f(x, x.proxies[i])])));
  // Per-round differences against direct, then the median (rounds are interleaved).
  const added = (p: PathName, pick: (r: RateResult) => number) =>
    median(by(rates, p).flatMap((s) => {
      const d = rates.find((x) => x.path === 'direct' && x.round === s.round);
      return d === undefined ? [] : [pick(s.rate) - pick(d.rate)];
    }));
  const perK = (x: RateSample, pf: ProxyFigures) => (pf.vcpu * 1000) / x.rate.achievedRps;
  const haveHaproxy = paths.some((p) => p.name === 'haproxy');
  const haveFloor = paths.some((p) => p.name === 'node-tls');
  const isProxy = (p: PathUnderTest) => p.name !== 'direct';

  console.log(`\n## Single-stream throughput (one TCP connection, up to ${opts.streamMB} MB; median of ${opts.rounds})\n`);
  console.log(table(
    ['path', 'MB/s', 'Gbit/s', 'runs MB/s', 'CPU s per GB (client / server proxy)', 'read() / write() calls per MB (client; server)', 'vs HAProxy', 'vs Node.js floor'],
    paths.map((p) => {
      const s = by(streams, p.name);
      const cpuPerGB = p.proxies.map((_, i) => fmt(proxyMedian(s, i, (x, pf) => pf.cpuSeconds / (x.stream.bytes / 1e9)), 2)).join(' / ');
      // /proc/<pid>/io counts the read/write family only: HAProxy moves its bytes with recv/send (n/a).
      const callsPerMB = p.proxies.map((_, i) => (['readCalls', 'writeCalls'] as const)
        .map((k) => proxyMedian(s, i, (x, pf) => pf[k] / (x.stream.bytes / MB)))
        .map((v) => (v >= 0.5 ? fmt(v, 1) : 'n/a')).join(' / ')).join('; ');
      return [p.label, fmt(mbps(p.name), 0), fmt((mbps(p.name) * 8) / 1000, 2), runs(s.map((x) => x.stream.megabytesPerSecond), 0), cpuPerGB || '-', callsPerMB || '-',
        haveHaproxy && isProxy(p) ? ratio(mbps(p.name), mbps('haproxy')) : '-', haveFloor && isProxy(p) ? ratio(mbps(p.name), mbps('node-tls')) : '-'];
    }),
  ));

  console.log(`\n## ${opts.rps} rps, 1 KB HTTP/1.1, ${opts.connections} connections, ${opts.durationS}s (median of ${opts.rounds}; added = per-round difference to direct)\n`);
  console.log(table(
    ['path', 'rps', 'p50 ms', 'p90 ms', 'p99 ms', 'added p50', 'added p99', 'runs p99'],
    paths.map((p) => {
      const r = by(rates, p.name);
      const m = (f: (x: RateResult) => number) => median(r.map((x) => f(x.rate)));
      return [p.label, fmt(m((x) => x.achievedRps), 0), fmt(m((x) => x.p50Ms), 3), fmt(m((x) => x.p90Ms), 3), fmt(m((x) => x.p99Ms), 3),
        p.name === 'direct' ? '-' : signed(added(p.name, (x) => x.p50Ms)), p.name === 'direct' ? '-' : signed(added(p.name, (x) => x.p99Ms)), runs(r.map((x) => x.rate.p99Ms), 3)];
    }),
  ));

  console.log(`\n## Proxy cost at ${opts.rps} rps (per process; vCPU = CPU seconds per second, normalised to 1000 rps; RSS = max sampled each second, ` +
    'split into private anonymous memory and file-backed pages, mostly the mapped node or haproxy binary)\n');
  const rows: string[][] = [];
  for (const p of paths) {
    const r = by(rates, p.name);
    p.proxies.forEach((c, i) => {
      const vcpu = proxyMedian(r, i, perK);
      const rss = proxyMedian(r, i, (_, pf) => pf.maxRssBytes / MB);
      const anon = proxyMedian(r, i, (_, pf) => pf.anonAtMaxBytes / MB);
      const file = proxyMedian(r, i, (_, pf) => pf.fileAtMaxBytes / MB);
      const delay = median(r.map((x) => x.loopDelay?.[i]?.p99Ms ?? NaN));
      const delayMax = median(r.map((x) => x.loopDelay?.[i]?.maxMs ?? NaN));
      const against = (other: PathName, have: boolean): [string, string] => {
        if (!have || p.name !== 'ztunnel') return ['-', '-'];
        const o = by(rates, other);
        return [ratio(vcpu, proxyMedian(o, i, perK)), ratio(rss, proxyMedian(o, i, (_, pf) => pf.maxRssBytes / MB))];
      };
      const [cpuVsHaproxy, rssVsHaproxy] = against('haproxy', haveHaproxy);
      const [cpuVsFloor, rssVsFloor] = against('node-tls', haveFloor);
      rows.push([p.label, c.name, fmt(vcpu, 4), runs(r.map((x) => (x.proxies[i] === undefined ? NaN : perK(x, x.proxies[i]))), 4), fmt(rss, 1),
        `${fmt(anon, 1)} / ${fmt(file, 1)}`,
        Number.isFinite(delay) ? `${fmt(delay, 1)} / ${fmt(delayMax, 1)}` : '-',
        cpuVsHaproxy, rssVsHaproxy, cpuVsFloor, rssVsFloor]);
    });
  }
  console.log(table(['path', 'process', 'vCPU per 1000 rps', 'runs', 'RSS MB', 'anon / file MB', 'loop delay p99 / max ms (10 = none)',
    'CPU vs HAProxy', 'RSS vs HAProxy', 'CPU vs Node.js floor', 'RSS vs Node.js floor'], rows));

  if (paths.some((p) => p.name === 'ztunnel')) {
    const z = by(rates, 'ztunnel');
    const checks: Array<[string, boolean, string]> = [];
    if (haveHaproxy) checks.push(['throughput >= HAProxy pair', mbps('ztunnel') >= mbps('haproxy'), `${fmt(mbps('ztunnel'), 0)} vs ${fmt(mbps('haproxy'), 0)} MB/s`]);
    for (const i of [0, 1]) {
      const name = i === 0 ? 'client ztunnel' : 'server ztunnel';
      const vcpu = proxyMedian(z, i, perK);
      const rss = proxyMedian(z, i, (_, pf) => pf.maxRssBytes / MB);
      checks.push([`${name} <= 0.06 vCPU per 1000 rps`, vcpu <= 0.06, fmt(vcpu, 4)]);
      checks.push([`${name} <= 60 MB RSS`, rss <= 60, `${fmt(rss, 1)} MB`]);
    }
    if (paths.some((p) => p.name === 'direct')) {
      const p99 = added('ztunnel', (x) => x.p99Ms);
      checks.push(['added p99 <= 0.25 ms', p99 <= 0.25, `${signed(p99)} ms`]);
    }
    console.log('\n## Targets (issue 3)\n');
    console.log(table(['target', 'met', 'measured'], checks.map(([t, ok, v]) => [t, ok ? 'yes' : 'NO', v])));
  }
  if (after.length > 0) console.log(`\n## After the run\n\n${after.map((a) => `- ${a}`).join('\n')}`);
  if (problems.length > 0) console.log(`\n## Problems\n\n${problems.map((a) => `- ${a}`).join('\n')}`);
}

let code = 1;
try {
  code = await main();
} catch (err) {
  if (interrupted) {
    await cleanupStarted;
    process.exit(130);
  }
  console.error(`benchmark failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  const logs = tempDir === undefined || !existsSync(tempDir) ? [] : readdirSync(tempDir).filter((f) => f.endsWith('.log'));
  for (const name of logs) {
    const text = readFileSync(join(tempDir ?? '', name), 'utf8').trimEnd().split('\n').slice(-15).join('\n');
    if (text !== '') console.error(`--- last lines of ${name}\n${text}`);
  }
} finally {
  await cleanup();
}
process.exit(code);
