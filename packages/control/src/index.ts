/**
 * @ambient/control — the shared brain of the data plane: the domain model,
 * workload discovery over delta xDS into an indexed store, the Istio CA client
 * and certificate manager, the env configuration shared by the proxies, the
 * static local config and the config_dump layout. Protobuf stays inside this
 * package: nothing exported here exposes generated types, except the xDS
 * handler seam (google.protobuf.Any) for packages that add their own types.
 */
export * from './model/index.js';
export * from './result.js';
export { systemClock, systemRandom, type Clock, type Random, type Timer } from './platform/clock.js';
export { systemRandomBytes, type RandomBytes } from './platform/crypto.js';
export { settleWithin, type SettleCleanup, type Settlement, type Settler, type SettleWithinOptions } from './platform/settle.js';
export { watchFile, type FileWatch, type FileWatchOptions } from './platform/file-watch.js';

export {
  DEFAULT_ROOT_CERT_PATH,
  DEFAULT_SECRET_TTL_SECONDS,
  DEFAULT_TOKEN_PATH,
  parseControlEnv,
  type AuthSource,
  type ControlEnv,
  type Env,
  type EnvProbe,
  type LocalXdsSource,
  type RootCertSource,
} from './config/control-env.js';
export { parseDuration } from './config/duration.js';
export { parseListenAddress, type ListenAddress } from './config/listen-address.js';

export * from './store/index.js';
export { startWorkloadDiscovery, type WorkloadDiscovery, type WorkloadDiscoveryOptions } from './discovery.js';
export { loadStaticConfig, type LoadedStaticConfig } from './local/static-config.js';
export * from './dump/config-dump.js';

export {
  DeltaXdsClient,
  XdsError,
  type Logger,
  type XdsClientEvents,
  type XdsClientSnapshot,
  type XdsClientState,
  type XdsErrorCode,
  type XdsHandler,
  type XdsResource,
} from './xds/delta-client.js';
export { buildNode, nodeId, type NodeType } from './xds/node.js';
export type { TerminationReason } from './xds/backoff.js';
export { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL, type WdsTypeUrl } from './xds/type-urls.js';

export { CaError, type CaErrorCode, type CertificateAuthority, type CertificateFetcher, type WorkloadCertificate } from './ca/types.js';
export {
  CERT_BACKOFF,
  CertManager,
  DEFAULT_CSR_CONCURRENCY,
  type CertManagerOptions,
  type CertPriority,
  type CertState,
  type CertsDump,
  type CertificateListener,
} from './ca/cert-manager.js';
export { IstioCaClient, IMPERSONATED_IDENTITY_KEY, type IstioCaClientOptions } from './ca/ca-client.js';
export { LocalCertificateAuthority, type IssuedCertificate } from './ca/authority.js';
export { LocalCaFetcher } from './ca/local-fetcher.js';
export { createCertificateFetcher } from './ca/fetcher.js';
export type { ControlPlaneAuth } from './auth/metadata.js';
export type { ReadFile } from './auth/token.js';

// The local control plane (server side) is its own entry point, '@ambient/control/control-plane',
// so that proxies importing this one do not load it (~9 MB of RSS).
export {
  decodeZdsRequest,
  encodeZdsAck,
  encodeZdsHello,
  ZDS_MAX_PACKET_BYTES,
  type ZdsPacket,
  type ZdsRequest,
  type ZdsWorkloadInfo,
} from './zds/codec.js';
export { decodeZdsHello, decodeZdsResponse, encodeZdsRequest, type ZdsNodeAgentRequest } from './zds/node-agent.js';
