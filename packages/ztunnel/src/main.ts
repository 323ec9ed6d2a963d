/**
 * The process edge: the only module that reads process.env and argv, binds
 * real sockets through the Node socket factory, creates the system clock and
 * the logger, and handles signals. Everything else is built by buildApp.
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { formatRejections, systemClock, systemRandom } from '@ambient/control';
import { createLogger } from '@ambient/dataplane';
import { buildApp } from './app.js';
import { MESH_CONFIG_PATH, OUR_ENV_VARS, parseConfig } from './config.js';
import { nativeInpodPlatform, transparentMode, verifyInpodCapabilities } from './inpod/native-platform.js';
import type { InpodPlatform } from './inpod/platform.js';
import { startMemoryTrim } from './platform/memory-trim.js';
import { loadNative, type Native } from './platform/native.js';
import { nativeOriginalDestination, netnsSocketFactory } from './platform/netns-sockets.js';
import { localAddressAsOriginalDestination, nodeSocketFactory, type OriginalDestination, type SocketFactory } from '@ambient/dataplane';
import { VERSION } from './version.js';

const HELP = `ztunnel (ambient-ts): Istio ambient mode's node proxy.

Usage: ztunnel [proxy [ztunnel]] | version | help

Configured by environment variables with the names and defaults of Istio's
ztunnel (XDS_ADDRESS, CA_ADDRESS, PROXY_MODE, PROXY_WORKLOAD_INFO, ...), plus
ours: ${Object.keys(OUR_ENV_VARS).join(", ")}.
See ARCHITECTURE.md for the full list.
`;

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  const parsed = parseConfig(env, {
    fileExists: (p) => existsSync(p),
    cpuCount: availableParallelism(),
    readFile: (p) => (p === MESH_CONFIG_PATH && existsSync(p) ? readFileSync(p, 'utf8') : undefined),
  }, argv);
  if (!parsed.ok) {
    process.stderr.write(`ztunnel: invalid configuration:\n${parsed.errors.map((e) => `  - ${formatRejections([e])}`).join('\n')}\n`);
    return 2;
  }
  const config = parsed.value;
  if (config.command === 'version') {
    process.stdout.write(`${JSON.stringify(VERSION)}\n`);
    return 0;
  }
  if (config.command === 'help') {
    process.stdout.write(HELP);
    return 0;
  }

  const logger = createLogger({ format: config.logFormat, level: config.logFilter });
  const log = logger.logger;
  // /quitquitquit: the admin server runs the drain; the process exits when it is done.
  let quitRequested: () => void = () => {};
  const quit = new Promise<void>((resolve) => {
    quitRequested = resolve;
  });
  // The native capture module: required in shared (in-pod) mode; in dedicated mode it adds
  // SO_ORIGINAL_DST and socket marks when present, and plain Node sockets serve otherwise.
  let native: Native | undefined;
  try {
    native = loadNative();
  } catch (err) {
    if (config.proxyMode === 'shared' && config.enableProxy) {
      log.error({ err: err instanceof Error ? err.message : String(err) }, 'in-pod mode needs the native capture module');
      return 1;
    }
  }
  let inpod: InpodPlatform | undefined;
  let sockets: SocketFactory = nodeSocketFactory;
  let originalDestination: OriginalDestination = localAddressAsOriginalDestination;
  let transparentSource = false;
  if (native !== undefined) {
    originalDestination = nativeOriginalDestination(native);
    if (config.proxyMode === 'shared') {
      try {
        verifyInpodCapabilities(native, config.packetMark ?? 1337);
      } catch (err) {
        log.error({ err: err instanceof Error ? err.message : String(err) }, 'ztunnel failed to start');
        return 1;
      }
      inpod = nativeInpodPlatform(native, config);
    } else if (config.packetMark !== undefined) {
      // Dedicated mode under capture rules (a VM, a per-pod proxy): the proxy's marked sockets bypass
      // the REDIRECT, and connections to the app come from the client's address like in a pod. The
      // xDS/CA connections are not marked (as in Istio's ztunnel): the capture must exempt them.
      sockets = netnsSocketFactory({ native, mark: config.packetMark, transparent: transparentMode(config.requireOriginalSource) });
      transparentSource = config.requireOriginalSource !== false;
    }
  }
  const app = await buildApp(config, {
    clock: systemClock,
    random: systemRandom,
    logger,
    env,
    readFile: (p) => readFile(p),
    sockets,
    originalDestination,
    transparentSource,
    ...(inpod === undefined ? {} : { inpod }),
    onShutdownRequested: () => quitRequested(),
  }).catch((err: unknown) => {
    log.error({ err: err instanceof Error ? err.message : String(err) }, 'ztunnel failed to start');
    return undefined;
  });
  if (app === undefined) return 1;
  const nativeTrim = native;
  const trimmer = nativeTrim === undefined ? undefined : startMemoryTrim(systemClock, () => nativeTrim.mallocTrim(), config.mallocTrimIntervalMs);
  log.info({ version: VERSION.version, mode: config.proxyMode, addresses: app.addresses }, 'ztunnel started');
  void app.proxiesStarted.then(() => log.info({ addresses: app.addresses }, 'ready to serve'));

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
  }).finally(() => trimmer?.stop());
}
