/**
 * Opaque TCP and protocol detection: a TCP port relays bytes both ways with
 * half-close, an unknown port detects HTTP/1.1, h2c or TCP (bounded in
 * bytes and time), TCPRoute backends, connect failures close the tunnel, one
 * TcpConnectionRecord per tunnel.
 */
import type { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import {
  backend,
  CLIENT_SPIFFE,
  ECHO_HOST,
  ECHO_POD_IP,
  ECHO_VIP,
  h1Request,
  h2cSession,
  identityOf,
  OTHER_HOST,
  parent,
  PORT_TCP,
  PORT_UNKNOWN,
  startWaypoint,
  tcpRoute,
} from './harness.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

/** Writes, half-closes, and reads until the far side ends (bounded). */
async function exchange(tunnel: Duplex, bytes: string): Promise<string> {
  let got = '';
  tunnel.on('data', (d: Buffer) => (got += d.toString('latin1')));
  const ended = new Promise<void>((resolve) => {
    tunnel.once('end', resolve);
    tunnel.once('close', resolve);
  });
  tunnel.end(bytes);
  await Promise.race([ended, systemClock.sleep(3000)]);
  return got;
}

describe('opaque TCP', () => {
  it('relays a TCP port both ways with half-close and records one connection', async () => {
    const w = await startWaypoint({}, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_TCP);
    expect(await exchange(tunnel, 'ping')).toBe('tcp:ping');
    const [record] = await w.telemetry.tcpRecords(1);
    expect(record).toMatchObject({
      kind: 'tcp',
      bytesReceived: 4,
      bytesSent: 8,
      flags: [],
      source: { identity: identityOf(CLIENT_SPIFFE) },
      destinationService: { hostname: ECHO_HOST },
      upstreamCluster: `inbound-vip|${PORT_TCP}|tcp|${ECHO_HOST}`,
      downstreamLocal: `${ECHO_VIP}:${PORT_TCP}`,
    });
    expect(w.telemetry.opened).toHaveLength(1);
    expect(w.forwarder.tcpCalls[0]).toMatchObject({ service: { hostname: ECHO_HOST }, servicePort: PORT_TCP });
    expect(w.forwarder.calls).toEqual([]);
  });

  it('sends a TCPRoute port to the route\'s backend', async () => {
    const routes = [tcpRoute('tcp', [backend('other', 80)], [parent('echo', PORT_TCP)])];
    const w = await startWaypoint({ routes }, cleanup);
    expect(await exchange(await w.tunnel(ECHO_VIP, PORT_TCP), 'x')).toBe('tcp:x');
    expect(w.forwarder.tcpCalls[0]).toMatchObject({ service: { hostname: OTHER_HOST }, servicePort: 80 });
  });

  it('closes the tunnel when the upstream connect fails, with UF in the record and no open metric', async () => {
    const w = await startWaypoint({}, cleanup);
    w.forwarder.failNext('UPSTREAM_REMOTE_CONNECTION_FAILURE');
    const tunnel = await w.tunnel(ECHO_VIP, PORT_TCP);
    expect(await exchange(tunnel, 'data')).toBe('');
    const [record] = await w.telemetry.tcpRecords(1);
    expect(record).toMatchObject({ flags: ['UF'], bytesSent: 0 });
    expect(w.telemetry.opened).toEqual([]);
  });

  it('relays workload-addressed TCP to the addressed pod', async () => {
    const w = await startWaypoint({}, cleanup);
    expect(await exchange(await w.tunnel(ECHO_POD_IP, 9090), 'pod')).toBe('tcp:pod');
    expect(w.forwarder.tcpCalls[0]?.workload?.addresses).toEqual([ECHO_POD_IP]);
    const [record] = await w.telemetry.tcpRecords(1);
    expect(record?.upstreamCluster).toBe('encap');
  });
});

describe('protocol detection on a port of unknown protocol', () => {
  it('serves an HTTP/1.1 client as HTTP', async () => {
    const w = await startWaypoint({}, cleanup);
    const res = await h1Request(await w.tunnel(ECHO_VIP, PORT_UNKNOWN), { path: '/sniffed' });
    expect(res.status).toBe(200);
    expect(w.forwarder.calls[0]?.request.path).toBe('/sniffed');
    expect(w.forwarder.tcpCalls).toEqual([]);
  });

  it('serves an h2c client as HTTP/2', async () => {
    const w = await startWaypoint({}, cleanup);
    const session = h2cSession(await w.tunnel(ECHO_VIP, PORT_UNKNOWN), cleanup);
    const status = await new Promise((resolve, reject) => {
      const s = session.request({ ':path': '/h2' });
      s.on('response', (h) => resolve(h[':status']));
      s.on('error', reject);
      s.resume();
    });
    expect(status).toBe(200);
  });

  it('relays anything else as TCP, the first bytes included', async () => {
    const w = await startWaypoint({}, cleanup);
    expect(await exchange(await w.tunnel(ECHO_VIP, PORT_UNKNOWN), '\u0016\u0003\u0001 not http')).toBe('tcp:\u0016\u0003\u0001 not http');
    expect(w.forwarder.calls).toEqual([]);
  });

  it('relays a client that ended before detection finished, its bytes included', async () => {
    const w = await startWaypoint({}, cleanup);
    expect(await exchange(await w.tunnel(ECHO_VIP, PORT_UNKNOWN), 'GE')).toBe('tcp:GE');
  });

  it('treats a silent client (server-first protocol) as TCP at the detection deadline', async () => {
    const clock = new ManualClock({ now: Date.now() });
    const w = await startWaypoint({ clock, sniffLimits: { timeoutMs: 5000 } }, cleanup);
    const tunnel = await w.tunnel(ECHO_VIP, PORT_UNKNOWN);
    let got = '';
    tunnel.on('data', (d: Buffer) => (got += d.toString()));
    await systemClock.sleep(30);
    expect(w.forwarder.tcpCalls).toEqual([]);
    await clock.advance(5000);
    for (let i = 0; i < 100 && w.forwarder.tcpCalls.length === 0; i++) await systemClock.sleep(10);
    expect(w.forwarder.tcpCalls).toHaveLength(1);
    tunnel.write('late');
    for (let i = 0; i < 100 && got === ''; i++) await systemClock.sleep(10);
    expect(got).toBe('tcp:late');
  });

  it('gives up after the byte limit and relays as TCP', async () => {
    const w = await startWaypoint({ sniffLimits: { maxBytes: 64 } }, cleanup);
    const long = `GET /${'a'.repeat(100)}`;
    expect(await exchange(await w.tunnel(ECHO_VIP, PORT_UNKNOWN), long)).toBe(`tcp:${long}`);
  });
});
