/**
 * A ConfigSource over the Kubernetes API: one informer (list + watch) per
 * kind — HTTPRoute (gateway.networking.k8s.io/v1), GRPCRoute (v1), TCPRoute
 * (v1alpha2) and core/v1 Services — for all namespaces or for each namespace
 * the waypoint needs. The informers are @kubernetes/client-node's ListWatch:
 * list, then watch from the list's resourceVersion, re-watch from the last
 * resourceVersion when a stream ends, relist on 410 Gone (objects that vanished
 * meanwhile are removed). On top of it, here: bookmarks
 * (`allowWatchBookmarks`, which keep the resume point fresh), a bounded watch
 * timeout, restart with backoff (through the Clock) after an error (ListWatch
 * stops on one), an optional periodic resync (a fresh list), and a kind whose
 * CRD is not installed (404) counting as synced-and-empty while it is retried.
 * The kubeconfig comes as client-node takes it (KUBECONFIG, ~/.kube/config,
 * the in-cluster service account): loadKubeConfig().
 *
 * Every object goes through the same parser as the directory source; an
 * object is parsed again only when its resourceVersion changes, and the
 * snapshot is rebuilt once per burst of events (one microtask), published with
 * one assignment. An invalid object is logged once per version and left out
 * alone.
 *
 * Route status is written to the status subresource as istiod does
 * (conditions.go createRouteStatus): status.parents entries with our
 * controllerName (istio.io/gateway-controller) are replaced in place or
 * appended, ours no longer reported are removed, every other controller's
 * entry is kept as it is; a condition keeps its lastTransitionTime while its
 * status does not change; observedGeneration is the route's generation. The
 * write is a read, merge and PUT with the read resourceVersion; a 409
 * conflict re-reads and merges again (up to 5 times, then retried later with
 * backoff). Writes are serialized; only the latest status per route is kept
 * while a write is pending, and nothing is written when nothing changes.
 */
import type { Clock, Timer } from '@ambient/control';
import { CoreV1Api, CustomObjectsApi, KubeConfig, ListWatch, Watch, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { parseResource } from '../resources/parse.js';
import { resourceIdText, type ConfigResources, type ResourceId, type ResourceKind } from '../resources/types.js';
import { EMPTY_RESOURCES, Listeners, RouteStatusTable, buildResources, idKey, type Contribution, type SourceLogger } from './snapshot.js';
import type { ConfigSource, RouteCondition, RouteParentStatus } from './source.js';

export const ISTIO_CONTROLLER_NAME = 'istio.io/gateway-controller';

export interface KubernetesSourceOptions {
  readonly kubeConfig: KubeConfig;
  readonly clock: Clock;
  readonly logger: SourceLogger;
  /** Watch only these namespaces (one informer per kind and namespace); undefined = all namespaces. */
  readonly namespaces?: readonly string[];
  /** timeoutSeconds of each watch request (default 300; the stream is then resumed from the last resourceVersion). */
  readonly watchTimeoutSeconds?: number;
  /** Backoff after an informer or status write error: first delay and cap (default 1 s, 30 s). */
  readonly retryInitialMs?: number;
  readonly retryMaxMs?: number;
  /** Retry period for a kind whose CRD is not installed (default 30 s). */
  readonly missingKindRetryMs?: number;
  /** Period of a full relist (default 0: none; watches and 410 relists keep the cache right). */
  readonly resyncMs?: number;
}

interface KindInfo {
  readonly kind: ResourceKind;
  readonly group: string;
  readonly version: string;
  readonly plural: string;
}

const KINDS: readonly KindInfo[] = [
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' },
  { kind: 'GRPCRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes' },
  { kind: 'TCPRoute', group: 'gateway.networking.k8s.io', version: 'v1alpha2', plural: 'tcproutes' },
  { kind: 'Service', group: '', version: 'v1', plural: 'services' },
];

const apiVersionOf = (k: KindInfo) => (k.group === '' ? k.version : `${k.group}/${k.version}`);

/** The kubeconfig as client-node finds it: KUBECONFIG, ~/.kube/config, else the in-cluster service account. */
export function loadKubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromDefault();
  return kc;
}

export function startKubernetesSource(options: KubernetesSourceOptions): KubernetesSource {
  return new KubernetesSource(options);
}

interface Entry extends Contribution {
  readonly resourceVersion: string;
}

export class KubernetesSource implements ConfigSource {
  readonly origin = 'kubernetes';
  readonly synced: Promise<void>;
  readonly #o: KubernetesSourceOptions;
  readonly #log: SourceLogger;
  readonly #listeners: Listeners;
  readonly #status: RouteStatusTable;
  readonly #entries = new Map<string, Entry>();
  readonly #reflectors: Reflector[] = [];
  readonly #api: CustomObjectsApi | undefined;
  readonly #core: CoreV1Api | undefined;
  #current: ConfigResources = EMPTY_RESOURCES;
  #publishQueued = false;
  #closed = false;
  // status writing
  readonly #pending = new Map<string, { route: ResourceId; parents: readonly RouteParentStatus[] }>();
  #writing = false;
  #statusTimer: Timer | undefined;
  #statusBackoffMs = 0;

  constructor(options: KubernetesSourceOptions) {
    this.#o = options;
    this.#log = options.logger;
    this.#listeners = new Listeners(this.#log);
    this.#status = new RouteStatusTable(this.#log);
    const cluster = options.kubeConfig.getCurrentCluster();
    if (cluster === null) {
      this.#api = undefined;
      this.#core = undefined;
      this.synced = Promise.reject(new Error('no Kubernetes cluster in the kubeconfig (set KUBECONFIG, ~/.kube/config, or run in a pod with a service account)'));
      this.synced.catch(() => undefined);
      return;
    }
    this.#api = options.kubeConfig.makeApiClient(CustomObjectsApi);
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    const scopes = options.namespaces === undefined ? [undefined] : [...new Set(options.namespaces)];
    for (const k of KINDS) for (const ns of scopes) this.#reflectors.push(new Reflector(this, k, ns));
    this.synced = Promise.all(this.#reflectors.map((r) => r.synced)).then(() => undefined);
    for (const r of this.#reflectors) r.start();
  }

  current(): ConfigResources {
    return this.#current;
  }

  subscribe(listener: (resources: ConfigResources) => void): () => void {
    return this.#listeners.add(listener);
  }

  /** Route status as last reported, for the config dump. */
  routeStatuses(): { route: ResourceId; parents: readonly RouteParentStatus[] }[] {
    return this.#status.all();
  }

  reportRouteStatus(route: ResourceId, parents: readonly RouteParentStatus[]): void {
    if (this.#closed || route.kind === 'Service') return;
    const changed = this.#status.set(route, parents);
    const key = idKey(route);
    if (!changed && !this.#pending.has(key)) return;
    this.#pending.set(key, { route, parents });
    this.#kickStatus();
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#statusTimer?.cancel();
    this.#listeners.clear();
    await Promise.all(this.#reflectors.map((r) => r.stop()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- for the reflectors ----------------------------------------------------------------------

  /** @internal */
  get options(): KubernetesSourceOptions {
    return this.#o;
  }

  /** @internal */
  get clients(): { readonly custom: CustomObjectsApi; readonly core: CoreV1Api } {
    if (this.#api === undefined || this.#core === undefined) throw new Error('no API clients without a cluster');
    return { custom: this.#api, core: this.#core };
  }

  /** @internal */
  get logger(): SourceLogger {
    return this.#log;
  }

  /** @internal */
  get closed(): boolean {
    return this.#closed;
  }

  /** @internal An object was added or changed. */
  upsert(kind: KindInfo, raw: KubernetesObject): void {
    if (this.#closed) return;
    const obj = toPlain(raw, kind);
    const meta = (obj['metadata'] ?? {}) as Record<string, unknown>;
    const id: ResourceId = { kind: kind.kind, namespace: String(meta['namespace'] ?? ''), name: String(meta['name'] ?? '') };
    const key = idKey(id);
    const rv = String(meta['resourceVersion'] ?? '');
    const before = this.#entries.get(key);
    if (before !== undefined && rv !== '' && before.resourceVersion === rv) return; // unchanged: no reparse
    const r = parseResource(obj);
    let entry: Entry;
    if (r.status === 'ignored') {
      this.#log.warn({ kind: kind.kind, what: r.what }, 'object from the API server that is not a resource; ignored');
      return;
    } else if (r.status === 'rejected') {
      for (const p of r.problems) this.#log.warn({ resource: resourceIdText(p.resource), resourceVersion: rv, field: p.field, problem: p.message }, 'invalid resource left out');
      entry = { resource: undefined, problems: r.problems, resourceVersion: rv };
    } else {
      for (const p of r.problems) this.#log.warn({ resource: resourceIdText(p.resource), resourceVersion: rv, field: p.field, problem: p.message }, 'part of a resource left out');
      entry = { resource: r.resource, problems: r.problems, resourceVersion: rv };
    }
    this.#entries.set(key, entry);
    this.#queuePublish();
  }

  /** @internal An object was deleted. */
  remove(kind: KindInfo, raw: KubernetesObject): void {
    if (this.#closed) return;
    const key = idKey({ kind: kind.kind, namespace: raw.metadata?.namespace ?? '', name: raw.metadata?.name ?? '' });
    if (this.#entries.delete(key)) this.#queuePublish();
  }

  /** @internal After a full list: everything of this kind and scope not in it is gone. */
  retainOnly(kind: KindInfo, namespace: string | undefined, present: ReadonlySet<string>): void {
    let removed = false;
    for (const key of this.#entries.keys()) {
      const [k, ns] = key.split('/');
      if (k !== kind.kind || (namespace !== undefined && ns !== namespace)) continue;
      if (!present.has(key)) {
        this.#entries.delete(key);
        removed = true;
      }
    }
    if (removed) this.#queuePublish();
  }

  #queuePublish(): void {
    if (this.#publishQueued) return;
    this.#publishQueued = true;
    queueMicrotask(() => {
      this.#publishQueued = false;
      if (this.#closed) return;
      this.#current = buildResources(this.#entries.values());
      this.#listeners.emit(this.#current);
    });
  }

  // ---- status ----------------------------------------------------------------------------------

  #kickStatus(): void {
    if (this.#writing || this.#closed || this.#statusTimer !== undefined) return;
    void this.#drainStatus();
  }

  async #drainStatus(): Promise<void> {
    this.#writing = true;
    try {
      while (!this.#closed) {
        const next = this.#pending.entries().next();
        if (next.done === true) break;
        const [key, { route, parents }] = next.value;
        this.#pending.delete(key);
        try {
          const outcome = await this.#writeStatus(route, parents);
          this.#statusBackoffMs = 0;
          this.#log.debug({ route: resourceIdText(route), outcome }, 'route status');
        } catch (err) {
          if (!this.#pending.has(key)) this.#pending.set(key, { route, parents });
          this.#statusBackoffMs = Math.min(this.#o.retryMaxMs ?? 30_000, this.#statusBackoffMs === 0 ? (this.#o.retryInitialMs ?? 1000) : this.#statusBackoffMs * 2);
          this.#log.warn({ err: errText(err), route: resourceIdText(route), retryInMs: this.#statusBackoffMs }, 'route status write failed; retrying');
          this.#statusTimer = this.#o.clock.setTimer(this.#statusBackoffMs, () => {
            this.#statusTimer = undefined;
            this.#kickStatus();
          });
          return;
        }
      }
    } finally {
      this.#writing = false;
    }
  }

  async #writeStatus(route: ResourceId, parents: readonly RouteParentStatus[]): Promise<'written' | 'unchanged' | 'gone'> {
    const kind = KINDS.find((k) => k.kind === route.kind);
    const api = this.#api;
    if (kind === undefined || api === undefined) return 'gone';
    const where = { group: kind.group, version: kind.version, plural: kind.plural, namespace: route.namespace, name: route.name };
    for (let attempt = 1; attempt <= 5; attempt++) {
      let obj: Record<string, unknown>;
      try {
        obj = (await api.getNamespacedCustomObject(where)) as Record<string, unknown>;
      } catch (err) {
        if (statusCode(err) === 404) return 'gone';
        throw err;
      }
      const meta = (obj['metadata'] ?? {}) as Record<string, unknown>;
      const status = (obj['status'] ?? {}) as Record<string, unknown>;
      const current = Array.isArray(status['parents']) ? (status['parents'] as Record<string, unknown>[]) : [];
      const merged = mergeRouteParents(current, parents, route.namespace, Number(meta['generation'] ?? 0), new Date(this.#o.clock.now()).toISOString().replace(/\.\d{3}Z$/, 'Z'));
      if (JSON.stringify(merged) === JSON.stringify(current)) return 'unchanged';
      try {
        await api.replaceNamespacedCustomObjectStatus({ ...where, body: { ...obj, status: { ...status, parents: merged } } });
        return 'written';
      } catch (err) {
        const code = statusCode(err);
        if (code === 404) return 'gone';
        if (code !== 409) throw err;
        this.#log.debug({ route: resourceIdText(route), attempt }, 'route status conflict; re-reading');
      }
    }
    throw new Error('route status still conflicting after 5 attempts');
  }
}

// ---- status merge (pure) ---------------------------------------------------------------------

/** The key istiod compares parentRefs by (parentRefString): defaults applied, namespace defaulting to the route's. */
function parentKey(ref: Record<string, unknown>, routeNamespace: string): string {
  const s = (v: unknown, d: string) => (typeof v === 'string' && v !== '' ? v : d);
  return [s(ref['group'], 'gateway.networking.k8s.io'), s(ref['kind'], 'Gateway'), s(ref['namespace'], routeNamespace), s(ref['name'], ''), s(ref['sectionName'], ''), ref['port'] ?? ''].join('/');
}

/**
 * status.parents after our report, as istiod's createRouteStatus builds it: our entries replaced in place,
 * new ones appended (in istiod's order), ours not reported removed, other controllers' entries untouched.
 */
export function mergeRouteParents(
  current: readonly Record<string, unknown>[],
  ours: readonly RouteParentStatus[],
  routeNamespace: string,
  generation: number,
  nowIso: string,
): Record<string, unknown>[] {
  const wanted = new Map<string, RouteParentStatus>();
  for (const p of ours) wanted.set(parentKey(p.parentRef as unknown as Record<string, unknown>, routeNamespace), p);
  const out: Record<string, unknown>[] = [];
  const placed = new Set<string>();
  for (const entry of current) {
    if (entry['controllerName'] !== ISTIO_CONTROLLER_NAME) {
      out.push(entry);
      continue;
    }
    const key = parentKey((entry['parentRef'] ?? {}) as Record<string, unknown>, routeNamespace);
    const mine = wanted.get(key);
    if (mine === undefined || placed.has(key)) continue; // ours, no longer reported (or a duplicate): removed
    placed.add(key);
    out.push(statusEntry(mine, entry, generation, nowIso));
  }
  const toAppend = [...wanted].filter(([key]) => !placed.has(key)).sort(([a], [b]) => (a > b ? -1 : a < b ? 1 : 0));
  for (const [, p] of toAppend) out.push(statusEntry(p, undefined, generation, nowIso));
  return out;
}

function statusEntry(p: RouteParentStatus, existing: Record<string, unknown> | undefined, generation: number, nowIso: string): Record<string, unknown> {
  const before = Array.isArray(existing?.['conditions']) ? (existing['conditions'] as Record<string, unknown>[]) : [];
  const parentRef: Record<string, unknown> = { group: p.parentRef.group, kind: p.parentRef.kind, namespace: p.parentRef.namespace, name: p.parentRef.name };
  if (p.parentRef.port !== undefined) parentRef['port'] = p.parentRef.port;
  return {
    parentRef,
    controllerName: p.controllerName,
    conditions: p.conditions.map((c: RouteCondition) => {
      const old = before.find((o) => o['type'] === c.type);
      const keep = old !== undefined && old['status'] === c.status && typeof old['lastTransitionTime'] === 'string';
      return {
        type: c.type,
        status: c.status,
        reason: c.reason,
        message: c.message,
        lastTransitionTime: keep ? (old['lastTransitionTime'] as string) : nowIso,
        observedGeneration: generation,
      };
    }),
  };
}

// ---- informers -------------------------------------------------------------------------------

/** client-node's Watch with bookmarks and a bounded timeout, telling the reflector when a list has been applied. */
class ReflectorWatch extends Watch {
  constructor(
    config: KubeConfig,
    private readonly timeoutSeconds: number,
    private readonly onWatch: () => void,
  ) {
    super(config);
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    // ListWatch calls this right after it applied a list (or to resume): the cache is current.
    this.onWatch();
    return super.watch(path, { ...queryParams, allowWatchBookmarks: true, timeoutSeconds: this.timeoutSeconds }, callback, done);
  }
}

/** One kind in one scope (all namespaces or one): a ListWatch, restarted with backoff, optionally resynced. */
class Reflector {
  readonly synced: Promise<void>;
  #resolveSynced!: () => void;
  #lw: ListWatch<KubernetesObject> | undefined;
  #backoffMs = 0;
  #timer: Timer | undefined;
  #resyncTimer: Timer | undefined;
  #missingLogged = false;
  readonly #path: string;

  constructor(
    private readonly source: KubernetesSource,
    private readonly kind: KindInfo,
    private readonly namespace: string | undefined,
  ) {
    this.synced = new Promise((resolve) => (this.#resolveSynced = resolve));
    const base = kind.group === '' ? `/api/${kind.version}` : `/apis/${kind.group}/${kind.version}`;
    this.#path = namespace === undefined ? `${base}/${kind.plural}` : `${base}/namespaces/${namespace}/${kind.plural}`;
  }

  start(): void {
    if (this.source.closed) return;
    const o = this.source.options;
    const watch = new ReflectorWatch(o.kubeConfig, o.watchTimeoutSeconds ?? 300, () => this.#onWatching());
    const lw = new ListWatch<KubernetesObject>(this.#path, watch, () => this.#list(), false);
    // Callbacks of a ListWatch that was replaced (resync) or stopped are ignored: its aborted stream reports an error too.
    const current = () => this.#lw === lw;
    lw.on('add', (obj) => current() && this.source.upsert(this.kind, obj));
    lw.on('update', (obj) => current() && this.source.upsert(this.kind, obj));
    lw.on('delete', (obj) => current() && this.source.remove(this.kind, obj));
    lw.on('error', (err) => current() && this.#onError(err));
    this.#lw = lw;
    void lw.start().catch((err: unknown) => current() && this.#onError(err));
    const resync = o.resyncMs ?? 0;
    if (resync > 0) {
      this.#resyncTimer = o.clock.setTimer(resync, () => {
        this.#resyncTimer = undefined;
        void this.#restart('resync');
      });
    }
  }

  async stop(): Promise<void> {
    this.#timer?.cancel();
    this.#resyncTimer?.cancel();
    const lw = this.#lw;
    this.#lw = undefined;
    await lw?.stop();
  }

  async #restart(why: string): Promise<void> {
    this.source.logger.debug({ path: this.#path, why }, 'informer restarting with a fresh list');
    await this.stop();
    this.start();
  }

  async #list(): Promise<KubernetesListObject<KubernetesObject>> {
    const { custom, core } = this.source.clients;
    const { group, version, plural } = this.kind;
    const ns = this.namespace;
    let list: KubernetesListObject<KubernetesObject>;
    if (group === '') {
      // The typed core client turns fields into model classes (Dates); back to the JSON a watch event carries.
      const typed = ns === undefined ? await core.listServiceForAllNamespaces() : await core.listNamespacedService({ namespace: ns });
      list = JSON.parse(JSON.stringify(typed)) as KubernetesListObject<KubernetesObject>;
    } else {
      list = (await (ns === undefined
        ? custom.listClusterCustomObject({ group, version, plural })
        : custom.listNamespacedCustomObject({ group, version, namespace: ns, plural }))) as KubernetesListObject<KubernetesObject>;
    }
    const items = Array.isArray(list.items) ? list.items : [];
    const present = new Set<string>();
    for (const item of items) {
      // Items of core lists carry no apiVersion/kind.
      item.apiVersion ??= apiVersionOf(this.kind);
      item.kind ??= this.kind.kind;
      present.add(idKey({ kind: this.kind.kind, namespace: item.metadata?.namespace ?? '', name: item.metadata?.name ?? '' }));
    }
    // Objects deleted while no watch was open (or that another ListWatch instance knew): gone now.
    this.source.retainOnly(this.kind, this.namespace, present);
    return { ...list, items };
  }

  #onWatching(): void {
    this.#backoffMs = 0;
    this.#resolveSynced();
  }

  #onError(err: unknown): void {
    if (this.source.closed || this.#lw === undefined) return;
    const o = this.source.options;
    const code = statusCode(err);
    let delay: number;
    if (code === 404) {
      // The CRD is not installed: nothing of this kind exists; look again later.
      if (!this.#missingLogged) this.source.logger.warn({ path: this.#path }, 'resource kind not served by the API server (CRD not installed?); treated as empty, retrying');
      this.#missingLogged = true;
      this.source.retainOnly(this.kind, this.namespace, new Set());
      this.#resolveSynced();
      delay = o.missingKindRetryMs ?? 30_000;
    } else {
      this.#backoffMs = Math.min(o.retryMaxMs ?? 30_000, this.#backoffMs === 0 ? (o.retryInitialMs ?? 1000) : this.#backoffMs * 2);
      delay = this.#backoffMs;
      this.source.logger.warn({ path: this.#path, err: errText(err), retryInMs: delay }, 'informer failed; restarting');
    }
    this.#timer?.cancel();
    this.#timer = o.clock.setTimer(delay, () => {
      this.#timer = undefined;
      const lw = this.#lw;
      if (lw === undefined || this.source.closed) return;
      void lw.start().catch((e: unknown) => this.#lw === lw && this.#onError(e));
    });
  }
}

function toPlain(raw: KubernetesObject, kind: KindInfo): Record<string, unknown> {
  const obj = raw as unknown as Record<string, unknown>;
  return { ...obj, apiVersion: obj['apiVersion'] ?? apiVersionOf(kind), kind: obj['kind'] ?? kind.kind };
}

function statusCode(err: unknown): number | undefined {
  if (err === null || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; statusCode?: unknown };
  if (typeof e.statusCode === 'number') return e.statusCode;
  if (typeof e.code === 'number') return e.code;
  return undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
