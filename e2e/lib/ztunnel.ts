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
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CONTROL_PLANE_PORT, REPO_ROOT, type ControlPlaneProcess } from './control-plane.js';
import { httpGet } from './netns-sockets.js';
import { NetnsProcess } from './processes.js';
import { FABRIC_IP, type NodeNet } from './topology.js';
import { waitFor } from './wait.js';

export const ZTUNNEL_BIN = join(REPO_ROOT, 'packages/ztunnel/dist/bin/ztunnel.js');

export interface ZtunnelPorts {
  readonly admin: number;
  readonly stats: number;
  readonly readiness: number;
}

export const DEFAULT_ZTUNNEL_PORTS: ZtunnelPorts = { admin: 15000, stats: 15020, readiness: 15021 };

export function nodeToken(node: string): string {
  return `e2e-ztunnel-${node}`;
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

export class ZtunnelProcess {
  private constructor(
    readonly process: NetnsProcess,
    readonly node: NodeNet,
    readonly ports: ZtunnelPorts,
    readonly name: string,
  ) {}

  static start(o: ZtunnelStart): ZtunnelProcess {
    if (!existsSync(ZTUNNEL_BIN)) throw new Error(`${ZTUNNEL_BIN} is missing: build first (\`npx turbo run build\` at the repository root)`);
    const generation = o.generation ?? 1;
    const ports = o.ports ?? DEFAULT_ZTUNNEL_PORTS;
    const name = `ztunnel-${o.node.name}-g${generation}`;
    const cp = `https://${FABRIC_IP}:${CONTROL_PLANE_PORT}`;
    const proc = new NetnsProcess({
      name,
      netns: o.node.netns.name,
      args: ['--max-semi-space-size=2', ZTUNNEL_BIN],
      env: {
        MALLOC_ARENA_MAX: '2',
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
        const r = await httpGet(this.node.netns, this.node.ip, this.ports.readiness, '/healthz/ready', 2_000);
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
    return (await httpGet(this.node.netns, this.node.ip, this.ports.readiness, '/healthz/ready', 2_000)).status;
  }

  async metrics(): Promise<string> {
    const r = await httpGet(this.node.netns, this.node.ip, this.ports.stats, '/metrics');
    if (r.status !== 200) throw new Error(`${this.name} /metrics: ${r.status}`);
    return r.body;
  }

  async configDump(): Promise<ConfigDump> {
    const r = await httpGet(this.node.netns, '127.0.0.1', this.ports.admin, '/config_dump');
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
