/**
 * Pure tie-break rules for lookups that can match more than one object:
 * several workloads on one IP, several services on one VIP, hostname or CIDR.
 * Each rule follows ztunnel (`src/state/workload.rs` `WorkloadByAddr::get`,
 * `src/state/service.rs` `ServiceMatch::find_best_match`,
 * `get_best_by_cidr_vip`) so our choices are the ones ztunnel would make.
 */
import ipaddr from 'ipaddr.js';
import type { Cidr } from '../model/ip.js';
import type { Service } from '../model/service.js';
import type { Workload } from '../model/workload.js';

/**
 * Picks the workload an IP resolves to when several share it. ztunnel prefers
 * pods (UID contains `//Pod/`: not spoofable, most likely what is really
 * behind the IP), then HBONE workloads; among equals the LAST one wins (Rust's
 * `max_by_key`), and the store keeps them in insertion order, an updated
 * workload moving to the end.
 */
export function pickWorkloadForAddress(candidates: readonly Workload[]): Workload | undefined {
  let best: Workload | undefined;
  let bestRank = -1;
  for (const w of candidates) {
    const rank = (w.uid.includes('//Pod/') ? 2 : 0) + (w.protocol === 'HBONE' ? 1 : 0);
    if (rank >= bestRank) {
      best = w;
      bestRank = rank;
    }
  }
  return best;
}

/** A NAMESPACE-visibility service resolves only for clients in its own namespace. */
export function serviceVisibleTo(service: Service, clientNamespace: string): boolean {
  return service.visibility !== 'Namespace' || service.namespace === clientNamespace;
}

/**
 * ztunnel's `find_best_match` over services sharing a VIP or hostname: the
 * first service in the client's namespace wins outright; otherwise the last
 * `canonical` one; otherwise the last one in `preferredNamespace` seen before
 * any canonical one; otherwise the first. The caller filters visibility.
 */
export function pickBestService(
  candidates: Iterable<Service>,
  clientNamespace: string | undefined,
  preferredNamespace: string | undefined,
): Service | undefined {
  let chosen: Service | undefined;
  let reason: 'none' | 'first' | 'preferred' | 'canonical' = 'none';
  for (const s of candidates) {
    if (clientNamespace !== undefined && s.namespace === clientNamespace) return s;
    if (s.canonical) {
      chosen = s;
      reason = 'canonical';
    } else if (preferredNamespace !== undefined && s.namespace === preferredNamespace && reason !== 'canonical') {
      chosen = s;
      reason = 'preferred';
    } else if (reason === 'none') {
      chosen = s;
      reason = 'first';
    }
  }
  return chosen;
}

/** A CIDR VIP with its range parsed once, at insert time. */
export interface CidrVipEntry {
  readonly network: string;
  readonly cidr: Cidr;
  readonly range: ipaddr.IPv4 | ipaddr.IPv6;
  readonly service: Service;
}

export function makeCidrVipEntry(network: string, cidr: Cidr, service: Service): CidrVipEntry {
  return { network, cidr, range: ipaddr.parse(cidr.address), service };
}

/**
 * Best CIDR-VIP service for an address that matched no exact VIP. Ranked by
 * (client's namespace, longest prefix, canonical), lexicographically, so a
 * shorter prefix in the client's namespace beats a longer one elsewhere; the
 * first entry wins a full tie. Services invisible to the client are skipped
 * when a client namespace is given.
 */
export function pickCidrVipService(
  entries: readonly CidrVipEntry[],
  network: string,
  ip: string,
  clientNamespace: string | undefined,
): Service | undefined {
  if (entries.length === 0) return undefined;
  let addr: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    addr = ipaddr.parse(ip);
  } catch {
    return undefined;
  }
  let best: Service | undefined;
  let bestRank = -1;
  for (const e of entries) {
    if (e.network !== network || e.range.kind() !== addr.kind()) continue;
    if (!matchesRange(addr, e.range, e.cidr.prefixLength)) continue;
    if (clientNamespace !== undefined && !serviceVisibleTo(e.service, clientNamespace)) continue;
    const inNamespace = clientNamespace !== undefined && e.service.namespace === clientNamespace;
    // prefix length < 256, so this packs the three keys into one comparable number.
    const rank = (inNamespace ? 512 : 0) + e.cidr.prefixLength * 2 + (e.service.canonical ? 1 : 0);
    if (rank > bestRank) {
      best = e.service;
      bestRank = rank;
    }
  }
  return best;
}

function matchesRange(addr: ipaddr.IPv4 | ipaddr.IPv6, range: ipaddr.IPv4 | ipaddr.IPv6, bits: number): boolean {
  // Both sides have the same kind here; ipaddr's overloads want that spelled out.
  return addr.kind() === 'ipv4'
    ? (addr as ipaddr.IPv4).match(range as ipaddr.IPv4, bits)
    : (addr as ipaddr.IPv6).match(range as ipaddr.IPv6, bits);
}
