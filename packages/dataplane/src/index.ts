/**
 * @ambient/dataplane — what both proxies (ztunnel and the waypoint) share:
 * the HBONE server (mTLS acceptor + HTTP/2 CONNECT server with its limits) and
 * client (dial stages, connection, pool), the CONNECT header codec, one TLS
 * configuration and one peer verifier (SPIFFE rules + revocation), the byte
 * copy, the socket seam, PROXY v2, the admin/metrics/readiness servers, the
 * metrics registry, the logger and the one error table. Nothing here reads
 * the environment or knows a proxy's variable names.
 */
export * from './admin/admin-server.js';
export * from './admin/http-server.js';
export * from './admin/metrics-server.js';
export * from './admin/readiness-server.js';
export * from './admin/readiness.js';
export * from './errors.js';
export * from './hbone/connect-codec.js';
export * from './hbone/connection.js';
export * from './hbone/dial.js';
export * from './hbone/pool.js';
export * from './hbone/server-limits.js';
export * from './hbone/server.js';
export * from './io/copy.js';
export * from './io/proxy-protocol.js';
export * from './io/socket-options.js';
export * from './log.js';
export * from './metrics/process.js';
export * from './metrics/registry.js';
export * from './net/address.js';
export * from './platform/sockets.js';
export * from './tls/contexts.js';
export * from './tls/crl/crl-set.js';
export * from './tls/crl/manager.js';
export * from './tls/handshake.js';
export * from './tls/peer-verifier.js';
export * from './tls/spiffe-verify.js';
