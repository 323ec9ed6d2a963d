/**
 * One node's ztunnel as a child process in the node namespace, in shared
 * (in-pod) mode: it talks to the control plane in the fabric with the node's
 * token (istio-system/ztunnel on that node, so it may ask for its pods'
 * identities), and to the node's istio-cni fake over INPOD_UDS. Its admin
 * (127.0.0.1), metrics and readiness servers listen in the node namespace;
 * the test reaches them with sockets made in that namespace.
 *
 * A second generation on the same node (an upgrade: the new process starts
 * while the old one still runs) uses other admin/metrics/readiness ports,
 * since both live in the node namespace here (in a cluster each ztunnel pod
 * has its own namespace); the in-pod listeners share their ports through
 * SO_REUSEPORT as in a real upgrade.
 *
 * A dedicated-mode ztunnel (startDedicated) runs inside its workload's own
 * namespace instead, as on a VM or as a per-pod proxy.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ZTUNNEL_NODE_ENV, ZTUNNEL_NODE_FLAGS } from '@ambient/ztunnel/node-flags';
import { CONTROL_PLANE_PORT, REPO_ROOT, type ControlPlaneProcess } from './control-plane.js';
import { httpGet } from './netns-sockets.js';
import { NetnsProcess } from './processes.js';
import { FABRIC_IP, type Netns, type NodeNet, type PodNet } from './topology.js';
import { waitFor } from './wait.js';

const ZTUNNEL_BIN = join(REPO_ROOT, 'packages/ztunnel/dist/bin/ztunnel.js');

export interface ZtunnelPorts {
  readonly admin: number;
  readonly stats: number;
  readonly readiness: number;
}

export const DEFAULT_ZTUNNEL_PORTS: ZtunnelPorts = { admin: 15000, stats: 15020, readiness: 15021 };

export function nodeToken(node: string): string {
  return `e2e-ztunnel-${node}`;
}

/** The bearer token of a workload's own identity (a dedicated-mode ztunnel: no impersonation). */
export function workloadToken(namespace: string, name: string): string {
  return `e2e-workload-${namespace}-${name}`;
}

export interface ZtunnelStart {
  readonly node: NodeNet;
  readonly dir: string;
  readonly controlPlane: ControlPlaneProcess;
  readonly udsPath: string;
  readonly generation?: number;
  readonly ports?: ZtunnelPorts;
  readonly env?: Readonly<Record<string, string>>;
}

/**
 * A ztunnel in dedicated mode (PROXY_MODE=dedicated: how it runs on a VM or as
 * a per-pod proxy), inside the workload's own namespace under istio-cni's
 * capture rules: PACKET_MARK=1337 lets its own sockets bypass the REDIRECTs,
 * it asks the CA for the workload's identity with the workload's own token
 * (no impersonation), and its admin (127.0.0.1), metrics and readiness
 * servers listen in that namespace.
 */
export interface DedicatedZtunnelStart {
  readonly pod: PodNet;
  readonly workload: { readonly namespace: string; readonly name: string; readonly serviceAccount: string };
  readonly dir: string;
  readonly controlPlane: ControlPlaneProcess;
  readonly env?: Readonly<Record<string, string>>;
}

export class ZtunnelProcess {
  private constructor(
    readonly process: NetnsProcess,
    /** The node it runs on (dedicated mode: the node its workload is attached to). */
    readonly node: NodeNet,
    readonly ports: ZtunnelPorts,
    readonly name: string,
    /** Where its servers are reached: the namespace it runs in and an address there. */
    readonly home: { readonly netns: Netns; readonly ip: string } = { netns: node.netns, ip: node.ip },
  ) {}

  static startDedicated(o: DedicatedZtunnelStart): ZtunnelProcess {
    if (!existsSync(ZTUNNEL_BIN)) throw new Error(`${ZTUNNEL_BIN} is missing: build first (\`npx turbo run build\` at the repository root)`);
    const ports = DEFAULT_ZTUNNEL_PORTS;
    const { namespace, name: podName, serviceAccount } = o.workload;
    const name = `ztunnel-dedicated-${o.pod.name}`;
    const cp = `https://${FABRIC_IP}:${CONTROL_PLANE_PORT}`;
    const proc = new NetnsProcess({
      name,
      netns: o.pod.netns.name,
      args: [...ZTUNNEL_NODE_FLAGS, ZTUNNEL_BIN],
      env: {
        ...ZTUNNEL_NODE_ENV,
        PROXY_MODE: 'dedicated',
        PROXY_WORKLOAD_INFO: `${namespace}/${podName}/${serviceAccount}`,
        PACKET_MARK: '1337',
        NODE_NAME: o.pod.node.name,
        POD_NAME: podName,
        POD_NAMESPACE: namespace,
        SERVICE_ACCOUNT: serviceAccount,
        INSTANCE_IP: o.pod.ip,
        XDS_ADDRESS: cp,
        CA_ADDRESS: cp,
        XDS_ROOT_CA: o.controlPlane.rootCertPath,
        CA_ROOT_CA: o.controlPlane.rootCertPath,
        AUTH_TOKEN: workloadToken(namespace, podName),
        ZTUNNEL_ADMIN_ADDR: `127.0.0.1:${ports.admin}`,
        ZTUNNEL_STATS_ADDR: `0.0.0.0:${ports.stats}`,
        ZTUNNEL_READINESS_ADDR: `0.0.0.0:${ports.readiness}`,
        ISTIO_META_DNS_CAPTURE: 'false',
        LOG_FORMAT: 'plain',
        ...o.env,
      },
      logPath: join(o.dir, `${name}.log`),
    });
    return new ZtunnelProcess(proc, o.pod.node, ports, name, { netns: o.pod.netns, ip: o.pod.ip });
  }

  static start(o: ZtunnelStart): ZtunnelProcess {
    if (!existsSync(ZTUNNEL_BIN)) throw new Error(`${ZTUNNEL_BIN} is missing: build first (\`npx turbo run build\` at the repository root)`);
    const generation = o.generation ?? 1;
    const ports = o.ports ?? DEFAULT_ZTUNNEL_PORTS;
    const name = `ztunnel-${o.node.name}-g${generation}`;
    const cp = `https://${FABRIC_IP}:${CONTROL_PLANE_PORT}`;
    const proc = new NetnsProcess({
      name,
      netns: o.node.netns.name,
      args: [...ZTUNNEL_NODE_FLAGS, ZTUNNEL_BIN],
      env: {
        ...ZTUNNEL_NODE_ENV,
        PROXY_MODE: 'shared',
        INPOD_UDS: o.udsPath,
        NODE_NAME: o.node.name,
        POD_NAME: name,
        POD_NAMESPACE: 'istio-system',
        INSTANCE_IP: o.node.ip,
        XDS_ADDRESS: cp,
        CA_ADDRESS: cp,
        XDS_ROOT_CA: o.controlPlane.rootCertPath,
        CA_ROOT_CA: o.controlPlane.rootCertPath,
        AUTH_TOKEN: nodeToken(o.node.name),
        ZTUNNEL_ADMIN_ADDR: `127.0.0.1:${ports.admin}`,
        ZTUNNEL_STATS_ADDR: `0.0.0.0:${ports.stats}`,
        ZTUNNEL_READINESS_ADDR: `0.0.0.0:${ports.readiness}`,
        LOG_FORMAT: 'plain',
        ...o.env,
      },
      logPath: join(o.dir, `${name}.log`),
    });
    return new ZtunnelProcess(proc, o.node, ports, name);
  }

  /** Waits for /healthz/ready = 200 (in shared mode: after the CNI's snapshot). */
  async ready(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      `${this.name} ready`,
      async () => {
        const r = await httpGet(this.home.netns, this.home.ip, this.ports.readiness, '/healthz/ready', 2_000);
        if (r.status !== 200) throw new Error(`readiness ${r.status}: ${r.body.trim()}`);
        return true;
      },
      {
        timeoutMs,
        intervalMs: 100,
        abort: this.process.exited.then((e) => {
          throw new Error(`${this.name} exited (${e.signal ?? e.code}):\n${this.process.tail(40)}`);
        }),
      },
    );
  }

  async readiness(): Promise<number> {
    return (await httpGet(this.home.netns, this.home.ip, this.ports.readiness, '/healthz/ready', 2_000)).status;
  }

  async metrics(): Promise<string> {
    const r = await httpGet(this.home.netns, this.home.ip, this.ports.stats, '/metrics');
    if (r.status !== 200) throw new Error(`${this.name} /metrics: ${r.status}`);
    return r.body;
  }

  async configDump(): Promise<ConfigDump> {
    const r = await httpGet(this.home.netns, '127.0.0.1', this.ports.admin, '/config_dump');
    if (r.status !== 200) throw new Error(`${this.name} /config_dump: ${r.status}`);
    return JSON.parse(r.body) as ConfigDump;
  }

  /** Waits until the config dump satisfies `ok` (a pushed change arrived). */
  async waitForConfig(what: string, ok: (dump: ConfigDump) => boolean, timeoutMs = 15_000): Promise<void> {
    await waitFor(`${this.name}: ${what}`, async () => (ok(await this.configDump()) ? true : undefined), { timeoutMs, intervalMs: 100 });
  }

  tail(n = 80): string {
    return this.process.tail(n);
  }

  stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.process.stop(signal, graceMs);
  }
}

/** The parts of ztunnel's /config_dump the suite looks at. */
export interface ConfigDump {
  readonly workloads?: ReadonlyArray<{ uid?: string; name?: string; namespace?: string; workloadIps?: string[] }>;
  readonly services?: ReadonlyArray<{ name?: string; namespace?: string; hostname?: string }>;
  readonly policies?: ReadonlyArray<{ name?: string; namespace?: string; action?: string; rules?: unknown }>;
  readonly workloadState?: Readonly<Record<string, { state?: string; info?: { name?: string; namespace?: string } }>>;
  readonly [key: string]: unknown;
}
