// The DNS proxy in each captured pod: queries to port 53 are redirected to
// ztunnel's 15053 inside the pod. Service names (short, namespaced, fully
// qualified) are answered from the workload state with the service VIP;
// other names are forwarded to ztunnel's own upstream (the nameserver in the
// node's resolv.conf, a fake DNS server in the fabric), from inside the pod.
import { beforeAll, describe, expect, it } from 'vitest';
import { addressesOf, dnsQuery, FakeDnsServer } from '../lib/apps.js';
import { useCluster } from '../lib/cluster.js';
import { backs, KUBE_DNS, service } from '../lib/scenario.js';
import { FABRIC_IP } from '../lib/topology.js';

const echo = service('echo', 'demo', '10.96.1.10');
const EXTERNAL = 'api.example.com';
const EXTERNAL_IP = '203.0.113.7';
let upstream: FakeDnsServer;

const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'client', node: 'node-a', namespace: 'demo', serviceAccount: 'client' },
    { name: 'server', node: 'node-b', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
  ],
  services: [echo],
});

beforeAll(async () => {
  upstream = await FakeDnsServer.start(cluster().topology.fabric, FABRIC_IP, new Map([[EXTERNAL, [EXTERNAL_IP]]]));
});

describe('DNS through the pod\'s ztunnel', () => {
  for (const name of ['echo', 'echo.demo', 'echo.demo.svc.cluster.local']) {
    it(`answers ${name} with the service VIP`, async () => {
      const c = cluster();
      const r = await dnsQuery(c.pod('client').net.netns, KUBE_DNS, name, 'A');
      expect(r.rcode).toBe('NOERROR');
      expect(addressesOf(r)).toEqual([echo.vip]);
      // The answer comes back from the address the pod asked (the redirect is transparent).
      expect(r.from).toBe(`${KUBE_DNS}:53`);
      expect(upstream.queries.map((q) => q.name)).not.toContain(name);
    });
  }

  it('answers over TCP too', async () => {
    const c = cluster();
    const r = await dnsQuery(c.pod('client').net.netns, KUBE_DNS, 'echo.demo.svc.cluster.local', 'A', { tcp: true });
    expect(addressesOf(r)).toEqual([echo.vip]);
  });

  it('forwards an external name upstream from inside the pod and relays the answer', async () => {
    const c = cluster();
    const r = await dnsQuery(c.pod('client').net.netns, KUBE_DNS, EXTERNAL, 'A');
    expect(r.rcode).toBe('NOERROR');
    expect(addressesOf(r)).toEqual([EXTERNAL_IP]);
    const seen = upstream.queries.filter((q) => q.name === EXTERNAL);
    expect(seen.length).toBeGreaterThan(0);
    // Sent from the pod's namespace, so with the pod's address.
    expect(seen.at(-1)?.from).toBe(c.pod('client').ip);
  });

  it('relays the upstream NXDOMAIN for a name nobody knows', async () => {
    const c = cluster();
    const r = await dnsQuery(c.pod('client').net.netns, KUBE_DNS, 'nothing-here.example.org', 'A');
    expect(r.rcode).toBe('NXDOMAIN');
    expect(upstream.queries.some((q) => q.name === 'nothing-here.example.org')).toBe(true);
  });

  it('counts the queries in istio_dns_requests_total', async () => {
    const c = cluster();
    const metrics = await c.ztunnel('node-a').metrics();
    expect(metrics).toMatch(/^istio_dns_requests_total\{[^}]*request_query_type="a"[^}]*\} [1-9]/m);
  });
});
