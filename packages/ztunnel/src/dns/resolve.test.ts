import { createStore, type Service, type Snapshot, type Workload } from '@ambient/control';
import { addresses, aService, aServiceRef, aWorkload, vip } from '@ambient/control/testing';
import { beforeAll, describe, expect, it } from 'vitest';
import { searchDomainsFor } from './names.js';
import { DNS_TTL_SECONDS, resolveQuestion, shuffle, type Resolution, type ResolveOptions } from './resolve.js';

const NS1 = 'ns1';
const NW1 = 'nw1';
const NW2 = 'nw2';
const kube = (name: string, ns: string) => `${name}.${ns}.svc.cluster.local`;

function svc(name: string, ns: string, vips: ReadonlyArray<readonly [string, string]>, over: Partial<Service> = {}): Service {
  return aService({ name, namespace: ns, hostname: kube(name, ns), vips: vips.map(([ip, nw]) => vip(ip, nw)), ...over });
}
/** A ServiceEntry-like service: hostname is the name itself. */
function ext(hostname: string, ns: string, vips: ReadonlyArray<readonly [string, string]>, over: Partial<Service> = {}): Service {
  return aService({ name: hostname, namespace: ns, hostname, vips: vips.map(([ip, nw]) => vip(ip, nw)), ...over });
}
function backing(uid: string, serviceKeys: readonly string[], ips: readonly string[], over: Partial<Workload> = {}): Workload {
  return aWorkload({ uid, namespace: NS1, network: NW1, addresses: ips, services: serviceKeys.map((k) => aServiceRef(k)), ...over });
}

const client = aWorkload({ uid: 'cluster//Pod/ns1/client', name: 'client', namespace: NS1, network: NW1, addresses: ['10.0.0.1'] });

let snapshot: Snapshot;
beforeAll(async () => {
  const store = createStore();
  await store.applyAddresses(
    addresses([
      client,
      ext('www.google.com', NS1, [['1.1.1.1', NW1]]),
      svc('productpage', NS1, [['9.9.9.9', NW1]]),
      svc('example', 'ns2', [['10.10.10.10', NW1]]),
      svc('nslocal', 'ns2', [['10.10.10.240', NW1]], { visibility: 'Namespace' }),
      svc('nslocalsame', NS1, [['10.10.10.241', NW1]], { visibility: 'Namespace' }),
      ext('everywhere.io', 'ns2', [['10.10.10.110', NW1]]),
      ext('preferred.io', 'ns2', [['10.10.10.210', NW1]]),
      ext('everywhere.io', 'preferred-ns', [['10.10.10.111', NW1]]),
      ext('preferred.io', 'preferred-ns', [['10.10.10.211', NW1]]),
      ext('everywhere.io', NS1, [['10.10.10.112', NW1]]),
      ext('canonical.svc', 'ns2', [['10.10.10.140', NW1]]),
      ext('canonical.svc', 'ns3', [['10.10.10.141', NW1]], { canonical: true }),
      ext('canonical.with.local', NS1, [['10.10.10.150', NW1]]),
      ext('canonical.with.local', 'ns2', [['10.10.10.151', NW1]], { canonical: true }),
      aService({
        name: 'details',
        namespace: 'ns2',
        hostname: 'details.ns2.svc.cluster.remote',
        vips: ['11.11.11.11', '12.12.12.12', '13.13.13.13', '14.14.14.14'].map((ip) => vip(ip, NW1)),
      }),
      ext('ipv4.localhost', NS1, [['2.2.2.2', NW1]]),
      ext('ipv6.localhost', NS1, [['2001:db8::ff00:42:8329', NW1]]),
      ext('dual.localhost', NS1, [['2.2.2.2', NW1], ['2001:db8::ff00:42:8329', NW1]]),
      ext('v4-family.localhost', NS1, [['2.2.2.4', NW1], ['2001:db8::4', NW1]], { ipFamilies: 'IPv4' }),
      ext('*.wildcard', NS1, [['10.10.10.10', NW1]]),
      ext('*.b.wildcard', NS1, [['11.11.11.11', NW1]]),
      ext('*.svc.mesh.company.net', NS1, [['10.1.2.3', NW1]]),
      svc('nw2-only', NS1, [['20.20.20.20', NW2]]),
      svc('both-networks', NS1, [['21.21.21.21', NW1], ['22.22.22.22', NW2]]),
      svc('headless', NS1, []),
      svc('headless-ipv6', NS1, [], { ipFamilies: 'IPv6' }),
      ext('headless.example.com', NS1, []),
      backing('headless0', [`${NS1}/${kube('headless', NS1)}`], ['30.30.30.30', '2001:db8::30']),
      backing('headless1', [`${NS1}/${kube('headless', NS1)}`], ['31.31.31.31', '2001:db8::31']),
      backing('headless-sick', [`${NS1}/${kube('headless', NS1)}`], ['34.34.34.34'], { status: 'Unhealthy' }),
      backing('headless-external', [`${NS1}/headless.example.com`], ['32.32.32.32']),
      backing('headless2', [`${NS1}/${kube('headless-ipv6', NS1)}`], ['33.33.33.33', '2001:db8::33']),
    ]),
  );
  snapshot = store.snapshot();
});

const options = (over: Partial<ResolveOptions> = {}): ResolveOptions => ({
  clusterDomain: 'cluster.local',
  searchDomains: searchDomainsFor(NS1, 'cluster.local'),
  ipv6Enabled: true,
  preferredServiceNamespace: 'preferred-ns',
  ...over,
});

function resolve(name: string, type: 'A' | 'AAAA' = 'A', over: Partial<ResolveOptions> = {}): Resolution {
  return resolveQuestion(snapshot, client, { name, type }, options(over), Math.random);
}

/** The answer as sorted "TYPE name data" lines (address records are shuffled), or "forward". */
function lines(r: Resolution): string[] | 'forward' {
  if (r.kind === 'forward') return 'forward';
  for (const rec of r.records) expect(rec.ttl).toBe(DNS_TTL_SECONDS);
  const [first, ...rest] = r.records.map((rec) => `${rec.type} ${rec.name} ${rec.data}`);
  if (first === undefined) return [];
  return first.startsWith('CNAME') ? [first, ...rest.sort()] : [first, ...rest].sort();
}

describe('resolveQuestion (ztunnel Store::lookup)', () => {
  it.each<[string, string, 'A' | 'AAAA', string[] | 'forward']>([
    ['non-k8s host in the mesh', 'www.google.com', 'A', ['A www.google.com 1.1.1.1']],
    [
      'non-k8s host with a search domain: CNAME to the stripped name',
      'www.google.com.ns1.svc.cluster.local.',
      'A',
      ['CNAME www.google.com.ns1.svc.cluster.local www.google.com', 'A www.google.com 1.1.1.1'],
    ],
    ['unknown host is forwarded', 'www.bing.com', 'A', 'forward'],
    ['k8s fqdn', 'productpage.ns1.svc.cluster.local.', 'A', ['A productpage.ns1.svc.cluster.local 9.9.9.9']],
    ['k8s name.namespace', 'productpage.ns1.', 'A', ['A productpage.ns1 9.9.9.9']],
    ['k8s short name in the client namespace', 'productpage.', 'A', ['A productpage 9.9.9.9']],
    ['name.namespace.svc', 'example.ns2.svc.', 'A', ['A example.ns2.svc 10.10.10.10']],
    ['mixed case is matched case-insensitively', 'ProductPage.NS1.', 'A', ['A productpage.ns1 9.9.9.9']],
    [
      'name.namespace + search domain: CNAME to name.namespace',
      'productpage.ns1.ns1.svc.cluster.local.',
      'A',
      ['CNAME productpage.ns1.ns1.svc.cluster.local productpage.ns1', 'A productpage.ns1 9.9.9.9'],
    ],
    ['AAAA for an IPv4-only service through a search domain: NOERROR, no records', 'productpage.ns1.ns1.svc.cluster.local.', 'AAAA', []],
    ['other namespace, name.namespace', 'example.ns2.', 'A', ['A example.ns2 10.10.10.10']],
    ['other namespace, short name: not ours', 'example.', 'A', 'forward'],
    ['namespace-scoped service of another namespace is invisible', 'nslocal.ns2.svc.cluster.local.', 'A', 'forward'],
    ['namespace-scoped service of the client namespace resolves', 'nslocalsame.ns1.svc.cluster.local.', 'A', ['A nslocalsame.ns1.svc.cluster.local 10.10.10.241']],
    [
      'other cluster domain, fqdn',
      'details.ns2.svc.cluster.remote.',
      'A',
      ['11.11.11.11', '12.12.12.12', '13.13.13.13', '14.14.14.14'].map((ip) => `A details.ns2.svc.cluster.remote ${ip}`),
    ],
    ['other cluster domain, name.namespace: not ours', 'details.ns2.', 'A', 'forward'],
    ['A of a dual-stack service: A only', 'dual.localhost.', 'A', ['A dual.localhost 2.2.2.2']],
    ['AAAA of a dual-stack service: AAAA only', 'dual.localhost.', 'AAAA', ['AAAA dual.localhost 2001:db8::ff00:42:8329']],
    ['A of an IPv6-only service: empty', 'ipv6.localhost.', 'A', []],
    ['AAAA of an IPv4-only service: empty', 'ipv4.localhost.', 'AAAA', []],
    ['AAAA when ip_families is IPv4, even with a v6 VIP: empty', 'v4-family.localhost.', 'AAAA', []],
    ['wildcard', 'foo.wildcard.', 'A', ['A foo.wildcard 10.10.10.10']],
    ['most specific wildcard wins', 'a.b.wildcard.', 'A', ['A a.b.wildcard 11.11.11.11']],
    ['wildcard with a domain', 'foo.svc.mesh.company.net.', 'A', ['A foo.svc.mesh.company.net 10.1.2.3']],
    ['wildcard, deeper', 'foo.foons.svc.mesh.company.net.', 'A', ['A foo.foons.svc.mesh.company.net 10.1.2.3']],
    [
      'wildcard through a search domain: no CNAME, the requested name',
      'foo.svc.mesh.company.net.ns1.svc.cluster.local.',
      'A',
      ['A foo.svc.mesh.company.net.ns1.svc.cluster.local 10.1.2.3'],
    ],
    ['no VIP on the client network: empty', 'nw2-only.ns1.svc.cluster.local.', 'A', []],
    ['only the VIP on the client network', 'both-networks.ns1.svc.cluster.local.', 'A', ['A both-networks.ns1.svc.cluster.local 21.21.21.21']],
    [
      'headless: healthy endpoint IPs for A',
      'headless.ns1.svc.cluster.local.',
      'A',
      ['A headless.ns1.svc.cluster.local 30.30.30.30', 'A headless.ns1.svc.cluster.local 31.31.31.31'],
    ],
    [
      'headless: endpoint IPs for AAAA',
      'headless.ns1.svc.cluster.local.',
      'AAAA',
      ['AAAA headless.ns1.svc.cluster.local 2001:db8::30', 'AAAA headless.ns1.svc.cluster.local 2001:db8::31'],
    ],
    ['headless IPv6-only: AAAA', 'headless-ipv6.ns1.svc.cluster.local.', 'AAAA', ['AAAA headless-ipv6.ns1.svc.cluster.local 2001:db8::33']],
    ['headless IPv6-only: A is empty', 'headless-ipv6.ns1.svc.cluster.local.', 'A', []],
    ['a pod under a headless service is not resolved here', 'headless.pod0.ns1.svc.cluster.local.', 'A', 'forward'],
    ['headless outside .svc.<domain> is not ours', 'headless.example.com', 'A', 'forward'],
    ['client namespace wins', 'everywhere.io.', 'A', ['A everywhere.io 10.10.10.112']],
    ['PREFERED_SERVICE_NAMESPACE when the client namespace has none', 'preferred.io.', 'A', ['A preferred.io 10.10.10.211']],
    ['canonical when the client namespace has none', 'canonical.svc', 'A', ['A canonical.svc 10.10.10.141']],
    ['client namespace over canonical', 'canonical.with.local', 'A', ['A canonical.with.local 10.10.10.150']],
    ['the root name is never ours', '.', 'A', 'forward'],
  ])('%s: %s %s', (_case, name, type, expected) => {
    expect(lines(resolve(name, type))).toEqual(expected);
  });

  it('without a preferred namespace, the first service of the hostname', () => {
    expect(lines(resolve('preferred.io.', 'A', { preferredServiceNamespace: undefined }))).toEqual(['A preferred.io 10.10.10.210']);
  });

  it('IPV6_ENABLED=false: AAAA is empty even for IPv6 services, A is unchanged', () => {
    expect(lines(resolve('ipv6.localhost.', 'AAAA', { ipv6Enabled: false }))).toEqual([]);
    expect(lines(resolve('headless.ns1.svc.cluster.local.', 'AAAA', { ipv6Enabled: false }))).toEqual([]);
    expect(lines(resolve('dual.localhost.', 'A', { ipv6Enabled: false }))).toEqual(['A dual.localhost 2.2.2.2']);
  });

  it('says why an answer is empty (for the access log)', () => {
    const wrongFamily = resolve('ipv4.localhost.', 'AAAA');
    const noVip = resolve('nw2-only.ns1.svc.cluster.local.', 'A');
    expect(wrongFamily.kind === 'answer' && wrongFamily.result).toBe('no records');
    expect(noVip.kind === 'answer' && noVip.result).toBe('no records');
    const familyExcluded = resolve('headless-ipv6.ns1.svc.cluster.local.', 'A');
    expect(familyExcluded.kind === 'answer' && familyExcluded.result).toBe('service does not support this record type');
  });

  it('shuffles the address records with the injected random source', () => {
    const order = (random: () => number) => {
      const r = resolveQuestion(snapshot, client, { name: 'details.ns2.svc.cluster.remote', type: 'A' }, options(), random);
      return r.kind === 'answer' ? r.records.map((rec) => rec.data) : [];
    };
    expect(order(() => 0.999)).toEqual(['11.11.11.11', '12.12.12.12', '13.13.13.13', '14.14.14.14']);
    expect(order(() => 0)).toEqual(['12.12.12.12', '13.13.13.13', '14.14.14.14', '11.11.11.11']);
  });
});

describe('shuffle', () => {
  it('returns a permutation and leaves the input alone', () => {
    const input = [1, 2, 3, 4, 5];
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
    const out = shuffle(input, random);
    expect([...out].sort()).toEqual(input);
    expect(input).toEqual([1, 2, 3, 4, 5]);
  });

  it('tolerates a random source returning 1', () => {
    expect(shuffle([1, 2, 3], () => 1).sort()).toEqual([1, 2, 3]);
  });
});
