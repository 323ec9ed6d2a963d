/**
 * What both config sources share: turning the per-object parse results they
 * keep into one immutable ConfigResources (routes, services, problems, in a
 * stable order), the listener set, the in-memory route status table with its
 * change log line, and the logger shape they take (pino's methods).
 *
 * Invariant: a ConfigResources handed out is never mutated afterwards; every
 * change builds a new one and publishes it with one assignment.
 */
import type { ConfigResources, ResourceId, ResourceProblem, RouteResource, ServiceResource } from '../resources/types.js';
import { resourceIdText } from '../resources/types.js';
import type { RouteParentStatus } from './source.js';

/** The logger methods the sources use (a pino logger fits). */
export interface SourceLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export const EMPTY_RESOURCES: ConfigResources = Object.freeze({ routes: Object.freeze([]), services: Object.freeze([]), problems: Object.freeze([]) });

/** One object's contribution to a snapshot: the accepted resource (if any) and its problems. */
export interface Contribution {
  readonly resource: RouteResource | ServiceResource | undefined;
  readonly problems: readonly ResourceProblem[];
}

export function buildResources(contributions: Iterable<Contribution>): ConfigResources {
  const routes: RouteResource[] = [];
  const services: ServiceResource[] = [];
  const problems: ResourceProblem[] = [];
  for (const c of contributions) {
    if (c.resource !== undefined) {
      if (c.resource.meta.kind === 'Service') services.push(c.resource as ServiceResource);
      else routes.push(c.resource as RouteResource);
    }
    problems.push(...c.problems);
  }
  const byId = (a: { meta: ResourceId }, b: { meta: ResourceId }) => compareIds(a.meta, b.meta);
  routes.sort(byId);
  services.sort(byId);
  return Object.freeze({ routes: Object.freeze(routes), services: Object.freeze(services), problems: Object.freeze(problems) });
}

function compareIds(a: ResourceId, b: ResourceId): number {
  return a.kind.localeCompare(b.kind) || a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);
}

export function idKey(id: ResourceId): string {
  return `${id.kind}/${id.namespace}/${id.name}`;
}

/** Listeners of a source; one that throws is logged and does not stop the others. */
export class Listeners {
  readonly #set = new Set<(r: ConfigResources) => void>();
  constructor(private readonly logger: SourceLogger) {}

  add(fn: (r: ConfigResources) => void): () => void {
    const wrapped = (r: ConfigResources) => fn(r);
    this.#set.add(wrapped);
    return () => this.#set.delete(wrapped);
  }

  emit(resources: ConfigResources): void {
    for (const fn of [...this.#set]) {
      try {
        fn(resources);
      } catch (err) {
        this.logger.error({ err }, 'config listener failed');
      }
    }
  }

  clear(): void {
    this.#set.clear();
  }
}

/** Route parent status as last reported, per route, for the config dump; a change is logged. */
export class RouteStatusTable {
  readonly #byRoute = new Map<string, { readonly route: ResourceId; readonly parents: readonly RouteParentStatus[]; readonly text: string }>();
  constructor(private readonly logger: SourceLogger) {}

  /** Records the status; returns true when it differs from what was recorded before. */
  set(route: ResourceId, parents: readonly RouteParentStatus[]): boolean {
    const key = idKey(route);
    const text = JSON.stringify(parents);
    if (this.#byRoute.get(key)?.text === text) return false;
    this.#byRoute.set(key, { route: { kind: route.kind, namespace: route.namespace, name: route.name }, parents, text });
    this.logger.info({ route: resourceIdText(route), parents: summarize(parents) }, 'route status changed');
    return true;
  }

  get(route: ResourceId): readonly RouteParentStatus[] | undefined {
    return this.#byRoute.get(idKey(route))?.parents;
  }

  delete(route: ResourceId): void {
    this.#byRoute.delete(idKey(route));
  }

  all(): { route: ResourceId; parents: readonly RouteParentStatus[] }[] {
    return [...this.#byRoute.values()].map(({ route, parents }) => ({ route, parents })).sort((a, b) => compareIds(a.route, b.route));
  }
}

function summarize(parents: readonly RouteParentStatus[]): string {
  return parents
    .map((p) => `${p.parentRef.kind} ${p.parentRef.namespace}/${p.parentRef.name}${p.parentRef.port === undefined ? '' : `:${p.parentRef.port}`}: ${p.conditions.map((c) => `${c.type}=${c.status}(${c.reason})`).join(' ')}`)
    .join('; ');
}
