/**
 * Certificate rotation under traffic: two whole ztunnels with short-lived
 * certificates carry a bounded loop of short connections across at least one
 * rotation on each side, and not one connection fails; afterwards new HBONE
 * handshakes present the rotated certificate.
 *
 * SECRET_TTL: the control plane's CA (like istiod, which uses 2 minutes)
 * back-dates notBefore by 60 s for clock skew, and the refresh time is
 * ztunnel's notBefore + lifetime / 2. With SECRET_TTL=10s that time is already
 * past when the certificate arrives, and the certificate manager re-issues in
 * a tight loop (about 65 CSRs per second per identity, measured). So the test
 * asks for 64 s: lifetime 124 s, refresh 2 s after issue, i.e. a rotation
 * every ~2 s per identity, each certificate valid for a minute.
 *
 * POOL_UNUSED_RELEASE_TIMEOUT=1ms drops each idle pooled HBONE connection at
 * once, so most connections of the loop are fresh mTLS handshakes (the risky
 * part of a rotation), not streams on one long-lived connection.
 */
import { performance } from 'node:perf_hooks';
import { afterEach, describe, expect, it } from 'vitest';
import type { Env, Identity } from '@ambient/control';
import { startTestControlPlane, workload } from '@ambient/control/testing';
import {
  issueCertificate,
  rawHboneClient,
  roundTrip,
  socks5Connect,
  startEcho,
  startZtunnel,
  type ZtunnelUnderTest,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.18.20';
const SERVER_IP = '127.0.18.21';
const MAX_CONNECTIONS = 3000;
const MAX_MS = 20_000;
const AFTER_ROTATION = 30;

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

const ENV: Env = { SECRET_TTL: '64s', POOL_UNUSED_RELEASE_TIMEOUT: '1ms' };

/** Serial numbers (hex) installed for `identity` on this ztunnel, in order, from now on. */
function watchSerials(zt: ZtunnelUnderTest, identity: Identity): string[] {
  const serials: string[] = [];
  const off = zt.app.certificates.onCertificate((id, cert) => {
    if (id.serviceAccount === identity.serviceAccount && id.namespace === identity.namespace) serials.push(cert.leaf.serialNumber);
  });
  cleanups.push(async () => off());
  return serials;
}

describe('certificate rotation under traffic', () => {
  it('rotates the certificates of both ztunnels while short connections keep succeeding', async () => {
    const cp = await startTestControlPlane();
    cleanups.push(() => cp.close());
    cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
    cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
    const echo = await startEcho(SERVER_IP, 8080);
    cleanups.push(() => echo.close());
    const server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' }, env: ENV });
    cleanups.push(() => server.close());
    const client = await startZtunnel(cp, { ip: CLIENT_IP, workload: { namespace: 'demo', name: 'client-0', serviceAccount: 'client' }, env: ENV });
    cleanups.push(() => client.close());

    const serverId: Identity = { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'server' };
    const clientId: Identity = { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'client' };
    const first = {
      server: (await server.app.certificates.fetchCertificate(serverId)).leaf.serialNumber,
      client: (await client.app.certificates.fetchCertificate(clientId)).leaf.serialNumber,
    };
    const rotated = { server: watchSerials(server, serverId), client: watchSerials(client, clientId) };

    const startedAt = performance.now();
    let attempts = 0;
    const failures: string[] = [];
    let afterBoth = 0;
    while (attempts < MAX_CONNECTIONS && performance.now() - startedAt < MAX_MS && afterBoth < AFTER_ROTATION) {
      attempts++;
      const payload = `connection ${attempts}`;
      try {
        const c = await socks5Connect({ ip: CLIENT_IP, port: 15080 }, { ip: SERVER_IP, port: 8080 }, CLIENT_IP);
        if (c.reply !== 0) {
          c.socket.destroy();
          failures.push(`${attempts}: SOCKS5 reply ${c.reply}`);
          continue;
        }
        const got = (await roundTrip(c.socket, Buffer.from(payload))).toString();
        c.socket.destroy();
        if (got !== payload) failures.push(`${attempts}: echoed ${JSON.stringify(got)}`);
      } catch (err) {
        failures.push(`${attempts}: ${err instanceof Error ? err.message : String(err)}`);
      }
      if (rotated.server.length > 0 && rotated.client.length > 0) afterBoth++;
    }

    expect(failures).toEqual([]);
    expect({ serverRotations: rotated.server.length > 0, clientRotations: rotated.client.length > 0 }).toEqual({ serverRotations: true, clientRotations: true });
    expect(afterBoth).toBe(AFTER_ROTATION);
    expect(rotated.server).not.toContain(first.server);
    expect(rotated.client).not.toContain(first.client);
    expect(echo.peers.length).toBe(attempts);
    await server.waitForLog((r) => r.message === 'certificate rotated', 'for the rotation');

    // A fresh handshake with the server ztunnel presents a rotated certificate.
    const raw = await rawHboneClient({ ip: SERVER_IP, port: 15008 }, await issueCertificate(cp, { namespace: 'demo', serviceAccount: 'client' }), CLIENT_IP);
    cleanups.push(() => raw.close());
    const presented = raw.peerCertificate.serialNumber.toUpperCase();
    expect(presented).not.toBe(first.server.toUpperCase());
    expect(rotated.server.map((s) => s.toUpperCase())).toContain(presented);
  });
});
