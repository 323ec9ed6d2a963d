#!/usr/bin/env node
/**
 * `npm test` in e2e/: the preflight (root, tools, kernel features), then
 * vitest with this package's config. A preflight that asks to skip
 * (AMBIENT_E2E_SKIP=1 when not root; exit code 3) ends here with success and
 * vitest does not run; any other preflight failure fails the test command.
 */
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const preflight = spawnSync(process.execPath, [join(root, 'scripts/preflight.mjs')], { stdio: 'inherit', cwd: root });
if (preflight.status === 3) process.exit(0);
if (preflight.status !== 0) process.exit(preflight.status ?? 1);

const vitest = spawnSync('npx', ['vitest', 'run', '--config', 'vitest.config.ts', ...process.argv.slice(2)], { stdio: 'inherit', cwd: root });
process.exit(vitest.status ?? 1);
