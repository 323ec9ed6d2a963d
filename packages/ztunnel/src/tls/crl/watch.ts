/**
 * Watches the CRL file so a new CRL is picked up without a restart, surviving
 * the ways files really get replaced: an editor's write-then-rename, and a
 * Kubernetes ConfigMap/Secret volume swapping its `..data` symlink. As
 * ztunnel (notify with FileIdMap) and the control package's own watcher, the
 * parent directory is watched (a watch on the file dies with its inode);
 * events naming the file, a `..`-prefixed entry, or nothing at all are
 * debounced through the Clock into one `onChange`. (The control package's
 * watcher is not exported from '@ambient/control', so this is our own.)
 *
 * Invariants: at most one debounce timer pending; after close() no
 * `onChange` runs and no timer is left.
 */
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Clock, Logger, Timer } from '@ambient/control';

export interface FileWatch {
  close(): void;
}

export interface WatchFileOptions {
  readonly clock: Clock;
  readonly debounceMs: number;
  readonly log: Logger;
  readonly onChange: () => void;
}

/** Starts watching; throws when the directory cannot be watched (it does not exist, no permission). */
export function watchCrlFile(path: string, options: WatchFileOptions): FileWatch {
  const name = basename(path);
  let timer: Timer | undefined;
  let closed = false;
  const schedule = () => {
    if (closed) return;
    timer?.cancel();
    timer = options.clock.setTimer(options.debounceMs, () => {
      timer = undefined;
      if (!closed) options.onChange();
    });
  };
  const watcher: FSWatcher = watch(dirname(path), { persistent: false }, (_event, filename) => {
    const changed = filename === null ? undefined : filename.toString();
    if (changed === undefined || changed === name || changed.startsWith('..')) schedule();
  });
  watcher.on('error', (err) => options.log.error({ path, err: err.message }, 'CRL file watch failed; CRL updates need a restart from now on'));
  return {
    close() {
      closed = true;
      timer?.cancel();
      timer = undefined;
      watcher.close();
    },
  };
}
