/**
 * Child processes run inside a network namespace (`ip netns exec <ns> node
 * ...`; ip execs the command, so the child's pid is node's own and signals
 * reach it directly). Output goes to a log file in the cluster's temp dir and
 * to an in-memory tail for failure messages. Every child is registered for
 * cleanup: SIGTERM then SIGKILL in afterAll, SIGKILL from exit handlers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { registerCleanup, type CleanupHandle } from './cleanup.js';

const TAIL_LINES = 2_000;

export interface NetnsProcessOptions {
  readonly name: string;
  readonly netns: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly logPath: string;
}

export class NetnsProcess {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly #lines: string[] = [];
  readonly #watchers = new Set<{ re: RegExp; resolve: (line: string) => void }>();
  readonly #cleanup: CleanupHandle;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;

  constructor(readonly options: NetnsProcessOptions) {
    const log = createWriteStream(options.logPath, { flags: 'a' });
    this.child = spawn('ip', ['netns', 'exec', options.netns, process.execPath, ...options.args], {
      env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin', ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const stream of [this.child.stdout, this.child.stderr]) {
      let rest = '';
      stream?.on('data', (d: Buffer) => {
        log.write(d);
        const parts = (rest + d.toString()).split('\n');
        rest = parts.pop() ?? '';
        for (const line of parts) this.#line(line);
      });
    }
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.#exit = { code, signal };
        this.#line(`--- ${options.name} exited (${signal ?? code})`);
        log.end();
        resolve({ code, signal });
      });
      this.child.on('error', (err) => {
        this.#line(`--- ${options.name} could not start: ${err.message}`);
        this.#exit = { code: -1, signal: null };
        log.end();
        resolve({ code: -1, signal: null });
      });
    });
    const pid = this.child.pid;
    this.#cleanup = registerCleanup({
      what: `process ${options.name} (${pid})`,
      run: () => this.stop('SIGTERM', 3_000).then(() => undefined),
      runSync: () => {
        if (this.#exit === undefined && pid !== undefined) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // gone
          }
        }
      },
    });
  }

  #line(line: string): void {
    this.#lines.push(line);
    if (this.#lines.length > TAIL_LINES) this.#lines.splice(0, this.#lines.length - TAIL_LINES);
    for (const w of [...this.#watchers]) {
      if (w.re.test(line)) {
        this.#watchers.delete(w);
        w.resolve(line);
      }
    }
  }

  get running(): boolean {
    return this.#exit === undefined;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The last `n` lines of output. */
  tail(n = 80): string {
    return this.#lines.slice(-n).join('\n');
  }

  /** Every kept line matching `re`. */
  grep(re: RegExp): string[] {
    return this.#lines.filter((l) => re.test(l));
  }

  /** Resolves with the first line (from now on) matching `re`; rejects after `timeoutMs`. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const w = {
        re,
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
      };
      const timer = setTimeout(() => {
        this.#watchers.delete(w);
        reject(new Error(`${this.options.name}: no line matching ${re} within ${timeoutMs} ms; last output:\n${this.tail(30)}`));
      }, timeoutMs);
      this.#watchers.add(w);
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (this.#exit === undefined) this.child.kill(sig);
  }

  /** Sends `sig`, waits up to `graceMs`, then SIGKILL. Resolves with how it exited. */
  async stop(sig: NodeJS.Signals = 'SIGTERM', graceMs = 3_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.#exit !== undefined) {
      this.#cleanup.forget();
      return this.#exit;
    }
    this.child.kill(sig);
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    const result = await this.exited;
    clearTimeout(timer);
    this.#cleanup.forget();
    return result;
  }
}
