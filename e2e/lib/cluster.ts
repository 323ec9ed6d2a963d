/**
 * A whole test cluster, composed: the network (topology.ts), the control
 * plane with the mesh file (control-plane.ts, mesh.ts), per node an istio-cni
 * fake (cni-agent.ts) and a ztunnel (ztunnel.ts), and per pod its network
 * namespace, istio-cni's in-pod rules when captured (capture-rules.ts), its
 * WDS workload and its ZDS registration (or, for a `dedicated` pod, a
 * dedicated-mode ztunnel of its own inside it, started by the scenario).
 *
 * Pods have two uids, as in Kubernetes: the WDS resource name istiod gives
 * them (`Kubernetes//Pod/<ns>/<name>`) and the pod UID istio-cni sends over
 * ZDS (a UUID); ztunnel matches the two by name, namespace and service
 * account (WorkloadInfo), as Istio's does.
 */
import { randomUUID } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { installInpodCapture } from './capture-rules.js';
import { runAll } from './cleanup.js';
import { inNetns } from './exec.js';
import { CniNodeAgent } from './cni-agent.js';
import { ControlPlaneProcess } from './control-plane.js';
import type { Mesh, MeshPolicy, MeshService, MeshWorkload, TokenEntry } from './mesh.js';
import { getNative } from './netns-sockets.js';
import { FABRIC_IP, Topology, type PodNet } from './topology.js';
import { nodeToken, workloadToken, ZtunnelProcess, type ZtunnelPorts } from './ztunnel.js';

export interface PodSpec {
  readonly name: string;
  readonly node: string;
  readonly namespace: string;
  readonly serviceAccount?: string;
  readonly app?: string;
  readonly version?: string;
  /**
   * 'mesh': captured (istio-cni rules + ZDS) and HBONE in WDS;
   * 'plain': not captured, known to WDS as a plain TCP workload;
   * 'unknown': not captured and not in WDS at all;
   * 'dedicated': captured (istio-cni rules) and HBONE in WDS, but never sent
   * over ZDS: its own dedicated-mode ztunnel runs inside it (a VM, a per-pod
   * proxy; Cluster.startDedicatedZtunnel), with a token of its own identity.
   */
  readonly mode?: 'mesh' | 'plain' | 'unknown' | 'dedicated';
  /** `<ns>/<hostname>` -> {service port: target port}. */
  readonly services?: Readonly<Record<string, Readonly<Record<number, number>>>>;
  readonly policies?: readonly string[];
  /** istio-cni's per-pod DNS capture (annotation ambient.istio.io/dns-capture); default on. */
  readonly dnsCapture?: boolean;
}

export interface ClusterSpec {
  readonly nodes: readonly string[];
  readonly pods: readonly PodSpec[];
  readonly services?: readonly MeshService[];
  readonly policies?: readonly MeshPolicy[];
  /** Extra environment for every ztunnel. */
  readonly ztunnelEnv?: Readonly<Record<string, string>>;
}

export interface ClusterPod {
  readonly spec: PodSpec;
  readonly net: PodNet;
  /** The Kubernetes pod UID (ZDS). */
  readonly podUid: string;
  /** The WDS workload uid. */
  readonly wdsUid: string;
  readonly ip: string;
}

/** Where the logs of a failed file are kept (with the vitest report, out of git). */
const LOG_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', 'coverage', 'logs');

interface NodeRuntime {
  readonly agent: CniNodeAgent;
  readonly udsPath: string;
  ztunnel: ZtunnelProcess;
  generation: number;
}

export class Cluster {
  readonly #pods = new Map<string, ClusterPod>();
  readonly #nodes = new Map<string, NodeRuntime>();
  readonly #dedicated = new Map<string, ZtunnelProcess>();
  #mesh: Mesh;

  private constructor(
    readonly spec: ClusterSpec,
    readonly topology: Topology,
    readonly controlPlane: ControlPlaneProcess,
    mesh: Mesh,
  ) {
    this.#mesh = mesh;
  }

  static async start(spec: ClusterSpec): Promise<Cluster> {
    const native = getNative();
    const topology = await Topology.create(spec.nodes);
    const pods: ClusterPod[] = [];
    for (const p of spec.pods) pods.push(await createPodNetwork(topology, p));
    const mesh: Mesh = {
      workloads: pods.flatMap((p) => workloadOf(p) ?? []),
      services: [...(spec.services ?? [])],
      policies: [...(spec.policies ?? [])],
    };
    const tokens: TokenEntry[] = spec.nodes.map((n) => ({ token: nodeToken(n), namespace: 'istio-system', serviceAccount: 'ztunnel', node: n, pod: `ztunnel-${n}` }));
    for (const p of pods) {
      if (p.spec.mode !== 'dedicated') continue;
      tokens.push({ token: workloadToken(p.spec.namespace, p.spec.name), namespace: p.spec.namespace, serviceAccount: p.spec.serviceAccount ?? 'default', pod: p.spec.name });
    }
    const controlPlane = await ControlPlaneProcess.start({ netns: topology.fabric, host: FABRIC_IP, dir: topology.tmpDir, mesh, tokens });
    const cluster = new Cluster(spec, topology, controlPlane, mesh);
    for (const p of pods) cluster.#pods.set(p.spec.name, p);

    for (const nodeName of spec.nodes) {
      const udsPath = join(topology.tmpDir, `ztunnel-${nodeName}.sock`);
      const agent = CniNodeAgent.start(native, udsPath, nodeName);
      for (const p of pods) if (p.spec.node === nodeName && (p.spec.mode ?? 'mesh') === 'mesh') void agent.addPod(cniPod(p));
      const ztunnel = ZtunnelProcess.start({ node: topology.node(nodeName), dir: topology.tmpDir, controlPlane, udsPath, env: spec.ztunnelEnv ?? {} });
      cluster.#nodes.set(nodeName, { agent, udsPath, ztunnel, generation: 1 });
    }
    await Promise.all([...cluster.#nodes.values()].map((n) => n.ztunnel.ready()));
    return cluster;
  }

  get mesh(): Mesh {
    return this.#mesh;
  }

  pod(name: string): ClusterPod {
    const p = this.#pods.get(name);
    if (p === undefined) throw new Error(`no pod ${name}`);
    return p;
  }

  ztunnel(node: string): ZtunnelProcess {
    return this.#runtime(node).ztunnel;
  }

  /**
   * Starts the dedicated-mode ztunnel of a `dedicated` pod inside the pod's
   * namespace (PROXY_WORKLOAD_INFO = the pod, its own token) and waits until
   * it is ready (its listeners are up after the first sync).
   */
  async startDedicatedZtunnel(podName: string, env: Readonly<Record<string, string>> = {}): Promise<ZtunnelProcess> {
    const pod = this.pod(podName);
    if (pod.spec.mode !== 'dedicated') throw new Error(`pod ${podName} is not a 'dedicated' pod`);
    if (this.#dedicated.has(podName)) throw new Error(`pod ${podName} already has its ztunnel`);
    // istio-cni's in-pod rules exempt only packets marked 1337, and ztunnel (ours, and Istio's) marks only its proxy
    // sockets, not its xDS/CA connections. A dedicated ztunnel inside a captured namespace therefore needs its
    // control-plane traffic exempted, as a VM deployment does (there by proxy uid): here by destination.
    const [cpHost, cpPort] = splitHostPort(this.controlPlane.address);
    await inNetns(pod.net.netns.name, 'iptables', ['-t', 'nat', '-I', 'ISTIO_OUTPUT', '1', '-d', `${cpHost}/32`, '-p', 'tcp', '--dport', cpPort, '-j', 'ACCEPT']);
    const z = ZtunnelProcess.startDedicated({
      pod: pod.net,
      workload: { namespace: pod.spec.namespace, name: pod.spec.name, serviceAccount: pod.spec.serviceAccount ?? 'default' },
      dir: this.topology.tmpDir,
      controlPlane: this.controlPlane,
      env,
    });
    this.#dedicated.set(podName, z);
    // A beforeAll failure prints no diagnostics: say why it never became ready.
    await z.ready().catch((err: unknown) => {
      throw new Error(`${err instanceof Error ? err.message : String(err)}\n--- ${z.name} (last 15 lines)\n${z.tail(15)}`);
    });
    return z;
  }

  /** The dedicated-mode ztunnel running inside a pod. */
  dedicatedZtunnel(podName: string): ZtunnelProcess {
    const z = this.#dedicated.get(podName);
    if (z === undefined) throw new Error(`pod ${podName} has no dedicated ztunnel`);
    return z;
  }

  cni(node: string): CniNodeAgent {
    return this.#runtime(node).agent;
  }

  #runtime(node: string): NodeRuntime {
    const r = this.#nodes.get(node);
    if (r === undefined) throw new Error(`no node ${node}`);
    return r;
  }

  /** Replaces the mesh (pods' workloads are kept in step by addPod/deletePod) and rewrites the mesh file. */
  updateMesh(change: (m: Mesh) => Mesh): void {
    this.#mesh = change(this.#mesh);
    this.controlPlane.update(this.#mesh);
  }

  setPolicies(policies: readonly MeshPolicy[]): void {
    this.updateMesh((m) => ({ ...m, policies: [...policies] }));
  }

  /** Waits until every node's ztunnel (and every dedicated one) has the same policy names as the mesh. */
  async waitForPolicies(): Promise<void> {
    const want = this.#mesh.policies.map((p) => `${p.namespace}/${p.name}`).sort().join(',');
    await Promise.all(
      [...[...this.#nodes.values()].map((n) => n.ztunnel), ...this.#dedicated.values()].map((z) =>
        z.waitForConfig(`policies = [${want}]`, (d) => (d.policies ?? []).map((p) => `${p.namespace}/${p.name}`).sort().join(',') === want),
      ),
    );
  }

  /** A new pod while the cluster runs: network, capture rules, WDS workload, then the CNI's Add. */
  async addPod(spec: PodSpec): Promise<ClusterPod> {
    const pod = await createPodNetwork(this.topology, spec);
    this.#pods.set(spec.name, pod);
    const w = workloadOf(pod);
    if (w !== undefined) this.updateMesh((m) => ({ ...m, workloads: [...m.workloads, w] }));
    if ((spec.mode ?? 'mesh') === 'mesh') {
      const ack = await this.cni(spec.node).addPod(cniPod(pod));
      if (ack !== '') throw new Error(`ztunnel NACKed Add of ${spec.name}: ${ack}`);
    }
    return pod;
  }

  /** A pod goes away: the CNI's Del, its workload leaves WDS, its namespace is deleted. */
  async deletePod(name: string): Promise<void> {
    const pod = this.pod(name);
    if ((pod.spec.mode ?? 'mesh') === 'mesh') await this.cni(pod.spec.node).delPod(pod.podUid);
    this.updateMesh((m) => ({ ...m, workloads: m.workloads.filter((w) => w.uid !== pod.wdsUid) }));
    this.#pods.delete(name);
    await this.#dedicated.get(name)?.stop();
    this.#dedicated.delete(name);
    await this.topology.removePod(name);
  }

  /** Starts the next ztunnel generation on a node (it gets the CNI's snapshot) without stopping the current one. */
  startNextZtunnel(node: string, ports: ZtunnelPorts, env: Readonly<Record<string, string>> = {}): ZtunnelProcess {
    const r = this.#runtime(node);
    r.generation++;
    const z = ZtunnelProcess.start({
      node: this.topology.node(node),
      dir: this.topology.tmpDir,
      controlPlane: this.controlPlane,
      udsPath: r.udsPath,
      generation: r.generation,
      ports,
      env: { ...(this.spec.ztunnelEnv ?? {}), ...env },
    });
    r.ztunnel = z;
    return z;
  }

  /** Everything worth reading when a scenario fails. */
  diagnostics(lines = 60): string {
    const parts = [`--- topology (${this.topology.prefix}, ${this.topology.tmpDir})`, this.describe()];
    for (const [name, n] of this.#nodes) {
      parts.push(`--- istio-cni fake ${name}: problems ${JSON.stringify(n.agent.problems)}`, n.agent.events.slice(-30).join('\n'));
      parts.push(`--- ${n.ztunnel.name} (last ${lines} lines)`, n.ztunnel.tail(lines));
    }
    for (const z of this.#dedicated.values()) parts.push(`--- ${z.name} (last ${lines} lines)`, z.tail(lines));
    parts.push(`--- control plane (last 20 lines)`, this.controlPlane.process.tail(20));
    return parts.join('\n');
  }

  describe(): string {
    const rows = [`fabric ${this.topology.fabric.name}: br0 ${FABRIC_IP}/24 (control plane :15012, upstream DNS :53)`];
    for (const node of this.topology.nodes.values()) {
      rows.push(`node ${node.name} (${node.netns.name}): eth0 ${node.ip}, pods ${node.podCidr}`);
      for (const p of this.#pods.values()) {
        if (p.spec.node === node.name) rows.push(`  pod ${p.spec.namespace}/${p.spec.name} ${p.ip} [${p.spec.mode ?? 'mesh'}] via ${p.net.hostIf}`);
      }
    }
    return rows.join('\n');
  }

  /** Copies the processes' logs (and the mesh file) to `dir`, before the temp dir goes. */
  keepLogs(dir: string): void {
    mkdirSync(dir, { recursive: true });
    for (const f of readdirSync(this.topology.tmpDir)) {
      if (f.endsWith('.log') || f.endsWith('.yaml') || f.endsWith('.pcap')) copyFileSync(join(this.topology.tmpDir, f), join(dir, f));
    }
    const cni = [...this.#nodes].map(([name, n]) => `# ${name}\n${n.agent.events.join('\n')}\nproblems: ${JSON.stringify(n.agent.problems)}\n`).join('\n');
    writeFileSync(join(dir, 'istio-cni-fake.log'), cni);
  }

  async close(): Promise<void> {
    for (const n of this.#nodes.values()) n.agent.close();
    await runAll();
  }
}

async function createPodNetwork(topology: Topology, spec: PodSpec): Promise<ClusterPod> {
  const net = await topology.addPod(spec.node, spec.name);
  const mode = spec.mode ?? 'mesh';
  if (mode === 'mesh' || mode === 'dedicated') await installInpodCapture(net.netns.name, { dnsCapture: spec.dnsCapture ?? true });
  return { spec, net, ip: net.ip, podUid: randomUUID(), wdsUid: `Kubernetes//Pod/${spec.namespace}/${spec.name}` };
}

function workloadOf(p: ClusterPod): MeshWorkload | undefined {
  const mode = p.spec.mode ?? 'mesh';
  if (mode === 'unknown') return undefined;
  return {
    uid: p.wdsUid,
    name: p.spec.name,
    namespace: p.spec.namespace,
    serviceAccount: p.spec.serviceAccount ?? 'default',
    ip: p.ip,
    node: p.spec.node,
    protocol: mode === 'mesh' || mode === 'dedicated' ? 'HBONE' : 'TCP',
    app: p.spec.app ?? p.spec.name,
    version: p.spec.version ?? 'v1',
    services: p.spec.services ?? {},
    authorizationPolicies: p.spec.policies ?? [],
  };
}

function cniPod(p: ClusterPod): { uid: string; info: { name: string; namespace: string; serviceAccount: string }; netnsPath: string } {
  return {
    uid: p.podUid,
    info: { name: p.spec.name, namespace: p.spec.namespace, serviceAccount: p.spec.serviceAccount ?? 'default' },
    netnsPath: p.net.netns.path,
  };
}

/**
 * The usual file setup: a cluster built in beforeAll, removed in afterAll
 * (also when the tests failed), and diagnostics printed after a failed test.
 * Returns a getter (the cluster exists only once beforeAll ran).
 */
export function useCluster(spec: ClusterSpec): () => Cluster {
  let cluster: Cluster | undefined;
  let startError: unknown;
  let failed = false;
  let fileName: string | undefined;
  beforeAll(async () => {
    try {
      cluster = await Cluster.start(spec);
      process.stdout.write(`\n${cluster.describe()}\n`);
    } catch (err) {
      startError = err;
      await runAll();
      throw err;
    }
  });
  beforeEach((ctx) => {
    fileName = ctx.task.file.name;
    ctx.onTestFailed(() => {
      failed = true;
      if (cluster !== undefined) process.stderr.write(`\n${cluster.diagnostics()}\n`);
    });
  });
  afterAll(async () => {
    if (cluster !== undefined && (failed || process.env['AMBIENT_E2E_KEEP_LOGS'] === '1')) {
      const dir = join(LOG_ROOT, basename(fileName ?? cluster.topology.prefix, '.test.ts'));
      cluster.keepLogs(dir);
      process.stderr.write(`e2e: logs kept in ${dir}\n`);
    }
    const problems = cluster ? [...cluster.spec.nodes].flatMap((n) => cluster?.cni(n).problems ?? []) : [];
    await (cluster?.close() ?? runAll());
    if (problems.length > 0) process.stderr.write(`istio-cni fake saw problems: ${JSON.stringify(problems)}\n`);
  });
  return () => {
    if (cluster === undefined) throw new Error(`the cluster did not start: ${startError instanceof Error ? startError.message : String(startError)}`);
    return cluster;
  };
}

function splitHostPort(address: string): [string, string] {
  const i = address.lastIndexOf(':');
  return [address.slice(0, i), address.slice(i + 1)];
}
