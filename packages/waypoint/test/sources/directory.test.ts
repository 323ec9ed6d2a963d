/**
 * The directory config source against a real temporary directory: the first
 * full read, every way files change (edit, add, remove, rename, atomic
 * rename-into-place, the directory replaced), bad input reported and left out,
 * and route status kept and logged. Every directory and source a test makes is
 * removed in afterEach, also when the test fails.
 */
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { systemClock } from '@ambient/control';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { startDirectorySource, type DirectorySource, type LocatedProblem } from '../../src/sources/directory.js';
import type { SourceLogger } from '../../src/sources/snapshot.js';
import type { ConfigResources, HttpRouteResource } from '../../src/resources/types.js';

interface Line {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly obj: Record<string, unknown>;
}

function recordingLogger(): SourceLogger & { lines: Line[] } {
  const lines: Line[] = [];
  const at = (level: Line['level']) => (obj: object, msg: string) => lines.push({ level, msg, obj: obj as Record<string, unknown> });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

const route = (name: string, path = '/', ns?: string) => `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ${name}${ns === undefined ? '' : `\n  namespace: ${ns}`}
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: ${path}
    backendRefs:
    - name: echo-v1
      port: 8080
`;

const service = `apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: demo
spec:
  clusterIP: 10.96.0.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
`;

const WAIT = { timeout: 5000, interval: 10 };

let root: string;
let dir: string;
let logger: ReturnType<typeof recordingLogger>;
const sources: DirectorySource[] = [];

function start(): DirectorySource {
  const s = startDirectorySource({ dir, clock: systemClock, logger, debounceMs: 20 });
  sources.push(s);
  return s;
}

const names = (r: ConfigResources) => r.routes.map((x) => `${x.meta.namespace}/${x.meta.name}`);

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'waypoint-dir-'));
  dir = join(root, 'config');
  await mkdir(dir);
  logger = recordingLogger();
});

afterEach(async () => {
  await Promise.all(sources.splice(0).map((s) => s.close()));
  await rm(root, { recursive: true, force: true });
});

describe('DirectorySource: the first read', () => {
  it('reads every *.yaml, *.yml and *.json below the directory, multi-document, and resolves synced after it', async () => {
    await writeFile(join(dir, 'routes.yaml'), `${route('a', '/a', 'demo')}---\n${route('b', '/b', 'demo')}---\n`);
    await mkdir(join(dir, 'nested', 'deeper'), { recursive: true });
    await writeFile(join(dir, 'nested', 'deeper', 'svc.yml'), service);
    await writeFile(
      join(dir, 'nested', 'c.json'),
      JSON.stringify({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'c', namespace: 'demo' }, spec: {} }),
    );
    await writeFile(join(dir, 'notes.txt'), 'not config');
    await writeFile(join(dir, '.hidden.yaml'), route('hidden'));
    const s = start();
    await s.synced;
    expect(s.origin).toBe(`dir:${dir}`);
    expect(names(s.current())).toEqual(['demo/a', 'demo/b', 'demo/c']);
    expect(s.current().services.map((x) => x.meta.name)).toEqual(['echo']);
    expect(s.current().problems).toEqual([]);
  });

  it('objects without a namespace land in "default", as kubectl puts them', async () => {
    await writeFile(join(dir, 'r.yaml'), route('a'));
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['default/a']);
  });

  it('ignores kinds it does not read, with a debug line', async () => {
    await writeFile(join(dir, 'mixed.yaml'), `apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\n${route('a')}`);
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['default/a']);
    expect(logger.lines.some((l) => l.level === 'debug' && l.obj['what'] === 'v1 ConfigMap' && l.obj['file'] === 'mixed.yaml' && l.obj['line'] === 1)).toBe(true);
  });

  it('reads a kind: List', async () => {
    const list = { apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'l1' }, spec: {} }] };
    await writeFile(join(dir, 'list.json'), JSON.stringify(list));
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['default/l1']);
  });

  it('rejects synced when the directory does not exist', async () => {
    dir = join(root, 'missing');
    const s = start();
    await expect(s.synced).rejects.toThrow(`config directory ${dir} cannot be read`);
  });
});

describe('DirectorySource: bad input is reported and left out alone', () => {
  it('an invalid resource: a problem with file and line of the field, one log line, the valid ones kept', async () => {
    const bad = route('bad', 'no-slash', 'demo');
    await writeFile(join(dir, 'routes.yaml'), `${route('good', '/g', 'demo')}---\n${bad}`);
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['demo/good']);
    const problems = s.current().problems as readonly LocatedProblem[];
    expect(problems).toHaveLength(1);
    const badStart = route('good', '/g', 'demo').split('\n').length + 1; // the first line of the bad document, after `---`
    expect(problems[0]).toMatchObject({
      resource: { kind: 'HTTPRoute', namespace: 'demo', name: 'bad' },
      field: 'spec.rules[0].matches[0].path.value',
      file: 'routes.yaml',
      line: badStart + bad.split('\n').findIndex((l) => l.includes('value: no-slash')),
    });
    const warn = logger.lines.filter((l) => l.msg === 'invalid resource left out');
    expect(warn).toHaveLength(1);
    expect(warn[0]!.obj).toMatchObject({ file: 'routes.yaml', resource: 'HTTPRoute demo/bad', field: 'spec.rules[0].matches[0].path.value' });
    expect(String(warn[0]!.obj['problem'])).toContain("start with '/'");
  });

  it('a YAML syntax error leaves out that document only, with its line', async () => {
    await writeFile(join(dir, 'r.yaml'), `${route('a')}---\nkind: [unclosed\n---\n${route('b')}`);
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['default/a', 'default/b']);
    expect(s.fileProblems()).toHaveLength(1);
    expect(s.fileProblems()[0]).toMatchObject({ file: 'r.yaml' });
    expect(s.fileProblems()[0]!.message).toMatch(/^invalid YAML/);
    // Found where the unclosed sequence ends: after the broken line, before the next document.
    expect(s.fileProblems()[0]!.line).toBeGreaterThan(route('a').split('\n').length + 1);
  });

  it('invalid JSON', async () => {
    await writeFile(join(dir, 'x.json'), '{"apiVersion":');
    await writeFile(join(dir, 'r.yaml'), route('a'));
    const s = start();
    await s.synced;
    expect(names(s.current())).toEqual(['default/a']);
    expect(s.fileProblems()[0]!.message).toMatch(/^invalid JSON/);
  });

  it('a resource defined twice keeps the first definition in path order and reports the second', async () => {
    await writeFile(join(dir, 'a.yaml'), route('dup', '/first'));
    await writeFile(join(dir, 'b.yaml'), route('dup', '/second'));
    const s = start();
    await s.synced;
    const r = s.current().routes as readonly HttpRouteResource[];
    expect(r).toHaveLength(1);
    expect(r[0]!.rules[0]!.matches[0]!.path.value).toBe('/first');
    expect(s.current().problems).toMatchObject([{ file: 'b.yaml', message: 'defined again; the definition in a.yaml:1 is used' }]);
  });

  it('a file over the size limit is refused', async () => {
    await writeFile(join(dir, 'big.yaml'), `# ${'x'.repeat(2000)}\n${route('a')}`);
    const s = startDirectorySource({ dir, clock: systemClock, logger, debounceMs: 20, maxFileBytes: 1000 });
    sources.push(s);
    await s.synced;
    expect(s.current().routes).toEqual([]);
    expect(s.fileProblems()[0]!.message).toMatch(/more than the 1000 read/);
  });
});

describe('DirectorySource: changes', () => {
  async function changed(s: DirectorySource, pred: (r: ConfigResources) => boolean): Promise<ConfigResources> {
    await vi.waitFor(() => {
      if (!pred(s.current())) throw new Error(`not yet: ${JSON.stringify(names(s.current()))}`);
    }, WAIT);
    return s.current();
  }

  it('a changed file publishes a new snapshot; the old one stays as it was', async () => {
    await writeFile(join(dir, 'r.yaml'), route('a', '/one'));
    const s = start();
    await s.synced;
    const before = s.current();
    const seen: ConfigResources[] = [];
    s.subscribe((r) => seen.push(r));
    await writeFile(join(dir, 'r.yaml'), route('a', '/two'));
    const after = await changed(s, (r) => (r.routes[0] as HttpRouteResource | undefined)?.rules[0]?.matches[0]?.path.value === '/two');
    expect(after).not.toBe(before);
    expect((before.routes[0] as HttpRouteResource).rules[0]!.matches[0]!.path.value).toBe('/one');
    expect(Object.isFrozen(after.routes)).toBe(true);
    expect(seen.at(-1)).toBe(after);
    expect(after.routes[0]!.meta.resourceVersion).not.toBe(before.routes[0]!.meta.resourceVersion);
  });

  it('files added, removed and renamed', async () => {
    await writeFile(join(dir, 'a.yaml'), route('a'));
    const s = start();
    await s.synced;
    await writeFile(join(dir, 'b.yaml'), route('b'));
    await changed(s, (r) => names(r).join() === 'default/a,default/b');
    await rm(join(dir, 'a.yaml'));
    await changed(s, (r) => names(r).join() === 'default/b');
    await rename(join(dir, 'b.yaml'), join(dir, 'b.txt'));
    await changed(s, (r) => r.routes.length === 0);
    await mkdir(join(dir, 'sub'));
    await rename(join(dir, 'b.txt'), join(dir, 'sub', 'b.yaml'));
    await changed(s, (r) => names(r).join() === 'default/b');
  });

  it('atomic rename-into-place (an editor or kubectl cp writing a temporary file)', async () => {
    await writeFile(join(dir, 'r.yaml'), route('a', '/one'));
    const s = start();
    await s.synced;
    await writeFile(join(dir, 'r.yaml.tmp'), route('a', '/two'));
    await rename(join(dir, 'r.yaml.tmp'), join(dir, 'r.yaml'));
    await changed(s, (r) => (r.routes[0] as HttpRouteResource | undefined)?.rules[0]?.matches[0]?.path.value === '/two');
  });

  it('the whole directory replaced (renamed away, a new one renamed in)', async () => {
    await writeFile(join(dir, 'r.yaml'), route('old'));
    const s = start();
    await s.synced;
    const fresh = join(root, 'config-new');
    await mkdir(fresh);
    await writeFile(join(fresh, 'r.yaml'), route('new'));
    await rename(dir, join(root, 'config-old'));
    await rename(fresh, dir);
    await changed(s, (r) => names(r).join() === 'default/new');
    // And the replacement is watched too.
    await writeFile(join(dir, 'more.yaml'), route('more'));
    await changed(s, (r) => names(r).join() === 'default/more,default/new');
  });

  it('a directory missing for a while keeps the last config', async () => {
    await writeFile(join(dir, 'r.yaml'), route('a'));
    const s = start();
    await s.synced;
    await rename(dir, join(root, 'gone'));
    await vi.waitFor(() => {
      if (!logger.lines.some((l) => l.msg.startsWith('config directory is missing'))) throw new Error('no warning yet');
    }, WAIT);
    expect(names(s.current())).toEqual(['default/a']);
  });

  it('an unrelated change does not parse unchanged files again', async () => {
    await writeFile(join(dir, 'bad.yaml'), route('bad', 'x'));
    await writeFile(join(dir, 'a.yaml'), route('a'));
    const s = start();
    await s.synced;
    const warnings = () => logger.lines.filter((l) => l.msg === 'invalid resource left out').length;
    expect(warnings()).toBe(1);
    const rvA = s.current().routes[0]!.meta.resourceVersion;
    await writeFile(join(dir, 'b.yaml'), route('b'));
    await changed(s, (r) => r.routes.length === 2);
    expect(warnings()).toBe(1);
    expect(s.current().routes[0]!.meta.resourceVersion).toBe(rvA);
  });

  it('no notification after close', async () => {
    await writeFile(join(dir, 'r.yaml'), route('a'));
    const s = start();
    await s.synced;
    let calls = 0;
    s.subscribe(() => calls++);
    await s.close();
    await writeFile(join(dir, 'b.yaml'), route('b'));
    // Wait for one debounce period and more: nothing may arrive.
    await systemClock.sleep(100);
    expect(calls).toBe(0);
    expect(names(s.current())).toEqual(['default/a']);
  });
});

describe('DirectorySource: route status', () => {
  it('keeps the last status per route for the config dump and logs a change once', async () => {
    const s = start();
    await s.synced;
    const id = { kind: 'HTTPRoute' as const, namespace: 'demo', name: 'r' };
    const parents = [
      {
        parentRef: { group: '', kind: 'Service', namespace: 'demo', name: 'echo' },
        controllerName: 'istio.io/gateway-controller' as const,
        conditions: [{ type: 'Accepted' as const, status: 'True' as const, reason: 'Accepted', message: 'Route was valid' }],
      },
    ];
    s.reportRouteStatus(id, parents);
    s.reportRouteStatus(id, parents);
    expect(s.routeStatuses()).toEqual([{ route: id, parents }]);
    const logged = logger.lines.filter((l) => l.msg === 'route status changed');
    expect(logged).toHaveLength(1);
    expect(logged[0]!.obj).toEqual({ route: 'HTTPRoute demo/r', parents: 'Service demo/echo: Accepted=True(Accepted)' });
  });
});
