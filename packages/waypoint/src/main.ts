/**
 * The process edge: the only module that reads process.env and argv, binds
 * real sockets through the Node socket factory, opens the access-log file,
 * creates the system clock and the logger, and handles signals (SIGTERM:
 * graceful drain; a second signal: exit now). Everything else is built by
 * buildWaypoint.
 */
import { createWriteStream, existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { formatRejections, systemClock, systemRandom } from '@ambient/control';
import { createLogger, nodeSocketFactory } from '@ambient/dataplane';
import { buildWaypoint } from './app.js';
import { parseWaypointConfig } from './config/env.js';
import { streamAccessLogWriter, type AccessLogWriter } from './telemetry/index.js';

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  if (argv.includes('--help') || argv.includes('help')) {
    process.stdout.write(HELP);
    return 0;
  }
  const parsed = parseWaypointConfig(env, { fileExists: (p) => existsSync(p) }, argv);
  if (!parsed.ok) {
    process.stderr.write(`waypoint: invalid configuration:\n${parsed.errors.map((e) => `  - ${formatRejections([e])}`).join('\n')}\n`);
    return 2;
  }
  const config = parsed.value;
  const logger = createLogger({ format: config.logFormat, level: config.logLevel });
  const log = logger.logger;
  let quitRequested: () => void = () => {};
  const quit = new Promise<void>((resolve) => {
    quitRequested = resolve;
  });
  const openAccessLog = (file: string): AccessLogWriter =>
    streamAccessLogWriter(file === '/dev/stdout' ? process.stdout : createWriteStream(file, { flags: 'a' }));
  const app = await buildWaypoint(config, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets: nodeSocketFactory,
    openAccessLog,
    onShutdownRequested: () => quitRequested(),
  }).catch((err: unknown) => {
    log.error({ err: err instanceof Error ? err.message : String(err) }, 'waypoint failed to start');
    return undefined;
  });
  if (app === undefined) return 1;
  log.info({ addresses: app.addresses }, 'waypoint started; serving after the first sync');

  return new Promise<number>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting immediately');
        resolve(130);
        return;
      }
      log.info({ signal }, 'shutting down gracefully');
      app.drain().then(() => resolve(0), () => resolve(1));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    void quit.then(() => app.drain()).then(() => resolve(0), () => resolve(1));
  });
}

const HELP = `waypoint (ambient-ts): Istio ambient mode's L7 proxy.

Usage: waypoint [proxy waypoint] [--config-dir DIR] [Istio's template arguments]

Configured by the environment istiod's waypoint template gives the pod (POD_NAME,
POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT, CA_ADDR, PROXY_CONFIG, TRUST_DOMAIN,
ISTIO_META_*), plus ours: WAYPOINT_GATEWAY_NAME, WAYPOINT_CONFIG_DIR,
WAYPOINT_INBOUND_ADDR, WAYPOINT_ADMIN_ADDR, WAYPOINT_STATS_ADDR,
WAYPOINT_READINESS_ADDR, WAYPOINT_CONNECT_TIMEOUT, WAYPOINT_ACCESS_LOG_FILE,
WAYPOINT_ACCESS_LOG_ENCODING, LOG_FORMAT. See ARCHITECTURE.md.
`;
