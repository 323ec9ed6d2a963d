#!/usr/bin/env node
// Builds the native addon (native/*.c -> build/Release/ztunnel_native.node) with
// node-gyp, offline: the headers come from the running Node's own installation
// (--nodedir), never from a download. Skips the build when nothing changed (a
// stamp of the sources, binding.gyp, the Node version and the header dir). Off
// Linux it builds nothing: ztunnel runs without traffic capture there, and
// loadNative() explains why when capture is asked for.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const addon = join(root, 'build', 'Release', 'ztunnel_native.node');
const stampFile = join(root, 'build', 'ztunnel-native.stamp');
const say = (msg) => process.stdout.write(`build-native: ${msg}\n`);
const fail = (msg) => {
  process.stderr.write(`build-native: ERROR: ${msg}\n`);
  process.exit(1);
};

if (process.platform !== 'linux') {
  say(
    `skipped on ${process.platform}: traffic capture (network namespaces, SO_MARK, SO_ORIGINAL_DST, ` +
      'SCM_RIGHTS) is Linux-only. ztunnel still builds and runs (dedicated mode without capture, the quick start); ' +
      'in-pod mode will report EUNSUPPORTED.',
  );
  process.exit(0);
}

/** The directory holding include/node/node_api.h for the running Node (no header download). */
function findNodeDir() {
  const candidates = [dirname(dirname(process.execPath)), process.env.npm_config_nodedir].filter(Boolean);
  for (const dir of candidates) {
    if (existsSync(join(dir, 'include', 'node', 'node_api.h')) && existsSync(join(dir, 'include', 'node', 'uv.h'))) return dir;
  }
  fail(
    `Node's headers were not found (looked for include/node/node_api.h under ${candidates.join(', ')}). ` +
      'Install Node from an official tarball or a distribution package that ships headers (e.g. Debian: apt-get install -y libnode-dev), ' +
      'or set npm_config_nodedir to the directory containing include/node.',
  );
}

/** node-gyp: a local install, the one npm passes to scripts, or the one bundled with npm. */
function findNodeGyp() {
  try {
    return createRequire(join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // not installed locally
  }
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const npm = spawnSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' });
  if (npm.status === 0 && npm.stdout.trim() !== '') {
    const npmCli = realpathSync(npm.stdout.trim());
    candidates.push(join(dirname(npmCli), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  candidates.push(join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((c) => existsSync(c));
  if (found === undefined) fail('node-gyp was not found (it ships with npm); install it with `npm install -g node-gyp`.');
  return found;
}

function have(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function checkToolchain() {
  const missing = [];
  const cc = process.env.CC;
  if (cc !== undefined ? !have(cc.split(' ')[0]) : !have('cc') && !have('gcc')) missing.push(`a C compiler (${cc ?? 'cc'})`);
  if (!have('make')) missing.push('make');
  if (!have('python3')) missing.push('python3');
  if (missing.length > 0) {
    fail(
      `cannot build the native addon: ${missing.join(', ')} not found. ` +
        'On Debian/Ubuntu: apt-get update && apt-get install -y build-essential python3',
    );
  }
}

function stamp(nodeDir) {
  const hash = createHash('sha256');
  hash.update(`${process.version}\0${process.arch}\0${nodeDir}\0`);
  const files = ['binding.gyp', ...readdirSync(join(root, 'native')).sort().map((f) => join('native', f))];
  for (const f of files) hash.update(`${f}\0`).update(readFileSync(join(root, f)));
  return hash.digest('hex');
}

const nodeDir = findNodeDir();
const current = stamp(nodeDir);
if (existsSync(addon) && existsSync(stampFile) && readFileSync(stampFile, 'utf8') === current) {
  say('up to date');
  process.exit(0);
}

checkToolchain();
const nodeGyp = findNodeGyp();
say(`building ${addon} (node-gyp ${nodeGyp}, headers from ${nodeDir})`);
const result = spawnSync(process.execPath, [nodeGyp, 'rebuild', '--release', `--nodedir=${nodeDir}`, '--jobs=max', '--loglevel=warn'], {
  cwd: root,
  stdio: ['ignore', 'inherit', 'inherit'],
  env: { ...process.env, npm_config_nodedir: nodeDir },
});
if (result.status !== 0) {
  fail(
    `node-gyp failed (exit ${result.status ?? result.signal}). If a compiler, make or python3 is missing: ` +
      'apt-get update && apt-get install -y build-essential python3',
  );
}
try {
  createRequire(import.meta.url)(addon);
} catch (err) {
  fail(`the addon was built but does not load: ${err.message}`);
}
mkdirSync(dirname(stampFile), { recursive: true });
writeFileSync(stampFile, current);
say('done');
