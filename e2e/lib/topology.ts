/**
 * The cluster's network, built from Linux network namespaces:
 *
 *   fabric netns  (10.99.0.1/24 on bridge br0: control plane, upstream DNS, "outside" servers)
 *     ├─ veth fab-<i> ══ eth0 of node netns <i>  (10.99.0.(11+i)/24)
 *     │     node i: ip_forward=1; routes: <pod ip>/32 dev vp<n> for each local pod,
 *     │             the other nodes' pod CIDRs via their node IPs, default via 10.99.0.1
 *     │     ├─ veth vp<n> ══ eth0 of pod netns (10.10.(i+1).<n>/32, default via 169.254.1.1,
 *     │     │                  answered by proxy ARP on vp<n>, as Calico does)
 *
 * Every name starts with the run prefix `amb-e2e-<pid>-c<k>-`; links live
 * only inside our namespaces (created there directly, never in the root
 * namespace), so deleting the namespaces removes them. Every object is
 * registered with the cleanup list as soon as it exists.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killNetnsProcesses, PREFIX_BASE, registerCleanup, removeStale, runScope, type CleanupHandle } from './cleanup.js';
import { ip, run, runSyncQuiet, sysctl } from './exec.js';

export const FABRIC_IP = '10.99.0.1';
/** The gateway address pods route through (owned by nobody; the node's proxy ARP answers for it). */
const POD_GATEWAY = '169.254.1.1';

export interface Netns {
  readonly name: string;
  /** The bind-mounted namespace file, e.g. /var/run/netns/<name>. */
  readonly path: string;
}

export interface NodeNet {
  /** The Kubernetes-style node name (NODE_NAME), e.g. `node-a`. */
  readonly name: string;
  readonly index: number;
  readonly netns: Netns;
  readonly ip: string;
  readonly podCidr: string;
}

export interface PodNet {
  /** The pod name (unique in the cluster). */
  readonly name: string;
  readonly node: NodeNet;
  readonly netns: Netns;
  readonly ip: string;
  /** The node side of the pod's veth (in the node namespace). */
  readonly hostIf: string;
}

let clusterCounter = 0;

function netnsRef(name: string): Netns {
  return { name, path: `/var/run/netns/${name}` };
}

/** Removes a namespace: the processes still in it first (they would keep it alive), then the name. */
async function deleteNetns(name: string): Promise<void> {
  killNetnsProcesses(name);
  await run('ip', ['netns', 'del', name]).catch(() => undefined);
}

async function createNetns(name: string): Promise<{ netns: Netns; handle: CleanupHandle }> {
  await run('ip', ['netns', 'add', name]);
  const handle = registerCleanup({
    what: `netns ${name}`,
    run: () => deleteNetns(name),
    runSync: () => {
      killNetnsProcesses(name);
      runSyncQuiet('ip', ['netns', 'del', name]);
    },
  });
  await ip(name, 'link', 'set', 'lo', 'up');
  // Pods receive packets whose source is not routed back the way they came
  // (transparent upstream sockets); strict reverse-path filtering would drop them.
  await sysctl(name, { 'net.ipv4.conf.all.rp_filter': 0, 'net.ipv4.conf.default.rp_filter': 0, 'net.ipv4.conf.lo.rp_filter': 0 });
  return { netns: netnsRef(name), handle };
}

export class Topology {
  readonly #pods = new Map<string, { pod: PodNet; handle: CleanupHandle }>();
  readonly #podCounters = new Map<string, number>();

  private constructor(
    readonly prefix: string,
    /** Per-cluster temporary directory (sockets, mesh file, logs, pcaps). */
    readonly tmpDir: string,
    readonly fabric: Netns,
    readonly nodes: ReadonlyMap<string, NodeNet>,
  ) {}

  /** Builds the fabric and the nodes; removes what crashed earlier runs left behind first. */
  static async create(nodeNames: readonly string[]): Promise<Topology> {
    const removed = removeStale(tmpdir());
    if (removed.length > 0) process.stderr.write(`e2e: removed leftovers of an earlier run: ${removed.join(', ')}\n`);

    const prefix = `${PREFIX_BASE}${process.pid}-c${++clusterCounter}-`;
    const tmpDir = mkdtempSync(join(tmpdir(), prefix));
    registerCleanup({ what: `temp dir ${tmpDir}`, run: () => rmSync(tmpDir, { recursive: true, force: true }), runSync: () => rmSync(tmpDir, { recursive: true, force: true }) });

    const { netns: fabric } = await createNetns(`${prefix}fabric`);
    await ip(fabric.name, 'link', 'add', 'br0', 'type', 'bridge');
    await ip(fabric.name, 'addr', 'add', `${FABRIC_IP}/24`, 'dev', 'br0');
    await ip(fabric.name, 'link', 'set', 'br0', 'up');

    const nodes = new Map<string, NodeNet>();
    for (const [index, name] of nodeNames.entries()) {
      const { netns } = await createNetns(`${prefix}${name}`);
      const node: NodeNet = { name, index, netns, ip: `10.99.0.${11 + index}`, podCidr: `10.10.${index + 1}.0/24` };
      nodes.set(name, node);
      // The node's uplink, created inside the fabric with its peer moved straight into the node.
      await ip(fabric.name, 'link', 'add', `fab-${index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns.name);
      await ip(fabric.name, 'link', 'set', `fab-${index}`, 'master', 'br0');
      await ip(fabric.name, 'link', 'set', `fab-${index}`, 'up');
      await ip(netns.name, 'addr', 'add', `${node.ip}/24`, 'dev', 'eth0');
      await ip(netns.name, 'link', 'set', 'eth0', 'up');
      await ip(netns.name, 'route', 'add', 'default', 'via', FABRIC_IP);
      await sysctl(netns.name, { 'net.ipv4.ip_forward': 1, 'net.ipv4.conf.eth0.rp_filter': 0 });
      // The fabric (control plane, DNS upstream, outside servers) answers pods through their node.
      await ip(fabric.name, 'route', 'add', node.podCidr, 'via', node.ip);
      // ztunnel forwards DNS to the nameservers of its own /etc/resolv.conf; `ip netns exec`
      // bind-mounts /etc/netns/<netns>/resolv.conf over it.
      const etc = `/etc/netns/${netns.name}`;
      mkdirSync(etc, { recursive: true });
      registerCleanup({ what: etc, run: () => rmSync(etc, { recursive: true, force: true }), runSync: () => rmSync(etc, { recursive: true, force: true }) });
      writeFileSync(join(etc, 'resolv.conf'), `# written by the ambient e2e suite\nnameserver ${FABRIC_IP}\n`);
    }
    for (const node of nodes.values()) {
      for (const other of nodes.values()) {
        if (other !== node) await ip(node.netns.name, 'route', 'add', other.podCidr, 'via', other.ip);
      }
    }
    return new Topology(prefix, tmpDir, fabric, nodes);
  }

  node(name: string): NodeNet {
    const n = this.nodes.get(name);
    if (n === undefined) throw new Error(`no node ${name} (have ${[...this.nodes.keys()].join(', ')})`);
    return n;
  }

  pod(name: string): PodNet {
    const p = this.#pods.get(name);
    if (p === undefined) throw new Error(`no pod ${name}`);
    return p.pod;
  }

  /** A pod network namespace on a node, with its own IP and routes through the node. */
  async addPod(nodeName: string, podName: string): Promise<PodNet> {
    if (this.#pods.has(podName)) throw new Error(`pod ${podName} exists`);
    const node = this.node(nodeName);
    const n = (this.#podCounters.get(nodeName) ?? 9) + 1;
    if (n > 250) throw new Error(`too many pods on ${nodeName}`);
    this.#podCounters.set(nodeName, n);
    const { netns, handle } = await createNetns(`${this.prefix}pod-${podName}`);
    const pod: PodNet = { name: podName, node, netns, ip: `10.10.${node.index + 1}.${n}`, hostIf: `vp${n}` };
    this.#pods.set(podName, { pod, handle });

    await ip(node.netns.name, 'link', 'add', pod.hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns.name);
    await ip(node.netns.name, 'link', 'set', pod.hostIf, 'up');
    await sysctl(node.netns.name, {
      [`net.ipv4.conf.${pod.hostIf}.proxy_arp`]: 1,
      [`net.ipv4.neigh.${pod.hostIf}.proxy_delay`]: 0,
      [`net.ipv4.conf.${pod.hostIf}.rp_filter`]: 0,
    });
    await ip(node.netns.name, 'route', 'add', `${pod.ip}/32`, 'dev', pod.hostIf);

    await ip(netns.name, 'addr', 'add', `${pod.ip}/32`, 'dev', 'eth0');
    await ip(netns.name, 'link', 'set', 'eth0', 'up');
    await ip(netns.name, 'route', 'add', POD_GATEWAY, 'dev', 'eth0', 'scope', 'link');
    await ip(netns.name, 'route', 'add', 'default', 'via', POD_GATEWAY, 'dev', 'eth0');
    await sysctl(netns.name, { 'net.ipv4.conf.eth0.rp_filter': 0 });
    return pod;
  }

  /**
   * Deletes a pod as the kubelet would: its applications (the sockets the test
   * opened in it) end, its veth goes (and with it the node's /32 route), its
   * namespace is deleted. A namespace lives on while any socket in it or fd
   * to it is open (ztunnel keeps one until Del), so the link is deleted
   * explicitly rather than with the namespace.
   */
  async removePod(podName: string): Promise<void> {
    const entry = this.#pods.get(podName);
    if (entry === undefined) return;
    this.#pods.delete(podName);
    await runScope(entry.pod.netns.name);
    await ip(entry.pod.node.netns.name, 'link', 'del', entry.pod.hostIf).catch(() => undefined);
    await entry.handle.run();
  }

  pods(): PodNet[] {
    return [...this.#pods.values()].map((p) => p.pod);
  }
}
