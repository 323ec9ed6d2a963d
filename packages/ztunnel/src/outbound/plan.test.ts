import type { Service, Workload } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { aService, aWorkload, gwAddress, gwHostname, randomSequence, serviceRef, snapshotOf } from '../../test/model-fixtures.js';
import { illegalPorts } from '../ports.js';
import { formatAuthority as formatHboneAuthority, formatSocketAddress as formatAuthority } from '@ambient/dataplane';
import { planOutbound, type OutboundInput, type OutboundPlan } from './plan.js';

// ---- the world ---------------------------------------------------------

const SVC = 'ns/svc.ns.svc.cluster.local';
const SVC_HOST = 'svc.ns.svc.cluster.local';

const client = aWorkload({
  uid: 'Kubernetes//Pod/ns/client',
  namespace: 'ns',
  addresses: ['10.0.0.1'],
  identity: { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'client' },
  locality: { region: 'r1', zone: 'z1', subzone: '' },
  node: 'node-a',
});

const pod = (name: string, over: Partial<Workload> = {}): Workload =>
  aWorkload({
    uid: `Kubernetes//Pod/ns/${name}`,
    namespace: 'ns',
    identity: { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: name },
    services: [serviceRef(SVC)],
    ...over,
  });

const svc = (over: Partial<Service> = {}, ports: ReadonlyArray<readonly [number, number]> = [[80, 8080]]): Service =>
  aService(
    { namespace: 'ns', hostname: SVC_HOST, vips: [{ network: '', address: '10.96.0.1' }], subjectAltNames: ['spiffe://cluster.local/ns/ns/sa/svc-san'], ...over },
    ports,
  );

const server = pod('server', { addresses: ['10.0.0.2'] });
const serverTcp = pod('server', { addresses: ['10.0.0.2'], protocol: 'TCP' });

// A waypoint: its own service on 15008, one pod.
const WP_SVC = 'ns/waypoint.ns.svc.cluster.local';
const waypointPod = aWorkload({
  uid: 'Kubernetes//Pod/ns/waypoint',
  namespace: 'ns',
  addresses: ['10.0.0.10'],
  identity: { trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: 'waypoint' },
  services: [serviceRef(WP_SVC, [[15008, 15008]])],
});
const waypointSvc = aService(
  { namespace: 'ns', hostname: 'waypoint.ns.svc.cluster.local', vips: [{ network: '', address: '10.96.0.10' }], subjectAltNames: ['spiffe://cluster.local/ns/ns/sa/waypoint-san'] },
  [[15008, 15008]],
);
const wpByHost = gwHostname('ns', 'waypoint.ns.svc.cluster.local');

// A remote network behind an east-west gateway.
const ewGateway = aWorkload({
  uid: 'Kubernetes//Pod/istio-system/ew',
  namespace: 'istio-system',
  network: 'remote',
  addresses: ['10.22.1.1'],
  identity: { trustDomain: 'cluster.local', namespace: 'istio-system', serviceAccount: 'ew' },
});
const remotePod = pod('remote', { network: 'remote', addresses: [], networkGateway: gwAddress('10.22.1.1', 15009, 'remote') });

const ids = (plan: { readonly expectedIdentities?: readonly { namespace: string; serviceAccount: string }[] }) =>
  (plan.expectedIdentities ?? []).map((i) => `${i.namespace}/${i.serviceAccount}`);

/** A compact, comparable view of a plan. */
function summary(plan: OutboundPlan): Record<string, unknown> {
  const idList = (l: readonly { namespace: string; serviceAccount: string }[]) => l.map((i) => `${i.namespace}/${i.serviceAccount}`);
  switch (plan.kind) {
    case 'hbone':
      return {
        kind: plan.kind,
        via: plan.via,
        nextHop: formatAuthority(plan.nextHop),
        authority: formatHboneAuthority(plan.authority),
        ids: ids(plan),
        workload: plan.destination.workload?.uid,
        service: plan.destination.service?.hostname,
      };
    case 'double-hbone':
      return {
        kind: plan.kind,
        via: plan.via,
        gateway: formatAuthority(plan.gateway),
        gatewayIds: idList(plan.gatewayIdentities),
        innerAuthority: formatHboneAuthority(plan.innerAuthority),
        finalIds: idList(plan.finalIdentities),
        workload: plan.destination.workload?.uid,
        service: plan.destination.service?.hostname,
        remote: plan.remoteWorkload.uid,
      };
    case 'tcp':
      return { kind: plan.kind, nextHop: formatAuthority(plan.nextHop), workload: plan.destination.workload?.uid, service: plan.destination.service?.hostname };
    case 'passthrough':
      return { kind: plan.kind, nextHop: formatAuthority(plan.nextHop), reason: plan.reason };
    case 'reject':
      return { kind: plan.kind, code: plan.code, message: plan.message };
  }
}

interface Case {
  readonly name: string;
  readonly items: ReadonlyArray<Workload | Service>;
  readonly to: string;
  readonly from?: string;
  readonly source?: Workload;
  readonly random?: number[];
  readonly socks5?: boolean;
  readonly want: Record<string, unknown>;
  /** Substring the reject message must contain. */
  readonly says?: string;
}

async function run(c: Case): Promise<OutboundPlan> {
  const source = c.source ?? client;
  const snapshot = await snapshotOf([source, ...c.items.filter((i) => !('uid' in i) || i.uid !== source.uid)]);
  const [ip, port] = splitHostPort(c.to);
  const input: OutboundInput = {
    snapshot,
    source,
    sourceNetwork: source.network,
    sourceIp: c.from ?? source.addresses[0] ?? '10.0.0.1',
    origDst: { ip, port },
    illegalPorts: illegalPorts({ socks5Enabled: c.socks5 ?? false }),
    random: randomSequence(...(c.random ?? [0])),
  };
  return planOutbound(input);
}

function splitHostPort(text: string): [string, number] {
  const m = /^\[(.+)\]:(\d+)$/.exec(text) ?? /^(.+):(\d+)$/.exec(text);
  if (m?.[1] === undefined || m[2] === undefined) throw new Error(`bad address in test: ${text}`);
  return [m[1], Number(m[2])];
}

const HBONE_DIRECT = (nextHop: string, authority: string, extra: Record<string, unknown> = {}) => ({ kind: 'hbone', via: 'direct', nextHop, authority, ...extra });
const NO_UPSTREAM = { kind: 'reject', code: 'NO_HEALTHY_UPSTREAM' };

// ---- the table ---------------------------------------------------------

const cases: Case[] = [
  // Step 0: self calls
  { name: 'loopback to the outbound port is a self call', items: [], to: '127.0.0.1:15001', want: { kind: 'reject', code: 'SELF_CALL' }, says: "ztunnel's own ports" },
  { name: 'loopback to the HBONE port is a self call', items: [], to: '127.0.0.5:15008', want: { kind: 'reject', code: 'SELF_CALL' } },
  { name: 'IPv6 loopback to the plaintext port is a self call', items: [], to: '[::1]:15006', want: { kind: 'reject', code: 'SELF_CALL' } },
  { name: 'SOCKS5 port is a self call only when SOCKS5 is on', items: [], to: '127.0.0.1:15080', socks5: true, want: { kind: 'reject', code: 'SELF_CALL' } },
  { name: 'SOCKS5 port with SOCKS5 off passes through', items: [], to: '127.0.0.1:15080', want: { kind: 'passthrough', reason: 'unknown-destination' } },
  { name: 'loopback on an application port is not a self call', items: [], to: '127.0.0.1:8080', want: { kind: 'passthrough', nextHop: '127.0.0.1:8080' } },
  { name: 'a non-IP original destination is refused', items: [], to: 'nope:80', want: { kind: 'reject', code: 'INTERNAL' } },

  // Unknown destinations and passthrough services
  { name: 'an unknown IP passes through untouched', items: [server], to: '1.2.3.4:80', want: { kind: 'passthrough', nextHop: '1.2.3.4:80', reason: 'unknown-destination' } },
  {
    name: 'a PASSTHROUGH service passes through to the original destination',
    items: [server, svc({ loadBalancing: { mode: 'Passthrough', routingPreference: [], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    want: { kind: 'passthrough', nextHop: '10.96.0.1:80', reason: 'passthrough-service' },
  },
  {
    name: 'a PASSTHROUGH service with a waypoint still goes to the waypoint',
    items: [server, waypointPod, waypointSvc, svc({ waypoint: gwAddress('10.0.0.10'), loadBalancing: { mode: 'Passthrough', routingPreference: [], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    want: { kind: 'hbone', via: 'service-waypoint', nextHop: '10.0.0.10:15008', authority: '10.96.0.1:80' },
  },
  {
    name: 'a service not visible to the client namespace is unknown (passthrough)',
    items: [server, svc({ namespace: 'other', visibility: 'Namespace' })],
    to: '10.96.0.1:80',
    want: { kind: 'passthrough', reason: 'unknown-destination' },
  },

  // Service VIP, load balanced, direct
  {
    name: 'service VIP → HBONE to the endpoint: pod:15008, authority pod:targetPort, SANs = service SANs + workload identity',
    items: [server, svc()],
    to: '10.96.0.1:80',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080', { ids: ['ns/svc-san', 'ns/server'], workload: server.uid, service: SVC_HOST }),
  },
  {
    name: 'service VIP with a TCP endpoint → plain TCP to pod:targetPort',
    items: [serverTcp, svc()],
    to: '10.96.0.1:80',
    want: { kind: 'tcp', nextHop: '10.0.0.2:8080', workload: server.uid, service: SVC_HOST },
  },
  { name: 'service VIP without endpoints → NO_HEALTHY_UPSTREAM', items: [svc()], to: '10.96.0.1:80', want: NO_UPSTREAM, says: 'no healthy endpoint' },
  { name: 'service VIP on a port the service lacks → NO_HEALTHY_UPSTREAM', items: [server, svc()], to: '10.96.0.1:81', want: NO_UPSTREAM, says: 'has no port 81' },
  {
    name: 'unhealthy endpoints are skipped',
    items: [pod('sick', { addresses: ['10.0.0.3'], status: 'Unhealthy' }), server, svc()],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: server.uid },
  },
  {
    name: 'only unhealthy endpoints → NO_HEALTHY_UPSTREAM',
    items: [pod('sick', { addresses: ['10.0.0.3'], status: 'Unhealthy' }), svc()],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
  },
  {
    name: 'health policy AllowAll uses unhealthy endpoints',
    items: [pod('sick', { addresses: ['10.0.0.3'], status: 'Unhealthy' }), svc({ loadBalancing: { mode: 'Standard', routingPreference: [], healthPolicy: 'AllowAll' } })],
    to: '10.96.0.1:80',
    want: HBONE_DIRECT('10.0.0.3:15008', '10.0.0.3:8080'),
  },

  // Target port resolution
  {
    name: 'the endpoint port map wins over the service target port',
    items: [pod('server', { addresses: ['10.0.0.2'], services: [serviceRef(SVC, [[80, 9090]])] }), svc()],
    to: '10.96.0.1:80',
    want: { authority: '10.0.0.2:9090' },
  },
  {
    name: 'a named service port (target 0) uses the endpoint mapping',
    items: [pod('server', { addresses: ['10.0.0.2'], services: [serviceRef(SVC, [[80, 8081]])] }), svc({}, [[80, 0]])],
    to: '10.96.0.1:80',
    want: { authority: '10.0.0.2:8081' },
  },
  {
    name: 'a named service port with no endpoint mapping has no usable endpoint',
    items: [pod('server', { addresses: ['10.0.0.2'], services: [serviceRef(SVC, [])] }), svc({}, [[80, 0]])],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
  },
  {
    name: 'an endpoint mapping of 0 falls back to the service target port',
    items: [pod('server', { addresses: ['10.0.0.2'], services: [serviceRef(SVC, [[80, 0]])] }), svc()],
    to: '10.96.0.1:80',
    want: { authority: '10.0.0.2:8080' },
  },

  // Workload IPs
  {
    name: 'workload IP → HBONE direct on the same port, SANs = workload identity',
    items: [server],
    to: '10.0.0.2:8080',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080', { ids: ['ns/server'], workload: server.uid, service: undefined }),
  },
  { name: 'TCP workload IP → plain TCP', items: [serverTcp], to: '10.0.0.2:8080', want: { kind: 'tcp', nextHop: '10.0.0.2:8080', workload: server.uid } },
  {
    name: 'IPv6 workload: authority and next hop in brackets',
    items: [pod('server', { addresses: ['fd00::2'] })],
    to: '[fd00::2]:8080',
    want: HBONE_DIRECT('[fd00::2]:15008', '[fd00::2]:8080'),
  },
  {
    name: 'an IPv4-mapped original destination is treated as IPv4',
    items: [server],
    to: '[::ffff:10.0.0.2]:8080',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },

  // Workload waypoints
  {
    name: 'workload IP with a waypoint → HBONE to the waypoint, authority = original destination',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: gwAddress('10.0.0.10') }), waypointPod],
    to: '10.0.0.2:8080',
    want: { kind: 'hbone', via: 'workload-waypoint', nextHop: '10.0.0.10:15008', authority: '10.0.0.2:8080', ids: ['ns/waypoint'], workload: waypointPod.uid, service: undefined },
  },
  {
    name: 'workload waypoint by hostname → load-balanced over the waypoint service, SANs = waypoint service SANs + identity',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: wpByHost }), waypointPod, waypointSvc],
    to: '10.0.0.2:8080',
    want: { kind: 'hbone', via: 'workload-waypoint', nextHop: '10.0.0.10:15008', authority: '10.0.0.2:8080', ids: ['ns/waypoint-san', 'ns/waypoint'] },
  },
  {
    name: 'traffic from the destination’s own waypoint goes direct (no second traversal)',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: gwAddress('10.0.0.10') }), waypointPod],
    source: waypointPod,
    from: '10.0.0.10',
    to: '10.0.0.2:8080',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },
  {
    name: 'same identity as the waypoint but another source IP still goes through the waypoint',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: gwAddress('10.0.0.10') }), waypointPod],
    source: waypointPod,
    from: '10.0.0.99',
    to: '10.0.0.2:8080',
    want: { via: 'workload-waypoint' },
  },
  {
    name: 'from-waypoint check through the waypoint service (hostname)',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: wpByHost }), waypointPod, waypointSvc],
    source: waypointPod,
    from: '10.0.0.10',
    to: '10.0.0.2:8080',
    want: { via: 'direct' },
  },
  {
    name: 'service-addressed traffic ignores the endpoint’s workload waypoint',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: gwAddress('10.0.0.10') }), waypointPod, svc()],
    to: '10.96.0.1:80',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },
  {
    name: 'a waypoint that does not exist → reject',
    items: [pod('server', { addresses: ['10.0.0.2'], waypoint: gwHostname('ns', 'gone.ns.svc.cluster.local') })],
    to: '10.0.0.2:8080',
    want: NO_UPSTREAM,
    says: 'waypoint ns/gone.ns.svc.cluster.local not found',
  },
  {
    name: 'a waypoint known only by hostname needs DNS → reject saying so',
    items: [
      pod('server', { addresses: ['10.0.0.2'], waypoint: gwHostname('ns', 'wp.example.com') }),
      aWorkload({ uid: 'Kubernetes//WorkloadEntry/ns/wp', namespace: 'ns', hostname: 'wp.example.com' }),
    ],
    to: '10.0.0.2:8080',
    want: NO_UPSTREAM,
    says: 'DNS',
  },

  // Service waypoints
  {
    name: 'service VIP with a waypoint (hostname) → HBONE to the waypoint pod, authority = VIP:port, intended service kept',
    items: [server, waypointPod, waypointSvc, svc({ waypoint: wpByHost })],
    to: '10.96.0.1:80',
    want: {
      kind: 'hbone',
      via: 'service-waypoint',
      nextHop: '10.0.0.10:15008',
      authority: '10.96.0.1:80',
      ids: ['ns/waypoint-san', 'ns/waypoint'],
      workload: waypointPod.uid,
      service: SVC_HOST,
    },
  },
  {
    name: 'service waypoint addressed by the waypoint service VIP',
    items: [server, waypointPod, waypointSvc, svc({ waypoint: gwAddress('10.96.0.10') })],
    to: '10.96.0.1:80',
    want: { via: 'service-waypoint', nextHop: '10.0.0.10:15008', ids: ['ns/waypoint-san', 'ns/waypoint'] },
  },
  {
    name: 'a service waypoint is used even when the service has no endpoints',
    items: [waypointPod, waypointSvc, svc({ waypoint: wpByHost })],
    to: '10.96.0.1:80',
    want: { via: 'service-waypoint' },
  },
  {
    name: 'waypoint service without port 15008: allowed for an application-tunnel waypoint (port = 15008)',
    items: [
      server,
      aWorkload({ ...waypointPod, services: [serviceRef(WP_SVC, [])], applicationTunnel: { protocol: 'PROXY', port: 15088 } }),
      ({ ...waypointSvc, ports: [{ servicePort: 80, targetPort: 80, appProtocol: 'Unknown' }] } satisfies Service),
      svc({ waypoint: wpByHost }),
    ],
    to: '10.96.0.1:80',
    want: { via: 'service-waypoint', nextHop: '10.0.0.10:15008' },
  },
  {
    name: 'waypoint service without port 15008 and no application tunnel → reject',
    items: [server, aWorkload({ ...waypointPod, services: [serviceRef(WP_SVC, [])] }), ({ ...waypointSvc, ports: [{ servicePort: 80, targetPort: 80, appProtocol: 'Unknown' }] } satisfies Service), svc({ waypoint: wpByHost })],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
    says: 'waypoint ns/waypoint.ns.svc.cluster.local not found',
  },
  {
    name: 'weighted waypoints: random 0.1 of [75, 25] picks the first',
    items: [server, waypointPod, aWorkload({ ...waypointPod, uid: 'Kubernetes//Pod/ns/canary', addresses: ['10.0.0.11'], services: [] }), svc({ weightedWaypoints: [{ destination: gwAddress('10.0.0.10'), weight: 75 }, { destination: gwAddress('10.0.0.11'), weight: 25 }] })],
    to: '10.96.0.1:80',
    random: [0.1],
    want: { nextHop: '10.0.0.10:15008' },
  },
  {
    name: 'weighted waypoints: random 0.9 of [75, 25] picks the second',
    items: [server, waypointPod, aWorkload({ ...waypointPod, uid: 'Kubernetes//Pod/ns/canary', addresses: ['10.0.0.11'], services: [] }), svc({ weightedWaypoints: [{ destination: gwAddress('10.0.0.10'), weight: 75 }, { destination: gwAddress('10.0.0.11'), weight: 25 }] })],
    to: '10.96.0.1:80',
    random: [0.9],
    want: { nextHop: '10.0.0.11:15008' },
  },
  {
    name: 'weighted waypoints: weight 0 is never picked',
    items: [server, waypointPod, aWorkload({ ...waypointPod, uid: 'Kubernetes//Pod/ns/canary', addresses: ['10.0.0.11'], services: [] }), svc({ weightedWaypoints: [{ destination: gwAddress('10.0.0.10'), weight: 0 }, { destination: gwAddress('10.0.0.11'), weight: 100 }] })],
    to: '10.96.0.1:80',
    random: [0],
    want: { nextHop: '10.0.0.11:15008' },
  },
  {
    name: 'weighted waypoints all 0: fall back to the single waypoint field',
    items: [server, waypointPod, aWorkload({ ...waypointPod, uid: 'Kubernetes//Pod/ns/canary', addresses: ['10.0.0.11'], services: [] }), svc({ waypoint: gwAddress('10.0.0.10'), weightedWaypoints: [{ destination: gwAddress('10.0.0.11'), weight: 0 }] })],
    to: '10.96.0.1:80',
    want: { nextHop: '10.0.0.10:15008' },
  },
  {
    name: 'weighted waypoints all 0 and no waypoint: no waypoint at all',
    items: [server, svc({ weightedWaypoints: [{ destination: gwAddress('10.0.0.11'), weight: 0 }] })],
    to: '10.96.0.1:80',
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },

  // Other networks: double HBONE
  {
    name: 'endpoint on a remote network → double HBONE through its gateway (by IP): outer to gw:15009, authority hostname:servicePort',
    items: [remotePod, ewGateway, svc()],
    to: '10.96.0.1:80',
    want: {
      kind: 'double-hbone',
      via: 'direct',
      gateway: '10.22.1.1:15009',
      gatewayIds: ['istio-system/ew'],
      innerAuthority: `${SVC_HOST}:80`,
      finalIds: ['ns/svc-san'],
      workload: ewGateway.uid,
      service: SVC_HOST,
      remote: remotePod.uid,
    },
  },
  {
    name: 'network gateway by hostname → load-balanced over the gateway service; its SANs are expected too',
    items: [
      pod('remote', { network: 'remote', addresses: [], networkGateway: gwHostname('istio-system', 'ew.istio-system.svc.cluster.local', 15009) }),
      aWorkload({ ...ewGateway, network: '', addresses: ['10.0.0.20'], services: [serviceRef('istio-system/ew.istio-system.svc.cluster.local', [[15009, 15009]])] }),
      aService({ namespace: 'istio-system', hostname: 'ew.istio-system.svc.cluster.local', subjectAltNames: ['spiffe://cluster.local/ns/istio-system/sa/ew-san'] }, [[15009, 15009]]),
      svc(),
    ],
    to: '10.96.0.1:80',
    want: { kind: 'double-hbone', gateway: '10.0.0.20:15009', gatewayIds: ['istio-system/ew-san', 'istio-system/ew'], innerAuthority: `${SVC_HOST}:80` },
  },
  {
    name: 'a remote endpoint without a network gateway is not a candidate',
    items: [server, pod('remote', { network: 'remote', addresses: ['10.30.0.2'] }), svc()],
    to: '10.96.0.1:80',
    random: [0.99],
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },
  {
    name: 'only remote endpoints without a network gateway → NO_HEALTHY_UPSTREAM',
    items: [pod('remote', { network: 'remote', addresses: ['10.30.0.2'] }), svc()],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
  },
  {
    name: 'a network gateway that does not exist → reject',
    items: [pod('remote', { network: 'remote', addresses: [], networkGateway: gwAddress('10.22.9.9', 15009, 'remote') }), svc()],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
    says: 'network gateway remote/10.22.9.9 not found',
  },
  {
    name: 'a service waypoint on a remote network → double HBONE through the waypoint’s gateway, final SANs = waypoint service SANs',
    items: [
      server,
      ewGateway,
      aWorkload({ ...waypointPod, network: 'remote', addresses: [], networkGateway: gwAddress('10.22.1.1', 15009, 'remote') }),
      waypointSvc,
      svc({ waypoint: wpByHost }),
    ],
    to: '10.96.0.1:80',
    want: { kind: 'double-hbone', via: 'service-waypoint', gateway: '10.22.1.1:15009', finalIds: ['ns/waypoint-san'], innerAuthority: `${SVC_HOST}:80`, service: SVC_HOST, remote: waypointPod.uid },
  },
  {
    name: 'FAILOVER by network: a healthy local endpoint is preferred over the remote one',
    items: [remotePod, ewGateway, server, svc({ loadBalancing: { mode: 'Failover', routingPreference: ['Network'], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    random: [0.99],
    want: HBONE_DIRECT('10.0.0.2:15008', '10.0.0.2:8080'),
  },
  {
    name: 'FAILOVER by network: with the local endpoint unhealthy, fail over to the remote network',
    items: [remotePod, ewGateway, pod('server', { addresses: ['10.0.0.2'], status: 'Unhealthy' }), svc({ loadBalancing: { mode: 'Failover', routingPreference: ['Network'], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    want: { kind: 'double-hbone', remote: remotePod.uid },
  },

  // Locality
  ...(['Strict', 'Failover'] as const).map<Case>((mode) => ({
    name: `${mode} [Region, Zone]: only the endpoint in the client's zone`,
    items: [
      pod('far', { addresses: ['10.0.0.3'], locality: { region: 'r2', zone: 'z1', subzone: '' } }),
      pod('near', { addresses: ['10.0.0.4'], locality: { region: 'r1', zone: 'z1', subzone: '' } }),
      pod('mid', { addresses: ['10.0.0.5'], locality: { region: 'r1', zone: 'z2', subzone: '' } }),
      svc({ loadBalancing: { mode, routingPreference: ['Region', 'Zone'], healthPolicy: 'OnlyHealthy' } }),
    ],
    to: '10.96.0.1:80',
    random: [0.99],
    want: { workload: 'Kubernetes//Pod/ns/near' },
  })),
  {
    name: 'FAILOVER [Region, Zone]: without a same-zone endpoint, the same region wins',
    items: [
      pod('far', { addresses: ['10.0.0.3'], locality: { region: 'r2', zone: 'z1', subzone: '' } }),
      pod('mid', { addresses: ['10.0.0.5'], locality: { region: 'r1', zone: 'z2', subzone: '' } }),
      svc({ loadBalancing: { mode: 'Failover', routingPreference: ['Region', 'Zone'], healthPolicy: 'OnlyHealthy' } }),
    ],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: 'Kubernetes//Pod/ns/mid' },
  },
  {
    name: 'STRICT [Region, Zone]: without a same-zone endpoint, nothing',
    items: [
      pod('mid', { addresses: ['10.0.0.5'], locality: { region: 'r1', zone: 'z2', subzone: '' } }),
      svc({ loadBalancing: { mode: 'Strict', routingPreference: ['Region', 'Zone'], healthPolicy: 'OnlyHealthy' } }),
    ],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
    says: 'strict routing preference',
  },
  {
    name: 'STRICT [Node]: only endpoints on the client’s node',
    items: [pod('other-node', { addresses: ['10.0.0.3'], node: 'node-b' }), pod('same-node', { addresses: ['10.0.0.4'], node: 'node-a' }), svc({ loadBalancing: { mode: 'Strict', routingPreference: ['Node'], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: 'Kubernetes//Pod/ns/same-node' },
  },
  {
    name: 'FAILOVER [Cluster]: the client’s cluster first',
    items: [pod('c2', { addresses: ['10.0.0.3'], clusterId: 'c2' }), pod('c1', { addresses: ['10.0.0.4'] }), svc({ loadBalancing: { mode: 'Failover', routingPreference: ['Cluster'], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: 'Kubernetes//Pod/ns/c1' },
  },
  {
    name: 'STANDARD mode ignores locality',
    items: [pod('far', { addresses: ['10.0.0.3'], locality: { region: 'r2', zone: 'z9', subzone: '' } }), pod('near', { addresses: ['10.0.0.4'], locality: client.locality }), svc({ loadBalancing: { mode: 'Standard', routingPreference: ['Region'], healthPolicy: 'OnlyHealthy' } })],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: 'Kubernetes//Pod/ns/far' },
  },

  // Capacity
  {
    name: 'capacity 0 is never chosen while another endpoint has capacity',
    items: [pod('zero', { addresses: ['10.0.0.3'], capacity: 0 }), pod('one', { addresses: ['10.0.0.4'] }), svc()],
    to: '10.96.0.1:80',
    random: [0],
    want: { workload: 'Kubernetes//Pod/ns/one' },
  },
  { name: 'all capacities 0 → no upstream (as ztunnel)', items: [pod('zero', { addresses: ['10.0.0.3'], capacity: 0 }), svc()], to: '10.96.0.1:80', want: NO_UPSTREAM, says: 'capacity 0' },
  {
    name: 'capacity weights: [1, 3] with random 0.2 picks the first',
    items: [pod('a', { addresses: ['10.0.0.3'], capacity: 1 }), pod('b', { addresses: ['10.0.0.4'], capacity: 3 }), svc()],
    to: '10.96.0.1:80',
    random: [0.2],
    want: { workload: 'Kubernetes//Pod/ns/a' },
  },
  {
    name: 'capacity weights: [1, 3] with random 0.3 picks the second',
    items: [pod('a', { addresses: ['10.0.0.3'], capacity: 1 }), pod('b', { addresses: ['10.0.0.4'], capacity: 3 }), svc()],
    to: '10.96.0.1:80',
    random: [0.3],
    want: { workload: 'Kubernetes//Pod/ns/b' },
  },

  // Address family selection
  {
    name: 'dual-stack endpoint, IPv4 VIP: the IPv4 address',
    items: [pod('server', { addresses: ['10.0.0.2', 'fd00::2'] }), svc({ ipFamilies: 'Dual', vips: [{ network: '', address: '10.96.0.1' }, { network: '', address: 'fd00:96::1' }] })],
    to: '10.96.0.1:80',
    want: { authority: '10.0.0.2:8080' },
  },
  {
    name: 'dual-stack endpoint, IPv6 VIP: the IPv6 address',
    items: [pod('server', { addresses: ['10.0.0.2', 'fd00::2'] }), svc({ ipFamilies: 'Dual', vips: [{ network: '', address: '10.96.0.1' }, { network: '', address: 'fd00:96::1' }] })],
    to: '[fd00:96::1]:80',
    want: { authority: '[fd00::2]:8080', nextHop: '[fd00::2]:15008' },
  },
  {
    name: 'an IPv6-only service uses the IPv6 address even for an IPv4 VIP',
    items: [pod('server', { addresses: ['10.0.0.2', 'fd00::2'] }), svc({ ipFamilies: 'IPv6' })],
    to: '10.96.0.1:80',
    want: { authority: '[fd00::2]:8080' },
  },
  {
    name: 'an endpoint known only by hostname needs DNS → reject saying so',
    items: [pod('vm', { hostname: 'vm.example.com' }), svc()],
    to: '10.96.0.1:80',
    want: NO_UPSTREAM,
    says: 'DNS',
  },
];

describe('planOutbound (ztunnel build_request)', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const plan = await run(c);
    expect(summary(plan)).toMatchObject(c.want);
    if (c.says !== undefined) expect(plan.kind === 'reject' ? plan.message : '').toContain(c.says);
  });

  it('picks between endpoints by the injected random value', async () => {
    const items = [pod('a', { addresses: ['10.0.0.3'] }), pod('b', { addresses: ['10.0.0.4'] }), svc()];
    const picked = async (r: number) => summary(await run({ name: '', items, to: '10.96.0.1:80', random: [r], want: {} }))['workload'];
    expect(await picked(0)).toBe('Kubernetes//Pod/ns/a');
    expect(await picked(0.49)).toBe('Kubernetes//Pod/ns/a');
    expect(await picked(0.5)).toBe('Kubernetes//Pod/ns/b');
    expect(await picked(0.999)).toBe('Kubernetes//Pod/ns/b');
  });
});
