/**
 * Which tunnels the waypoint serves, decided by the CONNECT authority alone
 * (waypoint.md §2.2): a served service VIP:port, a bound workload's IP:port,
 * anything else refused with HBONE 400. The Host header never picks the
 * service; the source principal is the peer certificate's.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { HboneStatusError } from '@ambient/dataplane';
import { classifyTarget } from '../../src/serve/targets.js';
import {
  CLIENT_SPIFFE,
  compile,
  ECHO_HOST,
  ECHO_POD_IP,
  ECHO_VIP,
  echoService,
  h1Request,
  httpRoute,
  identityOf,
  OTHER_HOST,
  otherService,
  PORT_GRPC,
  PORT_HTTP,
  PORT_TCP,
  PORT_UNKNOWN,
  rule,
  startWaypoint,
  UNBOUND_VIP,
  backend,
  type Waypoint,
} from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function refusedStatus(w: Waypoint, ip: string, port: number): Promise<number> {
  const conn = await w.connect();
  try {
    await conn.openStream({ connect: { authority: { kind: 'address', ip, port } } });
  } catch (err) {
    if (err instanceof HboneStatusError) return err.status;
    throw err;
  }
  return 200;
}

describe('classifyTarget (pure)', () => {
  it('maps service ports by protocol and refuses what is not ours', async () => {
    const w = await startWaypoint({}, cleanup);
    const inputs = { bindings: w.bindings, snapshot: w.snapshot, routes: compile([], [echoService(), otherService()]) };
    const at = (ip: string, port: number) => classifyTarget(inputs, { kind: 'address', ip, port });
    expect(at(ECHO_VIP, PORT_HTTP)).toMatchObject({ kind: 'service', protocol: 'http', mode: 'http' });
    expect(at(ECHO_VIP, PORT_GRPC)).toMatchObject({ kind: 'service', protocol: 'grpc', mode: 'http' });
    expect(at(ECHO_VIP, PORT_TCP)).toMatchObject({ kind: 'service', protocol: 'tcp', mode: 'tcp' });
    expect(at(ECHO_VIP, PORT_UNKNOWN)).toMatchObject({ kind: 'service', protocol: 'unknown', mode: 'detect' });
    expect(at(ECHO_VIP, 12345)).toMatchObject({ kind: 'refused', code: 'IP_MISMATCH' });
    expect(at(UNBOUND_VIP, PORT_HTTP)).toMatchObject({ kind: 'refused', code: 'IP_MISMATCH' });
    expect(at(ECHO_POD_IP, 8080)).toMatchObject({ kind: 'workload', protocol: 'http', mode: 'http', service: { hostname: ECHO_HOST } });
    expect(at(ECHO_POD_IP, 9090)).toMatchObject({ kind: 'workload', protocol: 'tcp', mode: 'tcp' });
    expect(at(ECHO_POD_IP, 5555)).toMatchObject({ kind: 'workload', protocol: 'unknown', mode: 'detect', service: undefined });
    expect(classifyTarget(inputs, { kind: 'hostname', hostname: ECHO_HOST, port: 80 })).toMatchObject({ kind: 'refused', code: 'BAD_AUTHORITY' });
  });
});

describe('CONNECT authorities over real HBONE', () => {
  it('serves a service VIP:port, routed to that service', async () => {
    const w = await startWaypoint({}, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), { path: '/svc' });
    expect(res.status).toBe(200);
    expect(w.forwarder.calls[0]?.target).toMatchObject({ service: { hostname: ECHO_HOST }, servicePort: PORT_HTTP });
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ downstreamLocal: `${ECHO_VIP}:${PORT_HTTP}`, upstreamCluster: `inbound-vip|80|http|${ECHO_HOST}`, routeName: 'default' });
  });

  it('serves a bound workload IP:port, pinned to that workload', async () => {
    const w = await startWaypoint({}, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_POD_IP, 8080), { path: '/pod' });
    expect(res.status).toBe(200);
    expect(w.forwarder.calls[0]?.target.workload?.addresses).toEqual([ECHO_POD_IP]);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record).toMatchObject({ upstreamCluster: 'encap', downstreamLocal: `${ECHO_POD_IP}:8080` });
  });

  it('refuses an authority that is neither (HBONE 400), and a service VIP on a port it does not have', async () => {
    const w = await startWaypoint({}, cleanup);
    expect(await refusedStatus(w, UNBOUND_VIP, PORT_HTTP)).toBe(400);
    expect(await refusedStatus(w, ECHO_VIP, 4444)).toBe(400);
    expect(await refusedStatus(w, '127.0.0.1', PORT_HTTP)).toBe(400);
    expect(w.forwarder.calls).toEqual([]);
  });

  it('ignores the Host header: the VIP decides the service and its routes', async () => {
    // echo has a route that answers 404 for everything but /only; other has none.
    const routes = [httpRoute('echo-only', [rule({ matches: [{ path: { type: 'Exact', value: '/only' }, headers: [], queryParams: [], method: undefined }], backendRefs: [backend('echo', PORT_HTTP)] })])];
    const w = await startWaypoint({ routes }, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), { path: '/x', headers: [['Host', `${OTHER_HOST}:80`]] });
    expect(res.status).toBe(404);
    const res2 = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP), { path: '/only', headers: [['Host', `${OTHER_HOST}:80`]] });
    expect(res2.status).toBe(200);
    expect(w.forwarder.calls).toHaveLength(1);
    expect(w.forwarder.calls[0]?.target.service.hostname).toBe(ECHO_HOST);
    // The Host header is passed on as the authority.
    expect(w.forwarder.calls[0]?.request.authority).toBe(`${OTHER_HOST}:80`);
  });

  it('takes the source principal from the peer certificate; forged identity headers change nothing', async () => {
    const w = await startWaypoint({}, cleanup);
    const other = 'spiffe://cluster.local/ns/other/sa/intruder';
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP, other), {
      headers: [
        ['x-forwarded-client-cert', `By=spiffe://x;URI=${CLIENT_SPIFFE}`],
        ['x-envoy-peer-metadata-id', 'sidecar~10.0.0.1~sleep~client'],
      ],
    });
    expect(res.status).toBe(200);
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.source.identity).toEqual(identityOf(other));
    const sent = w.forwarder.calls[0]?.request.headers.map(([n]) => n.toLowerCase()) ?? [];
    expect(sent).not.toContain('x-forwarded-client-cert');
    expect(sent).not.toContain('x-envoy-peer-metadata-id');
  });

  it('finds the client workload by its IP', async () => {
    const w = await startWaypoint({}, cleanup);
    await h1Request(await w.tunnel(ECHO_VIP, PORT_HTTP));
    const [record] = await w.telemetry.httpRecords(1);
    expect(record?.source.workload?.name).toBe('sleep-0');
    expect(record?.destination.workload?.name).toBe('echo-0');
  });
});
