import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import type { Authorization } from '../model/authorization.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';
import type { Rejection } from '../result.js';
import { loadStaticConfig, parseStaticConfig, type LoadedStaticConfig } from './static-config.js';

const MESH_YAML = readFileSync(new URL('../../examples/mesh.yaml', import.meta.url), 'utf8');

function load(text: string): LoadedStaticConfig {
  const r = loadStaticConfig(text, 'mesh.yaml');
  if (!r.ok) throw new Error(`expected ok, got:\n${r.errors.map((e) => `${e.field}: ${e.reason}`).join('\n')}`);
  return r.value;
}

function problems(text: string): readonly Rejection[] {
  const r = loadStaticConfig(text, 'mesh.yaml');
  if (r.ok) throw new Error('expected problems');
  return r.errors;
}

function workloads(c: LoadedStaticConfig): Workload[] {
  return c.update.upserts.flatMap((u) => (u.resource.kind === 'workload' ? [u.resource.workload] : []));
}

function services(c: LoadedStaticConfig): Service[] {
  return c.update.upserts.flatMap((u) => (u.resource.kind === 'service' ? [u.resource.service] : []));
}

function onlyWorkload(yaml: string): Workload {
  const [w] = workloads(load(yaml));
  if (w === undefined) throw new Error('no workload');
  return w;
}

function onlyService(yaml: string): Service {
  const [s] = services(load(yaml));
  if (s === undefined) throw new Error('no service');
  return s;
}

function onlyPolicy(yaml: string): Authorization {
  const [p] = load(yaml).policies.upserts;
  if (p === undefined) throw new Error('no policy');
  return p.policy;
}

/** A minimal valid workload record with `extra` lines appended (indented 4). */
const workloadYaml = (extra = '') => `
workloads:
  - uid: u1
    namespace: demo
    workloadIps: ["10.0.0.1"]
${extra}`;

const serviceYaml = (extra = '') => `
services:
  - name: echo
    namespace: demo
    hostname: echo.demo.svc.cluster.local
    vips: ["/10.96.0.1"]
    ports: {80: 8080}
${extra}`;

const policyYaml = (match: string) => `
policies:
  - name: p
    namespace: demo
    scope: Namespace
    action: Allow
    rules:
      - - - ${match}
`;

describe('examples/mesh.yaml', () => {
  it('loads cleanly into the quick-start mesh', () => {
    const c = load(MESH_YAML);
    expect(c.update.upserts.map((u) => u.name)).toEqual([
      'Kubernetes//Pod/demo/client-0',
      'Kubernetes//Pod/demo/server-0',
      'demo/echo.demo.svc.cluster.local',
    ]);
    const [client, server] = workloads(c);
    expect(client).toMatchObject({
      addresses: ['127.0.0.20'],
      protocol: 'HBONE',
      node: 'node-a',
      identity: { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'client' },
    });
    expect(server).toMatchObject({
      addresses: ['127.0.0.21'],
      protocol: 'HBONE',
      identity: { trustDomain: 'cluster.local', namespace: 'demo', serviceAccount: 'server' },
      services: [{ key: 'demo/echo.demo.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 8080 }] }],
      authorizationPolicies: ['demo/allow-client-to-server'],
    });
    expect(services(c)[0]).toMatchObject({
      vips: [{ network: '', address: '127.10.0.30' }],
      ports: [{ servicePort: 80, targetPort: 8080 }],
    });
    expect(c.policies.upserts).toEqual([
      {
        name: 'demo/allow-client-to-server',
        policy: expect.objectContaining({
          scope: 'WorkloadSelector',
          action: 'Allow',
          rules: [
            {
              clauses: [
                { matches: [expect.objectContaining({ serviceAccounts: [{ namespace: 'demo', serviceAccount: 'client' }] })] },
                { matches: [expect.objectContaining({ destinationPorts: [8080] })] },
              ],
            },
          ],
        }),
      },
    ]);
    expect(c.update.removals).toEqual([]);
    expect(c.policies.removals).toEqual([]);
  });

  it('parses into protobuf resources named as xDS names them', () => {
    const r = parseStaticConfig(MESH_YAML, 'mesh.yaml');
    expect(r.ok && r.value.addresses.map((a) => [a.name, a.address.type.case, a.path])).toEqual([
      ['Kubernetes//Pod/demo/client-0', 'workload', 'workloads[0]'],
      ['Kubernetes//Pod/demo/server-0', 'workload', 'workloads[1]'],
      ['demo/echo.demo.svc.cluster.local', 'service', 'services[0]'],
    ]);
    expect(r.ok && r.value.authorizations.map((a) => a.name)).toEqual(['demo/allow-client-to-server']);
  });
});

describe('workload records', () => {
  it('reads every key', () => {
    const w = onlyWorkload(`
workloads:
  - uid: cluster1//v1/Pod/demo/server-0
    name: server-0
    namespace: demo
    workloadIps: ["10.0.0.5", "2001:DB8::1"]
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
    canonicalRevision: 1.10
    hostname: server-0.example.com
    node: node-a
    nativeTunnel: true
    applicationTunnel: {protocol: PROXY, port: 15088}
    authorizationPolicies: ["demo/allow"]
    status: Unhealthy
    clusterId: cluster1
    locality: {region: eu, zone: eu-1, subzone: rack-3}
    services:
      "demo/echo.demo.svc.cluster.local": {80: 8080, 9090: 0}
    capacity: 3
`);
    expect(w).toEqual<Workload>({
      uid: 'cluster1//v1/Pod/demo/server-0',
      name: 'server-0',
      namespace: 'demo',
      addresses: ['10.0.0.5', '2001:db8::1'],
      hostname: 'server-0.example.com',
      network: 'net-a',
      protocol: 'HBONE',
      identity: { trustDomain: 'example.org', namespace: 'demo', serviceAccount: 'server' },
      waypoint: { destination: { kind: 'hostname', namespace: 'demo', hostname: 'waypoint.demo.svc.cluster.local' }, hboneMtlsPort: 15008 },
      networkGateway: { destination: { kind: 'address', network: 'net-b', address: '192.168.1.1' }, hboneMtlsPort: 15009 },
      node: 'node-a',
      canonicalName: 'server',
      // A plain scalar is read as written, as serde_yaml does for string fields.
      canonicalRevision: '1.10',
      workloadType: 'pod',
      workloadName: 'server',
      nativeTunnel: true,
      applicationTunnel: { protocol: 'PROXY', port: 15088 },
      services: [
        {
          key: 'demo/echo.demo.svc.cluster.local',
          ports: [
            { servicePort: 80, targetPort: 8080, appProtocol: 'Unknown' },
            { servicePort: 9090, targetPort: 0, appProtocol: 'Unknown' },
          ],
        },
      ],
      authorizationPolicies: ['demo/allow'],
      status: 'Unhealthy',
      clusterId: 'cluster1',
      locality: { region: 'eu', zone: 'eu-1', subzone: 'rack-3' },
      networkMode: 'HostNetwork',
      capacity: 3,
    });
  });

  it('applies defaults (TCP, Healthy, Standard, cluster.local/default, Kubernetes, capacity 1)', () => {
    expect(onlyWorkload(workloadYaml())).toMatchObject({
      protocol: 'TCP',
      status: 'Healthy',
      networkMode: 'Standard',
      workloadType: 'deployment',
      identity: { trustDomain: 'cluster.local', serviceAccount: 'default' },
      clusterId: 'Kubernetes',
      capacity: 1,
      services: [],
      waypoint: undefined,
      applicationTunnel: undefined,
    });
  });

  it.each([
    ['TCP', 'TCP'],
    ['HBONE', 'HBONE'],
  ])('protocol %s', (spelled, expected) => {
    expect(onlyWorkload(workloadYaml(`    protocol: ${spelled}`)).protocol).toBe(expected);
  });

  it.each([['deployment'], ['cronjob'], ['pod'], ['job'], ['Pod'], ['JOB']])('workloadType %s', (spelled) => {
    expect(onlyWorkload(workloadYaml(`    workloadType: ${spelled}`)).workloadType).toBe(spelled.toLowerCase());
  });

  it.each([
    ['Healthy', 'Healthy'],
    ['Unhealthy', 'Unhealthy'],
  ])('status %s', (spelled, expected) => {
    expect(onlyWorkload(workloadYaml(`    status: ${spelled}`)).status).toBe(expected);
  });

  it.each([
    ['Standard', 'Standard'],
    ['HostNetwork', 'HostNetwork'],
  ])('networkMode %s', (spelled, expected) => {
    expect(onlyWorkload(workloadYaml(`    networkMode: ${spelled}`)).networkMode).toBe(expected);
  });

  it.each([
    ['{protocol: NONE}', { protocol: 'NONE', port: undefined }],
    ['{protocol: PROXY, port: null}', { protocol: 'PROXY', port: undefined }],
    ['{protocol: PROXY, port: 15088}', { protocol: 'PROXY', port: 15088 }],
  ])('applicationTunnel %s', (yaml, expected) => {
    expect(onlyWorkload(workloadYaml(`    applicationTunnel: ${yaml}`)).applicationTunnel).toEqual(expected);
  });

  it.each([
    ['"net-a/10.0.0.9"', { kind: 'address', network: 'net-a', address: '10.0.0.9' }],
    ['"/fd00::9"', { kind: 'address', network: '', address: 'fd00::9' }],
    ['"demo/wp.demo.svc.cluster.local"', { kind: 'hostname', namespace: 'demo', hostname: 'wp.demo.svc.cluster.local' }],
  ])('waypoint destination %s (an IP after the slash means an address)', (destination, expected) => {
    expect(onlyWorkload(workloadYaml(`    waypoint: {destination: ${destination}, hboneMtlsPort: 15008}`)).waypoint).toEqual({
      destination: expected,
      hboneMtlsPort: 15008,
    });
  });

  it('defaults a gateway hboneMtlsPort to 15008', () => {
    expect(onlyWorkload(workloadYaml('    waypoint: {destination: "/10.0.0.9"}')).waypoint?.hboneMtlsPort).toBe(15008);
  });

  it('derives a missing uid from cluster, namespace and name', () => {
    const yaml = `
workloads:
  - {name: a, namespace: demo}
  - {name: b, namespace: demo, clusterId: east}
`;
    expect(workloads(load(yaml)).map((w) => w.uid)).toEqual(['Kubernetes//Pod/demo/a', 'east//Pod/demo/b']);
  });

  it('reads config_dump-style services (a list) with ports from the service endpoints', () => {
    const c = load(`
workloads:
  - uid: u1
    namespace: demo
    services: ["demo/echo.demo.svc.cluster.local", "demo/gone.demo.svc.cluster.local"]
services:
  - name: echo
    namespace: demo
    hostname: echo.demo.svc.cluster.local
    vips: []
    ports: {"80": 8080}
    endpoints:
      u1: {workloadUid: u1, port: {"80": 9080}, status: Healthy}
stagedServices:
  demo/gone.demo.svc.cluster.local:
    u1: {workloadUid: u1, port: {"443": 8443}, status: Healthy}
`);
    expect(workloads(c)[0]?.services).toEqual([
      { key: 'demo/echo.demo.svc.cluster.local', ports: [{ servicePort: 80, targetPort: 9080, appProtocol: 'Unknown' }] },
      { key: 'demo/gone.demo.svc.cluster.local', ports: [{ servicePort: 443, targetPort: 8443, appProtocol: 'Unknown' }] },
    ]);
  });

  it('accepts an empty document as an empty mesh', () => {
    expect(load('')).toEqual({ update: { upserts: [], removals: [] }, policies: { upserts: [], removals: [] } });
    expect(load('# nothing here\n')).toEqual({ update: { upserts: [], removals: [] }, policies: { upserts: [], removals: [] } });
  });
});

describe('service records', () => {
  it('reads every key', () => {
    const s = onlyService(`
services:
  - name: echo
    namespace: demo
    hostname: echo.demo.svc.cluster.local
    vips: ["/10.96.0.1", "net-a/fd00::1"]
    cidrVips: [{network: net-a, cidr: "10.200.0.0/16"}]
    ports: {80: 8080, 443: 0}
    subjectAltNames: ["spiffe://cluster.local/ns/demo/sa/server"]
    waypoint: {destination: "demo/wp.demo.svc.cluster.local", hboneMtlsPort: 15008}
    weightedWaypoints:
      - {destination: {destination: "demo/wp.demo.svc.cluster.local", hboneMtlsPort: 15008}, weight: 90}
      - {destination: {destination: "/10.0.0.9", hboneMtlsPort: 15008}, weight: 10}
    loadBalancer: {routingPreferences: [Network, Region], mode: Failover, healthPolicy: AllowAll}
    ipFamilies: Dual
    canonical: true
    visibility: Namespace
    ingressUseWaypoint: true
`);
    expect(s).toEqual<Service>({
      name: 'echo',
      namespace: 'demo',
      hostname: 'echo.demo.svc.cluster.local',
      vips: [
        { network: '', address: '10.96.0.1' },
        { network: 'net-a', address: 'fd00::1' },
      ],
      cidrVips: [{ network: 'net-a', cidr: { address: '10.200.0.0', prefixLength: 16, family: 4 } }],
      ports: [
        { servicePort: 80, targetPort: 8080, appProtocol: 'Unknown' },
        { servicePort: 443, targetPort: 0, appProtocol: 'Unknown' },
      ],
      subjectAltNames: ['spiffe://cluster.local/ns/demo/sa/server'],
      waypoint: { destination: { kind: 'hostname', namespace: 'demo', hostname: 'wp.demo.svc.cluster.local' }, hboneMtlsPort: 15008 },
      weightedWaypoints: [
        { destination: { destination: { kind: 'hostname', namespace: 'demo', hostname: 'wp.demo.svc.cluster.local' }, hboneMtlsPort: 15008 }, weight: 90 },
        { destination: { destination: { kind: 'address', network: '', address: '10.0.0.9' }, hboneMtlsPort: 15008 }, weight: 10 },
      ],
      loadBalancing: { routingPreference: ['Network', 'Region'], mode: 'Failover', healthPolicy: 'AllowAll' },
      ipFamilies: 'Dual',
      canonical: true,
      ingressUseWaypoint: true,
      visibility: 'Namespace',
    });
  });

  it('applies defaults', () => {
    expect(onlyService(serviceYaml())).toMatchObject({
      cidrVips: [],
      subjectAltNames: [],
      loadBalancing: undefined,
      ipFamilies: 'Automatic',
      canonical: false,
      visibility: 'Public',
    });
  });

  it.each(['Region', 'Zone', 'Subzone', 'Node', 'Cluster', 'Network'])('routing preference %s', (scope) => {
    expect(onlyService(serviceYaml(`    loadBalancer: {routingPreferences: [${scope}], mode: Strict, healthPolicy: OnlyHealthy}`)).loadBalancing).toEqual({
      routingPreference: [scope],
      mode: 'Strict',
      healthPolicy: 'OnlyHealthy',
    });
  });

  it.each(['Standard', 'Strict', 'Failover', 'Passthrough'])('load balancer mode %s', (mode) => {
    expect(onlyService(serviceYaml(`    loadBalancer: {routingPreferences: [], mode: ${mode}, healthPolicy: OnlyHealthy}`)).loadBalancing?.mode).toBe(mode);
  });

  it.each([
    ['Dual', 'Dual'],
    ['IPv4', 'IPv4'],
    ['IPv6', 'IPv6'],
  ])('ipFamilies %s', (spelled, expected) => {
    expect(onlyService(serviceYaml(`    ipFamilies: ${spelled}`)).ipFamilies).toBe(expected);
  });

  it.each(['Public', 'Namespace'])('visibility %s', (v) => {
    expect(onlyService(serviceYaml(`    visibility: ${v}`)).visibility).toBe(v);
  });
});

describe('policy records', () => {
  it('reads every match key', () => {
    const p = onlyPolicy(`
policies:
  - name: p
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
            destinationPorts: [8080]
            notDestinationPorts: [15000]
          - {}
        - []
      - []
`);
    expect(p).toEqual<Authorization>({
      name: 'p',
      namespace: 'demo',
      scope: 'WorkloadSelector',
      action: 'Deny',
      dryRun: true,
      rules: [
        {
          clauses: [
            {
              matches: [
                {
                  namespaces: [{ kind: 'exact', value: 'demo' }],
                  notNamespaces: [{ kind: 'prefix', value: 'kube-' }],
                  principals: [{ kind: 'suffix', value: '/sa/client' }],
                  notPrincipals: [{ kind: 'presence' }],
                  serviceAccounts: [{ namespace: 'demo', serviceAccount: 'client' }],
                  notServiceAccounts: [{ namespace: 'demo', serviceAccount: 'blocked' }],
                  sourceIps: [{ address: '10.1.0.0', prefixLength: 16, family: 4 }],
                  notSourceIps: [{ address: '10.1.2.3', prefixLength: 32, family: 4 }],
                  destinationIps: [{ address: 'fd00::', prefixLength: 8, family: 6 }],
                  notDestinationIps: [{ address: '0.0.0.0', prefixLength: 0, family: 4 }],
                  destinationPorts: [8080],
                  notDestinationPorts: [15000],
                },
                {
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
                },
              ],
            },
            { matches: [] },
          ],
        },
        { clauses: [] },
      ],
    });
  });

  it.each([
    ['!Exact a', { kind: 'exact', value: 'a' }],
    ['!Prefix a', { kind: 'prefix', value: 'a' }],
    ['!Suffix a', { kind: 'suffix', value: 'a' }],
    ['!Presence []', { kind: 'presence' }],
    ['!Presence', { kind: 'presence' }],
    ['{Exact: a}', { kind: 'exact', value: 'a' }],
    ['{Prefix: a}', { kind: 'prefix', value: 'a' }],
    ['{Suffix: a}', { kind: 'suffix', value: 'a' }],
    ['{Presence: []}', { kind: 'presence' }],
    ['{Presence: null}', { kind: 'presence' }],
    ['!Exact ""', { kind: 'exact', value: '' }],
  ])('string match %s', (yaml, expected) => {
    expect(onlyPolicy(policyYaml(`principals: [${yaml}]`)).rules[0]?.clauses[0]?.matches[0]?.principals).toEqual([expected]);
  });

  it.each([
    ['Global', 'Global'],
    ['Namespace', 'Namespace'],
    ['WorkloadSelector', 'WorkloadSelector'],
  ])('scope %s', (spelled, expected) => {
    expect(onlyPolicy(policyYaml('destinationPorts: [1]').replace('scope: Namespace', `scope: ${spelled}`)).scope).toBe(expected);
  });

  it.each(['Allow', 'Deny'])('action %s', (action) => {
    expect(onlyPolicy(policyYaml('destinationPorts: [1]').replace('action: Allow', `action: ${action}`)).action).toBe(action);
  });
});

describe('problems', () => {
  it('reports a bad IP with its path and position', () => {
    const yaml = `
workloads:
  - {uid: a, namespace: demo, workloadIps: ["10.0.0.1"]}
  - {uid: b, namespace: demo, workloadIps: ["10.0.0.2"]}
  - uid: c
    namespace: demo
    workloadIps: ["10.0.0.x"]
`;
    expect(problems(yaml)).toEqual([{ field: 'workloads[2].workloadIps[0]', reason: '"10.0.0.x" is not an IP address (mesh.yaml:7:19)' }]);
  });

  it('reports YAML syntax errors with line and column', () => {
    const errors = problems('workloads:\n  - uid: a\n    namespace: [demo\n');
    expect(errors.length).toBeGreaterThan(0);
    expect(errors[0]?.field).toMatch(/^mesh\.yaml:\d+:\d+$/);
    expect(errors[0]?.reason).toContain('YAML syntax error');
  });

  it('reports duplicate keys as a syntax error', () => {
    expect(problems('workloads: []\nworkloads: []\n')[0]).toEqual({ field: 'mesh.yaml:2:1', reason: expect.stringContaining('unique') });
  });

  it('reports every problem at once', () => {
    const errors = problems(`
workloads:
  - uid: a
    namespace: demo
    workloadIps: ["x", "y"]
    protocol: hbone
services:
  - name: s
    namespace: demo
    hostname: s.demo
    vips: ["10.0.0.1"]
    ports: {http: 80}
policies:
  - {name: p, namespace: demo, scope: Everywhere, action: Allow, rules: []}
`);
    expect(errors.map((e) => e.field)).toEqual([
      'services[0].vips[0]',
      'services[0].ports["http"]',
      'workloads[0].workloadIps[0]',
      'workloads[0].workloadIps[1]',
      'workloads[0].protocol',
      'policies[0].scope',
    ]);
  });

  it.each<[string, string, string, string]>([
    ['unknown top-level key', 'workload: []', 'workload', 'unknown key "workload"; expected one of workloads, services, policies, stagedServices'],
    ['top level not a mapping', '- a', '', 'expected a mapping, got a list'],
    ['workloads not a list', 'workloads: {}', 'workloads', 'expected a list, got a mapping'],
    ['workload not a mapping', 'workloads: [a]', 'workloads[0]', 'expected a mapping, got the string "a"'],
    ['unknown workload key', workloadYaml('    serviceaccount: x'), 'workloads[0].serviceaccount', 'unknown key "serviceaccount"'],
    ['missing namespace', 'workloads: [{uid: a}]', 'workloads[0].namespace', 'namespace is required'],
    ['missing uid and name', 'workloads: [{namespace: demo}]', 'workloads[0].uid', 'uid is required when the workload has no name'],
    ['protocol spelling', workloadYaml('    protocol: hbone'), 'workloads[0].protocol', '"hbone" is not one of TCP, HBONE'],
    ['network mode spelling', workloadYaml('    networkMode: host'), 'workloads[0].networkMode', 'is not one of Standard, HostNetwork'],
    ['status spelling', workloadYaml('    status: healthy'), 'workloads[0].status', 'is not one of Healthy, Unhealthy'],
    ['workload type', workloadYaml('    workloadType: statefulset'), 'workloads[0].workloadType', '"statefulset" is not one of deployment, cronjob, pod, job'],
    ['nativeTunnel not a boolean', workloadYaml('    nativeTunnel: "yes"'), 'workloads[0].nativeTunnel', '"yes" is not a boolean'],
    ['capacity negative', workloadYaml('    capacity: -1'), 'workloads[0].capacity', '"-1" is not a capacity in 0..4294967295'],
    ['application tunnel protocol', workloadYaml('    applicationTunnel: {protocol: HTTP}'), 'workloads[0].applicationTunnel.protocol', 'is not one of NONE, PROXY'],
    ['application tunnel without protocol', workloadYaml('    applicationTunnel: {port: 1}'), 'workloads[0].applicationTunnel.protocol', 'application tunnel protocol is required'],
    ['unknown locality key', workloadYaml('    locality: {country: x}'), 'workloads[0].locality.country', 'unknown key'],
    ['waypoint without slash', workloadYaml('    waypoint: {destination: "10.0.0.9", hboneMtlsPort: 15008}'), 'workloads[0].waypoint.destination', 'must be "<network>/<ip>" or "<namespace>/<hostname>"'],
    ['waypoint unknown key', workloadYaml('    waypoint: {destination: "/10.0.0.9", port: 15008}'), 'workloads[0].waypoint.port', 'unknown key "port"; expected one of destination, hboneMtlsPort'],
    ['waypoint without destination', workloadYaml('    waypoint: {hboneMtlsPort: 15008}'), 'workloads[0].waypoint.destination', 'destination is required'],
    ['waypoint port over u16', workloadYaml('    waypoint: {destination: "/10.0.0.9", hboneMtlsPort: 70000}'), 'workloads[0].waypoint.hboneMtlsPort', '"70000" is not a port in 0..65535'],
    ['services port key', workloadYaml('    services: {"demo/a.b": {http: 80}}'), 'workloads[0].services["demo/a.b"]["http"]', '"http" is not a port in 0..65535'],
    ['services target over u16', workloadYaml('    services: {"demo/a.b": {80: 65536}}'), 'workloads[0].services["demo/a.b"]["80"]', '"65536" is not a port'],
    ['unknown service key', serviceYaml('    endpoint: {}'), 'services[0].endpoint', 'unknown key "endpoint"'],
    ['missing hostname', 'services: [{name: a, namespace: demo}]', 'services[0].hostname', 'hostname is required'],
    ['vip without network slash', serviceYaml().replace('"/10.96.0.1"', '"10.96.0.1"'), 'services[0].vips[0]', '"10.96.0.1" is not "<network>/<ip>"'],
    ['cidr vip without prefix', serviceYaml('    cidrVips: [{network: "", cidr: "10.0.0.0"}]'), 'services[0].cidrVips[0].cidr', '"10.0.0.0" is not a CIDR'],
    ['cidr vip prefix too long', serviceYaml('    cidrVips: [{cidr: "10.0.0.0/33"}]'), 'services[0].cidrVips[0].cidr', 'is not a CIDR'],
    ['routing preference spelling', serviceYaml('    loadBalancer: {routingPreferences: [region]}'), 'services[0].loadBalancer.routingPreferences[0]', 'is not one of Region, Zone, Subzone, Node, Cluster, Network'],
    ['load balancer mode spelling', serviceYaml('    loadBalancer: {mode: STRICT}'), 'services[0].loadBalancer.mode', 'is not one of Standard, Strict, Failover, Passthrough'],
    ['health policy spelling', serviceYaml('    loadBalancer: {healthPolicy: All}'), 'services[0].loadBalancer.healthPolicy', 'is not one of OnlyHealthy, AllowAll'],
    ['ip families spelling', serviceYaml('    ipFamilies: Automatic'), 'services[0].ipFamilies', 'is not one of Dual, IPv4, IPv6'],
    ['visibility spelling', serviceYaml('    visibility: Private'), 'services[0].visibility', 'is not one of Public, Namespace'],
    ['weighted waypoint without destination', serviceYaml('    weightedWaypoints: [{weight: 1}]'), 'services[0].weightedWaypoints[0].destination', 'destination is required'],
    ['endpoint unknown key', serviceYaml('    endpoints: {u: {workloadUid: u, port: {}, health: x}}'), 'services[0].endpoints["u"].health', 'unknown key'],
    ['unknown policy key', policyYaml('destinationPorts: [1]').replace('action: Allow', 'action: Allow\n    audit: true'), 'policies[0].audit', 'unknown key "audit"'],
    ['missing scope', 'policies: [{name: p, namespace: demo, action: Allow, rules: []}]', 'policies[0].scope', 'scope is required'],
    ['missing rules', 'policies: [{name: p, namespace: demo, scope: Global, action: Allow}]', 'policies[0].rules', 'rules is required'],
    ['action spelling', policyYaml('destinationPorts: [1]').replace('action: Allow', 'action: AUDIT'), 'policies[0].action', 'is not one of Allow, Deny'],
    ['rules not nested three deep', policyYaml('destinationPorts: [1]').replace('      - - - destinationPorts: [1]', '      - destinationPorts: [1]'), 'policies[0].rules[0]', 'expected a list, got a mapping'],
    ['unknown match key (ztunnel ignores it)', policyYaml('destinationPort: [80]'), 'policies[0].rules[0][0][0].destinationPort', 'unknown key "destinationPort"'],
    ['unknown string match', policyYaml('principals: [!Regex ".*"]'), 'policies[0].rules[0][0][0].principals[0]', 'unknown string match "Regex"'],
    ['plain string as string match', policyYaml('principals: ["cluster.local/ns/a/sa/b"]'), 'policies[0].rules[0][0][0].principals[0]', 'expected a string match'],
    ['two-key string match', policyYaml('principals: [{Exact: a, Prefix: b}]'), 'policies[0].rules[0][0][0].principals[0]', 'expected a string match'],
    ['bad policy CIDR', policyYaml('sourceIps: ["10.0.0.0/40"]'), 'policies[0].rules[0][0][0].sourceIps[0]', '"10.0.0.0/40" is not an IP address or CIDR'],
    ['policy port not a number', policyYaml('destinationPorts: [http]'), 'policies[0].rules[0][0][0].destinationPorts[0]', '"http" is not a port'],
    ['service account match key', policyYaml('serviceAccounts: [{ns: a, serviceAccount: b}]'), 'policies[0].rules[0][0][0].serviceAccounts[0].ns', 'unknown key "ns"'],
    ['duplicate workload uid', 'workloads: [{uid: a, namespace: demo}, {uid: a, namespace: demo}]', 'workloads[1]', 'duplicate address resource name'],
    ['duplicate service', `${serviceYaml()}  - {name: echo2, namespace: demo, hostname: echo.demo.svc.cluster.local}`, 'services[1]', 'duplicate address resource name (workload uid or service namespace/hostname) "demo/echo.demo.svc.cluster.local", first defined at services[0]'],
    ['duplicate policy', 'policies: [{name: p, namespace: d, scope: Global, action: Allow, rules: []}, {name: p, namespace: d, scope: Global, action: Deny, rules: []}]', 'policies[1]', 'duplicate policy namespace/name "d/p"'],
  ])('%s', (_name, yaml, field, reason) => {
    const errors = problems(yaml);
    expect(errors).toContainEqual({ field, reason: expect.stringContaining(reason) });
  });

  it.each<[string, string, string, string]>([
    ['a bad service account', workloadYaml('    serviceAccount: ".."'), 'workloads[0](u1).serviceAccount', 'service account must not be ".."'],
    ['legacy-free protocol with a bad services key', workloadYaml('    services: {"nohost": {80: 80}}'), 'workloads[0](u1).services["nohost"]', 'must have the form "<namespace>/<hostname>"'],
    ['a service port 0', serviceYaml().replace('{80: 8080}', '{0: 8080}'), 'services[0](demo/echo.demo.svc.cluster.local).ports[0].servicePort', 'port 0 is out of range'],
    ['a bad hostname', serviceYaml().replace('echo.demo.svc.cluster.local', 'echo_demo'), 'services[0](demo/echo_demo).hostname', 'RFC 1123'],
    ['a policy port 0', policyYaml('destinationPorts: [0]'), 'policies[0](demo/p).rules[0].clauses[0].matches[0].destinationPorts[0]', 'port 0 is out of range'],
    ['an empty service account match', policyYaml('serviceAccounts: [{namespace: demo}]'), 'policies[0](demo/p).rules[0].clauses[0].matches[0].serviceAccounts[0].serviceAccount', 'must not be empty'],
  ])('names the resource in translator rejections: %s', (_name, yaml, field, reason) => {
    expect(problems(yaml)).toContainEqual({ field, reason: expect.stringMatching(new RegExp(`${escape(reason)}.* \\(mesh\\.yaml:\\d+:\\d+\\)$`)) });
  });
});

describe('never throws', () => {
  it('on arbitrary text', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (text) => {
        expect(typeof loadStaticConfig(text, 'x.yaml').ok).toBe('boolean');
      }),
      { numRuns: 300 },
    );
  });

  it('on arbitrary values under the known keys', () => {
    const key = fc.constantFrom('workloads', 'services', 'policies', 'stagedServices', 'uid', 'namespace', 'workloadIps',
      'services', 'waypoint', 'destination', 'rules', 'ports', 'vips', 'cidrVips', 'endpoints', 'principals', 'Exact', '__proto__');
    const value = fc.letrec((tie) => ({
      node: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 1 }), fc.array(tie('node'), { maxLength: 3 }),
        fc.dictionary(key, tie('node'), { maxKeys: 4 })),
    })).node;
    fc.assert(
      fc.property(fc.dictionary(key, value, { maxKeys: 4 }), (doc) => {
        expect(typeof loadStaticConfig(stringify(doc), 'x.yaml').ok).toBe('boolean');
      }),
      { numRuns: 300 },
    );
  });
});

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
