// ztunnel in dedicated mode (how it runs on a VM or as a per-pod proxy) under
// the SAME istio-cni capture rules as the pods: the "vm" namespace gets
// istio-cni's in-pod rules and policy routing but is never handed to a node's
// ztunnel over ZDS; its own ztunnel runs inside it (PROXY_MODE=dedicated,
// PACKET_MARK=1337 so its sockets bypass the REDIRECTs, the workload's own
// token and identity). The vm app's outbound is captured to that ztunnel's
// 15001 and sent as HBONE with the vm's identity; mesh pods reach the vm over
// HBONE on its 15008 and non-mesh pods in plaintext through its 15006, the vm
// app seeing each client's own address (connmark 0x111 + table 100); and an
// ALLOW policy selecting the vm is enforced by the vm's ztunnel.
import { beforeAll, describe, expect, it } from 'vitest';
import { EchoServer, exchange, tryExchange } from '../lib/apps.js';
import { useCluster, type Cluster } from '../lib/cluster.js';
import { spiffe, type MeshPolicy } from '../lib/mesh.js';
import { find, parseMetrics, sum, type Sample } from '../lib/prometheus.js';
import { APP_PORT, backs, service } from '../lib/scenario.js';
import { waitFor } from '../lib/wait.js';
import type { ZtunnelProcess } from '../lib/ztunnel.js';

const echo = service('echo', 'demo', '10.96.1.10');
const VM = { name: 'vm', namespace: 'vms', serviceAccount: 'vm-app' } as const;
const VM_POLICY = `${VM.namespace}/vm-allow-admitted`;

const cluster = useCluster({
  nodes: ['node-a', 'node-b'],
  pods: [
    { name: 'server', node: 'node-a', namespace: 'demo', serviceAccount: 'server', app: 'echo', services: backs(echo) },
    { name: 'client', node: 'node-a', namespace: 'demo', serviceAccount: 'client' },
    { name: 'admitted', node: 'node-a', namespace: 'demo', serviceAccount: 'admitted' },
    { name: 'legacy', node: 'node-a', namespace: 'legacy', mode: 'plain' },
    // The VM: behind node-b (whose ztunnel never hears of it over ZDS), no DNS capture (its ztunnel runs no DNS proxy).
    { name: VM.name, node: 'node-b', namespace: VM.namespace, serviceAccount: VM.serviceAccount, mode: 'dedicated', dnsCapture: false },
  ],
  services: [echo],
});

let vmApp: EchoServer | undefined;

beforeAll(async () => {
  const c = cluster();
  await c.startDedicatedZtunnel(VM.name);
  await EchoServer.start('server', c.pod('server').net.netns, APP_PORT);
  vmApp = await EchoServer.start('vm', c.pod(VM.name).net.netns, APP_PORT);
});

/** The `istio_tcp_connections_closed_total` series of `z` matching `labels`, once at least `atLeast` were reported. */
async function closedConnections(z: ZtunnelProcess, labels: Record<string, string>, atLeast: number): Promise<Sample[]> {
  return waitFor(`${z.name}: ${atLeast} closed connection(s) with ${JSON.stringify(labels)}`, async () => {
    const series = find(parseMetrics(await z.metrics()), 'istio_tcp_connections_closed_total', labels);
    return sum(series) >= atLeast ? series : undefined;
  });
}

/** The access log lines of `z` that contain every one of `parts`. */
function accessLog(z: ZtunnelProcess, ...parts: string[]): string[] {
  return z.process.grep(/connection complete/).filter((l) => parts.every((p) => l.includes(p)));
}

const vmZtunnel = (c: Cluster) => c.dedicatedZtunnel(VM.name);

describe('the vm (dedicated-mode ztunnel under istio-cni rules) calling into the mesh', () => {
  it('reaches a mesh pod on a shared-mode node by pod IP, as HBONE with the vm identity, seen with the vm IP', async () => {
    const c = cluster();
    const vm = c.pod(VM.name);
    const server = c.pod('server');
    const r = await exchange(vm.net.netns, server.ip, APP_PORT, 'vm to pod');
    expect(r.echoed).toBe('vm to pod');
    expect(r.greeting).toMatchObject({ server: 'server', local: server.ip });
    expect(r.greeting.peer, 'the address the server app sees').toBe(vm.ip);

    // Captured by the vm's OUTPUT REDIRECT: its own ztunnel proxied it (source reporter), over HBONE to the pod's 15008.
    const labels = { source_principal: spiffe(VM.namespace, VM.serviceAccount), source_workload: VM.name, destination_workload: 'echo', connection_security_policy: 'mutual_tls' };
    await closedConnections(vmZtunnel(c), { reporter: 'source', ...labels }, 1);
    expect(accessLog(vmZtunnel(c), 'direction="outbound"', `src.addr=${vm.ip}:`, `dst.addr=${server.ip}:15008`, `dst.hbone_addr=${server.ip}:${APP_PORT}`), vmZtunnel(c).tail(20)).not.toEqual([]);
    // The server's node ztunnel accepted it as HBONE (mTLS) from the vm's SPIFFE identity.
    await closedConnections(c.ztunnel('node-a'), { reporter: 'destination', ...labels }, 1);
    expect(
      accessLog(c.ztunnel('node-a'), 'direction="inbound"', `src.addr=${vm.ip}:`, `src.identity="${spiffe(VM.namespace, VM.serviceAccount)}"`, `dst.hbone_addr=${server.ip}:${APP_PORT}`),
      c.ztunnel('node-a').tail(20),
    ).not.toEqual([]);
  });

  it('reaches a service VIP (resolved by its own ztunnel), seen with the vm IP', async () => {
    const c = cluster();
    const vm = c.pod(VM.name);
    const r = await exchange(vm.net.netns, echo.vip, 80, 'vm to vip');
    expect(r.echoed).toBe('vm to vip');
    expect(r.greeting).toMatchObject({ server: 'server', peer: vm.ip });
    const labels = {
      source_principal: spiffe(VM.namespace, VM.serviceAccount),
      destination_service: 'echo.demo.svc.cluster.local',
      connection_security_policy: 'mutual_tls',
    };
    await closedConnections(vmZtunnel(c), { reporter: 'source', ...labels }, 1);
    await closedConnections(c.ztunnel('node-a'), { reporter: 'destination', ...labels }, 1);
  });
});

describe('the mesh and non-mesh pods calling the vm', () => {
  it('delivers a mesh pod\'s HBONE connection on the vm\'s 15008 to the vm app, which sees the pod IP', async () => {
    const c = cluster();
    const vm = c.pod(VM.name);
    const client = c.pod('client');
    const r = await exchange(client.net.netns, vm.ip, APP_PORT, 'pod to vm');
    expect(r.echoed).toBe('pod to vm');
    expect(r.greeting).toMatchObject({ server: 'vm', local: vm.ip });
    expect(r.greeting.peer, 'the address the vm app sees (transparent source, connmark 0x111 / table 100)').toBe(client.ip);

    const labels = { source_principal: spiffe('demo', 'client'), destination_principal: spiffe(VM.namespace, VM.serviceAccount), connection_security_policy: 'mutual_tls' };
    await closedConnections(c.ztunnel('node-a'), { reporter: 'source', ...labels }, 1);
    expect(accessLog(c.ztunnel('node-a'), 'direction="outbound"', `src.addr=${client.ip}:`, `dst.addr=${vm.ip}:15008`), c.ztunnel('node-a').tail(20)).not.toEqual([]);
    await closedConnections(vmZtunnel(c), { reporter: 'destination', ...labels }, 1);
    expect(
      accessLog(vmZtunnel(c), 'direction="inbound"', `src.addr=${client.ip}:`, `src.identity="${spiffe('demo', 'client')}"`, `dst.hbone_addr=${vm.ip}:${APP_PORT}`),
      vmZtunnel(c).tail(20),
    ).not.toEqual([]);
  });

  it('accepts a non-mesh pod in plaintext through the vm\'s 15006, the vm app seeing its IP', async () => {
    const c = cluster();
    const vm = c.pod(VM.name);
    const legacy = c.pod('legacy');
    const r = await exchange(legacy.net.netns, vm.ip, APP_PORT, 'plain to vm');
    expect(r.echoed).toBe('plain to vm');
    expect(r.greeting).toMatchObject({ server: 'vm', local: vm.ip, peer: legacy.ip });

    const series = await closedConnections(vmZtunnel(c), { reporter: 'destination', source_workload: 'legacy' }, 1);
    expect(series.map((s) => s.labels['connection_security_policy'])).not.toContain('mutual_tls');
    // Plaintext (15006): no peer identity, no HBONE address.
    const lines = accessLog(vmZtunnel(c), 'direction="inbound"', `src.addr=${legacy.ip}:`, `dst.addr=${vm.ip}:${APP_PORT}`);
    expect(lines, vmZtunnel(c).tail(20)).not.toEqual([]);
    for (const l of lines) expect(l).not.toMatch(/src\.identity=|dst\.hbone_addr=/);
  });
});

describe('authorization at the vm\'s ztunnel', () => {
  it('denies a mesh pod that an ALLOW selecting the vm does not admit, and admits the principal it names', async () => {
    const c = cluster();
    const vm = c.pod(VM.name);
    const allow: MeshPolicy = {
      name: 'vm-allow-admitted',
      namespace: VM.namespace,
      scope: 'WorkloadSelector',
      action: 'Allow',
      rules: [[[{ principals: [{ Exact: `cluster.local/ns/demo/sa/admitted` }] }]]],
    };
    const select = (on: boolean) =>
      c.updateMesh((m) => ({
        ...m,
        policies: on ? [allow] : [],
        workloads: m.workloads.map((w) => (w.name === VM.name ? { ...w, authorizationPolicies: on ? [VM_POLICY] : [] } : w)),
      }));
    select(true);
    try {
      await c.waitForPolicies();
      await vmZtunnel(c).waitForConfig('the vm selects the ALLOW policy', (d) =>
        (d.workloads ?? []).some((w) => w.name === VM.name && JSON.stringify(w).includes(VM_POLICY)),
      );
      const app = vmApp as EchoServer;
      const before = app.peers.length;
      const denied = await tryExchange(c.pod('client').net.netns, vm.ip, APP_PORT, 'denied', 5_000);
      expect(denied, 'the connection of demo/client').toBeInstanceOf(Error);
      expect(app.peers.length, 'a denied connection reached the vm app').toBe(before);
      await waitFor('the vm ztunnel logs the denial', async () => (vmZtunnel(c).process.grep(/connection denied/).some((l) => l.includes(`src.addr=${c.pod('client').ip}:`)) ? true : undefined), {
        timeoutMs: 5_000,
      });

      const admitted = await exchange(c.pod('admitted').net.netns, vm.ip, APP_PORT, 'admitted');
      expect(admitted.greeting).toMatchObject({ server: 'vm', peer: c.pod('admitted').ip });
    } finally {
      select(false);
      await c.waitForPolicies();
    }
  });
});
