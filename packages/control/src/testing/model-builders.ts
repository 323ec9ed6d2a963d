/**
 * Builders for tests and benchmarks of every package: valid model objects
 * (the shape the translators produce) with istiod's usual defaults,
 * overridable field by field, and store updates made of them.
 */
import type { Authorization, Match } from '../model/authorization.js';
import type { NetworkAddress, NetworkCidr } from '../model/ip.js';
import type { Service } from '../model/service.js';
import type { Workload, WorkloadServiceRef } from '../model/workload.js';
import type { AddressUpdate, PolicyUpdate } from '../store/types.js';
import type { Snapshot } from '../store/snapshot.js';
import { createStore } from '../store/store.js';

export function aWorkload(over: Partial<Workload> & { readonly uid: string }): Workload {
  const namespace = over.namespace ?? 'default';
  return {
    name: over.uid.split('/').pop() ?? over.uid,
    namespace,
    addresses: [],
    hostname: '',
    network: '',
    protocol: 'HBONE',
    identity: { trustDomain: 'cluster.local', namespace, serviceAccount: 'default' },
    waypoint: undefined,
    networkGateway: undefined,
    node: 'node-a',
    canonicalName: '',
    canonicalRevision: '',
    workloadType: 'pod',
    workloadName: '',
    nativeTunnel: false,
    applicationTunnel: undefined,
    services: [],
    authorizationPolicies: [],
    status: 'Healthy',
    clusterId: 'Kubernetes',
    locality: undefined,
    networkMode: 'Standard',
    capacity: 1,
    ...over,
  };
}

/** A `Workload.services` entry: service port → target port pairs. */
export function aServiceRef(key: string, ports: ReadonlyArray<readonly [number, number]> = [[80, 8080]]): WorkloadServiceRef {
  return { key, ports: ports.map(([servicePort, targetPort]) => ({ servicePort, targetPort, appProtocol: 'Unknown' })) };
}

export function aService(
  over: Partial<Service> & { readonly namespace: string; readonly hostname: string },
  ports: ReadonlyArray<readonly [number, number]> = [[80, 8080]],
): Service {
  return {
    name: over.hostname.split('.')[0] ?? over.hostname,
    vips: [],
    cidrVips: [],
    ports: ports.map(([servicePort, targetPort]) => ({ servicePort, targetPort, appProtocol: 'Unknown' as const })),
    subjectAltNames: [],
    waypoint: undefined,
    weightedWaypoints: [],
    loadBalancing: undefined,
    ipFamilies: 'Automatic',
    canonical: false,
    ingressUseWaypoint: false,
    visibility: 'Public',
    ...over,
  };
}

export function vip(address: string, network = ''): NetworkAddress {
  return { network, address };
}

export function cidrVip(address: string, prefixLength: number, network = ''): NetworkCidr {
  return { network, cidr: { address, prefixLength, family: address.includes(':') ? 6 : 4 } };
}

export function aPolicy(over: Partial<Authorization> & { readonly namespace: string; readonly name: string }): Authorization {
  return { scope: 'Namespace', action: 'Allow', dryRun: false, rules: [], ...over };
}

/** An AddressUpdate from workloads and services (in that order) plus removal names. */
export function addresses(
  items: ReadonlyArray<Workload | Service>,
  removals: readonly string[] = [],
): AddressUpdate {
  return {
    upserts: items.map((item) =>
      'uid' in item
        ? { name: item.uid, resource: { kind: 'workload', workload: item } as const }
        : { name: `${item.namespace}/${item.hostname}`, resource: { kind: 'service', service: item } as const },
    ),
    removals,
  };
}

export function policies(items: readonly Authorization[], removals: readonly string[] = []): PolicyUpdate {
  return { upserts: items.map((p) => ({ name: `${p.namespace}/${p.name}`, policy: p })), removals };
}

/** A policy Match with every list empty except those given. */
export function aMatch(over: Partial<Match> = {}): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    ...over,
  };
}

/** A real store snapshot holding exactly these resources (for planners' and bindings' table tests). */
export async function snapshotOf(
  items: ReadonlyArray<Workload | Service>,
  policies: readonly Authorization[] = [],
): Promise<Snapshot> {
  const store = createStore();
  await store.applyAddresses({
    upserts: items.map((item) =>
      'uid' in item
        ? { name: item.uid, resource: { kind: 'workload', workload: item } as const }
        : { name: `${item.namespace}/${item.hostname}`, resource: { kind: 'service', service: item } as const },
    ),
    removals: [],
  });
  await store.applyPolicies({ upserts: policies.map((p) => ({ name: `${p.namespace}/${p.name}`, policy: p })), removals: [] });
  return store.snapshot();
}
