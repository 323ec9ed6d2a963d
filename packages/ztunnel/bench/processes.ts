/**
 * Child processes of the benchmark: spawning with output to a log file,
 * waiting for readiness (bounded), CPU seconds and RSS from /proc, and
 * stopping every child (SIGTERM, then SIGKILL after a grace period), also
 * when the benchmark fails or is interrupted.
 *
 * Invariants: every spawned child is in `live` until its 'exit' event; on
 * process exit every child still in `live` gets SIGKILL (synchronously).
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { connect } from 'node:net';

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  readonly logPath: string;
  /** Set when the process exited: how (code or signal) and whether we asked it to. */
  exit: { readonly code: number | null; readonly signal: NodeJS.Signals | null; readonly expected: boolean } | undefined;
  /** Last `lines` lines of its log. */
  tail(lines?: number): string;
}

const live = new Set<Child>();
const stopping = new WeakSet<Child>();

process.on('exit', () => {
  for (const c of live) c.proc.kill('SIGKILL');
});

export function spawnChild(name: string, command: string, args: readonly string[], o: { logPath: string; env?: NodeJS.ProcessEnv; stdin?: 'pipe' | 'ignore' }): Child {
  const fd = openSync(o.logPath, 'a');
  const options: SpawnOptions = { stdio: [o.stdin ?? 'ignore', fd, fd], env: o.env ?? process.env };
  let proc: ChildProcess;
  try {
    proc = spawn(command, args, options);
  } finally {
    closeSync(fd);
  }
  if (proc.pid === undefined) throw new Error(`${name}: could not spawn ${command}`);
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    logPath: o.logPath,
    exit: undefined,
    tail: (lines = 30) => {
      try {
        return readFileSync(o.logPath, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
      } catch {
        return '(no log)';
      }
    },
  };
  live.add(child);
  proc.on('exit', (code, signal) => {
    child.exit = { code, signal, expected: stopping.has(child) };
    live.delete(child);
  });
  proc.on('error', () => {});
  return child;
}

/** Throws with the child's log tail when it has exited. */
export function assertAlive(c: Child): void {
  if (c.exit !== undefined) {
    throw new Error(`${c.name} (pid ${c.pid}) exited unexpectedly (code ${c.exit.code}, signal ${c.exit.signal}); last log lines:\n${c.tail()}`);
  }
}

/** SIGTERM, then SIGKILL when it has not exited after `graceMs`. Resolves with how long the exit took. */
export async function stopChild(c: Child, graceMs = 5_000): Promise<{ ms: number; killed: boolean }> {
  const start = performance.now();
  if (c.exit !== undefined) return { ms: 0, killed: false };
  stopping.add(c);
  const exited = once(c.proc, 'exit');
  c.proc.kill('SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  const graceful = await Promise.race([
    exited.then(() => true),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), graceMs);
    }),
  ]);
  clearTimeout(timer);
  if (!graceful) {
    c.proc.kill('SIGKILL');
    await exited;
  }
  return { ms: performance.now() - start, killed: !graceful };
}

export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((c) => stopChild(c)));
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 100 ms until it is true, at most `timeoutMs`; fails early when `child` dies. */
export async function waitUntil(what: string, check: () => Promise<boolean>, o: { timeoutMs: number; child?: Child }): Promise<void> {
  const attempts = Math.ceil(o.timeoutMs / 100);
  for (let i = 0; i < attempts; i++) {
    if (o.child !== undefined) assertAlive(o.child);
    if (await check().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`${what} not ready after ${o.timeoutMs / 1000}s${o.child === undefined ? '' : `; last log lines of ${o.child.name}:\n${o.child.tail()}`}`);
}

/** Whether a TCP connect to ip:port succeeds within 1 s. */
export function canConnect(ip: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host: ip, port });
    const timer = setTimeout(() => done(false), 1_000);
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds of the whole process (all threads), from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime field 14, stime field 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

/** Resident set size in bytes (VmRSS), from /proc/<pid>/status. */
export function rssBytes(pid: number): number {
  return memoryBytes(pid).rss;
}

/**
 * Resident memory in bytes from /proc/<pid>/status: all of it (VmRSS), the
 * private anonymous part (RssAnon: heaps, stacks, buffers; what the process
 * itself allocated) and the file-backed part (RssFile: mapped executable and
 * libraries, clean pages the kernel can drop and re-read).
 */
export function memoryBytes(pid: number): { rss: number; anon: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name: string) => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB$`, 'm').exec(status);
    return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
  };
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}

/** Read and write system calls so far (syscr, syscw from /proc/<pid>/io: read/recv and write/send families). */
export function syscallCounts(pid: number): { reads: number; writes: number } {
  const io = readFileSync(`/proc/${pid}/io`, 'utf8');
  const n = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? NaN);
  return { reads: n('syscr'), writes: n('syscw') };
}

export interface ProcessFigures {
  readonly cpuSeconds: number;
  /** Read and write system calls over the window. */
  readonly readCalls: number;
  readonly writeCalls: number;
  readonly vcpu: number;
  /** The largest RSS sampled, with its anonymous and file-backed parts at that sample. */
  readonly maxRssBytes: number;
  readonly anonAtMaxBytes: number;
  readonly fileAtMaxBytes: number;
  readonly rssBytes: number;
}

/** CPU and RSS of a set of processes over a window: CPU from start to stop, RSS sampled every `sampleMs` (max and last). */
export class ProcessMeter {
  readonly #pids: readonly number[];
  readonly #cpu0: number[];
  readonly #io0: Array<{ reads: number; writes: number }>;
  readonly #max: Array<{ rss: number; anon: number; file: number }>;
  readonly #timer: NodeJS.Timeout;
  readonly #start = performance.now();

  constructor(pids: readonly number[], sampleMs = 1_000) {
    this.#pids = pids;
    this.#cpu0 = pids.map((pid) => safe(() => cpuSeconds(pid)));
    this.#io0 = pids.map((pid) => safeIo(pid));
    this.#max = pids.map((pid) => safeMemory(pid));
    this.#timer = setInterval(() => this.#sample(), sampleMs);
  }

  #sample(): void {
    this.#pids.forEach((pid, i) => {
      const m = safeMemory(pid);
      const max = this.#max[i];
      if (max === undefined || !(max.rss >= m.rss)) this.#max[i] = m;
    });
  }

  stop(): { seconds: number; perProcess: ProcessFigures[] } {
    clearInterval(this.#timer);
    const seconds = (performance.now() - this.#start) / 1000;
    this.#sample();
    return {
      seconds,
      perProcess: this.#pids.map((pid, i) => {
        const cpu = safe(() => cpuSeconds(pid)) - (this.#cpu0[i] ?? 0);
        const max = this.#max[i];
        const io = safeIo(pid);
        return {
          cpuSeconds: cpu,
          readCalls: io.reads - (this.#io0[i]?.reads ?? NaN),
          writeCalls: io.writes - (this.#io0[i]?.writes ?? NaN),
          vcpu: cpu / seconds,
          maxRssBytes: max?.rss ?? NaN,
          anonAtMaxBytes: max?.anon ?? NaN,
          fileAtMaxBytes: max?.file ?? NaN,
          rssBytes: safe(() => rssBytes(pid)),
        };
      }),
    };
  }
}

function safeIo(pid: number): { reads: number; writes: number } {
  try {
    return syscallCounts(pid);
  } catch {
    return { reads: NaN, writes: NaN };
  }
}

function safeMemory(pid: number): { rss: number; anon: number; file: number } {
  try {
    return memoryBytes(pid);
  } catch {
    return { rss: NaN, anon: NaN, file: NaN };
  }
}

function safe(f: () => number): number {
  try {
    return f();
  } catch {
    return NaN;
  }
}
