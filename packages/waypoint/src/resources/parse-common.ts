/**
 * Small readers shared by the resource parsers: narrowing plain JSON values
 * (null counts as absent, as the API server's pruning makes it), the problem
 * collector, GEP-2257 durations and the header-value rule of istiod's
 * conversion. Everything here is pure and never throws on any input.
 */
import { joinField } from './parse-schema.js';

export type Json = Readonly<Record<string, unknown>>;

export function rec(v: unknown): Json | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : undefined;
}

export function list(v: unknown): readonly unknown[] {
  return Array.isArray(v) ? v : [];
}

export function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

export function int(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) ? v : undefined;
}

export function bool(v: unknown): boolean | undefined {
  return typeof v === 'boolean' ? v : undefined;
}

/** `has(x)` of the CRDs' CEL rules: present and not null. */
export function has(o: Json, key: string): boolean {
  return o[key] !== undefined && o[key] !== null;
}

export function field(path: string, key: string): string {
  return joinField(path, key);
}

export function index(path: string, i: number): string {
  return `${path}[${i}]`;
}

/**
 * Problems found while converting one resource. `reject` problems take the
 * whole resource out (what the API server's admission or istiod's hard
 * conversion errors do); `note` problems leave it in (a dropped mirror, an
 * unsupported backend kind), reported for the log and the config dump.
 */
export class Problems {
  readonly rejected: { field: string; message: string }[] = [];
  readonly notes: { field: string; message: string }[] = [];

  reject(fieldPath: string, message: string): void {
    if (this.rejected.length < 32) this.rejected.push({ field: fieldPath, message });
  }

  note(fieldPath: string, message: string): void {
    if (this.notes.length < 32) this.notes.push({ field: fieldPath, message });
  }

  get ok(): boolean {
    return this.rejected.length === 0;
  }
}

const DURATION_PART = /([0-9]{1,5})(ms|h|m|s)/g;
const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const UNIT_MS: Readonly<Record<string, number>> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/** A GEP-2257 duration (`1h`, `500ms`, `1m30s`) in ms, or undefined if it is not one. */
export function parseGepDuration(s: string): number | undefined {
  if (!DURATION.test(s)) return undefined;
  let total = 0;
  for (const m of s.matchAll(DURATION_PART)) total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? 0);
  return total;
}

/**
 * istiod's isValidHeaderValue (conversion.go): every byte is a tab, 0x20–0x7E
 * or 0x80 and above. On a JS string that is every code unit except controls
 * below 0x20 (tab allowed) and DEL: anything non-ASCII encodes to bytes ≥ 0x80.
 */
export function isValidHeaderValue(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c === 0x09) continue;
    if (c < 0x20 || c === 0x7f) return false;
  }
  return true;
}
