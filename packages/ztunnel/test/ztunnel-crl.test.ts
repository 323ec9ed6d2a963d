/**
 * CRL_PATH end to end (reliability.md F-09, ztunnel's crl_* namespaced tests):
 * whole ztunnels with real TLS, certificates from the control plane's CA, and
 * CRLs signed with that CA's key written to a watched file.
 * - inbound: a client whose certificate is revoked is refused and counted,
 *   another certificate of the same identity is served;
 * - inbound: revoking a live client closes its HBONE connection;
 * - outbound: revoking the server closes the pooled connection, and new
 *   connections to it are refused.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalCertificateAuthority, systemClock } from '@ambient/control';
import { startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import { signerOf, type Signer } from '@ambient/dataplane/testing';
import { crlPem } from '@ambient/dataplane/testing';
import {
  closed,
  issueCertificate,
  rawHboneClient,
  roundTrip,
  sampleSum,
  socks5Connect,
  startEcho,
  startZtunnel,
  withTimeout,
  WAIT_MS,
  type LogRecord,
  type ZtunnelUnderTest,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.41.20';
const SERVER_IP = '127.0.41.21';
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

interface Mesh {
  readonly cp: TestControlPlane;
  readonly ca: Signer;
  /** The CRL file (empty at first). */
  readonly crlPath: string;
  /** Replaces the CRL file the way a ConfigMap update does (write elsewhere, rename over). */
  writeCrl(content: string): Promise<void>;
}

async function mesh(): Promise<Mesh> {
  const authority = await LocalCertificateAuthority.generate({ clock: systemClock });
  const cp = await startTestControlPlane({ authority });
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
  const dir = await mkdtemp(join(tmpdir(), 'zt-crl-'));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const crlPath = join(dir, 'ca-crl.pem');
  await writeFile(crlPath, '');
  let n = 0;
  return {
    cp,
    ca: await signerOf(authority),
    crlPath,
    writeCrl: async (content) => {
      const tmp = join(dir, `..tmp-${n++}`);
      await writeFile(tmp, content);
      await rename(tmp, crlPath);
    },
  };
}

async function start(m: Mesh, who: 'client' | 'server', crl: boolean): Promise<ZtunnelUnderTest> {
  const zt = await startZtunnel(m.cp, {
    ip: who === 'client' ? CLIENT_IP : SERVER_IP,
    workload: { namespace: 'demo', name: `${who}-0`, serviceAccount: who },
    env: crl ? { CRL_PATH: m.crlPath } : {},
  });
  cleanups.push(() => zt.close());
  return zt;
}

const loaded = (revoked: number) => (r: LogRecord) => r.message === 'CRL loaded' && r['revoked'] === revoked;

async function crlRejections(zt: ZtunnelUnderTest, reporter: 'source' | 'destination'): Promise<number> {
  const reply = await zt.get('stats', '/stats/prometheus');
  return sampleSum(reply.body, 'istio_crl_policy_rejections_total', { reporter });
}

describe('CRL_PATH', () => {
  it('refuses an HBONE client whose certificate is revoked, counts it, and serves a certificate that is not', async () => {
    const m = await mesh();
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    const revoked = await issueCertificate(m.cp, { namespace: 'demo', serviceAccount: 'client' });
    const good = await issueCertificate(m.cp, { namespace: 'demo', serviceAccount: 'client' });
    await m.writeCrl(await crlPem(m.ca, [revoked.leaf.serialNumber]));
    const server = await start(m, 'server', true);
    await server.waitForLog(loaded(1), 'CRL loaded with 1 revoked serial');

    const refused = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, revoked).then(
      async (c) => {
        cleanups.push(() => c.close());
        return c.request(`${SERVER_IP}:8080`).then(() => 'answered', () => 'failed');
      },
      () => 'failed',
    );
    expect(refused).toBe('failed');
    const line = await server.waitForLog((r) => r.message === 'HBONE connection refused' && r['code'] === 'CERT_REVOKED', 'refusal with CERT_REVOKED');
    expect(String(line['reason'])).toContain(`serial ${revoked.leaf.serialNumber.toLowerCase()}`);
    expect(String(line['reason'])).toContain('ambient local CA');
    expect(await crlRejections(server, 'destination')).toBe(1);
    expect(echo.peers).toEqual([]);

    const client = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, good);
    cleanups.push(() => client.close());
    const answer = await client.request(`${SERVER_IP}:8080`);
    expect(answer.status).toBe(200);
    expect(await crlRejections(server, 'destination')).toBe(1);
  });

  it('closes a live inbound HBONE connection abruptly when a CRL update revokes its client', async () => {
    const m = await mesh();
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    const cert = await issueCertificate(m.cp, { namespace: 'demo', serviceAccount: 'client' });
    const server = await start(m, 'server', true);
    await server.waitForLog(loaded(0), 'the empty CRL file loaded');
    const client = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, cert);
    cleanups.push(() => client.close());
    const answer = await client.request(`${SERVER_IP}:8080`);
    expect(answer.status).toBe(200);
    answer.stream.write('still open?');
    const sessionClosed = withTimeout(new Promise<void>((resolve) => client.session.once('close', () => resolve())), WAIT_MS, () => 'the HBONE session was not closed');

    await m.writeCrl(await crlPem(m.ca, [cert.leaf.serialNumber]));
    await server.waitForLog(loaded(1), 'the CRL revoking the client loaded');
    await sessionClosed;
    const line = await server.waitForLog((r) => r.message === 'HBONE connection closed: peer certificate revoked', 'the revocation close');
    expect(line['code']).toBe('CERT_REVOKED');
    expect(await crlRejections(server, 'destination')).toBe(1);
    // New handshakes with the same certificate now fail too.
    const again = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, cert).then(
      async (c) => {
        cleanups.push(() => c.close());
        return c.request(`${SERVER_IP}:8080`).then(() => 'answered', () => 'failed');
      },
      () => 'failed',
    );
    expect(again).toBe('failed');
    expect(await crlRejections(server, 'destination')).toBe(2);
  });

  it('outbound: a revoked server loses its pooled connection at once and new connections to it are refused', async () => {
    const m = await mesh();
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    const server = await start(m, 'server', false);
    const client = await start(m, 'client', true);
    await client.waitForLog(loaded(0), 'the empty CRL file loaded');

    const live = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    cleanups.push(async () => void live.socket.destroy());
    expect(live.reply).toBe(0);
    expect((await roundTrip(live.socket, Buffer.from('before'))).toString()).toBe('before');

    // The server ztunnel's own certificate, as it presents it.
    const probe = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, await issueCertificate(m.cp, { namespace: 'demo', serviceAccount: 'client' }));
    const serverSerial = probe.peerCertificate.serialNumber;
    await probe.close();
    await m.writeCrl(await crlPem(m.ca, [serverSerial]));
    await client.waitForLog(loaded(1), 'the CRL revoking the server loaded');
    await closed(live.socket);
    const line = await client.waitForLog((r) => r.message === 'HBONE connection closed: server certificate revoked', 'the pooled connection closed');
    expect(line['code']).toBe('CERT_REVOKED');
    expect(await crlRejections(client, 'source')).toBe(1);

    const refused = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
    cleanups.push(async () => void refused.socket.destroy());
    expect(refused.reply).not.toBe(0);
    await client.waitForLog((r) => r.message === 'outbound upstream failed' && r['code'] === 'CERT_REVOKED', 'the refused dial logged with CERT_REVOKED');
    expect(await crlRejections(client, 'source')).toBe(2);
    expect(echo.peers).toEqual([CLIENT_IP]);
    void server;
  });
});
