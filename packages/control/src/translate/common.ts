/**
 * Shared pieces of the proto → model translators: a rejection collector that
 * keeps going after the first problem (so a NACK names everything wrong with a
 * resource at once), and the field checks several translators need (IP bytes,
 * ports, enums, hostnames, `namespace/name` keys).
 *
 * Field paths use the protobuf JSON (camelCase) names of the message being
 * translated, e.g. `waypoint.destination` or `addresses[1]`.
 */
import type { DescEnum } from '@bufbuild/protobuf';
import { ipFromBytes } from '../model/ip.js';
import { spiffeSegmentProblem } from '../model/identity.js';
import { fail, ok, rejection, type Rejection, type Result } from '../result.js';

/** Collects rejections under a path prefix; translators report and carry on. */
export class Problems {
  private constructor(
    private readonly sink: Rejection[],
    private readonly prefix: string,
  ) {}

  static root(): Problems {
    return new Problems([], '');
  }

  /** A collector whose fields are nested under `field` (e.g. `waypoint`, `ports[2]`). */
  at(field: string): Problems {
    return new Problems(this.sink, joinPath(this.prefix, field));
  }

  /** Reports a problem with `field` (relative to this collector); '' means the collector's own path. */
  add(field: string, reason: string): void {
    this.sink.push(rejection(joinPath(this.prefix, field), reason));
  }

  get count(): number {
    return this.sink.length;
  }

  /** `value` when nothing was reported, otherwise every rejection. */
  result<T>(value: T | undefined): Result<T> {
    if (this.sink.length > 0) return fail(...this.sink);
    // A translator returns undefined only after reporting why; keep the Result honest if one forgets.
    if (value === undefined) return fail(rejection(this.prefix, 'could not be translated'));
    return ok(value);
  }
}

/** `a` + `b` as a field path: `a.b`, or `a[0]` when `b` is an index. */
function joinPath(prefix: string, field: string): string {
  if (prefix === '') return field;
  if (field === '') return prefix;
  return field.startsWith('[') ? `${prefix}${field}` : `${prefix}.${field}`;
}

/** Shows a value in a rejection reason: strings quoted, everything else as written. */
function show(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

/**
 * Canonical IP text for an address carried as raw bytes. Like ztunnel's
 * `byte_to_ip`, exactly 4 (IPv4) or 16 (IPv6) bytes are accepted.
 */
export function ipFromWire(bytes: Uint8Array, field: string, problems: Problems): string | undefined {
  const ip = ipFromBytes(bytes);
  if (ip === undefined) {
    problems.add(field, `address must be 4 (IPv4) or 16 (IPv6) bytes, got ${bytes.length}`);
  }
  return ip;
}

const MAX_PORT = 65535;

/**
 * A TCP port carried as uint32. ztunnel truncates with `as u16` (70000 would
 * become 4464); we refuse anything outside 1..65535 instead, and 0 only where
 * it means "use the service's target port".
 */
export function checkPort(value: number, field: string, problems: Problems, opts: { allowZero: boolean }): number {
  const min = opts.allowZero ? 0 : 1;
  if (!Number.isInteger(value) || value < min || value > MAX_PORT) {
    const zero = opts.allowZero ? ' (0: use the service target port)' : '';
    problems.add(field, `port ${show(value)} is out of range; expected ${min}..${MAX_PORT}${zero}`);
  }
  return value;
}

/**
 * Maps a protobuf enum number to a model value. protobuf-es keeps numbers it
 * does not know (open enums), as prost does; ztunnel then refuses them with
 * `UnknownEnumValue`, so an unknown number is a rejection here too. A known
 * value missing from `table` is refused as unsupported, with `unsupported[n]`
 * as the explanation when given.
 */
export function mapEnum<T>(
  value: number,
  desc: DescEnum,
  table: Readonly<Partial<Record<number, T>>>,
  field: string,
  problems: Problems,
  unsupported: Readonly<Record<number, string>> = {},
): T | undefined {
  const mapped = table[value];
  if (mapped !== undefined) return mapped;
  const expected = desc.values
    .filter((v) => table[v.number] !== undefined)
    .map((v) => `${v.name} (${v.number})`)
    .join(', ');
  const known = desc.values.find((v) => v.number === value);
  if (known === undefined) {
    problems.add(field, `unknown ${desc.name} value ${value}; expected one of ${expected}`);
  } else {
    const why = unsupported[value] ?? 'is not supported';
    problems.add(field, `${desc.name} ${known.name} (${value}) ${why}; expected one of ${expected}`);
  }
  return undefined;
}

// RFC 1123 label, as Istio validates hostnames (pkg/config/validation
// ValidateWildcardDomain): letters, digits and '-', not starting or ending
// with '-', at most 63 characters; the whole name at most 255.
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const MAX_HOSTNAME = 255;

/**
 * Why `value` is not an acceptable hostname, or undefined. With
 * `allowWildcard`, a leading `*` label (`*.example.com`, or `*` alone) is
 * accepted: istiod sends ServiceEntry hosts like that, and ztunnel's DNS
 * proxy serves them as wildcards.
 */
export function hostnameProblem(value: string, opts: { allowWildcard: boolean }): string | undefined {
  if (value === '') return 'hostname must not be empty';
  if (value.length > MAX_HOSTNAME) return `hostname ${show(value)} is longer than ${MAX_HOSTNAME} characters`;
  const labels = value.split('.');
  for (const [i, label] of labels.entries()) {
    if (i === 0 && label === '*') {
      if (opts.allowWildcard) continue;
      return `hostname ${show(value)} must not be a wildcard`;
    }
    if (!LABEL.test(label)) {
      const wildcard = opts.allowWildcard ? ', optionally starting with "*."' : '';
      return `hostname ${show(value)} must be dot-separated labels of letters, digits and "-" (RFC 1123)${wildcard}`;
    }
  }
  return undefined;
}

/**
 * Splits `namespace/hostname` (Workload.services keys) at the first `/`, as
 * ztunnel's NamespacedHostname parser does, and checks both halves.
 */
export function parseNamespacedHostname(
  key: string,
  field: string,
  problems: Problems,
): { namespace: string; hostname: string } | undefined {
  const slash = key.indexOf('/');
  if (slash < 0) {
    problems.add(field, `${show(key)} must have the form "<namespace>/<hostname>"`);
    return undefined;
  }
  const namespace = key.slice(0, slash);
  const hostname = key.slice(slash + 1);
  const before = problems.count;
  const ns = spiffeSegmentProblem(namespace);
  if (ns) problems.add(field, `namespace of ${show(key)}: ${ns}`);
  const host = hostnameProblem(hostname, { allowWildcard: true });
  if (host) problems.add(field, `in ${show(key)}: ${host}`);
  return problems.count === before ? { namespace, hostname } : undefined;
}

/** Checks a `namespace/name` reference (policy keys), exactly one `/` with both sides non-empty. */
export function checkNamespacedName(key: string, field: string, problems: Problems): void {
  const parts = key.split('/');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '') {
    problems.add(field, `${show(key)} must have the form "<namespace>/<name>"`);
  }
}

/** The message of something thrown (decoders throw on malformed bytes). */
export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Fields we do not know are dropped while decoding instead of being kept on
 * the message (nothing reads them; keeping them costs time and memory on a
 * full push). Unknown enum values are still seen and refused by the translators.
 */
export const DECODE_OPTIONS = { readUnknownFields: false } as const;
