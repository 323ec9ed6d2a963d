/**
 * Kubernetes objects (plain JS from a YAML file or the API server) → the
 * validated resource model of types.ts, or problems naming the resource, the
 * field (`spec.rules[0].matches[1].path.value`) and what was expected. Both
 * config sources use this one parser, so a manifest means the same thing from
 * a directory as from the cluster.
 *
 * Steps: identify the object by apiVersion + kind (anything not ours is
 * `ignored`; a kind of ours in a version we do not read is `rejected`), the
 * CRD's / core schema (parse-schema.ts), metadata, then the spec with the
 * CRD's defaults, CEL rules and istiod's conversion errors (parse-route.ts,
 * which says what is dropped when). Accepted resources may carry `problems`
 * too: parts left out without taking the resource down (a mirror istiod
 * would drop, an unsupported backend kind).
 *
 * Invariants: pure; never throws, whatever the input (a property test feeds
 * it arbitrary JSON); results are frozen by convention (readonly types, new
 * objects, nothing shared with the input).
 */
import { isIP } from 'node:net';
import { Problems, int, list, rec, str, type Json } from './parse-common.js';
import { parseGrpcRules, parseHttpRules, parseTcpRules, routeParents } from './parse-route.js';
import { schemaProblems, show, type SchemaName } from './parse-schema.js';
import type { ResourceId, ResourceKind, ResourceMeta, ResourceProblem, RouteResource, ServicePortResource, ServiceResource } from './types.js';

export interface ParseOptions {
  /** Namespace of objects that name none (the directory source: `default`, as kubectl does). Without it a missing namespace is a problem. */
  readonly defaultNamespace?: string;
  /** resourceVersion for objects without metadata.resourceVersion (the directory source passes a content hash). */
  readonly resourceVersion?: string;
}

export type ParseResult =
  | { readonly status: 'accepted'; readonly resource: RouteResource | ServiceResource; readonly problems: readonly ResourceProblem[] }
  | { readonly status: 'rejected'; readonly id: ResourceId; readonly problems: readonly ResourceProblem[] }
  /** Not a kind the waypoint reads (or not an object at all); `what` says what it was, for a debug line. */
  | { readonly status: 'ignored'; readonly what: string };

interface KindInfo {
  readonly kind: ResourceKind;
  readonly schema: SchemaName;
}

const KINDS: ReadonlyMap<string, KindInfo> = new Map([
  ['gateway.networking.k8s.io/v1/HTTPRoute', { kind: 'HTTPRoute', schema: 'HTTPRoute/v1' }],
  ['gateway.networking.k8s.io/v1beta1/HTTPRoute', { kind: 'HTTPRoute', schema: 'HTTPRoute/v1beta1' }],
  ['gateway.networking.k8s.io/v1/GRPCRoute', { kind: 'GRPCRoute', schema: 'GRPCRoute/v1' }],
  ['gateway.networking.k8s.io/v1alpha2/TCPRoute', { kind: 'TCPRoute', schema: 'TCPRoute/v1alpha2' }],
  ['v1/Service', { kind: 'Service', schema: 'Service/v1' }],
]);

const SUPPORTED_VERSIONS: Readonly<Record<ResourceKind, string>> = {
  HTTPRoute: 'gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1',
  GRPCRoute: 'gateway.networking.k8s.io/v1',
  TCPRoute: 'gateway.networking.k8s.io/v1alpha2',
  Service: 'v1',
};

const KIND_GROUPS: Readonly<Record<ResourceKind, string>> = {
  HTTPRoute: 'gateway.networking.k8s.io',
  GRPCRoute: 'gateway.networking.k8s.io',
  TCPRoute: 'gateway.networking.k8s.io',
  Service: '',
};

/** Parses one Kubernetes object. Never throws. */
export function parseResource(input: unknown, options: ParseOptions = {}): ParseResult {
  const obj = rec(input);
  if (obj === undefined) return { status: 'ignored', what: `not an object (${input === null ? 'null' : Array.isArray(input) ? 'an array' : typeof input})` };
  const apiVersion = str(obj['apiVersion']) ?? '';
  const kindName = str(obj['kind']) ?? '';
  const info = KINDS.get(`${apiVersion}/${kindName}`);
  if (info === undefined) {
    const known = knownKind(kindName, apiVersion);
    if (known === undefined) return { status: 'ignored', what: `${apiVersion || '(no apiVersion)'} ${kindName || '(no kind)'}` };
    const id = idOf(obj, known, options);
    return reject(id, [{ field: 'apiVersion', message: `${known} is read as ${SUPPORTED_VERSIONS[known]}, got ${show(apiVersion)}` }]);
  }
  const id = idOf(obj, info.kind, options);
  const schema = schemaProblems(info.schema, obj);
  if (schema.length > 0) return reject(id, schema);
  const p = new Problems();
  const meta = parseMeta(obj, info.kind, options, p);
  const spec = rec(obj['spec']) ?? {};
  let resource: RouteResource | ServiceResource;
  switch (info.kind) {
    case 'HTTPRoute':
      resource = {
        meta: { ...meta, kind: 'HTTPRoute' },
        parentRefs: routeParents(spec, meta.namespace, 'HTTPRoute', p),
        hostnames: list(spec['hostnames']).map((h) => str(h) ?? ''),
        rules: parseHttpRules(spec, meta.namespace, p),
      };
      break;
    case 'GRPCRoute':
      resource = {
        meta: { ...meta, kind: 'GRPCRoute' },
        parentRefs: routeParents(spec, meta.namespace, 'GRPCRoute', p),
        hostnames: list(spec['hostnames']).map((h) => str(h) ?? ''),
        rules: parseGrpcRules(spec, meta.namespace, p),
      };
      break;
    case 'TCPRoute':
      resource = {
        meta: { ...meta, kind: 'TCPRoute' },
        parentRefs: routeParents(spec, meta.namespace, 'TCPRoute', p),
        rules: parseTcpRules(spec, meta.namespace, p),
      };
      break;
    case 'Service':
      resource = { meta: { ...meta, kind: 'Service' }, ...parseServiceSpec(spec, p) };
      break;
  }
  if (!p.ok) return reject(id, p.rejected);
  return { status: 'accepted', resource, problems: p.notes.map((n) => ({ resource: id, ...n })) };
}

function knownKind(kind: string, apiVersion: string): ResourceKind | undefined {
  const group = apiVersion.includes('/') ? apiVersion.slice(0, apiVersion.indexOf('/')) : '';
  for (const k of Object.keys(KIND_GROUPS) as ResourceKind[]) {
    if (k === kind && KIND_GROUPS[k] === group) return k;
  }
  return undefined;
}

function reject(id: ResourceId, problems: readonly { field: string; message: string }[]): ParseResult {
  return { status: 'rejected', id, problems: problems.map((p) => ({ resource: id, field: p.field, message: p.message })) };
}

function idOf(obj: Json, kind: ResourceKind, options: ParseOptions): ResourceId {
  const m = rec(obj['metadata']) ?? {};
  return { kind, namespace: str(m['namespace']) || (options.defaultNamespace ?? ''), name: str(m['name']) ?? '' };
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;

/** metadata as the API server validates it (names: DNS-1123 subdomain for routes, DNS-1035 label for Services). */
function parseMeta(obj: Json, kind: ResourceKind, options: ParseOptions, p: Problems): Omit<ResourceMeta, 'kind'> {
  const m = rec(obj['metadata']) ?? {};
  const name = str(m['name']) ?? '';
  if (name === '') p.reject('metadata.name', 'is required');
  else if (kind === 'Service' && (name.length > 63 || !DNS_1035_LABEL.test(name))) {
    p.reject('metadata.name', `must be a DNS-1035 label (lower-case letters, digits and '-', starting with a letter, at most 63 characters), got ${show(name)}`);
  } else if (kind !== 'Service' && (name.length > 253 || !DNS_SUBDOMAIN.test(name))) {
    p.reject('metadata.name', `must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253 characters), got ${show(name)}`);
  }
  const namespace = str(m['namespace']) || options.defaultNamespace;
  if (namespace === undefined) p.reject('metadata.namespace', 'is required');
  else if (namespace.length > 63 || !DNS_LABEL.test(namespace)) p.reject('metadata.namespace', `must be a DNS-1123 label, got ${show(namespace)}`);
  let creationTimestampMs = 0;
  const created = str(m['creationTimestamp']);
  if (created !== undefined) {
    creationTimestampMs = Date.parse(created);
    if (Number.isNaN(creationTimestampMs)) {
      p.reject('metadata.creationTimestamp', `must be an RFC 3339 time, got ${show(created)}`);
      creationTimestampMs = 0;
    }
  }
  return {
    namespace: namespace ?? '',
    name,
    creationTimestampMs,
    generation: int(m['generation']) ?? 0,
    resourceVersion: str(m['resourceVersion']) ?? options.resourceVersion ?? '',
    labels: stringMap(m['labels']),
    annotations: stringMap(m['annotations']),
  };
}

function stringMap(v: unknown): Readonly<Record<string, string>> {
  const out: Record<string, string> = {};
  const r = rec(v);
  if (r !== undefined) for (const [k, val] of Object.entries(r)) if (typeof val === 'string') out[k] = val;
  return out;
}

const SERVICE_PROTOCOLS = new Set(['TCP', 'UDP', 'SCTP']);
const IANA_SVC_NAME = /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

/** The parts of a core/v1 Service the waypoint needs, with the API server's checks of them. */
function parseServiceSpec(spec: Json, p: Problems): Pick<ServiceResource, 'ports' | 'clusterIps'> {
  const ports: ServicePortResource[] = [];
  const seen = new Set<string>();
  list(spec['ports']).forEach((x, i) => {
    const r = rec(x) ?? {};
    const at = `spec.ports[${i}]`;
    const port = int(r['port']) ?? 0;
    if (port < 1 || port > 65535) p.reject(`${at}.port`, `must be between 1 and 65535, got ${port}`);
    const protocol = str(r['protocol']) ?? 'TCP';
    if (!SERVICE_PROTOCOLS.has(protocol)) p.reject(`${at}.protocol`, `must be one of "TCP", "UDP", "SCTP", got ${show(protocol)}`);
    if (seen.has(`${port}/${protocol}`)) p.reject(at, `duplicate port ${port}/${protocol}`);
    seen.add(`${port}/${protocol}`);
    const tp = r['targetPort'];
    let targetPort: number | string | undefined;
    if (typeof tp === 'number') {
      if (!Number.isInteger(tp) || tp < 1 || tp > 65535) p.reject(`${at}.targetPort`, `must be between 1 and 65535 or a port name, got ${show(tp)}`);
      targetPort = tp;
    } else if (typeof tp === 'string') {
      if (/^[0-9]+$/.test(tp)) {
        targetPort = Number(tp);
        if (targetPort < 1 || targetPort > 65535) p.reject(`${at}.targetPort`, `must be between 1 and 65535, got ${show(tp)}`);
      } else {
        if (!IANA_SVC_NAME.test(tp) || !/[a-z]/.test(tp)) p.reject(`${at}.targetPort`, `must be a port number or an IANA service name (at most 15 lower-case letters, digits and '-'), got ${show(tp)}`);
        targetPort = tp;
      }
    }
    ports.push({ name: str(r['name']), port, targetPort, protocol, appProtocol: str(r['appProtocol']) });
  });
  const rawIps = list(spec['clusterIPs']).length > 0 ? list(spec['clusterIPs']) : [spec['clusterIP']];
  const clusterIps: string[] = [];
  rawIps.forEach((x, i) => {
    const ip = str(x);
    if (ip === undefined || ip === '' || ip === 'None') return;
    if (isIP(ip) === 0) p.reject(list(spec['clusterIPs']).length > 0 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP', `must be an IP address or "None", got ${show(ip)}`);
    else clusterIps.push(ip);
  });
  return { ports, clusterIps };
}
