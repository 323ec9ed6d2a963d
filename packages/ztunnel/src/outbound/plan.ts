/**
 * The outbound routing decision for one captured connection: where its bytes
 * go next (TCP or HBONE, direct, through a waypoint, or double HBONE through
 * a network gateway), which identities the next hops must prove, and what
 * the metrics should call the destination. Pure: it reads one snapshot and
 * an injected `random()`, and opens nothing.
 *
 * Follows ztunnel's `OutboundConnection::build_request` (src/proxy/outbound.rs)
 * and the state lookups it uses (src/state.rs `fetch_upstream`,
 * `find_upstream`, `fetch_waypoint`, `fetch_network_gateway`,
 * `pick_workload_destination_or_resolve`; src/proxy.rs `check_from_waypoint`):
 *
 * 0. a loopback destination on one of ztunnel's ports is a self call: reject;
 * 1. a service VIP (on our network) with a waypoint: HBONE to the waypoint
 *    (double HBONE when the waypoint is on another network);
 * 2. the upstream: a service VIP is load-balanced (PASSTHROUGH services and
 *    unknown IPs pass through untouched; a service with no usable endpoint is
 *    an error); a workload IP is that workload;
 * 3. an upstream on another network: double HBONE through its gateway;
 * 4. a workload addressed by IP with a workload waypoint (unless the
 *    connection comes from that waypoint): HBONE to the waypoint;
 * 5. otherwise direct: HBONE to `ip:15008`, or plain TCP for a TCP workload.
 *
 * ztunnel resolves workloads known only by hostname with DNS at this point;
 * this planner does no I/O, so such destinations are rejected with a message
 * saying so.
 */
import {
  identityEquals,
  ipFamily,
  parseIdentity,
  serviceKey,
  type GatewayAddress,
  type Identity,
  type IpFamilies,
  type Service,
  type Snapshot,
  type Workload,
} from '@ambient/control';
import { canonicalPeerIp, formatSocketAddress, type HboneAuthority, type ProxyErrorCode, type SocketAddress } from '@ambient/dataplane';
import { HBONE_PORT, isSelfCall } from '../ports.js';
import { loadBalance, pickServiceWaypoint, resolveTargetPort, type ResolutionMode } from './load-balance.js';


/** The snapshot lookups the planner needs. */
type OutboundLookup = Pick<Snapshot, 'findAddress' | 'serviceByVip' | 'workloadByAddress' | 'service' | 'endpoints' | 'workloads'>;

export interface OutboundInput {
  readonly snapshot: OutboundLookup;
  /** The local workload sending the traffic. */
  readonly source: Workload;
  /** This ztunnel's NETWORK (service VIPs are looked up on it). */
  readonly sourceNetwork: string;
  /** The application socket's source IP (to recognise traffic from a destination's own waypoint). */
  readonly sourceIp: string;
  /** The original destination of the captured connection. */
  readonly origDst: SocketAddress;
  readonly illegalPorts: ReadonlySet<number>;
  /** Uniform in [0, 1); injected so tests are deterministic. */
  readonly random: () => number;
  /** The port remote ztunnels accept HBONE on. Default 15008. */
  readonly hbonePort?: number;
}

interface PlanDestination {
  /**
   * The workload at the next hop, for destination_* metric labels (ztunnel
   * `actual_destination_workload`): the waypoint when through a waypoint,
   * the network gateway for double HBONE, otherwise the picked workload.
   */
  readonly workload: Workload | undefined;
  /** The service the application addressed (never the waypoint's own service), for destination_service and `Forwarded: host=`. */
  readonly service: Service | undefined;
}

type OutboundVia = 'direct' | 'service-waypoint' | 'workload-waypoint';

interface HbonePlan {
  readonly kind: 'hbone';
  readonly via: OutboundVia;
  /** TCP next hop: `workloadIp:15008` or the waypoint's HBONE address. */
  readonly nextHop: SocketAddress;
  /** CONNECT `:authority`: the target address (the original destination for waypoints). */
  readonly authority: HboneAuthority;
  /** The peer certificate must carry one of these (service SANs + workload identity). */
  readonly expectedIdentities: readonly Identity[];
  readonly destination: PlanDestination;
}

interface DoubleHbonePlan {
  readonly kind: 'double-hbone';
  readonly via: 'direct' | 'service-waypoint';
  /** The network gateway's HBONE address (outer tunnel, pooled). */
  readonly gateway: SocketAddress;
  /** Identities the gateway must prove: its workload identity + its service SANs. */
  readonly gatewayIdentities: readonly Identity[];
  /** `hostname:servicePort`, used by both the outer and the inner CONNECT. */
  readonly innerAuthority: HboneAuthority;
  /** Identities the final hop must prove: the destination service's SANs only (an empty list verifies nothing and must fail closed). */
  readonly finalIdentities: readonly Identity[];
  /** `workload` is the gateway (as ztunnel reports it until response baggage says more). */
  readonly destination: PlanDestination;
  /** The workload (or waypoint) chosen on the remote network, for logs. */
  readonly remoteWorkload: Workload;
}

interface TcpPlan {
  readonly kind: 'tcp';
  readonly nextHop: SocketAddress;
  readonly destination: PlanDestination;
}

interface PassthroughPlan {
  readonly kind: 'passthrough';
  /** Always the original destination. */
  readonly nextHop: SocketAddress;
  readonly reason: 'passthrough-service' | 'unknown-destination';
}

interface RejectPlan {
  readonly kind: 'reject';
  readonly code: ProxyErrorCode;
  readonly message: string;
}

export type OutboundPlan = HbonePlan | DoubleHbonePlan | TcpPlan | PassthroughPlan | RejectPlan;

export function planOutbound(input: OutboundInput): OutboundPlan {
  const ip = canonicalPeerIp(input.origDst.ip);
  if (ip === undefined || !validPort(input.origDst.port)) {
    return reject('INTERNAL', `original destination ${input.origDst.ip}:${input.origDst.port} is not an IP address and port`);
  }
  const target: SocketAddress = { ip, port: input.origDst.port };
  return new Planner(input, target).plan();
}

/** An upstream (ztunnel `Upstream`): a workload, the port to reach it on, and the service it was picked from. */
interface Upstream {
  readonly workload: Workload;
  readonly port: number;
  readonly service: Service | undefined;
  /** The IP to dial, unless it is reached through a network gateway or needs DNS. */
  readonly address: AddressChoice;
}

type AddressChoice =
  | { readonly kind: 'ip'; readonly ip: string }
  | { readonly kind: 'via-gateway' }
  | { readonly kind: 'needs-dns'; readonly hostname: string };

type Found<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly plan: RejectPlan };

/** What `find_upstream` found before an address is chosen. */
type UpstreamParts =
  | { readonly kind: 'parts'; readonly workload: Workload; readonly port: number; readonly service: Service | undefined }
  | { readonly kind: 'original-destination' }
  | { readonly kind: 'none'; readonly reason: string };

class Planner {
  readonly #in: OutboundInput;
  readonly #target: SocketAddress;
  readonly #hbonePort: number;

  constructor(input: OutboundInput, target: SocketAddress) {
    this.#in = input;
    this.#target = target;
    this.#hbonePort = input.hbonePort ?? HBONE_PORT;
  }

  plan(): OutboundPlan {
    const { source, snapshot, illegalPorts } = this.#in;
    const target = this.#target;
    const targetText = formatSocketAddress(target);

    // Step 0: a call into ztunnel itself.
    if (isSelfCall(target.ip, target.port, illegalPorts)) {
      return reject('SELF_CALL', `destination ${targetText} is one of ztunnel's own ports; refusing to proxy a call back into the proxy`);
    }

    // Step 1: service-addressed traffic goes through the service's waypoint, if any.
    const addressed = snapshot.findAddress(this.#in.sourceNetwork, target.ip, source.namespace);
    const service = addressed?.kind === 'service' ? addressed.service : undefined;
    if (service !== undefined) {
      const gw = pickServiceWaypoint(service, this.#in.random);
      if (gw !== undefined) {
        const wp = this.#resolveGateway(gw, 'waypoint', target);
        if (!wp.ok) return wp.plan;
        const waypoint = wp.value;
        if (waypoint.workload.network !== source.network) {
          return this.#throughGateway(waypoint, service, 'service-waypoint');
        }
        return this.#toWaypoint(waypoint, 'service-waypoint', service);
      }
    }

    // Step 2: the upstream.
    const parts = this.#findUpstream(source.network, target, 'standard');
    if (parts.kind !== 'parts') {
      if (service !== undefined && service.loadBalancing?.mode !== 'Passthrough') {
        const why = parts.kind === 'none' ? parts.reason : 'no upstream';
        return reject('NO_HEALTHY_UPSTREAM', `no healthy upstream for ${targetText} (service ${serviceKey(service)}): ${why}`);
      }
      return {
        kind: 'passthrough',
        nextHop: target,
        reason: service !== undefined || parts.kind === 'original-destination' ? 'passthrough-service' : 'unknown-destination',
      };
    }
    const us = this.#finalize(parts, target);
    if (!us.ok) return us.plan;
    const upstream = us.value;

    // Step 3: an upstream on another network is reached through its network gateway.
    if (upstream.workload.network !== source.network) {
      // Workloads on remote networks are only reachable service-addressed
      // (ztunnel treats anything else as a bug in itself or istiod).
      if (service === undefined) {
        return reject(
          'NO_HEALTHY_UPSTREAM',
          `${targetText} is workload ${upstream.workload.uid} on network "${upstream.workload.network}" (ours: "${source.network}"); remote workloads can only be reached through a service`,
        );
      }
      return this.#throughGateway(upstream, service, 'direct');
    }

    // Step 4: workload-addressed traffic goes through the workload's waypoint,
    // unless it comes from that very waypoint (no second traversal).
    if (service === undefined && upstream.workload.waypoint !== undefined && !this.#fromWaypoint(upstream.workload)) {
      const wp = this.#resolveGateway(upstream.workload.waypoint, 'waypoint', target);
      if (!wp.ok) return wp.plan;
      return this.#toWaypoint(wp.value, 'workload-waypoint', upstream.service);
    }

    // Step 5: direct.
    const dial = this.#dialIp(upstream);
    if (!dial.ok) return dial.plan;
    const destination: PlanDestination = { workload: upstream.workload, service: upstream.service };
    if (upstream.workload.protocol === 'HBONE') {
      return {
        kind: 'hbone',
        via: 'direct',
        nextHop: { ip: dial.value, port: this.#hbonePort },
        authority: { kind: 'address', ip: dial.value, port: upstream.port },
        expectedIdentities: withWorkloadIdentity(upstream),
        destination,
      };
    }
    return { kind: 'tcp', nextHop: { ip: dial.value, port: upstream.port }, destination };
  }

  #toWaypoint(waypoint: Upstream, via: 'service-waypoint' | 'workload-waypoint', intended: Service | undefined): OutboundPlan {
    const dial = this.#dialIp(waypoint);
    if (!dial.ok) return dial.plan;
    return {
      kind: 'hbone',
      via,
      nextHop: { ip: dial.value, port: waypoint.port },
      // The waypoint gets the original destination (VIP or pod IP), not a translated one.
      authority: { kind: 'address', ip: this.#target.ip, port: this.#target.port },
      expectedIdentities: withWorkloadIdentity(waypoint),
      destination: { workload: waypoint.workload, service: intended },
    };
  }

  /** ztunnel `build_request_through_gateway`. */
  #throughGateway(upstream: Upstream, service: Service, via: 'direct' | 'service-waypoint'): OutboundPlan {
    const gwAddress = upstream.workload.networkGateway;
    if (gwAddress === undefined) {
      return reject(
        'NO_HEALTHY_UPSTREAM',
        `workload ${upstream.workload.uid} is on network "${upstream.workload.network}" (ours: "${this.#in.source.network}") and has no network gateway; refusing to send cross-network traffic without one`,
      );
    }
    const gw = this.#resolveGateway(gwAddress, 'network-gateway', this.#target);
    if (!gw.ok) return gw.plan;
    const dial = this.#dialIp(gw.value);
    if (!dial.ok) return dial.plan;
    return {
      kind: 'double-hbone',
      via,
      gateway: { ip: dial.value, port: gw.value.port },
      gatewayIdentities: withWorkloadIdentity(gw.value),
      innerAuthority: { kind: 'hostname', hostname: service.hostname, port: this.#target.port },
      finalIdentities: parseSans(upstream.service),
      destination: { workload: gw.value.workload, service },
      remoteWorkload: upstream.workload,
    };
  }

  /**
   * ztunnel `fetch_waypoint` / `fetch_network_gateway`: an address is looked
   * up as a service VIP (load-balanced) or a workload IP on its network; a
   * hostname as a service (load-balanced on the HBONE port) or a workload.
   */
  #resolveGateway(gw: GatewayAddress, role: 'waypoint' | 'network-gateway', original: SocketAddress): Found<Upstream> {
    const what = role === 'waypoint' ? 'waypoint' : 'network gateway';
    const mode: ResolutionMode = role === 'waypoint' ? 'waypoint' : 'standard';
    const d = gw.destination;
    let parts: UpstreamParts;
    let familyHint: SocketAddress;
    if (d.kind === 'address') {
      const addr = { ip: d.address, port: gw.hboneMtlsPort };
      parts = this.#findUpstream(d.network, addr, mode);
      // Addressed by IP: that IP decides the family (an IPv6 call may be sent to an IPv4 waypoint).
      familyHint = addr;
    } else {
      const svc = this.#in.snapshot.service(`${d.namespace}/${d.hostname}`);
      if (svc !== undefined) {
        parts = this.#fromService(svc, gw.hboneMtlsPort, mode);
      } else {
        const wl = findWorkloadByHostname(this.#in.snapshot, d.namespace, d.hostname);
        parts = wl === undefined ? { kind: 'none', reason: 'no such service or workload' } : { kind: 'parts', workload: wl, port: gw.hboneMtlsPort, service: undefined };
      }
      // Addressed by hostname: adapt to the caller's family.
      familyHint = original;
    }
    const name = d.kind === 'address' ? `${d.network}/${d.address}` : `${d.namespace}/${d.hostname}`;
    if (parts.kind !== 'parts') {
      const why = parts.kind === 'none' ? parts.reason : 'it is a passthrough service';
      return { ok: false, plan: reject('NO_HEALTHY_UPSTREAM', `${what} ${name} not found: ${why}`) };
    }
    return this.#finalize(parts, familyHint);
  }

  /** ztunnel `find_upstream`: a service VIP first, then a workload IP, on `network`. */
  #findUpstream(network: string, addr: SocketAddress, mode: ResolutionMode): UpstreamParts {
    const { snapshot, source } = this.#in;
    const svc = snapshot.serviceByVip(network, addr.ip, source.namespace);
    if (svc !== undefined) {
      if (svc.loadBalancing?.mode === 'Passthrough') return { kind: 'original-destination' };
      return this.#fromService(svc, addr.port, mode);
    }
    const wl = snapshot.workloadByAddress(network, addr.ip);
    if (wl !== undefined) return { kind: 'parts', workload: wl, port: addr.port, service: undefined };
    return { kind: 'none', reason: `no service or workload has address ${formatSocketAddress(addr)} on network "${network}"` };
  }

  /** ztunnel `find_upstream_from_service`. */
  #fromService(svc: Service, servicePort: number, mode: ResolutionMode): UpstreamParts {
    const lb = loadBalance({
      source: this.#in.source,
      service: svc,
      servicePort,
      mode,
      endpoints: this.#in.snapshot.endpoints(serviceKey(svc)),
      random: this.#in.random,
    });
    if (lb.kind === 'none') return lb;
    const port = resolveTargetPort(svc, servicePort, lb.endpoint);
    if (port === undefined) {
      return { kind: 'none', reason: `service ${serviceKey(svc)} has no target port for port ${servicePort} on ${lb.workload.uid}` };
    }
    return { kind: 'parts', workload: lb.workload, port, service: svc };
  }

  /** ztunnel `finalize_upstream`: choose the address to dial. */
  #finalize(parts: Extract<UpstreamParts, { kind: 'parts' }>, familyHint: SocketAddress): Found<Upstream> {
    const address = chooseAddress(parts.workload, familyHint.ip, parts.service?.ipFamilies);
    if (address === undefined) {
      return {
        ok: false,
        plan: reject('NO_HEALTHY_UPSTREAM', `workload ${parts.workload.uid} has no address usable for ${formatSocketAddress(familyHint)} and no network gateway`),
      };
    }
    return { ok: true, value: { workload: parts.workload, port: parts.port, service: parts.service, address } };
  }

  #dialIp(us: Upstream): Found<string> {
    switch (us.address.kind) {
      case 'ip':
        return { ok: true, value: us.address.ip };
      case 'needs-dns':
        return {
          ok: false,
          plan: reject(
            'NO_HEALTHY_UPSTREAM',
            `workload ${us.workload.uid} is known only by hostname ${us.address.hostname}; resolving workload hostnames (ztunnel's on-demand DNS) is not supported`,
          ),
        };
      case 'via-gateway':
        return { ok: false, plan: reject('NO_HEALTHY_UPSTREAM', `workload ${us.workload.uid} has no IP on network "${us.workload.network}"`) };
    }
  }

  /**
   * ztunnel `check_from_waypoint`: the connection comes from the upstream's
   * waypoint when our identity is the waypoint workload's and the
   * application's source IP is one of its IPs.
   */
  #fromWaypoint(upstream: Workload): boolean {
    const gw = upstream.waypoint;
    if (gw === undefined) return false;
    const { source, snapshot } = this.#in;
    const srcIp = canonicalPeerIp(this.#in.sourceIp) ?? this.#in.sourceIp;
    const isWaypoint = (w: Workload) => identityEquals(w.identity, source.identity) && w.addresses.includes(srcIp);
    const d = gw.destination;
    if (d.kind === 'address') {
      const found = snapshot.findAddress(d.network, d.address);
      if (found === undefined) return false;
      if (found.kind === 'workload') return isWaypoint(found.workload);
      return snapshot.endpoints(serviceKey(found.service)).some((ep) => isWaypoint(ep.workload));
    }
    const svc = snapshot.service(`${d.namespace}/${d.hostname}`);
    if (svc !== undefined) return snapshot.endpoints(serviceKey(svc)).some((ep) => isWaypoint(ep.workload));
    const wl = findWorkloadByHostname(snapshot, d.namespace, d.hostname);
    return wl !== undefined && isWaypoint(wl);
  }
}

/**
 * ztunnel `pick_workload_destination_or_resolve`: the requested IP when the
 * workload owns it; else an IP the service's families allow, preferring the
 * request's family; else the hostname (DNS) or, with a network gateway, no IP.
 */
function chooseAddress(w: Workload, requestedIp: string, families: IpFamilies | undefined): AddressChoice | undefined {
  if (w.addresses.includes(requestedIp)) return { kind: 'ip', ip: requestedIp };
  const allowed = w.addresses.filter((ip) => familyAllowed(families, ip));
  const want = ipFamily(requestedIp);
  const ip = allowed.find((a) => ipFamily(a) === want) ?? allowed[0];
  if (ip !== undefined) return { kind: 'ip', ip };
  if (w.hostname !== '') return { kind: 'needs-dns', hostname: w.hostname };
  if (w.networkGateway !== undefined) return { kind: 'via-gateway' };
  return undefined;
}

function familyAllowed(families: IpFamilies | undefined, ip: string): boolean {
  switch (families) {
    case 'IPv4':
      return ipFamily(ip) === 4;
    case 'IPv6':
      return ipFamily(ip) === 6;
    case 'Dual':
    case 'Automatic':
    case undefined:
      return true;
  }
}

/** ztunnel `find_hostname`'s workload fallback: a linear scan (uncommon path). */
function findWorkloadByHostname(snapshot: OutboundLookup, namespace: string, hostname: string): Workload | undefined {
  for (const w of snapshot.workloads()) {
    if (w.hostname === hostname && w.namespace === namespace) return w;
  }
  return undefined;
}

/** The service's SANs as identities; SANs that are not SPIFFE identities are ignored (ztunnel warns). */
function parseSans(service: Service | undefined): Identity[] {
  const out: Identity[] = [];
  for (const san of service?.subjectAltNames ?? []) {
    const parsed = parseIdentity(san);
    if (parsed.ok) out.push(parsed.value);
  }
  return out;
}

/** ztunnel `workload_and_services_san`: service SANs, then the workload's identity. */
function withWorkloadIdentity(us: Upstream): Identity[] {
  return [...parseSans(us.service), us.workload.identity];
}

function validPort(p: number): boolean {
  return Number.isInteger(p) && p > 0 && p <= 65535;
}

function reject(code: ProxyErrorCode, message: string): RejectPlan {
  return { kind: 'reject', code, message };
}
