/**
 * FakeApiServer: a FAKE of the Kubernetes API server, for tests only — an
 * in-process HTTP server on loopback that answers the few requests the
 * waypoint's Kubernetes config source makes, the way the real API server
 * answers them, and nothing else.
 *
 * What it implements:
 * - list (GET of a collection, all namespaces or one) with the collection's
 *   resourceVersion; core (v1) list items carry no apiVersion/kind, as the
 *   real server's do not;
 * - watch (`?watch=true`) from a resourceVersion: the events after it from a
 *   bounded history, then live ADDED / MODIFIED / DELETED events, BOOKMARK
 *   events on request when `allowWatchBookmarks=true`, `timeoutSeconds`;
 *   a resourceVersion older than the history answers `410 Gone` (as an ERROR
 *   event with a Status, or as an HTTP 410, see `goneAs`);
 * - get of one object; the status subresource: PUT (optimistic concurrency on
 *   metadata.resourceVersion, 409 Conflict), PATCH with
 *   application/merge-patch+json and application/json-patch+json (RFC 6902,
 *   `test` failures are 422); spec and metadata are untouched by a status write;
 * - 404 for unknown objects, 409, 415 for other patch types, 422 for invalid bodies.
 *
 * Strictness: any request it does not implement (another path, verb or query
 * parameter, a label or field selector) is recorded in `unexpected` and answered
 * 501; tests end with `expect(fake.unexpected).toEqual([])`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FakeResourceType {
  /** '' for the core group. */
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  readonly kind: string;
  readonly hasStatus: boolean;
}

export const GATEWAY_API_TYPES: readonly FakeResourceType[] = [
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes', kind: 'HTTPRoute', hasStatus: true },
  { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes', kind: 'GRPCRoute', hasStatus: true },
  { group: 'gateway.networking.k8s.io', version: 'v1alpha2', plural: 'tcproutes', kind: 'TCPRoute', hasStatus: true },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', hasStatus: true },
];

export interface RecordedRequest {
  readonly method: string;
  readonly url: string;
  readonly contentType: string | undefined;
  readonly authorization: string | undefined;
  readonly body: unknown;
}

export interface FakeApiServerOptions {
  readonly types?: readonly FakeResourceType[];
  /** How many past events a watch can resume from; older resourceVersions get 410 (default 1000). */
  readonly historyLimit?: number;
  /** How too-old resourceVersions are refused: an ERROR event in a 200 stream (the watch cache's way, default) or an HTTP 410. */
  readonly goneAs?: 'event' | 'status';
}

type Obj = Record<string, unknown> & { metadata: Record<string, unknown> };

interface StoredEvent {
  readonly rv: number;
  readonly type: 'ADDED' | 'MODIFIED' | 'DELETED';
  readonly typeKey: string;
  readonly object: Obj;
}

interface OpenWatch {
  readonly typeKey: string;
  readonly namespace: string | undefined;
  readonly bookmarks: boolean;
  readonly res: ServerResponse;
  readonly type: FakeResourceType;
}

type ApiError = { code: number; reason: string; message: string };

/** A FAKE Kubernetes API server (see the module comment). */
export class FakeApiServer implements AsyncDisposable {
  readonly requests: RecordedRequest[] = [];
  readonly unexpected: RecordedRequest[] = [];
  /** Status writes, in order, for assertions. */
  readonly statusWrites: { readonly method: string; readonly path: string; readonly contentType: string | undefined; readonly outcome: number }[] = [];
  goneAs: 'event' | 'status';
  readonly #server: Server;
  readonly #types: ReadonlyMap<string, FakeResourceType>;
  readonly #historyLimit: number;
  readonly #objects = new Map<string, Obj>();
  #history: StoredEvent[] = [];
  /** Events before this resourceVersion are gone (compacted). */
  #oldestRv = 1;
  #rv = 100;
  #uid = 0;
  readonly #watches = new Set<OpenWatch>();
  readonly #beforeStatusWrite: (() => void)[] = [];
  readonly #watchWaiters: { n: number; resolve: () => void }[] = [];

  private constructor(server: Server, options: FakeApiServerOptions) {
    this.#server = server;
    this.#types = new Map((options.types ?? GATEWAY_API_TYPES).map((t) => [typeKey(t.group, t.version, t.plural), t]));
    this.#historyLimit = options.historyLimit ?? 1000;
    this.goneAs = options.goneAs ?? 'event';
    server.on('request', (req, res) => this.#onRequest(req, res));
  }

  static async start(options: FakeApiServerOptions = {}): Promise<FakeApiServer> {
    const server = createServer();
    const fake = new FakeApiServer(server, options);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return fake;
  }

  get url(): string {
    const a = this.#server.address() as AddressInfo;
    return `http://127.0.0.1:${a.port}`;
  }

  /** The current resourceVersion of the store. */
  get resourceVersion(): string {
    return String(this.#rv);
  }

  get openWatches(): number {
    return this.#watches.size;
  }

  /** Resolves once at least `n` watch streams are open. */
  waitForWatches(n: number): Promise<void> {
    if (this.#watches.size >= n) return Promise.resolve();
    return new Promise((resolve) => this.#watchWaiters.push({ n, resolve }));
  }

  // ---- state -----------------------------------------------------------------------------------

  /** Creates or replaces an object (as a user's `kubectl apply` would); returns the stored copy. */
  apply(input: Record<string, unknown>): Obj {
    const obj = clone(input) as Obj;
    const type = this.#typeOfObject(obj);
    const meta = (obj.metadata ??= {}) as Record<string, unknown>;
    const ns = String(meta['namespace'] ?? 'default');
    meta['namespace'] = ns;
    const key = objectKey(typeKey(type.group, type.version, type.plural), ns, String(meta['name']));
    const existing = this.#objects.get(key);
    this.#rv++;
    if (existing === undefined) {
      meta['uid'] = `uid-${++this.#uid}`;
      meta['creationTimestamp'] ??= new Date(Date.UTC(2024, 0, 1, 0, 0, this.#uid)).toISOString().replace('.000Z', 'Z');
      meta['generation'] = 1;
    } else {
      const em = existing.metadata;
      meta['uid'] = em['uid'];
      meta['creationTimestamp'] = em['creationTimestamp'];
      const specChanged = JSON.stringify(existing['spec']) !== JSON.stringify(obj['spec']);
      meta['generation'] = Number(em['generation'] ?? 1) + (specChanged ? 1 : 0);
      if (obj['status'] === undefined && existing['status'] !== undefined) obj['status'] = existing['status'];
    }
    meta['resourceVersion'] = String(this.#rv);
    this.#objects.set(key, obj);
    this.#record(existing === undefined ? 'ADDED' : 'MODIFIED', type, obj);
    return clone(obj);
  }

  /** Deletes an object; returns whether it existed. */
  delete(apiVersion: string, kind: string, namespace: string, name: string): boolean {
    const type = this.#typeOfObject({ apiVersion, kind, metadata: {} });
    const key = objectKey(typeKey(type.group, type.version, type.plural), namespace, name);
    const existing = this.#objects.get(key);
    if (existing === undefined) return false;
    this.#objects.delete(key);
    this.#rv++;
    const last = clone(existing);
    last.metadata['resourceVersion'] = String(this.#rv);
    this.#record('DELETED', type, last);
    return true;
  }

  /** The stored object (a copy), or undefined. */
  get(apiVersion: string, kind: string, namespace: string, name: string): Obj | undefined {
    const type = this.#typeOfObject({ apiVersion, kind, metadata: {} });
    const o = this.#objects.get(objectKey(typeKey(type.group, type.version, type.plural), namespace, name));
    return o === undefined ? undefined : clone(o);
  }

  // ---- scripting -------------------------------------------------------------------------------

  /** Ends every open watch stream (as an API server restart or a load balancer would). */
  dropWatches(): void {
    for (const w of this.#watches) w.res.destroy();
    this.#watches.clear();
  }

  /** Forgets the event history: every watch from an earlier resourceVersion now gets 410 Gone. */
  compact(): void {
    this.#history = [];
    this.#oldestRv = this.#rv + 1;
  }

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for bookmarks; returns how many got one. */
  bookmark(): number {
    let n = 0;
    for (const w of this.#watches) {
      if (!w.bookmarks) continue;
      writeEvent(w.res, { type: 'BOOKMARK', object: { kind: w.type.kind, apiVersion: apiVersionOf(w.type), metadata: { resourceVersion: String(this.#rv) } } });
      n++;
    }
    return n;
  }

  /** Runs `fn` right before the next status write is applied (e.g. another controller writing first, to force a conflict). */
  beforeNextStatusWrite(fn: () => void): void {
    this.#beforeStatusWrite.push(fn);
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- HTTP ------------------------------------------------------------------------------------

  #onRequest(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = text;
      }
      const rec: RecordedRequest = { method: req.method ?? '', url: req.url ?? '', contentType: req.headers['content-type'], authorization: req.headers.authorization, body };
      this.requests.push(rec);
      try {
        this.#route(rec, res);
      } catch (err) {
        sendStatus(res, { code: 500, reason: 'InternalError', message: `fake apiserver bug: ${String(err)}` });
      }
    });
  }

  #unexpected(rec: RecordedRequest, res: ServerResponse, why: string): void {
    this.unexpected.push(rec);
    sendStatus(res, { code: 501, reason: 'NotImplemented', message: `FakeApiServer does not implement ${rec.method} ${rec.url}: ${why}` });
  }

  #route(rec: RecordedRequest, res: ServerResponse): void {
    const url = new URL(rec.url, 'http://fake');
    const m =
      /^\/apis\/([^/]+)\/([^/]+)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(url.pathname) ??
      /^\/api\/(v1)(?:\/namespaces\/([^/]+))?\/([^/]+)(?:\/([^/]+))?(?:\/(status))?$/.exec(url.pathname);
    if (m === null) return this.#unexpected(rec, res, 'unknown path');
    const core = url.pathname.startsWith('/api/');
    const [group, version, ns, plural, name, sub] = core ? ['', m[1]!, m[2], m[3]!, m[4], m[5]] : [m[1]!, m[2]!, m[3], m[4]!, m[5], m[6]];
    const type = this.#types.get(typeKey(group, version, plural));
    if (type === undefined) return sendStatus(res, { code: 404, reason: 'NotFound', message: `the server could not find the requested resource (${group}/${version} ${plural})` });
    const params = url.searchParams;
    const allowed = name === undefined && rec.method === 'GET' ? ['watch', 'resourceVersion', 'allowWatchBookmarks', 'timeoutSeconds'] : [];
    for (const k of params.keys()) if (!allowed.includes(k)) return this.#unexpected(rec, res, `query parameter ${k}`);
    if (name === undefined) {
      if (rec.method !== 'GET') return this.#unexpected(rec, res, 'verb on a collection');
      const watching = params.get('watch') === 'true' || params.get('watch') === '1';
      return watching ? this.#watch(type, ns, params, res) : this.#list(type, ns, res);
    }
    if (ns === undefined) return this.#unexpected(rec, res, 'cluster-scoped object path');
    const key = objectKey(typeKey(group, version, plural), ns, name);
    if (sub === undefined) {
      if (rec.method !== 'GET') return this.#unexpected(rec, res, 'only GET of an object is implemented');
      const o = this.#objects.get(key);
      return o === undefined ? sendStatus(res, notFound(type, name)) : sendJson(res, 200, o);
    }
    if (!type.hasStatus) return this.#unexpected(rec, res, 'no status subresource');
    if (rec.method === 'GET') {
      const o = this.#objects.get(key);
      return o === undefined ? sendStatus(res, notFound(type, name)) : sendJson(res, 200, o);
    }
    if (rec.method !== 'PUT' && rec.method !== 'PATCH') return this.#unexpected(rec, res, `verb ${rec.method} on status`);
    return this.#writeStatus(rec, type, key, name, res);
  }

  #list(type: FakeResourceType, ns: string | undefined, res: ServerResponse): void {
    const items = [...this.#objectsOf(type, ns)].map((o) => {
      if (type.group !== '') return o;
      const { apiVersion: _a, kind: _k, ...rest } = o; // core list items carry no apiVersion/kind
      return rest;
    });
    sendJson(res, 200, { apiVersion: apiVersionOf(type), kind: `${type.kind}List`, metadata: { resourceVersion: String(this.#rv) }, items });
  }

  #watch(type: FakeResourceType, ns: string | undefined, params: URLSearchParams, res: ServerResponse): void {
    const from = params.get('resourceVersion') ?? '';
    const tk = typeKey(type.group, type.version, type.plural);
    let replay: { type: string; object: Obj }[];
    if (from === '' || from === '0') {
      replay = [...this.#objectsOf(type, ns)].map((o) => ({ type: 'ADDED', object: o }));
    } else {
      const rv = Number(from);
      if (!Number.isInteger(rv) || rv < 0) return sendStatus(res, { code: 400, reason: 'BadRequest', message: `invalid resourceVersion ${JSON.stringify(from)}` });
      if (rv < this.#oldestRv - 1) {
        const gone: ApiError = { code: 410, reason: 'Expired', message: `too old resource version: ${rv} (${this.#oldestRv - 1})` };
        if (this.goneAs === 'status') return sendStatus(res, gone);
        res.writeHead(200, { 'content-type': 'application/json' });
        writeEvent(res, { type: 'ERROR', object: statusBody(gone) });
        res.end();
        return;
      }
      replay = this.#history.filter((e) => e.rv > rv && e.typeKey === tk && (ns === undefined || e.object.metadata['namespace'] === ns)).map((e) => ({ type: e.type, object: e.object }));
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    for (const e of replay) writeEvent(res, e);
    const w: OpenWatch = { typeKey: tk, namespace: ns, bookmarks: params.get('allowWatchBookmarks') === 'true', res, type };
    this.#watches.add(w);
    const timeout = Number(params.get('timeoutSeconds') ?? '0');
    // Test support, not src: a real timer is fine here (bounded by the server's close()).
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      if (timer !== undefined) clearTimeout(timer);
      this.#watches.delete(w);
    });
    for (const waiter of [...this.#watchWaiters]) {
      if (this.#watches.size >= waiter.n) {
        this.#watchWaiters.splice(this.#watchWaiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  }

  #writeStatus(rec: RecordedRequest, type: FakeResourceType, key: string, name: string, res: ServerResponse): void {
    const done = (outcome: number) => this.statusWrites.push({ method: rec.method, path: new URL(rec.url, 'http://fake').pathname, contentType: rec.contentType, outcome });
    const hooks = this.#beforeStatusWrite.splice(0);
    for (const h of hooks) h();
    const current = this.#objects.get(key);
    if (current === undefined) {
      done(404);
      return sendStatus(res, notFound(type, name));
    }
    let next: Obj;
    const ct = (rec.contentType ?? '').split(';')[0]!.trim();
    if (rec.method === 'PUT') {
      const body = rec.body as Obj | undefined;
      if (body === undefined || typeof body !== 'object' || body === null || typeof body.metadata !== 'object') {
        done(422);
        return sendStatus(res, { code: 422, reason: 'Invalid', message: 'body must be the object with metadata' });
      }
      if (body.metadata['name'] !== name) {
        done(400);
        return sendStatus(res, { code: 400, reason: 'BadRequest', message: `the name of the object (${String(body.metadata['name'])}) does not match the name on the URL (${name})` });
      }
      const rv = body.metadata['resourceVersion'];
      if (rv !== undefined && rv !== '' && rv !== current.metadata['resourceVersion']) {
        done(409);
        return sendStatus(res, conflict(type, name));
      }
      next = clone(current);
      next['status'] = clone(body['status']);
    } else if (ct === 'application/merge-patch+json') {
      const patch = rec.body as Record<string, unknown>;
      const prv = (patch?.['metadata'] as Record<string, unknown> | undefined)?.['resourceVersion'];
      if (prv !== undefined && prv !== current.metadata['resourceVersion']) {
        done(409);
        return sendStatus(res, conflict(type, name));
      }
      const merged = mergePatch(clone(current), patch) as Obj;
      next = clone(current);
      next['status'] = merged['status'];
    } else if (ct === 'application/json-patch+json') {
      const applied = jsonPatch(clone(current), rec.body);
      if ('error' in applied) {
        done(422);
        return sendStatus(res, { code: 422, reason: 'Invalid', message: applied.error });
      }
      next = clone(current);
      next['status'] = (applied.value as Obj)['status'];
    } else {
      done(415);
      return sendStatus(res, { code: 415, reason: 'UnsupportedMediaType', message: `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got ${ct})` });
    }
    const parents = (next['status'] as Record<string, unknown> | undefined)?.['parents'];
    if (parents !== undefined && !Array.isArray(parents)) {
      done(422);
      return sendStatus(res, { code: 422, reason: 'Invalid', message: 'status.parents: Invalid value: must be an array' });
    }
    this.#rv++;
    next.metadata['resourceVersion'] = String(this.#rv);
    this.#objects.set(key, next);
    this.#record('MODIFIED', type, next);
    done(200);
    sendJson(res, 200, next);
  }

  // ---- internals -------------------------------------------------------------------------------

  *#objectsOf(type: FakeResourceType, ns: string | undefined): Iterable<Obj> {
    const prefix = `${typeKey(type.group, type.version, type.plural)}|`;
    for (const [k, o] of this.#objects) if (k.startsWith(prefix) && (ns === undefined || o.metadata['namespace'] === ns)) yield o;
  }

  #record(eventType: StoredEvent['type'], type: FakeResourceType, obj: Obj): void {
    const tk = typeKey(type.group, type.version, type.plural);
    const object = clone(obj);
    this.#history.push({ rv: this.#rv, type: eventType, typeKey: tk, object });
    while (this.#history.length > this.#historyLimit) {
      const dropped = this.#history.shift();
      if (dropped !== undefined) this.#oldestRv = dropped.rv + 1;
    }
    for (const w of this.#watches) {
      if (w.typeKey !== tk || (w.namespace !== undefined && w.namespace !== object.metadata['namespace'])) continue;
      writeEvent(w.res, { type: eventType, object });
    }
  }

  #typeOfObject(obj: Record<string, unknown>): FakeResourceType {
    const av = String(obj['apiVersion'] ?? '');
    const [group, version] = av.includes('/') ? av.split('/') : ['', av];
    for (const t of this.#types.values()) if (t.group === group && t.version === version && t.kind === obj['kind']) return t;
    throw new Error(`FakeApiServer serves no ${av} ${String(obj['kind'])}`);
  }
}

function typeKey(group: string, version: string, plural: string): string {
  return `${group}/${version}/${plural}`;
}

function objectKey(tk: string, ns: string, name: string): string {
  return `${tk}|${ns}/${name}`;
}

function apiVersionOf(t: FakeResourceType): string {
  return t.group === '' ? t.version : `${t.group}/${t.version}`;
}

function clone<T>(v: T): T {
  return v === undefined ? v : (JSON.parse(JSON.stringify(v)) as T);
}

function writeEvent(res: ServerResponse, e: unknown): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(e)}\n`);
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function statusBody(e: ApiError): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: e.message, reason: e.reason, code: e.code };
}

function sendStatus(res: ServerResponse, e: ApiError): void {
  sendJson(res, e.code, statusBody(e));
}

function notFound(t: FakeResourceType, name: string): ApiError {
  return { code: 404, reason: 'NotFound', message: `${t.plural}${t.group === '' ? '' : `.${t.group}`} "${name}" not found` };
}

function conflict(t: FakeResourceType, name: string): ApiError {
  return {
    code: 409,
    reason: 'Conflict',
    message: `Operation cannot be fulfilled on ${t.plural}${t.group === '' ? '' : `.${t.group}`} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
  };
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Record<string, unknown> = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** RFC 6902 JSON patch: add, remove, replace, test (what client-node's callers send). */
function jsonPatch(doc: unknown, ops: unknown): { value: unknown } | { error: string } {
  if (!Array.isArray(ops)) return { error: 'a JSON patch must be an array of operations' };
  let root = doc;
  for (const raw of ops) {
    const op = raw as { op?: unknown; path?: unknown; value?: unknown };
    if (typeof op.path !== 'string' || (op.path !== '' && !op.path.startsWith('/'))) return { error: `invalid path ${JSON.stringify(op.path)}` };
    const parts = op.path === '' ? [] : op.path.slice(1).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    if (op.op === 'test') {
      const cur = resolvePointer(root, parts);
      if (JSON.stringify(cur) !== JSON.stringify(op.value)) return { error: `the test operation at ${op.path} failed` };
      continue;
    }
    if (parts.length === 0) {
      if (op.op === 'remove') return { error: 'cannot remove the root' };
      root = clone(op.value);
      continue;
    }
    const parent = resolvePointer(root, parts.slice(0, -1));
    const last = parts[parts.length - 1]!;
    if (parent === null || typeof parent !== 'object') return { error: `path ${op.path} does not exist` };
    if (Array.isArray(parent)) {
      const i = last === '-' ? parent.length : Number(last);
      if (!Number.isInteger(i) || i < 0 || i > parent.length) return { error: `index ${last} out of range at ${op.path}` };
      if (op.op === 'add') parent.splice(i, 0, clone(op.value));
      else if (op.op === 'replace' && i < parent.length) parent[i] = clone(op.value);
      else if (op.op === 'remove' && i < parent.length) parent.splice(i, 1);
      else return { error: `cannot ${String(op.op)} at ${op.path}` };
    } else {
      const o = parent as Record<string, unknown>;
      if (op.op === 'add') o[last] = clone(op.value);
      else if ((op.op === 'replace' || op.op === 'remove') && last in o) {
        if (op.op === 'replace') o[last] = clone(op.value);
        else delete o[last];
      } else return { error: `cannot ${String(op.op)} at ${op.path}` };
    }
  }
  return { value: root };
}

function resolvePointer(doc: unknown, parts: readonly string[]): unknown {
  let cur = doc;
  for (const p of parts) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = Array.isArray(cur) ? cur[Number(p)] : (cur as Record<string, unknown>)[p];
  }
  return cur;
}
