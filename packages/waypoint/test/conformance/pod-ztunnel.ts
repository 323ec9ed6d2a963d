/**
 * One pod's ztunnel for the conformance mesh: the real ztunnel app
 * (`buildApp` from @ambient/ztunnel, a devDependency) in dedicated mode as
 * the pod's own workload, against the test control plane over TLS, with every
 * listener on the pod's loopback IP (15001/15006/15008, SOCKS5 15080, the DNS
 * proxy 15053, admin/stats/readiness on free ports) and
 * `UNSTABLE_ENABLE_SOCKS5=true` standing in for traffic capture.
 *
 * Logs are kept in memory (the last LOG_LINES lines) and printed on close when
 * `WAYPOINT_CONFORMANCE_LOGS` is set, so a failing case can be debugged.
 */
import { readFile } from 'node:fs/promises';
import { formatRejections, systemClock, systemRandom, type Env } from '@ambient/control';
import type { TestControlPlane } from '@ambient/control/testing';
import { createLogger, nodeSocketFactory } from '@ambient/dataplane';
import { buildApp, parseConfig, type App } from '@ambient/ztunnel';

const LOG_LINES = 2000;
const START_TIMEOUT_MS = 15_000;

export interface PodZtunnel {
  readonly app: App;
  readonly ip: string;
  /** The SOCKS5 listener the pod's client traffic enters through. */
  readonly socks5: { readonly ip: string; readonly port: number };
  /** The last log lines (JSON). */
  readonly logs: readonly string[];
  close(): Promise<void>;
}

export interface PodZtunnelOptions {
  readonly ip: string;
  readonly namespace: string;
  readonly podName: string;
  readonly serviceAccount: string;
  readonly node: string;
}

export async function startPodZtunnel(cp: TestControlPlane, o: PodZtunnelOptions): Promise<PodZtunnel> {
  const env: Env = {
    XDS_ADDRESS: cp.url,
    CA_ADDRESS: cp.url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: cp.token({ namespace: o.namespace, serviceAccount: o.serviceAccount, node: o.node }),
    NODE_NAME: o.node,
    POD_NAME: o.podName,
    POD_NAMESPACE: o.namespace,
    PROXY_MODE: 'dedicated',
    PROXY_WORKLOAD_INFO: `${o.namespace}/${o.podName}/${o.serviceAccount}`,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${o.ip}:0`,
    ZTUNNEL_STATS_ADDR: `${o.ip}:0`,
    ZTUNNEL_READINESS_ADDR: `${o.ip}:0`,
    ZTUNNEL_INBOUND_ADDR: `${o.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${o.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${o.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${o.ip}:15080`,
    ISTIO_META_DNS_PROXY_ADDR: `${o.ip}:15053`,
    TERMINATION_GRACE_PERIOD_SECONDS: '2',
  };
  const parsed = parseConfig(env, { fileExists: () => false, cpuCount: 2 }, []);
  if (!parsed.ok) throw new Error(`ztunnel for ${o.namespace}/${o.podName}: ${formatRejections(parsed.errors)}`);
  const logs: string[] = [];
  const logger = createLogger({
    format: 'json',
    level: process.env['WAYPOINT_CONFORMANCE_LOG_LEVEL'] ?? 'info',
    destination: {
      write: (line: string) => {
        logs.push(line);
        if (logs.length > LOG_LINES) logs.splice(0, logs.length - LOG_LINES);
      },
    },
  });
  const app = await buildApp(parsed.value, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets: nodeSocketFactory,
    localWorkloadWaitMs: 2_000,
  });
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      app.proxiesStarted,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`ztunnel for ${o.namespace}/${o.podName} on ${o.ip} did not start its proxies within ${START_TIMEOUT_MS} ms:\n${logs.join('')}`)), START_TIMEOUT_MS);
      }),
    ]);
  } catch (err) {
    await app.close();
    throw err;
  } finally {
    clearTimeout(timer);
  }
  return {
    app,
    ip: o.ip,
    socks5: { ip: o.ip, port: 15080 },
    logs,
    close: async () => {
      if (process.env['WAYPOINT_CONFORMANCE_LOGS']) process.stderr.write(`--- ztunnel ${o.namespace}/${o.podName} ${o.ip}\n${logs.join('')}`);
      await app.close();
    },
  };
}
