/**
 * Watches one file for changes (the local control plane's mesh and token
 * files, ztunnel's CRL file) in a way that survives how files really get
 * replaced: editors that write a temporary file and rename it over the
 * original, and Kubernetes ConfigMap volumes that swap a `..data` symlink.
 *
 * We watch the parent directory (a watch on the file itself dies with the
 * inode it was attached to), react to events naming the file, a `..`-prefixed
 * entry, or no name at all, and debounce through the injected Clock so a
 * burst of events becomes one reload. Whether the content really changed is
 * the caller's business (it compares what it reads).
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Clock, Timer } from './clock.js';
import { fail, ok, rejection, type Result } from '../result.js';

export interface FileWatchOptions {
  readonly clock: Clock;
  /** Quiet period after the last event before `onChange` runs. */
  readonly debounceMs: number;
  readonly logger: { error(obj: object, msg?: string): void };
  readonly onChange: () => void;
}

export interface FileWatch {
  close(): void;
}

export function watchFile(path: string, options: FileWatchOptions): Result<FileWatch> {
  const dir = dirname(path);
  const name = basename(path);
  let timer: Timer | undefined;
  let closed = false;
  let watcher: FSWatcher;
  const schedule = () => {
    if (closed) return;
    timer?.cancel();
    timer = options.clock.setTimer(options.debounceMs, () => {
      timer = undefined;
      if (!closed) options.onChange();
    });
  };
  try {
    watcher = watch(dir, { persistent: false }, (_event, filename) => {
      const changed = filename === null ? undefined : filename.toString();
      if (changed === undefined || changed === name || changed.startsWith('..')) schedule();
    });
  } catch (err) {
    return fail(rejection(path, `cannot watch directory ${dir}: ${err instanceof Error ? err.message : String(err)}`));
  }
  watcher.on('error', (err) => options.logger.error({ err, path }, 'file watch failed; changes to this file are no longer picked up'));
  return ok({
    close() {
      closed = true;
      timer?.cancel();
      watcher.close();
    },
  });
}
