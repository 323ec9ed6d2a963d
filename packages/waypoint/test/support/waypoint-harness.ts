/**
 * A real waypoint in this process, configured the way istiod's template
 * configures a waypoint pod, against the test control plane (the local
 * control plane serving real delta ADS and the CA): its own service-account
 * token, its pod IP on loopback (HBONE on `<ip>:15008`, admin/stats/readiness
 * on ephemeral ports of the same IP), and a config directory of manifests.
 * Logs are kept (JSON) and dumped on close with WAYPOINT_TEST_LOGS=1.
 */
import { readFile } from 'node:fs/promises';
import { formatRejections, systemClock, systemRandom, type Env } from '@ambient/control';
import type { TestControlPlane } from '@ambient/control/testing';
import { createLogger, nodeSocketFactory } from '@ambient/dataplane';
import { buildWaypoint, type Waypoint } from '../../src/app.js';
import { parseWaypointConfig } from '../../src/config/env.js';

export interface WaypointUnderTestOptions {
  /** The waypoint pod's IP (a loopback address of its own). */
  readonly ip: string;
  /** The Gateway (and its ServiceAccount unless `serviceAccount` is given). */
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount?: string;
  readonly configDir: string;
  readonly env?: Env;
  readonly logLevel?: string;
  /** Access-log lines (WAYPOINT_ACCESS_LOG_FILE=/dev/stdout is set when given). */
  readonly accessLog?: (line: string) => void;
}

export interface WaypointUnderTest {
  readonly app: Waypoint;
  readonly ip: string;
  readonly logs: string[];
  /** GET on one of its servers (admin, stats, readiness): status and body. */
  get(server: 'admin' | 'stats' | 'readiness', path: string): Promise<{ status: number; body: string }>;
  close(): Promise<void>;
}

export async function startWaypointUnderTest(cp: TestControlPlane, o: WaypointUnderTestOptions): Promise<WaypointUnderTest> {
  const serviceAccount = o.serviceAccount ?? o.name;
  const env: Env = {
    XDS_ADDRESS: cp.url,
    CA_ADDRESS: cp.url,
    XDS_ROOT_CA: cp.rootCaPem,
    CA_ROOT_CA: cp.rootCaPem,
    AUTH_TOKEN: cp.token({ namespace: o.namespace, serviceAccount, node: 'node-a' }),
    POD_NAME: `${o.name}-7f9c8d6b5-w4yp7`,
    POD_NAMESPACE: o.namespace,
    INSTANCE_IP: o.ip,
    SERVICE_ACCOUNT: serviceAccount,
    ISTIO_META_SERVICE_ACCOUNT: serviceAccount,
    ISTIO_META_WORKLOAD_NAME: o.name,
    ISTIO_META_NODE_NAME: 'node-a',
    NODE_NAME: 'node-a',
    TRUST_DOMAIN: 'cluster.local',
    WAYPOINT_CONFIG_DIR: o.configDir,
    WAYPOINT_INBOUND_ADDR: `${o.ip}:15008`,
    WAYPOINT_ADMIN_ADDR: `${o.ip}:0`,
    WAYPOINT_STATS_ADDR: `${o.ip}:0`,
    WAYPOINT_READINESS_ADDR: `${o.ip}:0`,
    TERMINATION_DRAIN_DURATION: '2s',
    ...(o.accessLog === undefined ? {} : { WAYPOINT_ACCESS_LOG_FILE: '/dev/stdout' }),
    ...o.env,
  };
  const parsed = parseWaypointConfig(env, { fileExists: () => false });
  if (!parsed.ok) throw new Error(formatRejections(parsed.errors));
  const logs: string[] = [];
  const logger = createLogger({
    format: 'json',
    level: o.logLevel ?? process.env['WAYPOINT_TEST_LOG_LEVEL'] ?? 'info',
    destination: { write: (line: string) => void logs.push(line) },
  });
  const accessLog = o.accessLog;
  const app = await buildWaypoint(parsed.value, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets: nodeSocketFactory,
    ...(accessLog === undefined ? {} : { openAccessLog: () => (line: string) => accessLog(line) }),
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      app.started,
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`waypoint ${o.ip} did not start within 15 s:\n${logs.join('')}`)), 15_000);
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
    logs,
    get: async (server, path) => {
      const addr = app.addresses[server];
      if (addr === undefined) throw new Error(`waypoint has no ${server} server`);
      const res = await fetch(`http://${addr}${path}`);
      return { status: res.status, body: await res.text() };
    },
    close: async () => {
      if (process.env['WAYPOINT_TEST_LOGS']) process.stderr.write(`--- waypoint ${o.ip}\n${logs.join('')}`);
      await app.close();
    },
  };
}
