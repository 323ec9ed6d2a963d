/**
 * Which services and workloads this waypoint serves, from workload discovery
 * alone (waypoint.md §1.4, §2.1): istiod resolves `istio.io/use-waypoint` and
 * writes the result into `Service.waypoint` / `Workload.waypoint` (and the
 * canary's `weighted_waypoints`) as a GatewayAddress — the waypoint's own
 * Service hostname (`<gateway>.<ns>.svc.<domain>`, preferred) or an address
 * (the waypoint Service's VIP, or a waypoint pod's IP). A service or workload
 * is ours when that address is us. Pure: a function of one snapshot, rebuilt
 * on every discovery change; the data path looks up bound services by
 * VIP:port and bound workloads by IP in O(1).
 *
 * Invariants:
 * - The waypoint's own Service is never served (istiod never gives it a waypoint; we also refuse it: no loops).
 * - A service is served on exactly its declared ports; anything else is not ours.
 */
import type { GatewayAddress, Service, Snapshot, Workload } from '@ambient/control';

export interface WaypointSelf {
  /** The waypoint Gateway's namespace (also its Service's). */
  readonly namespace: string;
  /** `<gateway>.<namespace>.svc.<domain>`. */
  readonly hostname: string;
  /** This pod's IPs (INSTANCE_IP), for address-form GatewayAddresses naming a pod. */
  readonly podIps: readonly string[];
  /** The network this waypoint is on (service VIPs are looked up in it). */
  readonly network: string;
}

export interface Bindings {
  /** Services whose waypoint is us, by `namespace/hostname`. */
  readonly services: ReadonlyMap<string, Service>;
  /** Bound workloads (their own `waypoint` is us: workload-addressed traffic), by IP. */
  readonly workloadsByIp: ReadonlyMap<string, Workload>;
  /** The served service for a CONNECT authority `vip:port`, if any. */
  serviceAt(ip: string, port: number): Service | undefined;
}

export function computeBindings(snapshot: Snapshot, self: WaypointSelf): Bindings {
  const ownVips = new Set<string>();
  for (const s of snapshot.servicesByHostname(self.hostname)) {
    if (s.namespace !== self.namespace) continue;
    for (const vip of s.vips) ownVips.add(vip.address);
  }
  const podIps = new Set(self.podIps);
  const isSelf = (gw: GatewayAddress | undefined): boolean => {
    if (gw === undefined) return false;
    const d = gw.destination;
    if (d.kind === 'hostname') return d.hostname === self.hostname && d.namespace === self.namespace;
    return ownVips.has(d.address) || podIps.has(d.address);
  };

  const services = new Map<string, Service>();
  const byVipPort = new Map<string, Service>();
  for (const s of snapshot.services()) {
    if (s.hostname === self.hostname && s.namespace === self.namespace) continue;
    const ours = isSelf(s.waypoint) || s.weightedWaypoints.some((w) => isSelf(w.destination));
    if (!ours) continue;
    services.set(`${s.namespace}/${s.hostname}`, s);
    for (const vip of s.vips) {
      if (vip.network !== self.network) continue;
      for (const p of s.ports) byVipPort.set(vipPortKey(vip.address, p.servicePort), s);
    }
  }

  const workloadsByIp = new Map<string, Workload>();
  for (const w of snapshot.workloads()) {
    if (!isSelf(w.waypoint) || w.network !== self.network) continue;
    for (const ip of w.addresses) workloadsByIp.set(ip, w);
  }

  return {
    services,
    workloadsByIp,
    serviceAt: (ip, port) => byVipPort.get(vipPortKey(ip, port)),
  };
}

function vipPortKey(ip: string, port: number): string {
  return `${ip}|${port}`;
}
