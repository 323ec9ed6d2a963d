import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { systemClock } from './clock.js';
import { watchFile } from './file-watch.js';

const logger = pino({ level: 'silent' });

describe('watchFile', () => {
  it('reports a rename-swap of the file (editor / ConfigMap style) once, debounced', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'file-watch-'));
    const path = join(dir, 'watched.yaml');
    await writeFile(path, 'one');
    let changes = 0;
    let notify: () => void = () => {};
    const changed = new Promise<void>((resolve) => (notify = resolve));
    const w = watchFile(path, { clock: systemClock, debounceMs: 50, logger, onChange: () => (changes++, notify()) });
    if (!w.ok) throw new Error('watch failed');
    try {
      await writeFile(join(dir, '.tmp'), 'two');
      await rename(join(dir, '.tmp'), path);
      await changed;
      expect(changes).toBe(1);
    } finally {
      w.value.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses, naming the directory, when the directory does not exist', () => {
    const w = watchFile('/nonexistent-dir-for-watch/file.pem', { clock: systemClock, debounceMs: 10, logger, onChange: () => {} });
    expect(w.ok).toBe(false);
    if (!w.ok) expect(w.errors[0]?.reason).toMatch(/cannot watch directory \/nonexistent-dir-for-watch/);
  });
});
