import type { ApplicationTunnel, GatewayAddress, Service, Workload } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { aService, aWorkload, gwAddress, gwHostname, serviceRef, snapshotOf } from '../../test/model-fixtures.js';
import { illegalPorts } from '../ports.js';
import { parseAuthority } from '@ambient/dataplane';
import { destinationServiceFor, planInbound, type InboundInput } from './plan.js';

// ---- the world of ztunnel's test_find_inbound_upstream -----------------

const CLIENT_POD_IP = '10.0.0.1';
const SERVER_POD_IP = '10.0.0.2';
const WAYPOINT_POD_IP = '10.0.0.3';
const SERVER_SVC_IP = '10.10.0.1';
const WAYPOINT_SVC_IP = '10.10.0.2';
const SERVER_HOST = 'server.default.svc.cluster.local';
const WAYPOINT_HOST = 'waypoint.default.svc.cluster.local';
const PROXY_TUNNEL: ApplicationTunnel = { protocol: 'PROXY', port: 15088 };

type Attach = { readonly to: 'none' } | { readonly to: 'service' | 'workload'; readonly waypoint: GatewayAddress; readonly tunnel?: ApplicationTunnel };

function world(attach: Attach): Array<Workload | Service> {
  const svcWaypoint = attach.to === 'service' ? attach.waypoint : undefined;
  const wlWaypoint = attach.to === 'workload' ? attach.waypoint : undefined;
  const tunnel = attach.to === 'none' ? undefined : attach.tunnel;
  const mk = (name: string, ip: string, over: Partial<Workload> = {}) =>
    aWorkload({
      uid: `Kubernetes//Pod/default/${name}`,
      name,
      namespace: 'default',
      addresses: [ip],
      identity: { trustDomain: 'cluster.local', namespace: 'default', serviceAccount: name },
      services: name === 'client' ? [] : [serviceRef(`default/${name}.default.svc.cluster.local`, [])],
      ...over,
    });
  return [
    aService({ namespace: 'default', hostname: WAYPOINT_HOST, vips: [{ network: '', address: WAYPOINT_SVC_IP }] }, [[80, 8080]]),
    aService({ namespace: 'default', hostname: SERVER_HOST, vips: [{ network: '', address: SERVER_SVC_IP }], waypoint: svcWaypoint }, [[80, 8080]]),
    mk('waypoint', WAYPOINT_POD_IP, { applicationTunnel: tunnel }),
    mk('client', CLIENT_POD_IP),
    mk('server', SERVER_POD_IP, { waypoint: wlWaypoint }),
  ];
}

interface Case {
  readonly name: string;
  readonly attach?: Attach;
  readonly extra?: ReadonlyArray<Workload | Service>;
  /** Which workload this listener serves (the connection's local IP is its IP). */
  readonly local: string;
  readonly localIp?: string;
  readonly authority: string;
  readonly localhostAppTunnel?: boolean;
  readonly forwardedHost?: string;
  readonly want: Record<string, unknown>;
}

async function run(c: Case) {
  const items = [...world(c.attach ?? { to: 'none' }), ...(c.extra ?? [])];
  const snapshot = await snapshotOf(items);
  const local = items.find((i): i is Workload => 'uid' in i && i.name === c.local);
  if (local === undefined) throw new Error('no local workload');
  const authority = parseAuthority(c.authority);
  if (!authority.ok) throw new Error(authority.errors[0]?.reason);
  const input: InboundInput = {
    snapshot,
    localWorkload: local,
    localIp: c.localIp ?? local.addresses[0] ?? '',
    network: '',
    authority: authority.value,
    illegalPorts: illegalPorts({ socks5Enabled: false }),
    forwardedHost: c.forwardedHost,
    ...(c.localhostAppTunnel === undefined ? {} : { localhostAppTunnel: c.localhostAppTunnel }),
  };
  return planInbound(input);
}

const addr = (a: { ip: string; port: number } | undefined) => (a === undefined ? undefined : `${a.ip}:${a.port}`);
function summary(p: Awaited<ReturnType<typeof run>>): Record<string, unknown> {
  if (p.kind === 'reject') return { kind: p.kind, code: p.code, message: p.message };
  return {
    kind: p.kind,
    upstream: addr(p.upstream),
    target: addr(p.target),
    sandwich: p.sandwich,
    proxyProtocol: p.proxyProtocol,
    tunnelTarget: addr(p.tunnelTarget),
    bindLoopback: p.bindLoopback,
    service: p.destinationService?.hostname,
  };
}

const wpPod = gwAddress(WAYPOINT_POD_IP);
const wpVip = gwAddress(WAYPOINT_SVC_IP);
const wpHost = gwHostname('default', WAYPOINT_HOST);

const cases: Case[] = [
  // Regular traffic
  { name: 'to workload, no waypoint', local: 'server', authority: `${SERVER_POD_IP}:8080`, want: { kind: 'upstream', upstream: `${SERVER_POD_IP}:8080`, target: `${SERVER_POD_IP}:8080`, sandwich: false, proxyProtocol: false } },
  { name: 'service hostname (double HBONE inner request) → service target port', local: 'server', authority: `${SERVER_HOST}:80`, want: { upstream: `${SERVER_POD_IP}:8080`, service: SERVER_HOST } },
  { name: 'an IPv4-mapped local address is the same IP', local: 'server', localIp: `::ffff:${SERVER_POD_IP}`, authority: `${SERVER_POD_IP}:8080`, want: { upstream: `${SERVER_POD_IP}:8080` } },

  // Sandwich: to workload traffic
  { name: 'workload waypoint referenced by pod IP', attach: { to: 'workload', waypoint: wpPod }, local: 'waypoint', authority: `${SERVER_POD_IP}:8080`, want: { upstream: `${WAYPOINT_POD_IP}:8080`, sandwich: true } },
  { name: 'workload waypoint referenced by VIP', attach: { to: 'workload', waypoint: wpVip }, local: 'waypoint', authority: `${SERVER_POD_IP}:8080`, want: { upstream: `${WAYPOINT_POD_IP}:8080`, sandwich: true } },
  { name: 'workload waypoint referenced by hostname', attach: { to: 'workload', waypoint: wpHost }, local: 'waypoint', authority: `${SERVER_POD_IP}:8080`, want: { upstream: `${WAYPOINT_POD_IP}:8080`, sandwich: true } },
  {
    name: 'workload waypoint with a PROXY app tunnel → loopback:15088, PROXY names the pod',
    attach: { to: 'workload', waypoint: wpVip, tunnel: PROXY_TUNNEL },
    local: 'waypoint',
    authority: `${SERVER_POD_IP}:8080`,
    want: { upstream: '127.0.0.1:15088', target: `${WAYPOINT_POD_IP}:15088`, bindLoopback: true, proxyProtocol: true, tunnelTarget: `${SERVER_POD_IP}:8080`, sandwich: false },
  },
  {
    name: 'PROXY app tunnel with LOCALHOST_APP_TUNNEL=false → the pod IP',
    attach: { to: 'workload', waypoint: wpVip, tunnel: PROXY_TUNNEL },
    local: 'waypoint',
    authority: `${SERVER_POD_IP}:8080`,
    localhostAppTunnel: false,
    want: { upstream: `${WAYPOINT_POD_IP}:15088`, bindLoopback: false, proxyProtocol: true },
  },
  {
    name: 'a NONE app tunnel without a port keeps the target port and writes no PROXY header',
    attach: { to: 'workload', waypoint: wpVip, tunnel: { protocol: 'NONE', port: undefined } },
    local: 'waypoint',
    authority: `${SERVER_POD_IP}:8080`,
    want: { upstream: `${WAYPOINT_POD_IP}:8080`, proxyProtocol: false, bindLoopback: false, tunnelTarget: `${SERVER_POD_IP}:8080` },
  },
  // Sandwich: to service traffic
  { name: 'service waypoint referenced by pod IP', attach: { to: 'service', waypoint: wpPod }, local: 'waypoint', authority: `${SERVER_SVC_IP}:8080`, want: { upstream: `${WAYPOINT_POD_IP}:8080`, sandwich: true } },
  { name: 'service waypoint referenced by VIP', attach: { to: 'service', waypoint: wpVip }, local: 'waypoint', authority: `${SERVER_SVC_IP}:8080`, want: { upstream: `${WAYPOINT_POD_IP}:8080`, sandwich: true } },
  {
    name: 'service waypoint with a PROXY app tunnel → PROXY names the VIP',
    attach: { to: 'service', waypoint: wpVip, tunnel: PROXY_TUNNEL },
    local: 'waypoint',
    authority: `${SERVER_SVC_IP}:8080`,
    want: { upstream: '127.0.0.1:15088', tunnelTarget: `${SERVER_SVC_IP}:8080`, proxyProtocol: true },
  },
  {
    name: 'a canary (weighted) service waypoint is accepted too',
    extra: [aService({ namespace: 'default', hostname: 'canary.default.svc.cluster.local', vips: [{ network: '', address: '10.10.0.9' }], weightedWaypoints: [{ destination: wpVip, weight: 10 }] })],
    local: 'waypoint',
    authority: '10.10.0.9:8080',
    want: { sandwich: true },
  },

  // IP mismatch (400)
  { name: 'to server, authority is another IP', local: 'server', authority: `${CLIENT_POD_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'to a waypoint that is not attached', local: 'waypoint', authority: `${CLIENT_POD_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'service-attached waypoint, but the workload was addressed', attach: { to: 'service', waypoint: wpPod }, local: 'waypoint', authority: `${SERVER_POD_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'workload-attached waypoint, but the service was addressed', attach: { to: 'workload', waypoint: wpPod }, local: 'waypoint', authority: `${SERVER_SVC_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'an authority nobody owns', local: 'server', authority: '192.0.2.1:8080', want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'a waypoint service this workload is not an endpoint of', attach: { to: 'workload', waypoint: wpVip }, local: 'client', authority: `${SERVER_POD_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },
  { name: 'a waypoint attached to someone else', attach: { to: 'workload', waypoint: gwAddress(CLIENT_POD_IP) }, local: 'waypoint', authority: `${SERVER_POD_IP}:8080`, want: { kind: 'reject', code: 'IP_MISMATCH' } },

  // Hostname resolution (503)
  { name: 'an unknown hostname', local: 'server', authority: 'nope.default.svc.cluster.local:80', want: { kind: 'reject', code: 'NO_SERVICE_FOR_HOSTNAME' } },
  {
    name: 'a hostname not visible to our namespace',
    extra: [aService({ namespace: 'other', hostname: 'private.other.svc.cluster.local', visibility: 'Namespace' })],
    local: 'server',
    authority: 'private.other.svc.cluster.local:80',
    want: { kind: 'reject', code: 'NO_SERVICE_FOR_HOSTNAME' },
  },
  { name: 'a service port the service lacks', local: 'server', authority: `${SERVER_HOST}:81`, want: { kind: 'reject', code: 'NO_TARGET_PORT' } },
  {
    name: 'the service in our own namespace wins for a shared hostname',
    extra: [aService({ namespace: 'zzz', hostname: SERVER_HOST }, [[80, 7070]])],
    local: 'server',
    authority: `${SERVER_HOST}:80`,
    want: { upstream: `${SERVER_POD_IP}:8080` },
  },
  {
    name: 'a named port (service target 0) uses the workload’s own mapping',
    extra: [
      aService({ namespace: 'default', hostname: 'named.default.svc.cluster.local' }, [[80, 0]]),
      aWorkload({ uid: 'Kubernetes//Pod/default/named', name: 'named', namespace: 'default', addresses: ['10.0.0.8'], services: [serviceRef('default/named.default.svc.cluster.local', [[80, 8181]])] }),
    ],
    local: 'named',
    authority: 'named.default.svc.cluster.local:80',
    want: { upstream: '10.0.0.8:8181' },
  },
  {
    name: 'a named port without a workload mapping → NO_TARGET_PORT',
    extra: [aService({ namespace: 'default', hostname: 'named.default.svc.cluster.local' }, [[80, 0]])],
    local: 'client',
    authority: 'named.default.svc.cluster.local:80',
    want: { kind: 'reject', code: 'NO_TARGET_PORT' },
  },
  {
    name: 'the workload’s own mapping wins over the service target port',
    extra: [
      aWorkload({ uid: 'Kubernetes//Pod/default/mapped', name: 'mapped', namespace: 'default', addresses: ['10.0.0.7'], services: [serviceRef(`default/${SERVER_HOST}`, [[80, 9090]])] }),
    ],
    local: 'mapped',
    authority: `${SERVER_HOST}:80`,
    want: { upstream: '10.0.0.7:9090' },
  },
  {
    name: 'a hostname with a PROXY app tunnel → PROXY names the service VIP',
    attach: { to: 'service', waypoint: wpVip, tunnel: PROXY_TUNNEL },
    local: 'waypoint',
    authority: `${SERVER_HOST}:80`,
    want: { upstream: '127.0.0.1:15088', tunnelTarget: `${SERVER_SVC_IP}:80` },
  },
  {
    name: 'a hostname with an app tunnel but no VIP → reject',
    attach: { to: 'service', waypoint: wpVip, tunnel: PROXY_TUNNEL },
    extra: [aService({ namespace: 'default', hostname: 'headless.default.svc.cluster.local' }, [[80, 8080]])],
    local: 'waypoint',
    authority: 'headless.default.svc.cluster.local:80',
    want: { kind: 'reject', code: 'NO_SERVICE_FOR_HOSTNAME' },
  },

  // Self calls (503)
  { name: 'an IP authority on the HBONE port', local: 'server', authority: `${SERVER_POD_IP}:15008`, want: { kind: 'reject', code: 'SELF_CALL' } },
  { name: 'an IP authority on the outbound port', local: 'server', authority: `${SERVER_POD_IP}:15001`, want: { kind: 'reject', code: 'SELF_CALL' } },
  {
    name: 'a hostname whose target port is one of ours',
    extra: [aService({ namespace: 'default', hostname: 'sneaky.default.svc.cluster.local' }, [[80, 15006]])],
    local: 'server',
    authority: 'sneaky.default.svc.cluster.local:80',
    want: { kind: 'reject', code: 'SELF_CALL' },
  },
];

describe('planInbound (ztunnel validate_destination + find_inbound_upstream)', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    expect(summary(await run(c))).toMatchObject(c.want);
  });

  it('a mismatch names both addresses and the workload', async () => {
    const r = await run({ name: '', local: 'server', authority: `${CLIENT_POD_IP}:8080`, want: {} });
    expect(r.kind === 'reject' && r.message).toMatch(/10\.0\.0\.1:8080.*10\.0\.0\.2.*default\/server/);
  });
});

describe('destination service guess (metrics destination_service)', () => {
  const a = aService({ namespace: 'ns', hostname: 'a.ns.svc.cluster.local' }, [[80, 8080]]);
  const b = aService({ namespace: 'ns', hostname: 'b.ns.svc.cluster.local' }, [[90, 0]]);
  const unrelated = aService({ namespace: 'ns', hostname: 'x.ns.svc.cluster.local' }, [[80, 8080]]);
  const w = aWorkload({
    uid: 'Kubernetes//Pod/ns/w',
    namespace: 'ns',
    addresses: ['10.0.0.5'],
    services: [serviceRef('ns/a.ns.svc.cluster.local', []), serviceRef('ns/b.ns.svc.cluster.local', [[90, 9090]])],
  });

  it.each<[string, string | undefined, number, string | undefined]>([
    ['Forwarded host naming one of the workload’s services wins', 'b.ns.svc.cluster.local', 8080, 'b.ns.svc.cluster.local'],
    ['Forwarded host naming a service the workload does not back is ignored', 'x.ns.svc.cluster.local', 8080, 'a.ns.svc.cluster.local'],
    ['the service whose target port is the connection’s port', undefined, 8080, 'a.ns.svc.cluster.local'],
    ['a named port matched through the workload’s mapping', undefined, 9090, 'b.ns.svc.cluster.local'],
    ['no service uses the port', undefined, 7777, undefined],
  ])('%s', async (_name, host, port, want) => {
    const snapshot = await snapshotOf([a, b, unrelated, w]);
    expect(destinationServiceFor(w, host, port, snapshot)?.hostname).toBe(want);
  });
});
