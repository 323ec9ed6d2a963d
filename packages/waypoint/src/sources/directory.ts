/**
 * A ConfigSource over a directory of the manifests users apply
 * (`--config-dir` / WAYPOINT_CONFIG_DIR): every `*.yaml`, `*.yml` and `*.json`
 * below it (recursively; entries starting with `.` are skipped, which also
 * skips a ConfigMap volume's `..data` and timestamped copies while following
 * its top-level symlinks), multi-document YAML and `kind: List` included.
 *
 * Watching: one non-recursive fs.watch per directory of the tree (re-synced
 * after every scan, re-made when a directory's inode changes) plus one on the
 * parent, so files added, changed, removed or renamed, atomic rename-into-place
 * and the whole directory being replaced are all seen. Events are debounced
 * through the injected Clock; a burst becomes one rescan (control's watchFile
 * watches one file; a tree needs a watch per directory). Scans never overlap:
 * an event during a scan queues exactly one more.
 *
 * Cheap on change: a file whose (inode, size, mtime, ctime) is unchanged is not read
 * again, and one whose content hash is unchanged is not parsed again. Only when
 * some file's contribution changed is a new snapshot built and published (one
 * assignment, then the listeners).
 *
 * Bad input never takes valid config down: a YAML error, an unreadable or
 * too-large file, or an invalid resource is logged (file, line, resource,
 * field) once, when its content is read, and left out alone. A directory that
 * is missing during a rescan keeps the last state (it may be mid-replacement);
 * missing at start, `synced` rejects. A resource defined twice keeps its first
 * definition in path order; the second is reported. Route status is kept in
 * memory (routeStatuses(), for the config dump) and logged on change.
 */
import { createHash } from 'node:crypto';
import { watch, type FSWatcher, type Stats } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import type { Clock, Timer } from '@ambient/control';
import { LineCounter, parseAllDocuments, type Document } from 'yaml';
import { parseResource } from '../resources/parse.js';
import { resourceIdText, type ConfigResources, type ResourceId, type ResourceProblem } from '../resources/types.js';
import { EMPTY_RESOURCES, Listeners, RouteStatusTable, buildResources, idKey, type Contribution, type SourceLogger } from './snapshot.js';
import type { ConfigSource, RouteParentStatus } from './source.js';

export interface DirectorySourceOptions {
  readonly dir: string;
  readonly clock: Clock;
  readonly logger: SourceLogger;
  /** Quiet period after the last file event before a rescan (default 100 ms). */
  readonly debounceMs?: number;
  /** Files larger than this are refused (default 8 MiB). */
  readonly maxFileBytes?: number;
}

/** A problem of a resource from a file, with where it is. */
export interface LocatedProblem extends ResourceProblem {
  /** Path relative to the directory. */
  readonly file: string;
  /** 1-based line of the offending field (or of the document). */
  readonly line: number;
}

/** A problem of a file or a document that is no resource at all (YAML syntax, unreadable file). */
export interface FileProblem {
  readonly file: string;
  readonly line: number;
  readonly message: string;
}

interface FileEntry {
  readonly statKey: string;
  readonly hash: string;
  readonly contributions: readonly (Contribution & { readonly id: ResourceId | undefined; readonly line: number })[];
  readonly fileProblems: readonly FileProblem[];
}

const EXTENSIONS = ['.yaml', '.yml', '.json'];

export function startDirectorySource(options: DirectorySourceOptions): DirectorySource {
  return new DirectorySource(options);
}

export class DirectorySource implements ConfigSource {
  readonly origin: string;
  readonly synced: Promise<void>;
  readonly #o: Required<DirectorySourceOptions>;
  readonly #log: SourceLogger;
  readonly #listeners: Listeners;
  readonly #status: RouteStatusTable;
  #files = new Map<string, FileEntry>();
  #current: ConfigResources = EMPTY_RESOURCES;
  #fileProblems: readonly FileProblem[] = [];
  readonly #watchers = new Map<string, { readonly ino: number; readonly watcher: FSWatcher }>();
  #parentWatcher: FSWatcher | undefined;
  #timer: Timer | undefined;
  #scanning: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(options: DirectorySourceOptions) {
    this.#o = { debounceMs: 100, maxFileBytes: 8 * 1024 * 1024, ...options };
    this.origin = `dir:${options.dir}`;
    this.#log = options.logger;
    this.#listeners = new Listeners(this.#log);
    this.#status = new RouteStatusTable(this.#log);
    this.synced = this.#start();
    this.synced.catch(() => undefined); // the owner observes it; no unhandled rejection meanwhile
  }

  current(): ConfigResources {
    return this.#current;
  }

  subscribe(listener: (resources: ConfigResources) => void): () => void {
    return this.#listeners.add(listener);
  }

  reportRouteStatus(route: ResourceId, parents: readonly RouteParentStatus[]): void {
    if (!this.#closed) this.#status.set(route, parents);
  }

  /** Route status as last reported (the directory source has no API server to write it to). */
  routeStatuses(): { route: ResourceId; parents: readonly RouteParentStatus[] }[] {
    return this.#status.all();
  }

  /** Problems of files and documents that are not resources (YAML syntax, unreadable files), for the config dump. */
  fileProblems(): readonly FileProblem[] {
    return this.#fileProblems;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#timer?.cancel();
    this.#timer = undefined;
    for (const { watcher } of this.#watchers.values()) watcher.close();
    this.#watchers.clear();
    this.#parentWatcher?.close();
    this.#parentWatcher = undefined;
    this.#listeners.clear();
    await this.#scanning?.catch(() => undefined);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #start(): Promise<void> {
    const dir = this.#o.dir;
    let st: Stats;
    try {
      st = await stat(dir);
    } catch (err) {
      throw new Error(`config directory ${dir} cannot be read: ${errText(err)}`);
    }
    if (!st.isDirectory()) throw new Error(`config directory ${dir} is not a directory`);
    this.#watchParent();
    await this.#scanOnce();
  }

  #schedule(): void {
    if (this.#closed) return;
    this.#timer?.cancel();
    this.#timer = this.#o.clock.setTimer(this.#o.debounceMs, () => {
      this.#timer = undefined;
      void this.#rescan();
    });
  }

  async #rescan(): Promise<void> {
    if (this.#closed) return;
    if (this.#scanning !== undefined) {
      this.#again = true;
      return;
    }
    try {
      await this.#scanOnce();
    } catch (err) {
      this.#log.error({ err, dir: this.#o.dir }, 'config directory scan failed; keeping the last config');
    }
    if (this.#again && !this.#closed) {
      this.#again = false;
      await this.#rescan();
    }
  }

  async #scanOnce(): Promise<void> {
    const run = this.#scan();
    this.#scanning = run;
    try {
      await run;
    } finally {
      this.#scanning = undefined;
    }
  }

  async #scan(): Promise<void> {
    const dir = this.#o.dir;
    const listing = await listTree(dir);
    if (this.#closed) return;
    if (listing === undefined) {
      this.#log.warn({ dir }, 'config directory is missing; keeping the last config until it is back');
      return;
    }
    this.#syncWatchers(listing.dirs);
    const next = new Map<string, FileEntry>();
    let changed = listing.files.length !== this.#files.size;
    for (const file of listing.files) {
      const before = this.#files.get(file.path);
      const entry = await this.#readFile(file.path, file.stat, before);
      if (this.#closed) return;
      if (entry === undefined) continue; // vanished between listing and reading
      if (entry !== before) changed = true;
      next.set(file.path, entry);
    }
    if (!changed && [...next.keys()].every((k) => this.#files.has(k))) return;
    this.#files = next;
    this.#publish();
  }

  async #readFile(path: string, st: Stats, before: FileEntry | undefined): Promise<FileEntry | undefined> {
    const statKey = `${st.dev}/${st.ino}/${st.size}/${st.mtimeMs}/${st.ctimeMs}`;
    if (before !== undefined && before.statKey === statKey) return before;
    const rel = relative(this.#o.dir, path);
    if (st.size > this.#o.maxFileBytes) {
      const problem = { file: rel, line: 0, message: `file is ${st.size} bytes, more than the ${this.#o.maxFileBytes} read; left out` };
      this.#log.warn(problem, 'config file refused');
      return { statKey, hash: `size:${st.size}`, contributions: [], fileProblems: [problem] };
    }
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      const problem = { file: rel, line: 0, message: `cannot read: ${errText(err)}` };
      this.#log.warn(problem, 'config file unreadable');
      return { statKey, hash: 'unreadable', contributions: [], fileProblems: [problem] };
    }
    const hash = sha256(text);
    if (before !== undefined && before.hash === hash) return { ...before, statKey };
    return parseFile(rel, text, hash, statKey, this.#log);
  }

  #publish(): void {
    const seen = new Map<string, string>();
    const contributions: Contribution[] = [];
    const fileProblems: FileProblem[] = [];
    for (const [path, entry] of [...this.#files].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const rel = relative(this.#o.dir, path);
      fileProblems.push(...entry.fileProblems);
      for (const c of entry.contributions) {
        if (c.id !== undefined && c.resource !== undefined) {
          const key = idKey(c.id);
          const first = seen.get(key);
          if (first !== undefined) {
            const problem: LocatedProblem = { resource: c.id, field: 'metadata.name', message: `defined again; the definition in ${first} is used`, file: rel, line: c.line };
            contributions.push({ resource: undefined, problems: [problem] });
            continue;
          }
          seen.set(key, `${rel}:${c.line}`);
        }
        contributions.push(c);
      }
    }
    const next = buildResources(contributions);
    this.#fileProblems = Object.freeze(fileProblems);
    this.#current = next;
    this.#log.info({ dir: this.#o.dir, routes: next.routes.length, services: next.services.length, problems: next.problems.length }, 'config loaded');
    this.#listeners.emit(next);
  }

  #syncWatchers(dirs: readonly { path: string; ino: number }[]): void {
    const wanted = new Map(dirs.map((d) => [d.path, d.ino]));
    for (const [path, w] of this.#watchers) {
      if (wanted.get(path) !== w.ino) {
        w.watcher.close();
        this.#watchers.delete(path);
      }
    }
    for (const [path, ino] of wanted) {
      if (this.#watchers.has(path)) continue;
      try {
        const watcher = watch(path, { persistent: false }, () => this.#schedule());
        watcher.on('error', (err) => {
          this.#log.warn({ err, path }, 'config directory watch failed; re-watching after a rescan');
          watcher.close();
          if (this.#watchers.get(path)?.watcher === watcher) this.#watchers.delete(path);
          this.#schedule();
        });
        this.#watchers.set(path, { ino, watcher });
      } catch (err) {
        this.#log.warn({ err, path }, 'cannot watch config directory; its changes are picked up only with other changes');
      }
    }
  }

  #watchParent(): void {
    const dir = this.#o.dir;
    const name = basename(dir);
    try {
      this.#parentWatcher = watch(dirname(dir), { persistent: false }, (_event, filename) => {
        const f = filename === null ? undefined : filename.toString();
        if (f === undefined || f === name) this.#schedule();
      });
      this.#parentWatcher.on('error', (err) => this.#log.warn({ err, dir }, 'watch of the config directory parent failed; a replaced directory may be missed'));
    } catch (err) {
      this.#log.warn({ err, dir }, 'cannot watch the parent of the config directory; a replaced directory may be missed');
    }
  }
}

// ---- reading -------------------------------------------------------------------------------

interface Listing {
  readonly files: { path: string; stat: Stats }[];
  readonly dirs: { path: string; ino: number }[];
}

/** The tree under `dir` (following symlinks, skipping `.`-entries), or undefined when `dir` is gone. */
async function listTree(dir: string): Promise<Listing | undefined> {
  const files: { path: string; stat: Stats }[] = [];
  const dirs: { path: string; ino: number }[] = [];
  const visited = new Set<string>();
  const walk = async (path: string, st: Stats, depth: number): Promise<void> => {
    const key = `${st.dev}/${st.ino}`;
    if (visited.has(key) || depth > 32) return; // symlink loops
    visited.add(key);
    dirs.push({ path, ino: st.ino });
    let names: string[];
    try {
      names = await readdir(path);
    } catch {
      return;
    }
    names.sort();
    for (const n of names) {
      if (n.startsWith('.')) continue;
      const child = join(path, n);
      let cst: Stats;
      try {
        cst = await stat(child);
      } catch {
        continue; // dangling symlink or removed meanwhile
      }
      if (cst.isDirectory()) await walk(child, cst, depth + 1);
      else if (cst.isFile() && EXTENSIONS.some((e) => n.endsWith(e))) files.push({ path: child, stat: cst });
    }
  };
  let root: Stats;
  try {
    root = await stat(dir);
  } catch {
    return undefined;
  }
  if (!root.isDirectory()) return undefined;
  await walk(dir, root, 0);
  return { files, dirs };
}

type Doc = { readonly value: unknown; readonly line: number; readonly source: string; readonly doc: Document.Parsed | undefined };

/** Parses one file's text into contributions. Pure apart from the log lines for what it had to leave out. */
function parseFile(rel: string, text: string, hash: string, statKey: string, log: SourceLogger): FileEntry {
  const fileProblems: FileProblem[] = [];
  const docs: Doc[] = [];
  if (rel.endsWith('.json')) {
    try {
      docs.push({ value: JSON.parse(text) as unknown, line: 1, source: text, doc: undefined });
    } catch (err) {
      fileProblems.push({ file: rel, line: 1, message: `invalid JSON: ${errText(err)}` });
    }
  } else {
    const lines = new LineCounter();
    let parsed: Document.Parsed[];
    try {
      parsed = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true }) as Document.Parsed[];
    } catch (err) {
      parsed = [];
      fileProblems.push({ file: rel, line: 1, message: `invalid YAML: ${errText(err)}` });
    }
    for (const d of parsed) {
      const start = d.range[0];
      const line = lines.linePos(start).line;
      if (d.errors.length > 0) {
        for (const e of d.errors) fileProblems.push({ file: rel, line: lines.linePos(e.pos[0]).line, message: `invalid YAML: ${e.message.split('\n')[0] ?? e.message}` });
        continue;
      }
      let value: unknown;
      try {
        value = d.toJS({ maxAliasCount: 100 });
      } catch (err) {
        fileProblems.push({ file: rel, line, message: `invalid YAML: ${errText(err)}` });
        continue;
      }
      if (value === null || value === undefined) continue; // an empty document (`---` at the end)
      docs.push({ value, line: contentLine(d, lines) ?? line, source: text.slice(d.range[0], d.range[2]), doc: d });
    }
    return finish(rel, docs, lines, fileProblems, hash, statKey, log);
  }
  return finish(rel, docs, undefined, fileProblems, hash, statKey, log);
}

function finish(rel: string, docs: readonly Doc[], lines: LineCounter | undefined, fileProblems: FileProblem[], hash: string, statKey: string, log: SourceLogger): FileEntry {
  const contributions: (Contribution & { id: ResourceId | undefined; line: number })[] = [];
  for (const p of fileProblems) log.warn(p, 'config file problem; the document is left out');
  for (const d of docs) {
    // `kind: List` (what `kubectl get -o yaml` writes) holds its objects in items.
    const list = asList(d.value);
    const objects = list === undefined ? [{ value: d.value, path: [] as (string | number)[] }] : list.map((v, i) => ({ value: v, path: ['items', i] as (string | number)[] }));
    for (const o of objects) {
      const r = parseResource(o.value, { defaultNamespace: 'default', resourceVersion: sha256(`${d.source}\u0000${o.path.join('.')}`).slice(0, 16) });
      const objLine = d.doc !== undefined && lines !== undefined ? lineOf(d.doc, lines, o.path) ?? d.line : d.line;
      if (r.status === 'ignored') {
        log.debug({ file: rel, line: objLine, what: r.what }, 'ignoring an object of a kind the waypoint does not read');
        continue;
      }
      const id = r.status === 'accepted' ? r.resource.meta : r.id;
      const located = r.problems.map((p): LocatedProblem => {
        const fieldLine = d.doc !== undefined && lines !== undefined ? lineOf(d.doc, lines, [...o.path, ...fieldSegments(p.field)]) : undefined;
        return { resource: p.resource, field: p.field, message: p.message, file: rel, line: fieldLine ?? objLine };
      });
      for (const p of located) {
        log.warn(
          { file: rel, line: p.line, resource: resourceIdText(p.resource), field: p.field, problem: p.message },
          r.status === 'rejected' ? 'invalid resource left out' : 'part of a resource left out',
        );
      }
      const ident: ResourceId = { kind: id.kind, namespace: id.namespace, name: id.name };
      contributions.push({ id: ident, line: objLine, resource: r.status === 'accepted' ? r.resource : undefined, problems: located });
    }
  }
  return { statKey, hash, contributions, fileProblems };
}

function asList(v: unknown): readonly unknown[] | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o['kind'] !== 'string' || !o['kind'].endsWith('List') || !Array.isArray(o['items'])) return undefined;
  return o['items'] as unknown[];
}

/** `spec.rules[0].matches[1].path.value` → ['spec', 'rules', 0, 'matches', 1, 'path', 'value']. */
function fieldSegments(field: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /([^.[\]]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]/g;
  for (const m of field.matchAll(re)) {
    if (m[1] !== undefined) out.push(m[1]);
    else if (m[2] !== undefined) out.push(Number(m[2]));
    else if (m[3] !== undefined) {
      try {
        out.push(JSON.parse(`"${m[3]}"`) as string);
      } catch {
        out.push(m[3]);
      }
    }
  }
  return out;
}

/** The line of the deepest node along `path` that exists in the document. */
function lineOf(doc: Document.Parsed, lines: LineCounter, path: readonly (string | number)[]): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    const range = (node as { range?: readonly number[] } | null | undefined)?.range;
    if (range !== undefined && typeof range[0] === 'number') return lines.linePos(range[0]).line;
  }
  return undefined;
}

function contentLine(doc: Document.Parsed, lines: LineCounter): number | undefined {
  const range = (doc.contents as { range?: readonly number[] } | null)?.range;
  return range !== undefined && typeof range[0] === 'number' ? lines.linePos(range[0]).line : undefined;
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
