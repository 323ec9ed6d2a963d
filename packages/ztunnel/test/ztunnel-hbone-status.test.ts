/**
 * Every HBONE failure status of a whole ztunnel, seen by a raw HBONE client
 * (node:http2 over TLS 1.3 with a workload certificate from the control
 * plane's CA): 400 for non-CONNECT, bad authority and IP mismatch; 503 for an
 * unknown local workload, ztunnel's own ports and a refused upstream; 401 for
 * an RBAC deny. Each request sends early DATA before the answer, and the test
 * checks the app behind the ztunnel never saw a connection or a byte; each
 * refusal leaves a log line naming what was wrong.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { WorkloadCertificate } from '@ambient/control';
import { denyPolicy, startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import {
  issueCertificate,
  rawHboneClient,
  readAll,
  sampleSum,
  startEcho,
  startZtunnel,
  type Echo,
  type LogRecord,
  type RawHboneClient,
  type ZtunnelUnderTest,
} from './support/ztunnel-harness.js';

const CLIENT_IP = '127.0.11.20';
const SERVER_IP = '127.0.11.21';
const GHOST_IP = '127.0.11.22';
const EARLY = Buffer.alloc(32 * 1024, 'e');

let cp: TestControlPlane;
let server: ZtunnelUnderTest;
let ghost: ZtunnelUnderTest;
let app: Echo; // the allowed app port
let deniedApp: Echo; // an app port a DENY policy covers
let cert: WorkloadCertificate;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  cp = await startTestControlPlane();
  cleanups.push(() => cp.close());
  cp.setWorkload(workload({ name: 'client-0', namespace: 'demo', serviceAccount: 'client', ips: [CLIENT_IP], node: 'node-a' }));
  cp.setWorkload(workload({ name: 'server-0', namespace: 'demo', serviceAccount: 'server', ips: [SERVER_IP], node: 'node-a' }));
  cp.setPolicy(denyPolicy({ name: 'no-8082', namespace: 'demo', rules: [[[{ destinationPorts: [8082] }]]] }));
  app = await startEcho(SERVER_IP, 8080);
  cleanups.push(() => app.close());
  deniedApp = await startEcho(SERVER_IP, 8082);
  cleanups.push(() => deniedApp.close());
  server = await startZtunnel(cp, { ip: SERVER_IP, workload: { namespace: 'demo', name: 'server-0', serviceAccount: 'server' } });
  cleanups.push(() => server.close());
  // A ztunnel whose own pod is not (yet) in workload discovery.
  ghost = await startZtunnel(cp, { ip: GHOST_IP, workload: { namespace: 'demo', name: 'ghost-0', serviceAccount: 'ghost' } });
  cleanups.push(() => ghost.close());
  cert = await issueCertificate(cp, { namespace: 'demo', serviceAccount: 'client' });
});

afterAll(async () => {
  while (cleanups.length > 0) await cleanups.pop()?.();
});

async function client(ip = SERVER_IP): Promise<RawHboneClient> {
  const c = await rawHboneClient({ ip, port: 15008 }, cert, CLIENT_IP);
  cleanups.push(() => c.close());
  return c;
}

/** Sends a request with early data and checks the status, the log line and that no app saw anything. */
async function expectRefused(
  c: RawHboneClient,
  zt: ZtunnelUnderTest,
  authority: string,
  status: number,
  logged: (r: LogRecord) => boolean,
  method?: string,
): Promise<void> {
  const before = { peers: app.peers.length + deniedApp.peers.length, bytes: app.received() + deniedApp.received() };
  const answer = await c.request(authority, { earlyData: EARLY, ...(method ? { method } : {}) });
  expect(answer.status).toBe(status);
  // The stream ends right after the status: no tunnel, no body.
  expect((await readAll(answer.stream)).length).toBe(0);
  await zt.waitForLog(logged, `explaining the ${status} for ${method ?? 'CONNECT'} ${authority}`);
  expect(app.peers.length + deniedApp.peers.length).toBe(before.peers);
  expect(app.received() + deniedApp.received()).toBe(before.bytes);
}

/** A refusal log line with this code and a sentence saying what was wrong. */
const hasCode = (code: string) => (r: LogRecord) => r['code'] === code && (typeof r['reason'] === 'string' || typeof r['error'] === 'string');
const errorIncludes = (text: string) => (r: LogRecord) => r.message === 'connection complete' && typeof r['error'] === 'string' && r['error'].includes(text);

describe('HBONE failure statuses of a whole ztunnel', () => {
  it('answers 400 to a request that is not CONNECT, and the connection stays usable', async () => {
    const c = await client();
    await expectRefused(c, server, `${SERVER_IP}:8080`, 400, hasCode('NOT_CONNECT'), 'GET');
    await expectRefused(c, server, `${SERVER_IP}:8080`, 400, hasCode('NOT_CONNECT'), 'POST');
    // One bad stream does not end the HTTP/2 connection.
    const ok = await c.request(`${SERVER_IP}:8080`);
    expect(ok.status).toBe(200);
    ok.stream.end();
    await readAll(ok.stream);
  });

  it('answers 400 to a bad authority', async () => {
    const c = await client();
    await expectRefused(c, server, 'no-port-here', 400, hasCode('BAD_AUTHORITY'));
    await expectRefused(c, server, `${SERVER_IP}:0`, 400, hasCode('BAD_AUTHORITY'));
    await expectRefused(c, server, `${SERVER_IP}:99999`, 400, hasCode('BAD_AUTHORITY'));
    await expectRefused(c, server, 'bad!host:80', 400, hasCode('BAD_AUTHORITY'));
    await expectRefused(c, server, `${SERVER_IP}:`, 400, hasCode('BAD_AUTHORITY'));
  });

  it('answers 400 when the authority IP is not the workload this ztunnel serves', async () => {
    const c = await client();
    // Another pod of the mesh, and an address nobody has.
    await expectRefused(c, server, `${CLIENT_IP}:8080`, 400, (r) => hasCode('IP_MISMATCH')(r) && String(r['error']).includes(CLIENT_IP));
    await expectRefused(c, server, '127.0.11.99:8080', 400, (r) => hasCode('IP_MISMATCH')(r) && String(r['error']).includes('127.0.11.99'));
  });

  it('answers 503 when its own workload is not in workload discovery', async () => {
    const c = await client(GHOST_IP);
    await expectRefused(c, ghost, `${GHOST_IP}:8080`, 503, hasCode('UNKNOWN_LOCAL_WORKLOAD'));
  });

  it('waits for its own workload to arrive from workload discovery instead of failing at once (as ztunnel, up to 5 s)', async () => {
    const LATE_IP = '127.0.11.23';
    const lateApp = await startEcho(LATE_IP, 8080);
    cleanups.push(() => lateApp.close());
    const late = await startZtunnel(cp, { ip: LATE_IP, workload: { namespace: 'demo', name: 'late-0', serviceAccount: 'late' }, localWorkloadWaitMs: 5_000 });
    cleanups.push(() => late.close());
    const c = await client(LATE_IP);
    const pending = c.request(`${LATE_IP}:8080`);
    // The CONNECT is waiting; the workload shows up in WDS now.
    cp.setWorkload(workload({ name: 'late-0', namespace: 'demo', serviceAccount: 'late', ips: [LATE_IP], node: 'node-a' }));
    const answer = await pending;
    expect(answer.status).toBe(200);
    answer.stream.end(Buffer.from('better late'));
    expect((await readAll(answer.stream)).toString()).toBe('better late');
  });

  it('a client that leaves while its destination workload is awaited is recorded as gone, not refused', async () => {
    const GONE_IP = '127.0.11.24';
    const gone = await startZtunnel(cp, { ip: GONE_IP, workload: { namespace: 'demo', name: 'gone-0', serviceAccount: 'gone' }, localWorkloadWaitMs: 5_000, logLevel: 'debug' });
    cleanups.push(() => gone.close());
    const c = await client(GONE_IP);
    const stream = c.session.request({ ':method': 'CONNECT', ':authority': `${GONE_IP}:8080` }, { endStream: false });
    stream.on('error', () => {});
    // The PING answer comes after the server processed the HEADERS before it: the handler is waiting now.
    await new Promise<void>((resolve, reject) => c.session.ping((err) => (err ? reject(err) : resolve())));
    stream.close(0x8); // RST_STREAM CANCEL while the ztunnel waits for its workload
    await gone.waitForLog((r) => r['code'] === 'CLIENT_GONE', 'the client-gone debug line');
    const lines = gone.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.filter((r) => r['code'] === 'UNKNOWN_LOCAL_WORKLOAD' || r['code'] === 'POLICY_DENIED')).toEqual([]);
  });

  it('answers 503 to a CONNECT to one of ztunnel\'s own ports (15008, 15006, 15001, 15080)', async () => {
    const c = await client();
    for (const port of [15008, 15006, 15001, 15080]) {
      await expectRefused(c, server, `${SERVER_IP}:${port}`, 503, (r) => hasCode('SELF_CALL')(r) && String(r['error']).includes(String(port)));
    }
  });

  it('answers 503 (flag CONNECT) when the upstream refuses the connection', async () => {
    const c = await client();
    await expectRefused(c, server, `${SERVER_IP}:8081`, 503, errorIncludes(`${SERVER_IP}:8081`));
    const metrics = (await server.get('stats', '/metrics')).body;
    expect(sampleSum(metrics, 'istio_tcp_connections_failed_total', { reporter: 'destination', response_flags: 'CONNECT' })).toBeGreaterThanOrEqual(1);
  });

  it('answers 401 (flag DENY) when RBAC denies, and the app on that port never sees the connection', async () => {
    const c = await client();
    await expectRefused(c, server, `${SERVER_IP}:8082`, 401, errorIncludes('denied'));
    expect(deniedApp.peers).toEqual([]);
    const metrics = (await server.get('stats', '/metrics')).body;
    expect(
      sampleSum(metrics, 'istio_tcp_connections_failed_total', {
        reporter: 'destination',
        response_flags: 'DENY',
        source_principal: 'spiffe://cluster.local/ns/demo/sa/client',
      }),
    ).toBe(1);
  });

  it('accepts a valid CONNECT from the same client, delivering its early data only after the 200', async () => {
    const c = await client();
    // The server presented the workload's own SPIFFE identity.
    expect(c.peerCertificate.subjectaltname).toBe('URI:spiffe://cluster.local/ns/demo/sa/server');
    const before = app.peers.length;
    const answer = await c.request(`${SERVER_IP}:8080`, { earlyData: Buffer.from('early:') });
    expect(answer.status).toBe(200);
    answer.stream.end(Buffer.from('late'));
    expect((await readAll(answer.stream)).toString()).toBe('early:late');
    // The app saw the client pod's own address.
    expect(app.peers.slice(before)).toEqual([CLIENT_IP]);
  });
});
