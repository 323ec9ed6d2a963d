/**
 * The cluster's desired state as the local control plane reads it: pods,
 * services and policies in ztunnel's LOCAL_XDS_PATH YAML shape (see
 * packages/control/src/local/static-config.ts), and the bearer-token file.
 * A scenario edits a Mesh and rewrites the file; the control plane watches it
 * and pushes the difference over WDS.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { stringify } from 'yaml';

const TRUST_DOMAIN = 'cluster.local';

export interface MeshWorkload {
  /** The WDS resource name, as istiod names pods: `Kubernetes//Pod/<ns>/<name>`. */
  readonly uid: string;
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly ip: string;
  readonly node: string;
  /** HBONE: captured, in the mesh. TCP: a plain pod the mesh knows about. */
  readonly protocol: 'HBONE' | 'TCP';
  /** canonical name / app label. */
  readonly app: string;
  readonly version: string;
  /** `<ns>/<hostname>` -> {service port: target port}. */
  readonly services: Readonly<Record<string, Readonly<Record<number, number>>>>;
  /** `ns/name` of WORKLOAD_SELECTOR policies that select this pod. */
  readonly authorizationPolicies: readonly string[];
}

export interface MeshService {
  readonly name: string;
  readonly namespace: string;
  readonly vip: string;
  readonly ports: Readonly<Record<number, number>>;
}

/** A string match as the static config spells it. */
type StringMatch = { Exact: string } | { Prefix: string } | { Suffix: string } | { Presence: [] };

export interface PolicyMatch {
  readonly namespaces?: readonly StringMatch[];
  readonly notNamespaces?: readonly StringMatch[];
  readonly principals?: readonly StringMatch[];
  readonly notPrincipals?: readonly StringMatch[];
  readonly serviceAccounts?: ReadonlyArray<{ namespace: string; serviceAccount: string }>;
  readonly destinationPorts?: readonly number[];
  readonly notDestinationPorts?: readonly number[];
  readonly sourceIps?: readonly string[];
}

export interface MeshPolicy {
  readonly name: string;
  readonly namespace: string;
  readonly scope: 'Global' | 'Namespace' | 'WorkloadSelector';
  readonly action: 'Allow' | 'Deny';
  /** rules (OR) -> clauses (AND) -> matches (OR). */
  readonly rules: ReadonlyArray<ReadonlyArray<readonly PolicyMatch[]>>;
}

export interface Mesh {
  workloads: MeshWorkload[];
  services: MeshService[];
  policies: MeshPolicy[];
}

export function hostname(svc: { name: string; namespace: string }): string {
  return `${svc.name}.${svc.namespace}.svc.cluster.local`;
}

export function spiffe(namespace: string, serviceAccount: string): string {
  return `spiffe://${TRUST_DOMAIN}/ns/${namespace}/sa/${serviceAccount}`;
}

export function meshYaml(mesh: Mesh): string {
  const doc = {
    workloads: mesh.workloads.map((w) => ({
      uid: w.uid,
      name: w.name,
      namespace: w.namespace,
      serviceAccount: w.serviceAccount,
      trustDomain: TRUST_DOMAIN,
      workloadIps: [w.ip],
      protocol: w.protocol,
      node: w.node,
      workloadName: w.app,
      workloadType: 'pod',
      canonicalName: w.app,
      canonicalRevision: w.version,
      clusterId: 'Kubernetes',
      authorizationPolicies: [...w.authorizationPolicies],
      services: Object.fromEntries(Object.entries(w.services).map(([k, v]) => [k, { ...v }])),
    })),
    services: mesh.services.map((s) => ({
      name: s.name,
      namespace: s.namespace,
      hostname: hostname(s),
      vips: [`/${s.vip}`],
      ports: { ...s.ports },
    })),
    policies: mesh.policies.map((p) => ({ ...p })),
  };
  return `# written by the ambient e2e suite\n${stringify(doc)}`;
}

/** Writes atomically (temp file + rename), so the watcher never reads half a file. */
export function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export interface TokenEntry {
  readonly token: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly node?: string;
  readonly pod?: string;
}

export function tokensYaml(entries: readonly TokenEntry[]): string {
  return `# written by the ambient e2e suite\n${stringify(entries.map((e) => ({ ...e })))}`;
}
