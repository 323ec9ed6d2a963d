#!/usr/bin/env node
/**
 * Preflight of the e2e suite: it builds a small cluster out of Linux network
 * namespaces, so it needs root, iproute2, iptables and tcpdump, and a kernel
 * with network namespaces, veth, bridges and netfilter NAT (REDIRECT).
 *
 * - Not root: says so loudly and exits 1, unless AMBIENT_E2E_SKIP=1 (then it
 *   says clearly that the suite is skipped and exits 3, which the test script
 *   turns into success without running vitest).
 * - Missing tools: installs the Debian packages with apt-get.
 * - Checks the kernel features in a throw-away namespace and explains failures.
 */
import { execFileSync, spawnSync } from 'node:child_process';

const SKIP_EXIT = 3;
const bar = '='.repeat(78);

function loud(lines) {
  process.stderr.write(`\n${bar}\n${lines.map((l) => `  ${l}`).join('\n')}\n${bar}\n\n`);
}

function has(cmd) {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

function run(cmd, args, input) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input });
  return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim() };
}

if (process.platform !== 'linux') {
  loud([`The e2e suite needs Linux network namespaces; this is ${process.platform}.`, 'Set AMBIENT_E2E_SKIP=1 to skip it.']);
  process.exit(process.env.AMBIENT_E2E_SKIP === '1' ? SKIP_EXIT : 1);
}

if (process.getuid?.() !== 0) {
  if (process.env.AMBIENT_E2E_SKIP === '1') {
    loud([
      'AMBIENT_E2E_SKIP=1: the e2e suite is SKIPPED (it needs root).',
      'Nothing was tested end to end: no network namespaces, no in-pod capture, no mesh traffic.',
    ]);
    process.exit(SKIP_EXIT);
  }
  loud([
    'THE E2E SUITE MUST RUN AS ROOT.',
    'It creates network namespaces, veth pairs, a bridge, iptables rules and policy routes',
    '(a small cluster on this machine) and removes them afterwards.',
    '',
    'Run it as root:           sudo npm test            (in e2e/, or at the repository root)',
    'or skip it explicitly:    AMBIENT_E2E_SKIP=1 npm test',
  ]);
  process.exit(1);
}

// --- Debian packages -------------------------------------------------------
const needed = [
  { cmd: 'ip', pkg: 'iproute2' },
  { cmd: 'iptables-restore', pkg: 'iptables' },
  { cmd: 'tcpdump', pkg: 'tcpdump' },
];
const missing = needed.filter((n) => !has(n.cmd));
if (missing.length > 0) {
  const pkgs = [...new Set(missing.map((m) => m.pkg))];
  if (!has('apt-get')) {
    loud([`Missing tools: ${missing.map((m) => m.cmd).join(', ')} and no apt-get to install them.`, `Install the packages ${pkgs.join(' ')} by hand.`]);
    process.exit(1);
  }
  process.stdout.write(`preflight: installing ${pkgs.join(' ')} (missing: ${missing.map((m) => m.cmd).join(', ')})\n`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { stdio: 'inherit', env });
  const still = needed.filter((n) => !has(n.cmd));
  if (still.length > 0) {
    loud([`Still missing after apt-get install: ${still.map((m) => m.cmd).join(', ')}`]);
    process.exit(1);
  }
}

// --- Kernel features, in a throw-away namespace --------------------------------
const ns = `amb-e2e-preflight-${process.pid}`;
const problems = [];
function check(what, cmd, args, hint, input) {
  const r = run(cmd, args, input);
  if (!r.ok) problems.push(`${what} failed: ${cmd} ${args.join(' ')}\n      ${r.out.split('\n').join('\n      ')}\n    -> ${hint}`);
  return r.ok;
}
try {
  if (
    check('creating a network namespace', 'ip', ['netns', 'add', ns],
      'the kernel needs CONFIG_NET_NS and the process CAP_SYS_ADMIN (in a container: --privileged, or at least CAP_SYS_ADMIN + CAP_NET_ADMIN and a writable /var/run/netns)')
  ) {
    check('bringing lo up', 'ip', ['-n', ns, 'link', 'set', 'lo', 'up'], 'CAP_NET_ADMIN is needed');
    check('creating a veth pair', 'ip', ['-n', ns, 'link', 'add', 'pf0', 'type', 'veth', 'peer', 'name', 'pf1'],
      'the kernel needs the veth driver (CONFIG_VETH / modprobe veth)');
    check('creating a bridge', 'ip', ['-n', ns, 'link', 'add', 'pfbr', 'type', 'bridge'],
      'the kernel needs the bridge driver (CONFIG_BRIDGE / modprobe bridge)');
    check('iptables nat REDIRECT in a namespace', 'ip',
      ['netns', 'exec', ns, 'iptables-restore', '--noflush'],
      'the kernel needs netfilter NAT with REDIRECT (nf_nat, xt_REDIRECT / nft_redir) and iptables must work in namespaces',
      '*nat\n:PF_TEST - [0:0]\n-A OUTPUT -j PF_TEST\n-A PF_TEST ! -d 127.0.0.1/32 -p tcp -m mark ! --mark 0x539/0xfff -j REDIRECT --to-ports 15001\nCOMMIT\n');
    check('iptables mangle CONNMARK in a namespace', 'ip',
      ['netns', 'exec', ns, 'iptables-restore', '--noflush'],
      'the kernel needs xt_connmark / xt_mark (CONNMARK --set-xmark / --restore-mark)',
      '*mangle\n:PF_TEST - [0:0]\n-A PREROUTING -j PF_TEST\n-A PF_TEST -m mark --mark 0x539/0xfff -j CONNMARK --set-xmark 0x111/0xfff\nCOMMIT\n');
    check('iptables raw CT --zone in a namespace', 'ip',
      ['netns', 'exec', ns, 'iptables-restore', '--noflush'],
      'the kernel needs the conntrack zones target (xt_CT, CONFIG_NF_CONNTRACK_ZONES)',
      '*raw\n:PF_TEST - [0:0]\n-A OUTPUT -j PF_TEST\n-A PF_TEST -p udp -m mark --mark 0x539/0xfff -m udp --dport 53 -j CT --zone 1\nCOMMIT\n');
    check('policy routing (fwmark rule, local table)', 'ip', ['-n', ns, 'rule', 'add', 'fwmark', '0x111/0xfff', 'pref', '32764', 'lookup', '100'],
      'the kernel needs CONFIG_IP_MULTIPLE_TABLES');
    check('a local route in table 100', 'ip', ['-n', ns, 'route', 'add', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', '100'],
      'the kernel needs CONFIG_IP_MULTIPLE_TABLES');
  }
} finally {
  run('ip', ['netns', 'del', ns]);
}

if (problems.length > 0) {
  loud(['The kernel or the container cannot run the e2e suite:', '', ...problems.flatMap((p) => [p, ''])]);
  process.exit(1);
}
process.stdout.write('preflight: root, iproute2, iptables, tcpdump and the kernel features are in place\n');
