/**
 * What a tunnel is for, from its CONNECT authority alone (waypoint.md §2.2:
 * Envoy's `main_internal` matches the destination IP the `connect_authority`
 * filter restored, then the port; the HTTP Host header never takes part):
 *
 * - `VIP:port` of a service this waypoint serves, on one of its ports →
 *   service-addressed, served as the port's protocol says (HTTP, HTTP/2 and
 *   gRPC ports → HTTP with Envoy's AUTO codec; TCP and TLS ports → opaque TCP;
 *   ports of unknown protocol → detection);
 * - `podIP:port` of a workload bound to this waypoint → workload-addressed
 *   (Istio's `direct-*` chains accept any port): the protocol of the
 *   workload's service port that targets it, else detection;
 * - anything else → refused (Envoy has no filter chain for it).
 *
 * Pure and synchronous: a function of the bindings (bindings.ts, rebuilt on
 * every discovery change), the route table and the authority.
 */
import type { Service, ServicePort, Snapshot, Workload } from '@ambient/control';
import type { HboneAuthority } from '@ambient/dataplane';
import type { Bindings } from '../bindings.js';
import { fromAppProtocol } from '../routing/protocol.js';
import type { PortProtocol, RouteTable } from '../routing/types.js';

/** How the tunnel's bytes are served. */
type ServeMode = 'http' | 'detect' | 'tcp';

export type TunnelTarget =
  | {
      readonly kind: 'service';
      readonly service: Service;
      readonly port: ServicePort;
      readonly protocol: PortProtocol;
      readonly mode: ServeMode;
    }
  | {
      readonly kind: 'workload';
      readonly workload: Workload;
      /** The authority's port (the workload's target port). */
      readonly port: number;
      /** The bound workload's service whose port targets `port`, if one does (telemetry's destination_service). */
      readonly service: Service | undefined;
      readonly servicePort: ServicePort | undefined;
      readonly protocol: PortProtocol;
      readonly mode: ServeMode;
    }
  | {
      readonly kind: 'refused';
      /** The dataplane error-table code the CONNECT is refused with (HBONE 400). */
      readonly code: 'BAD_AUTHORITY' | 'IP_MISMATCH';
      readonly reason: string;
    };

function serveModeOf(protocol: PortProtocol): ServeMode {
  switch (protocol) {
    case 'http':
    case 'http2':
    case 'grpc':
      return 'http';
    case 'tcp':
    case 'tls':
      return 'tcp';
    case 'unknown':
      return 'detect';
  }
}

export interface TargetInputs {
  readonly bindings: Bindings;
  readonly snapshot: Snapshot;
  readonly routes: RouteTable;
}

/** Classifies a CONNECT authority. Never throws. */
export function classifyTarget(inputs: TargetInputs, authority: HboneAuthority): TunnelTarget {
  if (authority.kind !== 'address') {
    return {
      kind: 'refused',
      code: 'BAD_AUTHORITY',
      reason: `the CONNECT authority ${authority.hostname}:${authority.port} is a hostname; a waypoint serves VIP:port or podIP:port authorities only`,
    };
  }
  const { ip, port } = authority;
  const service = inputs.bindings.serviceAt(ip, port);
  if (service !== undefined) {
    const servicePort = service.ports.find((p) => p.servicePort === port);
    if (servicePort !== undefined) {
      const protocol = portProtocolOf(inputs.routes, service, servicePort);
      return { kind: 'service', service, port: servicePort, protocol, mode: serveModeOf(protocol) };
    }
  }
  const workload = inputs.bindings.workloadsByIp.get(ip);
  if (workload !== undefined) {
    const match = workloadServicePort(inputs, workload, port);
    const protocol = match === undefined ? 'unknown' : portProtocolOf(inputs.routes, match.service, match.port);
    return {
      kind: 'workload',
      workload,
      port,
      service: match?.service,
      servicePort: match?.port,
      protocol,
      // A declared HTTP or TCP port is served as declared; anything else is detected.
      mode: serveModeOf(protocol),
    };
  }
  return {
    kind: 'refused',
    code: 'IP_MISMATCH',
    reason: `${ip}:${port} is neither a port of a service this waypoint serves nor a workload bound to it`,
  };
}

/** The compiled table's protocol for the port when it has one (from the Service resource), else workload discovery's. */
function portProtocolOf(routes: RouteTable, service: Service, port: ServicePort): PortProtocol {
  const compiled = routes.portRoutes({ namespace: service.namespace, hostname: service.hostname }, port.servicePort);
  if (compiled !== undefined && compiled.protocol !== 'unknown') return compiled.protocol;
  return fromAppProtocol(port.appProtocol);
}

/** The bound workload's service port whose target port is `port` (a 0 target in the workload's map means the service's). */
function workloadServicePort(inputs: TargetInputs, workload: Workload, port: number): { service: Service; port: ServicePort } | undefined {
  for (const ref of workload.services) {
    const service = inputs.snapshot.service(ref.key);
    if (service === undefined) continue;
    for (const mapping of ref.ports) {
      const servicePort = service.ports.find((p) => p.servicePort === mapping.servicePort);
      if (servicePort === undefined) continue;
      const target = mapping.targetPort !== 0 ? mapping.targetPort : servicePort.targetPort;
      if (target === port) return { service, port: servicePort };
    }
  }
  return undefined;
}
