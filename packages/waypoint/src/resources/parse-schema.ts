/**
 * Schema validation of the Kubernetes objects the waypoint reads, with the
 * OpenAPI schemas the CRDs (and core/v1) carry, compiled ahead of time by the
 * kubernetes-models project (`@kubernetes-models/gateway-api` for
 * HTTPRoute v1/v1beta1, GRPCRoute v1 and TCPRoute v1alpha2, `kubernetes-models`
 * for core/v1 Service). Those validators check what the API server's schema
 * check does — types, required fields, enums, patterns, bounds, list sizes —
 * but neither apply the CRDs' defaults nor evaluate their CEL rules
 * (`x-kubernetes-validations`); parse-route.ts does both.
 *
 * Invariant: a failed validation becomes problems naming the field as
 * `spec.rules[0].matches[1].path.value`, what was expected and what was
 * found; at most MAX_SCHEMA_PROBLEMS per object, so a huge bad object cannot
 * flood the log.
 */
import { validate as validateGrpcRouteV1 } from '@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1GRPCRoute';
import { validate as validateHttpRouteV1 } from '@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute';
import { validate as validateTcpRouteV1alpha2 } from '@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1alpha2TCPRoute';
import { validate as validateHttpRouteV1beta1 } from '@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1beta1HTTPRoute';
import { validate as validateServiceV1 } from 'kubernetes-models/_schemas/IoK8sApiCoreV1Service';

/** The error shape of the ajv standalone validators inside those packages (their .d.ts leaves it out). */
interface SchemaError {
  readonly instancePath: string;
  readonly keyword: string;
  readonly params: Readonly<Record<string, unknown>>;
}

type SchemaValidator = ((data: unknown) => boolean) & { errors?: readonly SchemaError[] | null };

export type SchemaName = 'HTTPRoute/v1' | 'HTTPRoute/v1beta1' | 'GRPCRoute/v1' | 'TCPRoute/v1alpha2' | 'Service/v1';

const VALIDATORS: Readonly<Record<SchemaName, SchemaValidator>> = {
  'HTTPRoute/v1': validateHttpRouteV1 as SchemaValidator,
  'HTTPRoute/v1beta1': validateHttpRouteV1beta1 as SchemaValidator,
  'GRPCRoute/v1': validateGrpcRouteV1 as SchemaValidator,
  'TCPRoute/v1alpha2': validateTcpRouteV1alpha2 as SchemaValidator,
  'Service/v1': validateServiceV1 as SchemaValidator,
};

export const MAX_SCHEMA_PROBLEMS = 16;

export interface FieldProblem {
  readonly field: string;
  readonly message: string;
}

/** Validates `obj` against the named schema: [] when valid, else the problems (deduplicated, bounded). */
export function schemaProblems(schema: SchemaName, obj: unknown): FieldProblem[] {
  const validate = VALIDATORS[schema];
  if (validate(obj)) return [];
  const out: FieldProblem[] = [];
  const seen = new Set<string>();
  const errors = validate.errors ?? [];
  for (const err of errors) {
    const p = describe(err, obj);
    const key = `${p.field}\u0000${p.message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    if (out.length === MAX_SCHEMA_PROBLEMS) {
      out.push({ field: '', message: `more schema problems left out (${errors.length} errors in all)` });
      break;
    }
    out.push(p);
  }
  if (out.length === 0) out.push({ field: '', message: 'does not match the schema' });
  return out;
}

function describe(err: SchemaError, root: unknown): FieldProblem {
  const segments = err.instancePath === '' ? [] : err.instancePath.slice(1).split('/').map(unescapePointer);
  const { path, value } = walk(root, segments);
  const p = err.params;
  switch (err.keyword) {
    case 'required': {
      const missing = String(p['missingProperty'] ?? '');
      return { field: joinField(path, missing), message: 'is required' };
    }
    case 'type':
      return { field: path, message: `must be ${article(String(p['type']))}, got ${typeName(value)}` };
    case 'enum': {
      const allowed = Array.isArray(p['allowedValues']) ? (p['allowedValues'] as unknown[]) : [];
      return { field: path, message: `must be one of ${allowed.map((v) => JSON.stringify(v)).join(', ')}, got ${show(value)}` };
    }
    case 'pattern':
      return { field: path, message: `must match ${String(p['pattern'])}, got ${show(value)}` };
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return { field: path, message: `must be ${String(p['comparison'])} ${String(p['limit'])}, got ${show(value)}` };
    case 'minLength':
      return { field: path, message: `must be at least ${String(p['limit'])} characters long` };
    case 'maxLength':
      return { field: path, message: `must be at most ${String(p['limit'])} characters long, got ${typeof value === 'string' ? value.length : '?'}` };
    case 'minItems':
      return { field: path, message: `must have at least ${String(p['limit'])} items` };
    case 'maxItems':
      return { field: path, message: `must have at most ${String(p['limit'])} items, got ${Array.isArray(value) ? value.length : '?'}` };
    case 'minProperties':
    case 'maxProperties':
      return { field: path, message: `${err.keyword === 'minProperties' ? 'needs at least' : 'may have at most'} ${String(p['limit'])} entries` };
    case 'format':
      return { field: path, message: `must be a valid ${String(p['format'])}, got ${show(value)}` };
    case 'additionalProperties':
      return { field: joinField(path, String(p['additionalProperty'] ?? '')), message: 'is not a known field' };
    default:
      return { field: path, message: `fails schema rule ${err.keyword} ${JSON.stringify(p)}` };
  }
}

function unescapePointer(s: string): string {
  return s.replace(/~1/g, '/').replace(/~0/g, '~');
}

/** Follows the JSON pointer through the data to render array indices as [n] and to fetch the offending value. */
function walk(root: unknown, segments: readonly string[]): { path: string; value: unknown } {
  let path = '';
  let cur: unknown = root;
  for (const seg of segments) {
    if (Array.isArray(cur)) {
      path += `[${seg}]`;
      cur = (cur as unknown[])[Number(seg)];
    } else {
      path = joinField(path, seg);
      cur = cur !== null && typeof cur === 'object' ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return { path, value: cur };
}

const PLAIN_KEY = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

/** Appends a key to a field path: `a.b`, or `a["app.kubernetes.io/name"]` for keys that are not identifiers. */
export function joinField(path: string, key: string): string {
  if (key === '') return path;
  if (!PLAIN_KEY.test(key)) return `${path}[${JSON.stringify(key)}]`;
  return path === '' ? key : `${path}.${key}`;
}

function article(type: string): string {
  if (type === 'integer' || type === 'array' || type === 'object') return `an ${type}`;
  return `a ${type}`;
}

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' && Number.isInteger(v)) return `the number ${v}`;
  if (typeof v === 'string') return `the string ${show(v)}`;
  return typeof v === 'undefined' ? 'nothing' : `${typeof v} ${show(v)}`;
}

/** A value for a message: JSON, cut at 64 characters. */
export function show(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 64 ? `${s.slice(0, 61)}...` : s;
}
