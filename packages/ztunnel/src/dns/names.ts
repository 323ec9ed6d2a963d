/**
 * Pure name arithmetic for the DNS proxy (ztunnel `dns/server.rs`
 * `get_aliases`, `to_kube_fqdns`, `get_wildcards`, `search_domains` and
 * `dns/name_util.rs`): the aliases a query name can stand for from a client
 * pod's point of view (Kubernetes short forms, search domains stripped) and
 * the wildcard hostnames each alias is tried against.
 *
 * Names here are lower-case label sequences joined by ".", without the
 * trailing root dot; "" is the root. Callers normalize with `normalizeName`.
 */

/** One candidate hostname for a query. */
export interface Alias {
  /** The name looked up (wildcards of it are tried too). */
  readonly name: string;
  /**
   * When the alias came from stripping a search domain: the stripped name,
   * which an answer then names with a CNAME `requested -> stripped`.
   */
  readonly stripped: string | undefined;
}

export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';

/** Lower-case, without one trailing dot ("Foo.Bar." -> "foo.bar", "." -> ""). */
export function normalizeName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}

function labelsOf(name: string): string[] {
  return name === '' ? [] : name.split('.');
}

/** Label count not counting a leading `*` (hickory's `num_labels`, which the rules below are written against). */
function numLabels(labels: readonly string[]): number {
  return labels[0] === '*' ? labels.length - 1 : labels.length;
}

function join(...parts: string[]): string {
  return parts.filter((p) => p !== '').join('.');
}

/** True when `name` ends with all of `domain`'s labels and has at least one more (a wildcard domain never matches). */
export function hasDomain(name: string, domain: string): boolean {
  const n = labelsOf(name);
  const d = labelsOf(domain);
  if (d[0] === '*' || numLabels(n) <= numLabels(d)) return false;
  const offset = n.length - d.length;
  return d.every((label, i) => n[offset + i] === label);
}

/** `name` without the `domain` suffix, when it has that domain (`a.ns.svc.cluster.local` - `svc.cluster.local` = `a.ns`). */
export function trimDomain(name: string, domain: string): string | undefined {
  if (!hasDomain(name, domain)) return undefined;
  const n = labelsOf(name);
  return n.slice(0, n.length - labelsOf(domain).length).join('.');
}

/** The fixed per-pod search list of shared mode: `<ns>.svc.<domain>`, `svc.<domain>`, `<domain>` (ztunnel#555: pod dnsConfig unknown). */
export function searchDomainsFor(namespace: string, clusterDomain: string): string[] {
  const domain = normalizeName(clusterDomain);
  return [join(namespace.toLowerCase(), 'svc', domain), join('svc', domain), domain];
}

/**
 * The Kubernetes FQDNs a short name may mean (ztunnel `to_kube_fqdns`):
 * 1 label `svc` -> `svc.<clientns>.svc.<domain>`;
 * 2 labels `svc.ns` -> `svc.ns.svc.<domain>`, `svc.ns.<clientns>.svc.<domain>` (pod.subdomain);
 * 3 labels -> `+<domain>` when the last is `svc`, and always `+svc.<domain>`;
 * 4 labels ending in `svc` -> `+<domain>`; anything else: none.
 */
export function kubeExpansions(name: string, clientNamespace: string, clusterDomain: string): string[] {
  const labels = labelsOf(name);
  const domain = normalizeName(clusterDomain);
  const svcDomain = join('svc', domain);
  const namespacedDomain = join(clientNamespace.toLowerCase(), svcDomain);
  const endsInSvc = hasDomain(name, 'svc');
  switch (labels.length) {
    case 1:
      return [join(name, namespacedDomain)];
    case 2:
      return [join(name, svcDomain), join(name, namespacedDomain)];
    case 3:
      return endsInSvc ? [join(name, domain), join(name, svcDomain)] : [join(name, svcDomain)];
    case 4:
      return endsInSvc ? [join(name, domain)] : [];
    default:
      return [];
  }
}

/**
 * Every alias of `name` for a client in `clientNamespace`, in lookup order,
 * each name once (the first occurrence wins): the name itself, its Kubernetes
 * expansions, then for each search domain it ends with, the stripped name and
 * the stripped name's expansions (those carry `stripped`).
 */
export function aliasesFor(name: string, clientNamespace: string, clusterDomain: string, searchDomains: readonly string[]): Alias[] {
  const out: Alias[] = [];
  const seen = new Set<string>();
  const add = (alias: Alias) => {
    if (seen.has(alias.name)) return;
    seen.add(alias.name);
    out.push(alias);
  };
  add({ name, stripped: undefined });
  for (const fqdn of kubeExpansions(name, clientNamespace, clusterDomain)) add({ name: fqdn, stripped: undefined });
  for (const searchDomain of searchDomains) {
    const stripped = trimDomain(name, normalizeName(searchDomain));
    if (stripped === undefined) continue;
    add({ name: stripped, stripped });
    for (const fqdn of kubeExpansions(stripped, clientNamespace, clusterDomain)) add({ name: fqdn, stripped });
  }
  return out;
}

/** `a.b.c` -> [`a.b.c`, `*.b.c`, `*.c`]: the name, then wildcards of decreasing specificity (ztunnel `get_wildcards`). */
export function wildcardsOf(name: string): string[] {
  const out = [name];
  let labels = labelsOf(name);
  while (numLabels(labels) > 1) {
    out.push(['*', ...labels.slice(1)].join('.'));
    labels = labels.slice(1);
  }
  return out;
}

export function isWildcard(name: string): boolean {
  return labelsOf(name)[0] === '*';
}
