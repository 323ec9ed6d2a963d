/**
 * Running the system tools the topology is built with (ip, iptables-restore,
 * sysctl via `ip netns exec`): every command's failure becomes an Error that
 * names the command and carries its stderr, so a broken setup says why.
 */
import { execFile, execFileSync } from 'node:child_process';

class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly code: number | string | null,
    readonly output: string,
  ) {
    super(`\`${command}\` failed (${code}): ${output.trim() || '(no output)'}`);
    this.name = 'CommandError';
  }
}

/** Runs a command; resolves with stdout, rejects with CommandError. `input` goes to stdin. */
export function run(cmd: string, args: readonly string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const code = (err as NodeJS.ErrnoException & { code?: number | string }).code ?? null;
        reject(new CommandError([cmd, ...args].join(' '), code, `${stderr}${stdout}`));
      } else resolve(stdout);
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

/** Synchronous variant for exit handlers (where nothing asynchronous runs any more); never throws. */
export function runSyncQuiet(cmd: string, args: readonly string[]): boolean {
  try {
    execFileSync(cmd, args, { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/** `ip -n <netns> ...`, or plain `ip ...` without a namespace. */
export function ip(netns: string | undefined, ...args: string[]): Promise<string> {
  return run('ip', netns === undefined ? args : ['-n', netns, ...args]);
}

/** A command inside a named namespace (`ip netns exec`). */
export function inNetns(netns: string, cmd: string, args: readonly string[], input?: string): Promise<string> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], input);
}

/** Sets sysctls inside a namespace in one process: `sysctl -w k=v ...`. */
export function sysctl(netns: string, settings: Readonly<Record<string, string | number>>): Promise<string> {
  return inNetns(netns, 'sysctl', ['-q', '-w', ...Object.entries(settings).map(([k, v]) => `${k}=${v}`)]);
}
