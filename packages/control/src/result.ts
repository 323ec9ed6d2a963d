/**
 * Results instead of exceptions for everything that parses or translates
 * untrusted input: a value, or the complete list of what was wrong with it.
 */
export type Result<T, E = Rejection> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly errors: readonly E[] };

/** One reason an input was refused: which field, and what was expected instead. */
export interface Rejection {
  /** Dotted path of the offending field, e.g. `addresses[1]` or `waypoint.destination`. */
  readonly field: string;
  /** What was wrong and what was expected, e.g. `address must be 4 or 16 bytes, got 5`. */
  readonly reason: string;
}

export function ok<T>(value: T): { readonly ok: true; readonly value: T } {
  return { ok: true, value };
}

export function fail<E = Rejection>(...errors: E[]): { readonly ok: false; readonly errors: readonly E[] } {
  return { ok: false, errors };
}

export function rejection(field: string, reason: string): Rejection {
  return { field, reason };
}

/** Formats rejections the way NACKs and startup errors print them: `field: reason; field: reason`. */
export function formatRejections(errors: readonly Rejection[]): string {
  return errors.map((e) => (e.field ? `${e.field}: ${e.reason}` : e.reason)).join('; ');
}

/** Prefixes every rejection's field with `prefix` (for nested translation). */
export function nestRejections(prefix: string, errors: readonly Rejection[]): Rejection[] {
  return errors.map((e) => ({ field: e.field ? `${prefix}.${e.field}` : prefix, reason: e.reason }));
}
