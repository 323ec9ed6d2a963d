/**
 * @ambient/ztunnel's programmatic entry: build a ztunnel in-process from a
 * parsed config and injected dependencies (sockets, clock, logger, ...).
 * The process edge (env/argv, real sockets, signals) is src/main.ts, run by
 * the `ztunnel` binary; the native addon and its socket factory are the
 * `./native` and `./netns-sockets` subpath exports.
 */
export { buildApp, type App, type AppDeps } from './app.js';
export { parseConfig, type ConfigProbe, type ZtunnelConfig } from './config.js';
export { VERSION } from './version.js';
