/** The local control plane's public surface (see server.ts for the composition). */
export {
  ControlPlaneError,
  DEFAULT_LISTEN,
  SERVING_DNS_NAMES,
  SERVING_IPS,
  startControlPlane,
  type ControlPlane,
  type ControlPlaneErrorCode,
  type ControlPlaneObserver,
  type ControlPlaneOptions,
  type ReloadEvent,
  type ServingCertificateAuthority,
} from './server.js';
export { MeshState, type AddressIndex, type MeshChange, type MeshContent } from './mesh-state.js';
export { ResourceSet, diffResourceSets, resourceVersion, type ResourceSetDiff, type VersionedResource } from './resource-set.js';
export { parseTokenFile, TokenRegistry, type Caller, type TokenEntry } from './tokens.js';
export type { AckEvent, AdsObserver, AdsStreamInfo, AdsSubscriptionStatus, NackEvent, StreamStatus } from './ads-service.js';
export {
  DEFAULT_TRUSTED_NODE_ACCOUNTS,
  DEFAULT_WORKLOAD_CERT_TTL_SECONDS,
  IMPERSONATION_FAILURE,
  MAX_WORKLOAD_CERT_TTL_SECONDS,
  type CaRequestRecord,
} from './ca-service.js';
