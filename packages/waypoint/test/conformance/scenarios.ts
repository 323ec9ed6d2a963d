/**
 * The Gateway API mesh conformance scenarios, read from the project's
 * machine-readable transcription (`shared/conformance/gateway-api-mesh/`:
 * index.json with the upstream run order, base-manifests.json, one
 * tests/<ShortName>.json per upstream ConformanceTest). The directory is
 * `WAYPOINT_CONFORMANCE_DIR`, else `shared/` beside the repository (where the
 * workspace and CI keep it). Nothing is skipped when it is missing: loading
 * fails and says where it looked.
 *
 * Only the fields the suite uses are typed; each file is checked for them so a
 * changed transcription fails here with the file and field, not later as an
 * undefined.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO_ROOT = path.resolve(here, '../../../..');

export function scenarioDir(): string {
  const dir = process.env['WAYPOINT_CONFORMANCE_DIR'] ?? path.resolve(REPO_ROOT, '../shared/conformance/gateway-api-mesh');
  if (!existsSync(path.join(dir, 'index.json'))) {
    throw new Error(`mesh conformance scenarios not found: no index.json in ${dir} (set WAYPOINT_CONFORMANCE_DIR to the gateway-api-mesh directory)`);
  }
  return dir;
}

export interface BaseServicePort {
  readonly port: number;
  readonly name: string;
  readonly targetPort: number;
  readonly appProtocol: string | null;
}

export interface BaseService {
  readonly namespace: string;
  readonly name: string;
  /** `app=echo,version=v1` */
  readonly selector: string;
  readonly ports: readonly BaseServicePort[];
}

export interface BaseDeployment {
  readonly namespace: string;
  readonly name: string;
  readonly podLabels: Readonly<Record<string, string>>;
  readonly args: readonly string[];
}

export interface BaseManifests {
  /** conformance/mesh/manifests.yaml verbatim. */
  readonly yaml: string;
  readonly model: {
    readonly namespaces: ReadonlyArray<{ readonly name: string; readonly labels: Readonly<Record<string, string>> }>;
    readonly deployments: readonly BaseDeployment[];
    readonly services: readonly BaseService[];
  };
}

export interface ClientRef {
  readonly namespace: string;
  readonly selector: string;
}

export interface ConnectTo {
  readonly kind: 'service' | 'podIP';
  readonly podOf?: string;
  readonly podNamespace?: string;
  readonly port: number;
}

export interface ScenarioCase {
  readonly index: number;
  readonly name: string;
  readonly client: { readonly var: string; readonly namespace: string; readonly selector: string };
  readonly request: {
    readonly protocol: 'http' | 'grpc';
    readonly url: string;
    readonly headers: Readonly<Record<string, string>>;
    readonly hostHeaderOverride?: string | null;
    readonly connectTo: ConnectTo;
    readonly echoClientArgs: readonly string[];
  };
  readonly expected: {
    readonly statusCodes: readonly number[];
    readonly backendPodPrefix: string;
    readonly requestHeaders: Readonly<Record<string, string>> | null;
    readonly absentRequestHeaders: readonly string[];
    readonly responseHeaders: Readonly<Record<string, string>>;
    readonly absentResponseHeaders: readonly string[];
  };
  readonly notAssertedByMeshHelper?: {
    readonly expectedRequest?: { readonly Path?: string; readonly Host?: string; readonly Protocol?: string };
    readonly derivedLocation?: string;
    readonly unfollowRedirect?: boolean;
  } | null;
}

export interface Distribution {
  readonly echoClientArgs: readonly string[];
  readonly requestsPerAttempt: number;
  readonly expectedWeights: Readonly<Record<string, number>>;
  readonly toleranceAbsolute: number;
  readonly maxAttempts: number;
  readonly client: ClientRef;
}

export interface Scenario {
  readonly name: string;
  readonly manifests: ReadonlyArray<{ readonly path: string; readonly yaml: string }>;
  readonly clients: Readonly<Record<string, ClientRef>>;
  readonly convergence: {
    readonly requiredConsecutiveSuccesses: number;
    readonly maxTimeToConsistencySeconds: number;
    readonly pollIntervalAfterFailureMs: Readonly<Record<string, number>>;
  };
  readonly cases: readonly ScenarioCase[];
  readonly distribution: Distribution | null;
  readonly istio: { readonly ambient: { readonly runs: boolean; readonly reason: string } };
}

export interface ScenarioIndex {
  readonly upstreamRunOrder: readonly string[];
  readonly tests: ReadonlyArray<{ readonly name: string; readonly file: string; readonly cases: number; readonly hasDistributionCheck: boolean }>;
  readonly totalCases: number;
}

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
}

function need(file: string, value: unknown, field: string, check: (v: unknown) => boolean, expected: string): void {
  const v = field.split('.').reduce<unknown>((o, k) => (o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), value);
  if (!check(v)) throw new Error(`${file}: field ${field} should be ${expected}, got ${JSON.stringify(v)}`);
}

const isArray = (v: unknown) => Array.isArray(v);
const isString = (v: unknown) => typeof v === 'string';
const isObject = (v: unknown) => v !== null && typeof v === 'object' && !Array.isArray(v);

export function loadIndex(dir = scenarioDir()): ScenarioIndex {
  const file = path.join(dir, 'index.json');
  const v = readJson(file);
  need(file, v, 'upstreamRunOrder', isArray, 'an array of ShortNames');
  need(file, v, 'tests', isArray, 'an array');
  return v as ScenarioIndex;
}

export function loadBase(dir = scenarioDir()): BaseManifests {
  const file = path.join(dir, 'base-manifests.json');
  const v = readJson(file);
  need(file, v, 'yaml', isString, 'the manifests YAML');
  need(file, v, 'model.deployments', isArray, 'an array');
  need(file, v, 'model.services', isArray, 'an array');
  need(file, v, 'model.namespaces', isArray, 'an array');
  return v as BaseManifests;
}

export function loadScenario(name: string, dir = scenarioDir()): Scenario {
  const file = path.join(dir, 'tests', `${name}.json`);
  const v = readJson(file);
  need(file, v, 'name', (n) => n === name, `"${name}"`);
  need(file, v, 'manifests', isArray, 'an array');
  need(file, v, 'cases', isArray, 'an array');
  need(file, v, 'convergence.requiredConsecutiveSuccesses', (n) => typeof n === 'number' && n >= 1, 'a count');
  need(file, v, 'clients', isObject, 'an object');
  (v as Scenario).cases.forEach((c, i) => {
    need(file, c, 'request.url', isString, `a URL (cases[${i}])`);
    need(file, c, 'request.protocol', (p) => p === 'http' || p === 'grpc', `http or grpc (cases[${i}])`);
    need(file, c, 'expected.statusCodes', isArray, `a list (cases[${i}])`);
  });
  const scenario = v as Scenario & { distribution?: Distribution | null };
  return { ...scenario, distribution: scenario.distribution ?? null };
}

/** `app=echo,version=v1` → {app: echo, version: v1}. */
export function parseSelector(selector: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of selector.split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`selector "${selector}": "${part}" is not key=value`);
    out[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  return out;
}
