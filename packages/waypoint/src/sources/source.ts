/**
 * A config source: where the waypoint's user resources come from. Two
 * implementations stand behind this one interface (the design decision of the
 * waypoint issue): a watched directory of the same YAML manifests users apply
 * (sources/directory.ts, `--config-dir` / WAYPOINT_CONFIG_DIR), and the
 * Kubernetes API through informers (sources/kubernetes.ts). Both hand out
 * immutable ConfigResources snapshots in which every resource is validated;
 * an invalid resource is reported (problems, a log line naming the resource
 * and the field, and in Kubernetes the route's parent status) and left out
 * alone, never taking valid config down.
 */
import type { ConfigResources, ResourceId } from '../resources/types.js';

export interface ConfigSource extends AsyncDisposable {
  /** Human-readable origin for logs and the config dump (`dir:/etc/waypoint`, `kubernetes`). */
  readonly origin: string;
  /** Resolves after the first complete sync (readiness waits on it); rejects if the source cannot start. */
  readonly synced: Promise<void>;
  /** The current resources (immutable). */
  current(): ConfigResources;
  /** Called after every change with the new resources; returns the unsubscribe function. */
  subscribe(listener: (resources: ConfigResources) => void): () => void;
  /**
   * Route parent status as Istio writes it (Accepted / ResolvedRefs / ResolvedWaypoints);
   * the directory source logs and keeps it for the config dump, the Kubernetes source writes the status subresource.
   */
  reportRouteStatus(route: ResourceId, parents: readonly RouteParentStatus[]): void;
  close(): Promise<void>;
}

export interface RouteCondition {
  readonly type: 'Accepted' | 'ResolvedRefs' | 'ResolvedWaypoints' | 'PartiallyInvalid';
  readonly status: 'True' | 'False';
  readonly reason: string;
  readonly message: string;
}

export interface RouteParentStatus {
  readonly parentRef: { readonly group: string; readonly kind: string; readonly namespace: string; readonly name: string; readonly port?: number };
  /** Istio's controller name for route parents. */
  readonly controllerName: 'istio.io/gateway-controller';
  readonly conditions: readonly RouteCondition[];
}
