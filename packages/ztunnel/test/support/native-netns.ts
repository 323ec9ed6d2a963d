/**
 * Fixtures for the native tests: throwaway network namespaces (`ip netns add
 * amb-native-<random>`, loopback up) that are always deleted again, a loud
 * root check (these tests run as root in CI and must not silently skip), fd
 * counting, and small promise helpers over Node sockets.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import type { Server, Socket } from 'node:net';
import { loadNative, type Native } from '../../src/platform/native.js';

/** Throws (failing the suite) unless running as root on Linux with the addon built. */
export function requireRootAndNative(): Native {
  if (process.platform !== 'linux' || process.getuid?.() !== 0) {
    throw new Error(
      'the native tests need root on Linux (network namespaces, iptables, SO_MARK, IP_TRANSPARENT); ' +
        'run them as root (CI does). They fail rather than skip so that a missing capability is never mistaken for a pass.',
    );
  }
  return loadNative();
}

export function sh(cmd: string, args: readonly string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

export interface TestNetns {
  readonly name: string;
  /** An open fd of the namespace (closed by delete()). */
  readonly fd: number;
  /** Runs a command inside the namespace (ip netns exec). */
  exec(cmd: string, args: readonly string[]): string;
  delete(): void;
}

/** A fresh namespace with lo up; `setup` commands run inside it. Delete it in afterEach/finally. */
export function createNetns(native: Native, tag: string): TestNetns {
  const name = `amb-native-${tag}-${randomBytes(4).toString('hex')}`;
  sh('ip', ['netns', 'add', name]);
  let fd = -1;
  try {
    sh('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    fd = native.openNetns(`/var/run/netns/${name}`);
  } catch (err) {
    sh('ip', ['netns', 'del', name]);
    throw err;
  }
  let deleted = false;
  return {
    name,
    fd,
    exec: (cmd, args) => sh('ip', ['netns', 'exec', name, cmd, ...args]),
    delete() {
      if (deleted) return;
      deleted = true;
      try {
        native.closeFd(fd);
      } finally {
        sh('ip', ['netns', 'del', name]);
      }
    },
  };
}

/** Collects cleanups for afterEach; runs them all in reverse order even when some throw. */
export class Cleanup {
  private readonly fns: Array<() => unknown> = [];
  add(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (const fn of this.fns.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  }
}

export function openFdCount(): number {
  return readdirSync('/proc/self/fd').length;
}

export function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

export function connected(socket: Socket): Promise<Socket> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

export function failure(socket: Socket): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve, reject) => {
    socket.once('connect', () => reject(new Error('expected the connection to fail, but it connected')));
    socket.once('error', resolve);
  });
}

export function readUntil(socket: Socket, expected: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer) => {
      got += d.toString();
      if (got.length >= expected.length) {
        socket.off('data', onData);
        resolve(got);
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('end', () => resolve(got));
  });
}

export function nextConnection(server: Server): Promise<Socket> {
  return new Promise((resolve) => server.once('connection', resolve));
}
