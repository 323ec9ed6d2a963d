import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ZTUNNEL_NODE_ENV, ZTUNNEL_NODE_FLAGS } from './node-flags.js';

const dockerfile = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..', 'deploy', 'ztunnel', 'Dockerfile'), 'utf8');

describe('the node flags ztunnel runs with', () => {
  it('are the image ENTRYPOINT\'s flags, in order, before the bundle', () => {
    const line = dockerfile.split('\n').find((l) => l.startsWith('ENTRYPOINT '));
    expect(line).toBeDefined();
    const argv = JSON.parse((line ?? '').slice('ENTRYPOINT '.length)) as string[];
    expect(argv[0]).toBe('node');
    expect(argv.slice(1, -1)).toEqual(ZTUNNEL_NODE_FLAGS);
    expect(argv.at(-1)).toMatch(/ztunnel\.bundle\.mjs$/);
  });

  it('come with the image\'s environment', () => {
    const env = Object.fromEntries(dockerfile.split('\n').filter((l) => l.startsWith('ENV ')).map((l) => l.slice(4).split('=')));
    for (const [name, value] of Object.entries(ZTUNNEL_NODE_ENV)) expect(env[name]).toBe(value);
  });

  it('are all accepted by this node', async () => {
    const { execFileSync } = await import('node:child_process');
    expect(execFileSync(process.execPath, [...ZTUNNEL_NODE_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' })).toBe('ok');
  });
});
