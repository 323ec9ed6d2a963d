import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import { loadStaticConfig, type LoadedStaticConfig } from '../local/static-config.js';
import { meshToDump, policyToDump, serviceToDump, workloadToDump } from './config-dump.js';

const MESH_YAML = readFileSync(new URL('../../examples/mesh.yaml', import.meta.url), 'utf8');

// Exercises every key the dump prints.
const RICH_YAML = `
workloads:
  - uid: cluster1//v1/Pod/demo/server-0
    name: server-0
    namespace: demo
    workloadIps: ["10.0.0.5", "2001:db8::1"]
    waypoint: {destination: "demo/waypoint.demo.svc.cluster.local", hboneMtlsPort: 15008}
    networkGateway: {destination: "net-b/192.168.1.1", hboneMtlsPort: 15009}
    protocol: HBONE
    networkMode: HostNetwork
    trustDomain: example.org
    serviceAccount: server
    network: net-a
    workloadName: server
    workloadType: pod
    canonicalName: server
    canonicalRevision: "1.10"
    hostname: server-0.example.com
    node: node-a
    nativeTunnel: true
    applicationTunnel: {protocol: PROXY, port: 15088}
    authorizationPolicies: ["demo/deny-debug"]
    status: Unhealthy
    clusterId: cluster1
    locality: {region: eu, zone: eu-1, subzone: rack-3}
    services:
      "demo/echo.demo.svc.cluster.local": {80: 8080, 9090: 0}
      "demo/staged.demo.svc.cluster.local": {443: 8443}
    capacity: 0
  - uid: Kubernetes//Pod/demo/client-0
    name: client-0
    namespace: demo
    workloadIps: ["10.0.0.6"]
    applicationTunnel: {protocol: NONE}
    services:
      "demo/*.example.com": {}
services:
  - name: echo
    namespace: demo
    hostname: echo.demo.svc.cluster.local
    vips: ["/10.96.0.1", "net-a/fd00::1"]
    cidrVips: [{network: net-a, cidr: "10.200.0.0/16"}]
    ports: {9090: 0, 80: 8080}
    subjectAltNames: ["spiffe://example.org/ns/demo/sa/server"]
    waypoint: {destination: "/10.0.0.99", hboneMtlsPort: 15008}
    weightedWaypoints:
      - {destination: {destination: "demo/waypoint.demo.svc.cluster.local", hboneMtlsPort: 15008}, weight: 90}
      - {destination: {destination: "demo/canary.demo.svc.cluster.local", hboneMtlsPort: 15008}, weight: 10}
    loadBalancer: {routingPreferences: [Network, Region], mode: Failover, healthPolicy: AllowAll}
    ipFamilies: Dual
    canonical: true
    visibility: Namespace
    ingressUseWaypoint: true
  - name: wild
    namespace: demo
    hostname: "*.example.com"
    vips: []
    ports: {}
policies:
  - name: deny-debug
    namespace: demo
    scope: WorkloadSelector
    action: Deny
    dryRun: true
    rules:
      - - - namespaces: [!Exact demo]
            notNamespaces: [!Prefix kube-]
            principals: [!Suffix /sa/client]
            notPrincipals: [!Presence []]
            serviceAccounts: [{namespace: demo, serviceAccount: client}]
            notServiceAccounts: [{namespace: demo, serviceAccount: blocked}]
            sourceIps: ["10.1.0.0/16"]
            notSourceIps: ["10.1.2.3"]
            destinationIps: ["fd00::/8"]
            notDestinationIps: ["0.0.0.0/0"]
            destinationPorts: [9000]
            notDestinationPorts: [15000]
          - {}
        - []
      - []
  - name: allow-all-ns
    namespace: istio-system
    scope: Global
    action: Allow
    dryRun: false
    rules: [[[{destinationPorts: [80]}]]]
`;

function load(text: string): LoadedStaticConfig {
  const r = loadStaticConfig(text, 'test.yaml');
  if (!r.ok) throw new Error(r.errors.map((e) => `${e.field}: ${e.reason}`).join('\n'));
  return r.value;
}

interface Mesh {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
}

function mesh(c: LoadedStaticConfig): Mesh {
  return {
    workloads: c.update.upserts.flatMap((u) => (u.resource.kind === 'workload' ? [u.resource.workload] : [])),
    services: c.update.upserts.flatMap((u) => (u.resource.kind === 'service' ? [u.resource.service] : [])),
    policies: c.policies.upserts.map((u) => u.policy),
  };
}

/** Resources by name, so the comparison ignores the order the dump sorts into. */
function byName(c: LoadedStaticConfig) {
  return {
    addresses: new Map(c.update.upserts.map((u) => [u.name, u.resource])),
    policies: new Map(c.policies.upserts.map((u) => [u.name, u.policy])),
  };
}

describe('config dump', () => {
  it('prints workloads in ztunnel layout, skipping empty and default values', () => {
    const [client, server] = mesh(load(MESH_YAML)).workloads;
    expect(workloadToDump(client as Workload)).toEqual({
      workloadIps: ['127.0.0.20'],
      protocol: 'HBONE',
      networkMode: 'Standard',
      uid: 'Kubernetes//Pod/demo/client-0',
      name: 'client-0',
      namespace: 'demo',
      trustDomain: 'cluster.local',
      serviceAccount: 'client',
      workloadName: 'client',
      workloadType: 'deployment',
      canonicalName: 'client',
      canonicalRevision: 'v1',
      node: 'node-a',
      status: 'Healthy',
      clusterId: 'Kubernetes',
      capacity: 1,
    });
    expect(workloadToDump(server as Workload)).toMatchObject({
      authorizationPolicies: ['demo/allow-client-to-server'],
      services: ['demo/echo.demo.svc.cluster.local'],
    });
  });

  it('prints a service with its endpoints', () => {
    const m = mesh(load(MESH_YAML));
    expect(serviceToDump(m.services[0] as Service, [{ workloadUid: 'Kubernetes//Pod/demo/server-0', ports: new Map([[80, 8080]]) }])).toEqual({
      name: 'echo',
      namespace: 'demo',
      hostname: 'echo.demo.svc.cluster.local',
      vips: ['/127.10.0.30'],
      ports: { '80': 8080 },
      endpoints: {
        'Kubernetes//Pod/demo/server-0': { workloadUid: 'Kubernetes//Pod/demo/server-0', port: { '80': 8080 }, status: 'Healthy' },
      },
      subjectAltNames: ['spiffe://cluster.local/ns/demo/sa/server'],
      canonical: false,
      visibility: 'Public',
    });
  });

  it('prints policies as rules → clauses → matches with tagged string matches', () => {
    const deny = mesh(load(RICH_YAML)).policies.find((p) => p.name === 'deny-debug') as Authorization;
    expect(policyToDump(deny)).toEqual({
      name: 'deny-debug',
      namespace: 'demo',
      scope: 'WorkloadSelector',
      action: 'Deny',
      rules: [
        [
          [
            {
              namespaces: [{ Exact: 'demo' }],
              notNamespaces: [{ Prefix: 'kube-' }],
              serviceAccounts: [{ namespace: 'demo', serviceAccount: 'client' }],
              notServiceAccounts: [{ namespace: 'demo', serviceAccount: 'blocked' }],
              principals: [{ Suffix: '/sa/client' }],
              notPrincipals: [{ Presence: [] }],
              sourceIps: ['10.1.0.0/16'],
              notSourceIps: ['10.1.2.3/32'],
              destinationIps: ['fd00::/8'],
              notDestinationIps: ['0.0.0.0/0'],
              destinationPorts: [9000],
              notDestinationPorts: [15000],
            },
            {},
          ],
          [],
        ],
        [],
      ],
      dryRun: true,
    });
  });

  it('derives endpoints from workloads and stages those of unknown services', () => {
    const dump = meshToDump(mesh(load(RICH_YAML)));
    const echo = dump.services.find((s) => s.hostname === 'echo.demo.svc.cluster.local');
    expect(echo?.endpoints).toEqual({
      'cluster1//v1/Pod/demo/server-0': { workloadUid: 'cluster1//v1/Pod/demo/server-0', port: { '80': 8080, '9090': 0 }, status: 'Unhealthy' },
    });
    expect(dump.stagedServices).toEqual({
      'demo/staged.demo.svc.cluster.local': {
        'cluster1//v1/Pod/demo/server-0': { workloadUid: 'cluster1//v1/Pod/demo/server-0', port: { '443': 8443 }, status: 'Unhealthy' },
      },
    });
    expect(dump.workloads.map((w) => w.uid)).toEqual(['Kubernetes//Pod/demo/client-0', 'cluster1//v1/Pod/demo/server-0']);
    expect(dump.services.map((s) => s.hostname)).toEqual(['*.example.com', 'echo.demo.svc.cluster.local']);
    expect(dump.policies.map((p) => `${p.namespace}/${p.name}`)).toEqual(['demo/deny-debug', 'istio-system/allow-all-ns']);
  });

  it.each([
    ['examples/mesh.yaml', MESH_YAML],
    ['a mesh using every key', RICH_YAML],
  ])('round-trips %s: static YAML → model → dump JSON → YAML → model', (_name, yaml) => {
    const first = load(yaml);
    const json = JSON.stringify(meshToDump(mesh(first)), null, 2);
    const again = load(stringify(JSON.parse(json)));
    expect(byName(again)).toEqual(byName(first));
    // JSON is YAML too: the dump loads as printed.
    expect(byName(load(json))).toEqual(byName(first));
  });
});
