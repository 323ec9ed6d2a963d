/**
 * An ordered list of raw header lines, and the Gateway API header modifier applied to it.
 *
 * HeaderList keeps every line as received: names keep their case, a repeated name stays several
 * lines (node's `rawHeaders` form, never node's `"a, b"` merge), order is preserved. Names compare
 * case-insensitively. Building one from `rawHeaders` copies the array once and lower-cases each
 * name once; lookups are a linear scan over the lower-cased names (header lists are short, and a
 * scan beats building a Map per request).
 *
 * applyHeaderModifier follows Envoy as Istio configures it for HTTPRoute/GRPCRoute filters
 * (route.go TranslateHeadersOperations, Envoy HeaderParser::evaluateHeaders):
 * - `remove` runs first and drops every line of each named header;
 * - `set` (OVERWRITE_IF_EXISTS_OR_ADD) then replaces all lines of a name with one line
 *   `name: value`, appended at the end (Envoy removes and re-adds);
 * - `add` (APPEND_IF_EXISTS_OR_ADD) appends one more line, so an existing `a` plus an added `b`
 *   reaches the backend as two lines (the conformance echo joins them as `a,b`).
 * Pseudo-headers (`:method`, `:path`, `:authority`, …) and `host` are never touched: Envoy refuses to
 * modify them, and the compiler already turned a `host`/`:authority` entry of set/add into the
 * route's host rewrite and dropped the others. HeaderList itself treats them as ordinary lines, so
 * an HTTP/2 header list may carry its pseudo-headers through unchanged.
 */
import type { HeaderModifier } from '../resources/types.js';

const NO_VALUES: readonly string[] = Object.freeze([]);

/** True for names Envoy never lets a header modifier touch: pseudo-headers and Host. */
export function isProtectedHeaderName(lowerName: string): boolean {
  return lowerName.startsWith(':') || lowerName === 'host';
}

export class HeaderList {
  /** Flat [name, value, name, value, …] as received or set. */
  #raw: string[];
  /** Lower-cased names, one per line (index i ↔ #raw[2i]). */
  #lower: string[];

  private constructor(raw: string[], lower: string[]) {
    this.#raw = raw;
    this.#lower = lower;
  }

  /** From node's `rawHeaders` ([name, value, name, value, …]); an odd trailing name is ignored. */
  static fromRaw(rawHeaders: readonly string[]): HeaderList {
    const count = rawHeaders.length >> 1;
    const raw = rawHeaders.length === count * 2 ? rawHeaders.slice() : rawHeaders.slice(0, count * 2);
    const lower = new Array<string>(count);
    for (let i = 0; i < count; i++) lower[i] = (raw[2 * i] as string).toLowerCase();
    return new HeaderList(raw, lower);
  }

  /** From [name, value] pairs (the upstream contract's RawHeaders). */
  static fromPairs(pairs: Iterable<readonly [string, string]>): HeaderList {
    const raw: string[] = [];
    const lower: string[] = [];
    for (const [name, value] of pairs) {
      raw.push(name, value);
      lower.push(name.toLowerCase());
    }
    return new HeaderList(raw, lower);
  }

  static empty(): HeaderList {
    return new HeaderList([], []);
  }

  /** Number of lines. */
  get size(): number {
    return this.#lower.length;
  }

  /** The first value of a header, or undefined. */
  get(name: string): string | undefined {
    const lname = name.toLowerCase();
    const lower = this.#lower;
    for (let i = 0; i < lower.length; i++) if (lower[i] === lname) return this.#raw[2 * i + 1];
    return undefined;
  }

  /** Every value of a header in arrival order ([] when absent; the empty result is shared and frozen). */
  getAll(name: string): readonly string[] {
    const lname = name.toLowerCase();
    const lower = this.#lower;
    let out: string[] | undefined;
    for (let i = 0; i < lower.length; i++) {
      if (lower[i] === lname) (out ??= []).push(this.#raw[2 * i + 1] as string);
    }
    return out ?? NO_VALUES;
  }

  /** All values joined with `sep` (Envoy's getAllOfHeaderAsString uses ","), undefined when absent. */
  joined(name: string, sep = ','): string | undefined {
    const all = this.getAll(name);
    if (all.length === 0) return undefined;
    return all.length === 1 ? all[0] : all.join(sep);
  }

  has(name: string): boolean {
    return this.#lower.includes(name.toLowerCase());
  }

  /** Replaces every line of `name` with one line `name: value` at the end (Envoy's setCopy). */
  set(name: string, value: string): void {
    this.remove(name);
    this.#raw.push(name, value);
    this.#lower.push(name.toLowerCase());
  }

  /** Appends one more line; existing lines of the same name stay. */
  add(name: string, value: string): void {
    this.#raw.push(name, value);
    this.#lower.push(name.toLowerCase());
  }

  /** Drops every line of `name`; returns how many were dropped. */
  remove(name: string): number {
    const lname = name.toLowerCase();
    const lower = this.#lower;
    const first = lower.indexOf(lname);
    if (first < 0) return 0;
    const raw = this.#raw;
    let w = first;
    for (let r = first; r < lower.length; r++) {
      const l = lower[r] as string;
      if (l === lname) continue;
      lower[w] = l;
      raw[2 * w] = raw[2 * r] as string;
      raw[2 * w + 1] = raw[2 * r + 1] as string;
      w++;
    }
    const removed = lower.length - w;
    lower.length = w;
    raw.length = 2 * w;
    return removed;
  }

  /** The lines as [name, value] pairs (a fresh array). */
  entries(): Array<[string, string]> {
    const out = new Array<[string, string]>(this.#lower.length);
    const raw = this.#raw;
    for (let i = 0; i < out.length; i++) out[i] = [raw[2 * i] as string, raw[2 * i + 1] as string];
    return out;
  }

  /** The lines in node's flat rawHeaders form (a fresh array), e.g. for `writeHead(status, raw)`. */
  toRaw(): string[] {
    return this.#raw.slice();
  }

  /** Calls fn for each line in order with the name as stored and its lower-cased form. */
  forEach(fn: (name: string, value: string, lowerName: string) => void): void {
    const raw = this.#raw;
    const lower = this.#lower;
    for (let i = 0; i < lower.length; i++) fn(raw[2 * i] as string, raw[2 * i + 1] as string, lower[i] as string);
  }

  clone(): HeaderList {
    return new HeaderList(this.#raw.slice(), this.#lower.slice());
  }
}

/**
 * Applies a Gateway API RequestHeaderModifier / ResponseHeaderModifier: remove, then set, then add
 * (the order Envoy evaluates them in). Protected names (pseudo-headers, host) are skipped.
 */
export function applyHeaderModifier(list: HeaderList, modifier: HeaderModifier): void {
  for (const name of modifier.remove) {
    if (!isProtectedHeaderName(name.toLowerCase())) list.remove(name);
  }
  for (const [name, value] of modifier.set) {
    if (!isProtectedHeaderName(name.toLowerCase())) list.set(name, value);
  }
  for (const [name, value] of modifier.add) {
    if (!isProtectedHeaderName(name.toLowerCase())) list.add(name, value);
  }
}
