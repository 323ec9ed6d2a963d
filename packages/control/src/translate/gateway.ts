/**
 * GatewayAddress / WeightedWaypoint (istio.workload) → model. Shared by the
 * workload translator (waypoint, network_gateway) and the service translator
 * (waypoint, weighted_waypoints).
 *
 * Follows ztunnel's `TryFrom<&XdsGatewayAddress>` (src/state/workload.rs): a
 * gateway with no destination is refused (`MissingGatewayAddress`), an address
 * destination must be 4 or 16 bytes. NetworkAddress.length is ignored for
 * gateways, as ztunnel does. Unlike ztunnel we also refuse an HBONE port
 * outside 1..65535 (ztunnel truncates it with `as u16`) and check the hostname.
 */
import type { GatewayAddress, WeightedWaypoint } from '../model/gateway.js';
import { spiffeSegmentProblem } from '../model/identity.js';
import type {
  GatewayAddress as PbGatewayAddress,
  WeightedWaypoint as PbWeightedWaypoint,
} from '../gen/istio/workload/workload_pb.js';
import { checkPort, hostnameProblem, ipFromWire, type Problems } from './common.js';

/** Translates into `problems` (relative paths); undefined when anything was wrong. */
export function gatewayAddress(pb: PbGatewayAddress, problems: Problems): GatewayAddress | undefined {
  const before = problems.count;
  const port = checkPort(pb.hboneMtlsPort, 'hboneMtlsPort', problems, { allowZero: false });
  const dest = pb.destination;
  let destination: GatewayAddress['destination'] | undefined;
  switch (dest.case) {
    case 'address': {
      const address = ipFromWire(dest.value.address, 'destination.address.address', problems);
      if (address !== undefined) destination = { kind: 'address', network: dest.value.network, address };
      break;
    }
    case 'hostname': {
      const { namespace, hostname } = dest.value;
      const ns = spiffeSegmentProblem(namespace);
      if (ns) problems.add('destination.hostname.namespace', ns);
      const host = hostnameProblem(hostname, { allowWildcard: false });
      if (host) problems.add('destination.hostname.hostname', host);
      destination = { kind: 'hostname', namespace, hostname };
      break;
    }
    case undefined:
      problems.add('destination', 'gateway address has no destination; expected a hostname or an address');
      break;
  }
  if (problems.count !== before || destination === undefined) return undefined;
  return { destination, hboneMtlsPort: port };
}

/** ztunnel refuses a weighted waypoint without a destination (`MissingGatewayAddress`). */
export function weightedWaypoint(pb: PbWeightedWaypoint, problems: Problems): WeightedWaypoint | undefined {
  if (pb.destination === undefined) {
    problems.add('destination', 'weighted waypoint has no destination; expected a gateway address');
    return undefined;
  }
  const destination = gatewayAddress(pb.destination, problems.at('destination'));
  return destination === undefined ? undefined : { destination, weight: pb.weight };
}
