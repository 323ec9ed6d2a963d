/**
 * Builds the `envoy.config.core.v3.Node` the proxy identifies itself with on
 * the ADS stream, from a plain environment record (never `process.env`).
 *
 * Follows ztunnel `xds/client.rs` `Config::node` and `config.rs`
 * (proxy metadata):
 * - id `<type>~<INSTANCE_IP>~<POD_NAME>.<POD_NAMESPACE>~<POD_NAMESPACE>.svc.cluster.local`,
 *   INSTANCE_IP defaulting to `1.1.1.1`, the `.svc.cluster.local` suffix fixed;
 * - metadata NAME, NAMESPACE, INSTANCE_IPS, NODE_NAME as strings, then the
 *   proxy metadata (ProxyConfig `proxyMetadata`, then every `ISTIO_META_<K>`
 *   variable with the prefix stripped; later entries win), then every
 *   `ISTIO_METAJSON_<K>` variable parsed as a JSON value.
 *
 * Differences, deliberate: CLUSTER_ID is always present (ISTIO_META_CLUSTER_ID,
 * else CLUSTER_ID, else `Kubernetes`, as ztunnel derives its cluster id), so
 * istiod's multi-cluster check sees the same value as the `clusterid` header;
 * ztunnel only sends it when ISTIO_META_CLUSTER_ID is set (the Helm chart
 * always sets it). A malformed ISTIO_METAJSON value is a Rejection where
 * ztunnel logs and skips it.
 *
 * The node type is `ztunnel` or `waypoint`, the two ambient values of istiod's
 * `model.NodeType` (`pilot/pkg/model/context.go`: sidecar, router, waypoint, ztunnel).
 */
import { create } from '@bufbuild/protobuf';
import type { JsonObject, JsonValue } from '@bufbuild/protobuf';
import { NodeSchema } from '../gen/envoy/config/core/v3/base_pb.js';
import type { Node } from '../gen/envoy/config/core/v3/base_pb.js';
import { fail, ok, rejection } from '../result.js';
import type { Rejection, Result } from '../result.js';

export type NodeType = 'ztunnel' | 'waypoint';

const DEFAULT_INSTANCE_IP = '1.1.1.1';
const DEFAULT_CLUSTER_ID = 'Kubernetes';
const ISTIO_META_PREFIX = 'ISTIO_META_';
const ISTIO_METAJSON_PREFIX = 'ISTIO_METAJSON_';

export interface NodeInput {
  readonly nodeType: NodeType;
  /** The process environment as a plain record (POD_NAME, POD_NAMESPACE, NODE_NAME, INSTANCE_IP, ISTIO_META_*, ...). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * ProxyConfig `proxyMetadata` (mesh config `defaultConfig` merged with
   * PROXY_CONFIG); keys may carry the ISTIO_META_ prefix, which is stripped.
   * ISTIO_META_* environment variables override these.
   */
  readonly proxyMetadata?: Readonly<Record<string, string>>;
}

/** The node id string istiod parses (`model.ParseServiceNodeWithMetadata`). */
export function nodeId(nodeType: NodeType, env: Readonly<Record<string, string | undefined>>): string {
  const ip = env['INSTANCE_IP'] ?? DEFAULT_INSTANCE_IP;
  const pod = env['POD_NAME'] ?? '';
  const ns = env['POD_NAMESPACE'] ?? '';
  return `${nodeType}~${ip}~${pod}.${ns}~${ns}.svc.cluster.local`;
}

function stripPrefix(key: string, prefix: string): string {
  return key.startsWith(prefix) ? key.slice(prefix.length) : key;
}

/** Builds the Node, or names every ISTIO_METAJSON_* variable that is not valid JSON. */
export function buildNode(input: NodeInput): Result<Node> {
  const { env } = input;
  const errors: Rejection[] = [];
  const metadata: JsonObject = {
    NAME: env['POD_NAME'] ?? '',
    NAMESPACE: env['POD_NAMESPACE'] ?? '',
    INSTANCE_IPS: env['INSTANCE_IP'] ?? DEFAULT_INSTANCE_IP,
    NODE_NAME: env['NODE_NAME'] ?? '',
    CLUSTER_ID: env[`${ISTIO_META_PREFIX}CLUSTER_ID`] ?? env['CLUSTER_ID'] ?? DEFAULT_CLUSTER_ID,
  };

  for (const [key, value] of Object.entries(input.proxyMetadata ?? {})) {
    metadata[stripPrefix(key, ISTIO_META_PREFIX)] = value;
  }

  // Sorted so the result does not depend on the record's insertion order.
  const keys = Object.keys(env).sort();
  for (const key of keys) {
    const value = env[key];
    if (value === undefined) continue;
    // ISTIO_METAJSON_ also starts with ISTIO_META_: test the longer prefix first.
    if (key.startsWith(ISTIO_METAJSON_PREFIX)) continue;
    if (key.startsWith(ISTIO_META_PREFIX)) metadata[key.slice(ISTIO_META_PREFIX.length)] = value;
  }
  for (const key of keys) {
    const value = env[key];
    if (value === undefined || !key.startsWith(ISTIO_METAJSON_PREFIX)) continue;
    const parsed = parseJson(value);
    if (parsed.ok) {
      metadata[key.slice(ISTIO_METAJSON_PREFIX.length)] = parsed.value;
    } else {
      errors.push(rejection(key, `must be a JSON value, got ${JSON.stringify(value)}: ${parsed.message}`));
    }
  }

  if (errors.length > 0) return fail(...errors);
  return ok(create(NodeSchema, { id: nodeId(input.nodeType, env), metadata }));
}

function parseJson(text: string): { ok: true; value: JsonValue } | { ok: false; message: string } {
  try {
    return { ok: true, value: JSON.parse(text) as JsonValue };
  } catch (e) {
    return { ok: false, message: e instanceof Error ? e.message : String(e) };
  }
}
