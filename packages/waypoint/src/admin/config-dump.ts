/**
 * The waypoint's `/config_dump` (localhost:15000): what it serves and how, as
 * compiled — not Envoy's xDS dump, but the same questions answered: which
 * services are bound to this waypoint (the `inbound-vip|<port>|<http|tcp>|<host>`
 * clusters Envoy would have) and their endpoints; the routes per service port
 * in precedence order with their matches, filters, backends, timeout and retry
 * policy; the config source, its rejected resources and route statuses; the
 * certificates; and the configuration. Pure: a function of the state it is
 * given, so tests compare it without sockets. Secrets (tokens) never appear.
 */
import type { CertsDump, Service, Snapshot } from '@ambient/control';
import type { Bindings } from '../bindings.js';
import type { WaypointConfig } from '../config/env.js';
import type { ConfigResources, ResourceId } from '../resources/types.js';
import type { CompiledRoute, PortRoutes, RouteTable } from '../routing/types.js';
import type { RouteParentStatus } from '../sources/source.js';

export interface ConfigDumpInput {
  readonly config: WaypointConfig;
  readonly version: string;
  readonly origin: string;
  readonly snapshot: Snapshot;
  readonly bindings: Bindings;
  readonly table: RouteTable;
  readonly resources: ConfigResources;
  readonly routeStatuses: ReadonlyMap<string, { readonly route: ResourceId; readonly parents: readonly RouteParentStatus[] }>;
  readonly certificates: readonly CertsDump[];
}

export function waypointConfigDump(input: ConfigDumpInput): unknown {
  const { snapshot, bindings, table } = input;
  const services = [...bindings.services.values()].sort((a, b) => key(a).localeCompare(key(b)));
  return {
    waypoint: {
      gateway: `${input.config.gateway.namespace}/${input.config.gateway.name}`,
      configSource: input.origin,
      routeTableVersion: table.version,
    },
    services: services.map((s) => ({
      name: s.name,
      namespace: s.namespace,
      hostname: s.hostname,
      vips: s.vips.map((v) => `${v.network}/${v.address}`),
      ports: s.ports.map((p) => {
        const routes = table.portRoutes({ namespace: s.namespace, hostname: s.hostname }, p.servicePort);
        return { port: p.servicePort, targetPort: p.targetPort, cluster: clusterName(s, p.servicePort, routes) };
      }),
    })),
    boundWorkloads: [...bindings.workloadsByIp.entries()].map(([ip, w]) => ({ ip, uid: w.uid, name: w.name, namespace: w.namespace })),
    clusters: services.flatMap((s) =>
      s.ports.map((p) => ({
        name: clusterName(s, p.servicePort, table.portRoutes({ namespace: s.namespace, hostname: s.hostname }, p.servicePort)),
        endpoints: snapshot.endpoints(key(s)).flatMap((e) => {
          const w = e.workload;
          const target = e.ports.get(p.servicePort) ?? p.targetPort;
          return w.addresses.map((ip) => ({ address: `${ip}:${target}`, workload: w.uid, status: e.status, identity: `spiffe://${w.identity.trustDomain}/ns/${w.identity.namespace}/sa/${w.identity.serviceAccount}` }));
        }),
      })),
    ),
    routes: [...table.entries()].map(({ service, port, routes }) => ({
      service: `${service.namespace}/${service.hostname}`,
      port,
      protocol: routes.protocol,
      attached: routes.attached,
      routes: routes.routes.map(routeDump),
      ...(routes.tcpBackends === undefined ? {} : { tcpBackends: routes.tcpBackends }),
    })),
    resources: {
      routes: input.resources.routes.map((r) => `${r.meta.kind} ${r.meta.namespace}/${r.meta.name}`),
      problems: input.resources.problems,
      statuses: [...input.routeStatuses.values()],
    },
    certificates: input.certificates,
    config: { ...input.config, control: { ...input.config.control, auth: { kind: input.config.control.auth.kind } } },
    version: input.version,
  };
}

/** Envoy's cluster name for a served service port (`inbound-vip|<port>|<http|tcp>|<hostname>`). */
function clusterName(s: Pick<Service, 'hostname'>, port: number, routes: PortRoutes | undefined): string {
  const kind = routes === undefined || routes.protocol === 'tcp' || routes.protocol === 'tls' ? 'tcp' : 'http';
  return `inbound-vip|${port}|${kind}|${s.hostname}`;
}

function routeDump(r: CompiledRoute): unknown {
  return {
    name: r.name,
    from: `${r.source.route.kind} ${r.source.route.namespace}/${r.source.route.name} rule ${r.source.ruleIndex} match ${r.source.matchIndex}`,
    match: r.match,
    action: r.action,
    requestHeaders: r.requestHeaders,
    responseHeaders: r.responseHeaders,
    ...(r.rewrite === undefined ? {} : { rewrite: r.rewrite }),
    ...(r.mirrors.length === 0 ? {} : { mirrors: r.mirrors }),
    ...(r.cors === undefined ? {} : { cors: r.cors }),
    timeoutMs: r.timeoutMs,
    retry: r.retry,
  };
}

function key(s: Pick<Service, 'namespace' | 'hostname'>): string {
  return `${s.namespace}/${s.hostname}`;
}
