/**
 * Pure resolution of one A/AAAA question from a client pod's point of view
 * (ztunnel `dns/server.rs` `Store::lookup`, `find_server`, `get_addresses`,
 * `service_family_allowed`): which service the name means, and the records
 * to answer with, or "forward" when the mesh does not know the name.
 *
 * Rules, in ztunnel's order:
 * - each alias of the name (names.ts), and for each alias the name then its
 *   wildcards, is looked up by hostname; a service qualifies if it has VIPs
 *   or its hostname is under `.svc.<cluster domain>` (Kubernetes headless),
 *   and is visible to the client's namespace; among those, the client's
 *   namespace wins, then canonical, then PREFERED_SERVICE_NAMESPACE, then the
 *   first; the first alias/wildcard with a qualifying service decides;
 * - a found service whose `ipFamilies` exclude the record type (or AAAA with
 *   IPv6 disabled) answers NOERROR with no records, authoritatively;
 * - addresses: the VIPs on the client's network, or for a headless service
 *   the first matching IP of each endpoint workload; IPv6 only when enabled;
 *   shuffled; TTL 30 s;
 * - an answer found through a stripped search domain (not a wildcard) starts
 *   with a CNAME `requested -> stripped`, and the address records are named
 *   after the stripped name.
 */
import { ipFamily, pickBestService, serviceKey, serviceVisibleTo, type Random, type Service, type Snapshot, type Workload } from '@ambient/control';
import { aliasesFor, isWildcard, normalizeName, wildcardsOf, type Alias } from './names.js';

/** ztunnel's DEFAULT_TTL_SECONDS for every record it answers. */
export const DNS_TTL_SECONDS = 30;

export type AddressRecordType = 'A' | 'AAAA';

export interface DnsRecord {
  readonly name: string;
  readonly type: AddressRecordType | 'CNAME';
  /** An IP for A/AAAA, the target name for CNAME. */
  readonly data: string;
  readonly ttl: number;
}

export interface ResolveOptions {
  /** Normalized cluster domain, e.g. `cluster.local`. */
  readonly clusterDomain: string;
  /** The client's search domains (names.ts `searchDomainsFor`). */
  readonly searchDomains: readonly string[];
  readonly ipv6Enabled: boolean;
  readonly preferredServiceNamespace: string | undefined;
}

/** What the resolver needs from a store snapshot. */
export type ResolverSnapshot = Pick<Snapshot, 'servicesByHostname' | 'endpoints'>;

export type Resolution =
  | {
      readonly kind: 'answer';
      /** CNAME (if any) first, then the shuffled address records; empty: NOERROR with no records. */
      readonly records: readonly DnsRecord[];
      readonly service: Service;
      /** The hostname (or wildcard) that matched. */
      readonly matched: string;
      /** Why the answer is what it is, for the access log (ztunnel's `result` field). */
      readonly result: 'success' | 'no records' | 'service does not support this record type';
    }
  | { readonly kind: 'forward' };

interface ServiceMatch {
  readonly service: Service;
  readonly matched: string;
  readonly alias: Alias;
}

/**
 * Resolves an A or AAAA question for `client`. `name` is the question name
 * as received (any case, with or without the root dot).
 */
export function resolveQuestion(
  snapshot: ResolverSnapshot,
  client: Workload,
  question: { readonly name: string; readonly type: AddressRecordType },
  options: ResolveOptions,
  random: Random,
): Resolution {
  const requested = normalizeName(question.name);
  if (requested === '') return { kind: 'forward' };
  const match = findService(snapshot, client, requested, options);
  if (match === undefined) return { kind: 'forward' };
  const { service, matched, alias } = match;
  if (!familyAllowed(service, question.type, options.ipv6Enabled)) {
    return { kind: 'answer', records: [], service, matched, result: 'service does not support this record type' };
  }
  const addresses = shuffle(addressesOf(snapshot, client, service, question.type, options.ipv6Enabled), random);
  if (addresses.length === 0) return { kind: 'answer', records: [], service, matched, result: 'no records' };
  const records: DnsRecord[] = [];
  let recordName = requested;
  if (alias.stripped !== undefined && !isWildcard(matched)) {
    records.push({ name: requested, type: 'CNAME', data: alias.stripped, ttl: DNS_TTL_SECONDS });
    recordName = alias.stripped;
  }
  for (const ip of addresses) records.push({ name: recordName, type: question.type, data: ip, ttl: DNS_TTL_SECONDS });
  return { kind: 'answer', records, service, matched, result: 'success' };
}

function findService(snapshot: ResolverSnapshot, client: Workload, requested: string, o: ResolveOptions): ServiceMatch | undefined {
  const headlessSuffix = `.svc.${o.clusterDomain}`;
  for (const alias of aliasesFor(requested, client.namespace, o.clusterDomain, o.searchDomains)) {
    for (const candidate of wildcardsOf(alias.name)) {
      const qualifying = snapshot
        .servicesByHostname(candidate)
        .filter((s) => (s.vips.length > 0 || s.hostname.endsWith(headlessSuffix)) && serviceVisibleTo(s, client.namespace));
      const service = pickBestService(qualifying, client.namespace, o.preferredServiceNamespace);
      if (service !== undefined) return { service, matched: candidate, alias };
    }
  }
  return undefined;
}

/** ztunnel `service_family_allowed`: AAAA needs IPv6 enabled; a single-family service answers only its family. */
function familyAllowed(service: Service, type: AddressRecordType, ipv6Enabled: boolean): boolean {
  if (type === 'AAAA' && !ipv6Enabled) return false;
  if (service.ipFamilies === 'IPv4' && type === 'AAAA') return false;
  if (service.ipFamilies === 'IPv6' && type === 'A') return false;
  return true;
}

function wanted(ip: string, type: AddressRecordType, ipv6Enabled: boolean): boolean {
  const family = ipFamily(ip);
  return type === 'A' ? family === 4 : family === 6 && ipv6Enabled;
}

function addressesOf(snapshot: ResolverSnapshot, client: Workload, service: Service, type: AddressRecordType, ipv6Enabled: boolean): string[] {
  if (service.vips.length === 0) {
    // Headless: one address per endpoint workload (health-filtered like the store's endpoints).
    const out: string[] = [];
    for (const ep of snapshot.endpoints(serviceKey(service))) {
      const ip = ep.workload.addresses.find((a) => wanted(a, type, ipv6Enabled));
      if (ip !== undefined) out.push(ip);
    }
    return out;
  }
  return service.vips.filter((v) => v.network === client.network && wanted(v.address, type, ipv6Enabled)).map((v) => v.address);
}

/** Fisher-Yates with the injected random source; returns a new array. */
export function shuffle<T>(items: readonly T[], random: Random): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.min(i, Math.floor(random() * (i + 1)));
    const tmp = out[i] as T;
    out[i] = out[j] as T;
    out[j] = tmp;
  }
  return out;
}
