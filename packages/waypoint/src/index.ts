/**
 * @ambient/waypoint — the L7 proxy of Istio's ambient mode. Its composition
 * root is app.ts (buildWaypoint); bin/waypoint.ts is the process entry point.
 */
export type * from './resources/types.js';
export type * from './routing/types.js';
export type * from './sources/source.js';
export type * from './telemetry/types.js';
export { buildWaypoint, type Waypoint, type WaypointDeps } from './app.js';
export { parseWaypointConfig, waypointHostname, type WaypointConfig } from './config/env.js';
