// Fails when src/gen is not what `buf generate` makes from proto/ (someone
// edited a .proto without regenerating, or edited generated code by hand).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, cpSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';

const pkg = new URL('..', import.meta.url).pathname;
const scratch = mkdtempSync(join(tmpdir(), 'control-gen-'));
try {
  cpSync(join(pkg, 'proto'), join(scratch, 'proto'), { recursive: true });
  cpSync(join(pkg, 'buf.yaml'), join(scratch, 'buf.yaml'));
  cpSync(join(pkg, 'buf.gen.yaml'), join(scratch, 'buf.gen.yaml'));
  const bin = join(pkg, 'node_modules', '.bin');
  const rootBin = join(pkg, '..', '..', 'node_modules', '.bin');
  execFileSync(join(rootBin, 'buf'), ['generate'], {
    cwd: scratch,
    stdio: 'inherit',
    env: { ...process.env, PATH: `${bin}:${rootBin}:${process.env.PATH}` },
  });
  const list = (dir) =>
    readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? list(join(dir, n)) : [join(dir, n)]));
  const fresh = list(join(scratch, 'src', 'gen')).map((f) => relative(join(scratch, 'src', 'gen'), f)).sort();
  const committed = list(join(pkg, 'src', 'gen')).map((f) => relative(join(pkg, 'src', 'gen'), f)).sort();
  const problems = [];
  if (fresh.join('\n') !== committed.join('\n')) problems.push(`file lists differ:\n fresh: ${fresh}\n committed: ${committed}`);
  for (const f of fresh) {
    if (!committed.includes(f)) continue;
    if (readFileSync(join(scratch, 'src', 'gen', f), 'utf8') !== readFileSync(join(pkg, 'src', 'gen', f), 'utf8')) {
      problems.push(`src/gen/${f} differs from what buf generates; run \`npm run generate -w @ambient/control\``);
    }
  }
  if (problems.length > 0) {
    console.error(problems.join('\n'));
    process.exit(1);
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
