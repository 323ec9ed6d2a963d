/**
 * Readiness of a whole ztunnel around its first workload sync: while the
 * control plane is unreachable it reports `500 not ready, pending: state
 * manager` and no data-plane listener is bound (traffic is never served on an
 * empty policy state); once the control plane becomes reachable and the
 * first sync lands, it reports `200 ready` and the listeners accept.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { startTestControlPlane, workload } from '@ambient/control/testing';
import { WAIT_MS, startGate, startZtunnel, tcpAccepts, withTimeout } from './support/ztunnel-harness.js';

const IP = '127.0.15.21';
const DATA_PORTS = { inbound: 15008, inboundPlaintext: 15006, outbound: 15001, socks5: 15080 };

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

describe('readiness before and after the first sync', () => {
  it('is not ready and binds no data listener while the control plane is unreachable, then ready once it syncs', async () => {
    const cp = await startTestControlPlane();
    cleanups.push(() => cp.close());
    cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [IP], node: 'node-a' }));
    const gate = await startGate({ host: '127.0.0.1', port: cp.port });
    cleanups.push(() => gate.close());

    const zt = await startZtunnel(cp, {
      ip: IP,
      workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' },
      controlPlaneUrl: `https://localhost:${gate.port}`,
      waitForProxies: false,
    });
    cleanups.push(() => zt.close());
    // The ztunnel has tried (and failed) to reach the control plane more than once.
    await gate.refusedAtLeast(2);

    const before = await zt.get('readiness', '/healthz/ready');
    expect(before.status).toBe(500);
    expect(before.body).toBe('not ready, pending: state manager\n');
    expect(zt.app.readiness.isReady()).toBe(false);
    for (const [name, port] of Object.entries(DATA_PORTS)) {
      expect({ name, accepts: await tcpAccepts(IP, port) }).toEqual({ name, accepts: false });
    }
    expect(Object.keys(zt.app.addresses).sort()).toEqual(['admin', 'readiness', 'stats']);
    // The admin and metrics servers work before the sync.
    expect((await zt.get('stats', '/metrics')).status).toBe(200);
    expect((await zt.get('admin', '/config_dump')).status).toBe(200);

    gate.open();
    await withTimeout(zt.app.proxiesStarted, WAIT_MS * 2, () => `the proxies did not start after the control plane became reachable:\n${zt.logs.join('')}`);

    const after = await zt.get('readiness', '/healthz/ready');
    expect(after.status).toBe(200);
    expect(after.body).toBe('ready\n');
    for (const [name, port] of Object.entries(DATA_PORTS)) {
      expect({ name, accepts: await tcpAccepts(IP, port) }).toEqual({ name, accepts: true });
    }
    await zt.waitForLog((r) => typeof r.message === 'string' && r.message.includes("task 'state manager' complete"), 'marking the first sync');
  });
});
