/**
 * The pure decisions of serving one HBONE CONNECT (ztunnel
 * `Inbound::serve_connect`, src/proxy/inbound.rs), on the `:authority` the
 * CONNECT codec parsed: checking the request may target this workload (`validate_destination`),
 * and working out where the stream goes (`find_inbound_upstream`), plus the
 * best guess at the destination service for metrics
 * (`proxy::guess_inbound_service`). No sockets: the server calls these
 * between accepting the stream and authorizing it.
 *
 * Refusals and their HBONE status (errors.ts): a bad authority and an IP that
 * is not this workload's are 400; an unknown hostname, a port that maps to
 * nothing and a call to one of ztunnel's own ports are 503.
 */
import { serviceKey, type GatewayAddress, type Service, type Snapshot, type Workload } from '@ambient/control';
import { canonicalPeerIp, formatAuthority, formatSocketAddress as formatAddr, type HboneAuthority, type ProxyErrorCode, type SocketAddress } from '@ambient/dataplane';
import { isIllegalPort } from '../ports.js';

export interface InboundReject {
  readonly kind: 'reject';
  readonly code: ProxyErrorCode;
  readonly message: string;
}

/** The snapshot lookups inbound planning needs. */
type InboundLookup = Pick<Snapshot, 'findAddress' | 'service' | 'serviceByHostname' | 'servicesForWorkload' | 'workloads'>;

export interface InboundInput {
  readonly snapshot: InboundLookup;
  /** The workload this listener serves (the CONNECT's destination pod). */
  readonly localWorkload: Workload;
  /** The connection's local IP: the pod IP the client dialled on 15008. */
  readonly localIp: string;
  /** This ztunnel's NETWORK (the destination network). */
  readonly network: string;
  /** The CONNECT target as the codec parsed it (connect-codec.ts parseAuthority: canonical, IPv4 unmapped). */
  readonly authority: HboneAuthority;
  readonly illegalPorts: ReadonlySet<number>;
  /** `host=` from the request's `Forwarded` header, for the metrics' destination_service guess. */
  readonly forwardedHost?: string | undefined;
  /** LOCALHOST_APP_TUNNEL (default true): PROXY-protocol application tunnels are reached on loopback. */
  readonly localhostAppTunnel?: boolean;
}

export interface InboundPlan {
  readonly kind: 'upstream';
  /** Where to connect. */
  readonly upstream: SocketAddress;
  /**
   * The destination as authorization and metrics see it (ztunnel replaces
   * the connection's 15008 with it): the local IP and the resolved target
   * port, after any application-tunnel port override.
   */
  readonly target: SocketAddress;
  /** Connect from loopback rather than spoofing the client's address (localhost application tunnel). */
  readonly bindLoopback: boolean;
  /** Best guess at the service the client meant (destination_service). */
  readonly destinationService: Service | undefined;
  /** Accepted although the authority IP is not ours, because this workload is the target's waypoint. */
  readonly sandwich: boolean;
  /** Write a PROXY v2 header (application tunnel with protocol PROXY). */
  readonly proxyProtocol: boolean;
  /** The destination the application tunnel is told about (the PROXY header's destination). */
  readonly tunnelTarget: SocketAddress | undefined;
}

export function planInbound(input: InboundInput): InboundPlan | InboundReject {
  const { authority, localWorkload, snapshot } = input;
  const localIp = canonicalPeerIp(input.localIp);
  if (localIp === undefined) return reject('INTERNAL', `the connection's local address ${input.localIp} is not an IP`);

  // validate_destination (400 on failure).
  let sandwich = false;
  if (authority.kind === 'address' && authority.ip !== localIp && localWorkload.applicationTunnel === undefined) {
    // Normally the authority is the pod IP we were dialled on. A waypoint may
    // also receive traffic for its targets ("sandwich"); accept it only when
    // the authority's service or workload names this workload as waypoint.
    if (!isWaypointFor(snapshot, input.network, localWorkload, localIp, authority.ip)) {
      return reject(
        'IP_MISMATCH',
        `CONNECT authority ${formatAddr(authority)} does not match this workload's address ${localIp}, and ${localWorkload.namespace}/${localWorkload.name} is not its waypoint`,
      );
    }
    sandwich = true;
  }

  // find_inbound_upstream (503 on failure). The destination IP is always our own.
  let port: number;
  let candidates: Service[];
  if (authority.kind === 'hostname') {
    const svc = snapshot.serviceByHostname(authority.hostname, localWorkload.namespace);
    if (svc === undefined) {
      return reject('NO_SERVICE_FOR_HOSTNAME', `no service ${authority.hostname} visible to namespace ${localWorkload.namespace} for CONNECT ${authority.hostname}:${authority.port}`);
    }
    const mapped = inboundTargetPort(localWorkload, svc, authority.port);
    if (mapped === undefined) {
      return reject('NO_TARGET_PORT', `service ${serviceKey(svc)} has no target port for port ${authority.port} on ${localWorkload.namespace}/${localWorkload.name}`);
    }
    port = mapped;
    candidates = [svc];
  } else {
    port = authority.port;
    candidates = snapshot.servicesForWorkload(localWorkload);
  }
  // Checked on the resolved port: a hostname could map onto one of our ports.
  if (isIllegalPort(port, input.illegalPorts)) {
    return reject('SELF_CALL', `CONNECT to ${formatAuthority(authority)} resolves to port ${port}, one of ztunnel's own ports; refusing`);
  }

  let target: SocketAddress = { ip: localIp, port };
  let tunnelTarget: SocketAddress | undefined;
  const tunnel = localWorkload.applicationTunnel;
  if (tunnel !== undefined) {
    // The tunnel may listen on its own port (e.g. 15088 for PROXY).
    target = { ip: localIp, port: tunnel.port ?? port };
    if (authority.kind === 'address') {
      tunnelTarget = { ip: authority.ip, port: authority.port };
    } else {
      // PROXY cannot carry a hostname: use a VIP of the service, ours network first, IPv4 first.
      const vip = pickTunnelVip(candidates[0], input.network);
      if (vip === undefined) {
        return reject('NO_SERVICE_FOR_HOSTNAME', `service ${authority.hostname} has no VIP to name in the application tunnel's PROXY header`);
      }
      tunnelTarget = { ip: vip, port: authority.port };
    }
  }

  const proxyProtocol = tunnel?.protocol === 'PROXY';
  const bindLoopback = proxyProtocol && (input.localhostAppTunnel ?? true);
  const upstream = bindLoopback ? { ip: target.ip.includes(':') ? '::1' : '127.0.0.1', port: target.port } : target;
  return {
    kind: 'upstream',
    upstream,
    target,
    bindLoopback,
    destinationService: guessService(candidates, input.forwardedHost, target.port, localWorkload),
    sandwich,
    proxyProtocol,
    tunnelTarget,
  };
}

/**
 * The destination_service label for an inbound connection (ztunnel
 * `guess_inbound_service`): the `Forwarded: host=` service when it is one of
 * the workload's services; else the first of its services whose target port,
 * or this workload's own port mapping, is the connection's target port.
 */
export function destinationServiceFor(
  workload: Workload,
  forwardedHost: string | undefined,
  port: number,
  snapshot: Pick<Snapshot, 'servicesForWorkload'>,
): Service | undefined {
  return guessService(snapshot.servicesForWorkload(workload), forwardedHost, port, workload);
}

function guessService(candidates: readonly Service[], forwardedHost: string | undefined, port: number, workload: Workload): Service | undefined {
  if (forwardedHost !== undefined && forwardedHost !== '') {
    const named = candidates.find((s) => s.hostname === forwardedHost);
    if (named !== undefined) return named;
  }
  return candidates.find((s) => {
    const ref = workload.services.find((r) => r.key === serviceKey(s));
    return s.ports.some(
      (p) => p.targetPort === port || ref?.ports.some((m) => m.servicePort === p.servicePort && m.targetPort === port) === true,
    );
  });
}

/** Service port → target port for this workload: its own mapping first, else the service's numeric target port. */
function inboundTargetPort(w: Workload, svc: Service, servicePort: number): number | undefined {
  const own = w.services.find((r) => r.key === serviceKey(svc))?.ports.find((p) => p.servicePort === servicePort)?.targetPort;
  if (own !== undefined && own > 0) return own;
  const fromService = svc.ports.find((p) => p.servicePort === servicePort)?.targetPort;
  return fromService !== undefined && fromService > 0 ? fromService : undefined;
}

/** ztunnel: max by (our network: IPv4 2, IPv6 1; other networks 0), the last of equals. */
function pickTunnelVip(svc: Service | undefined, network: string): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const v of svc?.vips ?? []) {
    const score = v.network === network ? (v.address.includes(':') ? 1 : 2) : 0;
    if (score >= bestScore) {
      best = v.address;
      bestScore = score;
    }
  }
  return best;
}

/**
 * The "waypoint sandwich": does the service or workload at `targetIp`
 * (on our network) name this workload as its waypoint? A service waypoint
 * resolving to a service counts when we are one of its endpoints; one
 * resolving to a workload when that workload has our IP. ztunnel checks the
 * service's `waypoint` only; weighted waypoints are accepted here too, since
 * a canary waypoint receives the same traffic.
 */
function isWaypointFor(snapshot: InboundLookup, network: string, local: Workload, localIp: string, targetIp: string): boolean {
  const found = snapshot.findAddress(network, targetIp);
  if (found === undefined) return false;
  const gateways: GatewayAddress[] = [];
  if (found.kind === 'service') {
    if (found.service.waypoint !== undefined) gateways.push(found.service.waypoint);
    for (const w of found.service.weightedWaypoints) gateways.push(w.destination);
  } else if (found.workload.waypoint !== undefined) {
    gateways.push(found.workload.waypoint);
  }
  return gateways.some((gw) => {
    const d = gw.destination;
    let svc: Service | undefined;
    let wl: Workload | undefined;
    if (d.kind === 'address') {
      const a = snapshot.findAddress(d.network, d.address);
      if (a?.kind === 'service') svc = a.service;
      else wl = a?.workload;
    } else {
      svc = snapshot.service(`${d.namespace}/${d.hostname}`);
      if (svc === undefined) {
        for (const w of snapshot.workloads()) {
          if (w.hostname === d.hostname && w.namespace === d.namespace) {
            wl = w;
            break;
          }
        }
      }
    }
    if (svc !== undefined) {
      const key = serviceKey(svc);
      return local.services.some((r) => r.key === key);
    }
    return wl !== undefined && wl.addresses.includes(localIp);
  });
}


function reject(code: ProxyErrorCode, message: string): InboundReject {
  return { kind: 'reject', code, message };
}
