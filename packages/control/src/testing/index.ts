/**
 * The package's "./testing" entry: what other packages' tests use to run
 * against the real control plane and to build valid WDS resources.
 */
export { ManualClock, type ManualClockOptions } from './manual-clock.js';
export {
  startTestControlPlane,
  type ObservedRequest,
  type ObservedResponse,
  type TestControlPlane,
  type TestControlPlaneOptions,
  type TokenSubject,
} from './control-plane.js';
export {
  allowPolicy,
  denyPolicy,
  service,
  workload,
  ztunnelNode,
  type GatewaySpec,
  type MatchSpec,
  type PolicySpec,
  type PortMap,
  type ServiceSpec,
  type WorkloadSpec,
  type ZtunnelNodeSpec,
} from './builders.js';
export { aMatch, aPolicy, aService, aServiceRef, aWorkload, addresses, cidrVip, policies, snapshotOf, vip } from './model-builders.js';
