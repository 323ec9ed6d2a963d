/** The two WDS resource types and the ADS method path. */
export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';
export const DELTA_ADS_METHOD = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';
export const CREATE_CERTIFICATE_METHOD = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

export type WdsTypeUrl = typeof ADDRESS_TYPE_URL | typeof AUTHORIZATION_TYPE_URL;

/**
 * A packed xDS resource: google.protobuf.Any's two fields. An `Any` message is
 * one; the client builds these directly from the wire without making messages.
 */
export interface PackedResource {
  readonly typeUrl: string;
  readonly value: Uint8Array;
}
