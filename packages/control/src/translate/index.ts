/** Protobuf (WDS) → model translation: the only way model objects are built from the wire or files. */
export { decodeAddressResource, translateAddress } from './address.js';
export { decodeAuthorizationResource, translateAuthorization } from './authorization.js';
export { translateGatewayAddress } from './gateway.js';
export { translateService } from './service.js';
export { translateWorkload } from './workload.js';
