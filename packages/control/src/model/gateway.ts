/** Where a waypoint or network gateway is reached. */
export type GatewayDestination =
  | { readonly kind: 'address'; readonly network: string; readonly address: string }
  | { readonly kind: 'hostname'; readonly namespace: string; readonly hostname: string };

export interface GatewayAddress {
  readonly destination: GatewayDestination;
  /** HBONE port on the gateway, normally 15008. */
  readonly hboneMtlsPort: number;
}

export interface WeightedWaypoint {
  readonly destination: GatewayAddress;
  /** 0 is never chosen (unless every weight is 0). */
  readonly weight: number;
}

/** `network/ip` or `namespace/hostname`, the form config_dump and the local config use. */
export function gatewayDestinationString(d: GatewayDestination): string {
  return d.kind === 'address' ? `${d.network}/${d.address}` : `${d.namespace}/${d.hostname}`;
}
