/**
 * Builders for the planners' and authorization's table tests: valid model
 * objects (the shape the control package's translators produce) with
 * istiod's usual defaults, overridable field by field, and a snapshot
 * builder over the real store.
 */
import { parseCidr, type Authorization, type Cidr, type GatewayAddress, type Match } from '@ambient/control';

// The model builders live in the control package's test library; these names are kept for the table tests.
export { aMatch, aService, aServiceRef as serviceRef, aWorkload, snapshotOf } from '@ambient/control/testing';

export function gwAddress(address: string, port = 15008, network = ''): GatewayAddress {
  return { destination: { kind: 'address', network, address }, hboneMtlsPort: port };
}

export function gwHostname(namespace: string, hostname: string, port = 15008): GatewayAddress {
  return { destination: { kind: 'hostname', namespace, hostname }, hboneMtlsPort: port };
}

export function cidr(text: string): Cidr {
  const c = parseCidr(text);
  if (c === undefined) throw new Error(`bad CIDR in test: ${text}`);
  return c;
}

/** A policy with one rule of one clause holding `matches` (or explicit `rules`). */
export function aPolicy(
  over: Partial<Authorization> & { readonly namespace: string; readonly name: string; readonly matches?: readonly Match[] },
): Authorization {
  const { matches, ...rest } = over;
  return {
    scope: 'Namespace',
    action: 'Allow',
    dryRun: false,
    rules: matches === undefined ? [] : [{ clauses: [{ matches }] }],
    ...rest,
  };
}

/** A deterministic `random()` returning the given values in turn (then repeating the last). */
export function randomSequence(...values: number[]): () => number {
  let i = 0;
  return () => {
    const v = values[Math.min(i, values.length - 1)] ?? 0;
    i++;
    return v;
  };
}
