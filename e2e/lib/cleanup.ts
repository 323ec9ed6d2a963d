/**
 * Everything the suite creates is registered here the moment it exists, and
 * removed in reverse order: in afterAll (asynchronously, child processes get
 * SIGTERM then SIGKILL), or, if the test process dies first, from the exit and
 * signal handlers (synchronously: SIGKILL, `ip netns del`, rm). Objects left
 * behind by a run that was killed outright (SIGKILL, power loss) carry the
 * prefix `amb-e2e-<pid>-` and are removed at the start of the next run once
 * that pid is gone.
 *
 * Invariants:
 * - an action runs at most once (async or sync, whichever comes first);
 * - actions run newest first (pods before nodes before the fabric);
 * - a failing action is logged and never stops the others.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runSyncQuiet } from './exec.js';

export const PREFIX_BASE = 'amb-e2e-';

export interface CleanupAction {
  readonly what: string;
  readonly run: () => Promise<void> | void;
  /** For exit handlers, where nothing asynchronous can run; defaults to nothing. */
  readonly runSync?: () => void;
  /** What the action belongs to (a netns name): runScope(scope) runs all of them early. */
  readonly scope?: string;
}

export interface CleanupHandle {
  /** Runs the action now (and removes it from the list). */
  run(): Promise<void>;
  /** Forgets the action (the object was removed some other way). */
  forget(): void;
}

interface Entry extends CleanupAction {
  done: boolean;
}

const entries: Entry[] = [];
let handlersInstalled = false;

function installHandlers(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  process.on('exit', () => runAllSync());
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      const code = signal === 'SIGINT' ? 130 : 143;
      if (entries.every((e) => e.done)) process.exit(code);
      process.stderr.write(`e2e: ${signal}: removing the test cluster\n`);
      void runAll().finally(() => process.exit(code));
    });
  }
}

export function registerCleanup(action: CleanupAction): CleanupHandle {
  installHandlers();
  const entry: Entry = { ...action, done: false };
  entries.push(entry);
  const remove = () => {
    const i = entries.indexOf(entry);
    if (i >= 0) entries.splice(i, 1);
  };
  return {
    async run() {
      remove();
      await runEntry(entry);
    },
    forget() {
      entry.done = true;
      remove();
    },
  };
}

async function runEntry(e: Entry): Promise<void> {
  if (e.done) return;
  e.done = true;
  try {
    await e.run();
  } catch (err) {
    process.stderr.write(`e2e cleanup: ${e.what}: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

/** Runs the actions of one scope (e.g. the app sockets of a pod being deleted), newest first. */
export async function runScope(scope: string): Promise<void> {
  for (const e of [...entries].reverse()) {
    if (e.scope !== scope) continue;
    entries.splice(entries.indexOf(e), 1);
    await runEntry(e);
  }
}

/** Runs every registered action, newest first. */
export async function runAll(): Promise<void> {
  while (entries.length > 0) {
    const e = entries.pop() as Entry;
    await runEntry(e);
  }
}

function runAllSync(): void {
  while (entries.length > 0) {
    const e = entries.pop() as Entry;
    if (e.done) continue;
    e.done = true;
    try {
      e.runSync?.();
    } catch {
      // best effort at exit
    }
  }
}

/** The pid that created a name like `amb-e2e-1234-…` or `amb-e2e-preflight-1234`, if it is one of ours. */
function ownerPid(name: string): number | undefined {
  const m = /^amb-e2e-(?:preflight-)?(\d+)(?:-|$)/.exec(name);
  return m ? Number(m[1]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes what crashed earlier runs left: namespaces (and the processes still
 * in them), /etc/netns/<name> directories and temp directories whose creator
 * pid no longer exists. Returns what was removed.
 */
export function removeStale(tmpRoot: string): string[] {
  const removed: string[] = [];
  const stale = (name: string) => {
    const pid = ownerPid(name);
    return pid !== undefined && pid !== process.pid && !alive(pid);
  };
  const netnsDir = '/var/run/netns';
  for (const name of existsSync(netnsDir) ? readdirSync(netnsDir) : []) {
    if (!stale(name)) continue;
    killNetnsProcesses(name);
    runSyncQuiet('ip', ['netns', 'del', name]);
    removed.push(`netns ${name}`);
  }
  for (const dir of ['/etc/netns', tmpRoot]) {
    for (const name of existsSync(dir) ? readdirSync(dir) : []) {
      if (!stale(name)) continue;
      rmSync(join(dir, name), { recursive: true, force: true });
      removed.push(join(dir, name));
    }
  }
  return removed;
}

/** SIGKILLs every process whose network namespace is the named one (`ip netns pids`). */
export function killNetnsProcesses(name: string): void {
  let out = '';
  try {
    out = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5_000 });
  } catch {
    return;
  }
  for (const pid of out.split(/\s+/).filter((p) => /^\d+$/.test(p)).map(Number)) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
