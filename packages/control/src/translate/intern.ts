/**
 * Sharing of repeated values across translated resources. A full push of 100k
 * workloads carries the same namespaces, nodes, service accounts, canonical
 * names and port lists over and over, and protobuf decoding makes a fresh copy
 * of each; sharing them saves ~400 B per workload (see bench/wds.bench.ts).
 *
 * The tables are bounded (a hostile or huge control plane cannot grow them
 * without limit): when one is full it is cleared, which only costs sharing.
 * Interned values are immutable, so sharing them is invisible to callers.
 */
import type { Identity } from '../model/identity.js';
import type { PortMapping } from '../model/workload.js';

const MAX_ENTRIES = 1 << 16;
const MAX_STRING_LENGTH = 256;

const strings = new Map<string, string>();
const identities = new Map<string, Identity>();
const portLists = new Map<string, readonly PortMapping[]>();

function remember<T>(table: Map<string, T>, key: string, value: T): T {
  if (table.size >= MAX_ENTRIES) table.clear();
  table.set(key, value);
  return value;
}

/** The shared copy of a short, low-cardinality string. */
export function intern(s: string): string {
  if (s.length > MAX_STRING_LENGTH) return s;
  return strings.get(s) ?? remember(strings, s, s);
}

export function internIdentity(trustDomain: string, namespace: string, serviceAccount: string): Identity {
  const key = `${trustDomain}/${namespace}/${serviceAccount}`;
  return (
    identities.get(key) ??
    remember(identities, key, Object.freeze({ trustDomain: intern(trustDomain), namespace: intern(namespace), serviceAccount: intern(serviceAccount) }))
  );
}

export function internPorts(ports: readonly PortMapping[]): readonly PortMapping[] {
  if (ports.length > 16) return ports;
  let key = '';
  for (const p of ports) key += `${p.servicePort}:${p.targetPort}:${p.appProtocol},`;
  return portLists.get(key) ?? remember(portLists, key, Object.freeze(ports.map((p) => Object.freeze({ ...p }))));
}
