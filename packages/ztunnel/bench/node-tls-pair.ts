/**
 * Starts the Node.js floor (tls-relay.js, see there): a client and a server
 * relay process, each run with the node flags and environment ztunnel ships
 * with, using the HAProxy pair's kind of certificates (SPIFFE leaves from the
 * mesh CA).
 */
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkloadCertificate } from '@ambient/control';
import type { TlsPairOptions } from './haproxy.js';
import { canConnect, spawnChild, waitUntil, type Child } from './processes.js';

const RELAY_BIN = join(dirname(fileURLToPath(import.meta.url)), 'tls-relay.js');

export async function startNodeTlsPair(o: TlsPairOptions & { nodeArgs: readonly string[]; env: NodeJS.ProcessEnv }): Promise<{ client: Child; server: Child }> {
  const roots = join(o.dir, 'node-tls-roots.pem');
  writeFileSync(roots, o.serverCert.rootsPem.join(''));
  const files = (name: string, c: WorkloadCertificate) => {
    const cert = join(o.dir, `${name}.crt`);
    const key = join(o.dir, `${name}.key`);
    writeFileSync(cert, c.chainPem.join(''));
    writeFileSync(key, c.privateKeyPem, { mode: 0o600 });
    return [cert, key];
  };
  const start = async (name: string, role: 'client' | 'server', listenIp: string, targetIp: string, c: WorkloadCertificate) => {
    const child = spawnChild(name, process.execPath, [...o.nodeArgs, RELAY_BIN, role, listenIp, targetIp, ...files(name, c), roots, ...o.ports.map(String)], {
      logPath: join(o.dir, `${name}.log`),
      env: { PATH: process.env['PATH'], HOME: process.env['HOME'], ...o.env },
      stdin: 'pipe',
    });
    await waitUntil(`${name} on ${listenIp}`, async () => (await Promise.all(o.ports.map((p) => canConnect(listenIp, p)))).every(Boolean), { timeoutMs: 10_000, child });
    return child;
  };
  const server = await start('node-tls-server', 'server', o.serverIp, o.appIp, o.serverCert);
  const client = await start('node-tls-client', 'client', o.clientIp, o.serverIp, o.clientCert);
  return { client, server };
}
