/**
 * The C reference: a pair of HAProxy processes (Debian's package) in TCP
 * mode, tunnelling each app port over mutual TLS 1.3 with the same kind of
 * certificates the mesh uses (ECDSA P-256 SPIFFE leaves from the control
 * plane's CA): client side = plain TCP listener → TLS with a client
 * certificate; server side = TLS with `verify required` → app.
 * Each side is one process (`-db`: foreground, no master) with HAProxy's
 * default thread count.
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { WorkloadCertificate } from '@ambient/control';
import { canConnect, spawnChild, waitUntil, type Child } from './processes.js';

const CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

export interface HaproxyPair {
  readonly client: Child;
  readonly server: Child;
  readonly version: string;
}

/** `haproxy -v` first line, or undefined when HAProxy is not installed. */
export function haproxyVersion(): string | undefined {
  try {
    return execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0]?.trim();
  } catch {
    return undefined;
  }
}

/** A reference mTLS relay pair: client side on clientIp, server side on serverIp, to the app on appIp, per port. */
export interface TlsPairOptions {
  readonly dir: string;
  readonly clientIp: string;
  readonly serverIp: string;
  /** Where the app listens, per forwarded port. */
  readonly appIp: string;
  readonly ports: readonly number[];
  readonly clientCert: WorkloadCertificate;
  readonly serverCert: WorkloadCertificate;
}

export async function startHaproxyPair(o: TlsPairOptions): Promise<HaproxyPair> {
  const version = haproxyVersion();
  if (version === undefined) throw new Error('haproxy is not installed (apt-get install -y haproxy)');
  const roots = join(o.dir, 'roots.pem');
  writeFileSync(roots, o.serverCert.rootsPem.join(''));
  const pemFile = (name: string, c: WorkloadCertificate) => {
    const path = join(o.dir, `${name}.pem`);
    writeFileSync(path, [...c.chainPem, c.privateKeyPem].join(''), { mode: 0o600 });
    return path;
  };
  const clientPem = pemFile('haproxy-client', o.clientCert);
  const serverPem = pemFile('haproxy-server', o.serverCert);

  const common = [
    'global',
    '  maxconn 4096',
    `  ssl-default-bind-ciphersuites ${CIPHERSUITES}`,
    '  ssl-default-bind-options ssl-min-ver TLSv1.3',
    `  ssl-default-server-ciphersuites ${CIPHERSUITES}`,
    '  ssl-default-server-options ssl-min-ver TLSv1.3',
    'defaults',
    '  mode tcp',
    '  timeout connect 5s',
    '  timeout client 120s',
    '  timeout server 120s',
  ];
  const clientCfg = [
    ...common,
    ...o.ports.flatMap((p) => [
      `listen fwd_${p}`,
      `  bind ${o.clientIp}:${p}`,
      `  server upstream ${o.serverIp}:${p} ssl crt ${clientPem} ca-file ${roots} verify required`,
    ]),
  ];
  const serverCfg = [
    ...common,
    ...o.ports.flatMap((p) => [
      `listen tls_${p}`,
      `  bind ${o.serverIp}:${p} ssl crt ${serverPem} ca-file ${roots} verify required`,
      `  server app ${o.appIp}:${p}`,
    ]),
  ];
  const server = await start('haproxy-server', serverCfg, o.dir, o.serverIp, o.ports);
  const client = await start('haproxy-client', clientCfg, o.dir, o.clientIp, o.ports);
  return { client, server, version };
}

async function start(name: string, lines: readonly string[], dir: string, ip: string, ports: readonly number[]): Promise<Child> {
  const cfg = join(dir, `${name}.cfg`);
  writeFileSync(cfg, `${lines.join('\n')}\n`);
  try {
    execFileSync('haproxy', ['-c', '-q', '-f', cfg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    throw new Error(`${name}: configuration refused by haproxy -c:\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
  const child = spawnChild(name, 'haproxy', ['-db', '-f', cfg], { logPath: join(dir, `${name}.log`) });
  await waitUntil(`${name} on ${ip}`, async () => (await Promise.all(ports.map((p) => canConnect(ip, p)))).every(Boolean), { timeoutMs: 10_000, child });
  return child;
}
