/**
 * A small typed reader over a parsed YAML document (the `yaml` package's node
 * tree), for config files that must report every problem at once with its
 * path and position: records with a closed set of keys, strings, integers in
 * a range, booleans, lists and maps, each read or reported, never thrown.
 *
 * Scalars are read the way serde_yaml reads them into ztunnel's types: a
 * string field takes any plain scalar as written (`revision: 1.10` is the
 * string "1.10"), integers and booleans must be YAML integers and booleans.
 */
import {
  isAlias,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Document,
  type ParsedNode,
  type Scalar,
} from 'yaml';
import { rejection, type Rejection } from '../result.js';

export type YamlNode = ParsedNode;

/** What a list item / map entry callback receives. */
export interface Entry {
  readonly node: YamlNode | null;
  readonly path: string;
}

export class YamlReader {
  readonly problems: Rejection[] = [];

  private constructor(
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
    private readonly source: string,
  ) {}

  /**
   * Parses `text`; syntax errors are recorded with their line and column and
   * the reader has no root then. Warnings (e.g. unresolved `!Tags`, which the
   * caller interprets itself) are not problems.
   */
  static parse(text: string, source: string): YamlReader {
    const lines = new LineCounter();
    const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
    const reader = new YamlReader(doc, lines, source);
    for (const e of doc.errors) {
      const at = lines.linePos(e.pos[0]);
      reader.problems.push(rejection(`${source}:${at.line}:${at.col}`, `YAML syntax error: ${e.message}`));
    }
    return reader;
  }

  /** The document's root node; undefined after a syntax error. */
  root(): YamlNode | null | undefined {
    return this.doc.errors.length > 0 ? undefined : this.resolve(this.doc.contents);
  }

  /** `source:line:col` of a node. */
  where(node: YamlNode | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return this.source;
    const at = this.lines.linePos(offset);
    return `${this.source}:${at.line}:${at.col}`;
  }

  report(path: string, node: YamlNode | null | undefined, reason: string): void {
    this.problems.push(rejection(path, `${reason} (${this.where(node)})`));
  }

  resolve(node: unknown): YamlNode | null {
    let n = node;
    // Aliases may point at aliases; the document rejects cycles at parse time.
    for (let i = 0; i < 100 && isAlias(n); i++) n = n.resolve(this.doc) ?? null;
    if (n === null || n === undefined || isAlias(n)) return null;
    return n as YamlNode;
  }

  /** A YAML null (`key:`, `~`, `null`) or a missing node. */
  isNull(node: YamlNode | null): boolean {
    return node === null || (isScalar(node) && node.value === null);
  }

  /**
   * Reads a mapping whose keys must all be in `allowed` (serde's
   * `deny_unknown_fields`); unknown keys are reported, the rest returned.
   */
  record(node: YamlNode | null, path: string, allowed: readonly string[]): YamlRecord | undefined {
    if (!isMap(node)) {
      this.report(path, node, `expected a mapping, got ${this.describe(node)}`);
      return undefined;
    }
    const entries = new Map<string, YamlNode | null>();
    for (const pair of node.items) {
      const key = this.resolve(pair.key);
      const name = isScalar(key) ? this.scalarText(key) : undefined;
      if (name === undefined) {
        this.report(path, key, `keys must be strings, got ${this.describe(key)}`);
        continue;
      }
      if (!allowed.includes(name)) {
        this.report(joinKey(path, name), key, `unknown key ${JSON.stringify(name)}; expected one of ${allowed.join(', ')}`);
        continue;
      }
      entries.set(name, this.resolve(pair.value));
    }
    return new YamlRecord(this, node, path, entries);
  }

  /** Every entry of a mapping with arbitrary keys (`services`, `ports`, `endpoints`). */
  mapEntries(node: YamlNode | null, path: string): Array<{ key: string; keyNode: YamlNode | null } & Entry> | undefined {
    if (!isMap(node)) {
      this.report(path, node, `expected a mapping, got ${this.describe(node)}`);
      return undefined;
    }
    const out: Array<{ key: string; keyNode: YamlNode | null } & Entry> = [];
    for (const pair of node.items) {
      const keyNode = this.resolve(pair.key);
      const key = isScalar(keyNode) ? this.scalarText(keyNode) : undefined;
      if (key === undefined) {
        this.report(path, keyNode, `keys must be strings or numbers, got ${this.describe(keyNode)}`);
        continue;
      }
      out.push({ key, keyNode, node: this.resolve(pair.value), path: `${path}[${JSON.stringify(key)}]` });
    }
    return out;
  }

  /** The items of a sequence, each with its path (`path[i]`). */
  items(node: YamlNode | null, path: string): Entry[] | undefined {
    if (!isSeq(node)) {
      this.report(path, node, `expected a list, got ${this.describe(node)}`);
      return undefined;
    }
    return node.items.map((item, i) => {
      const itemPath = `${path}[${i}]`;
      if (isPair(item)) {
        this.report(itemPath, this.resolve(item.key), 'expected a list item, got a key: value pair');
        return { node: null, path: itemPath };
      }
      return { node: this.resolve(item), path: itemPath };
    });
  }

  string(node: YamlNode | null, path: string): string | undefined {
    const text = isScalar(node) ? this.scalarText(node) : undefined;
    if (text === undefined) this.report(path, node, `expected a string, got ${this.describe(node)}`);
    return text;
  }

  /** An integer in `min..max`; `what` names it in the message (e.g. "port"). */
  integer(node: YamlNode | null, path: string, min: number, max: number, what = 'an integer'): number | undefined {
    const v = isScalar(node) ? node.value : undefined;
    if (typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max) return v;
    const shown = isScalar(node) && node.value !== null ? JSON.stringify(this.scalarText(node)) : this.describe(node);
    this.report(path, node, `${shown} is not ${what} in ${min}..${max}`);
    return undefined;
  }

  /** Like {@link integer}, for map keys, which JSON (and so config_dump) always writes as strings. */
  integerKey(key: string, keyNode: YamlNode | null, path: string, min: number, max: number, what: string): number | undefined {
    const n = /^\d{1,10}$/.test(key) ? Number(key) : NaN;
    if (Number.isInteger(n) && n >= min && n <= max) return n;
    this.report(path, keyNode, `${JSON.stringify(key)} is not ${what} in ${min}..${max}`);
    return undefined;
  }

  boolean(node: YamlNode | null, path: string): boolean | undefined {
    if (isScalar(node) && typeof node.value === 'boolean') return node.value;
    this.report(path, node, `${this.describeValue(node)} is not a boolean; expected true or false`);
    return undefined;
  }

  /** One of a closed set of spellings (serde unit variants are case-sensitive). */
  oneOf<T extends string>(node: YamlNode | null, path: string, allowed: readonly T[]): T | undefined {
    const text = isScalar(node) ? this.scalarText(node) : undefined;
    if (text !== undefined && (allowed as readonly string[]).includes(text)) return text as T;
    this.report(path, node, `${this.describeValue(node)} is not one of ${allowed.join(', ')}`);
    return undefined;
  }

  /** The text of a scalar as written; undefined for null. */
  scalarText(node: Scalar): string | undefined {
    const v: unknown = node.value;
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return node.source ?? String(v);
    return undefined;
  }

  describe(node: YamlNode | null): string {
    if (node === null) return 'nothing';
    if (isMap(node)) return 'a mapping';
    if (isSeq(node)) return 'a list';
    if (isScalar(node)) {
      if (node.value === null) return 'null';
      return `${typeof node.value === 'string' ? 'the string' : typeof node.value} ${JSON.stringify(this.scalarText(node))}`;
    }
    return 'an unsupported node';
  }

  private describeValue(node: YamlNode | null): string {
    return isScalar(node) && node.value !== null ? JSON.stringify(this.scalarText(node)) : this.describe(node);
  }
}

/** A mapping read with {@link YamlReader.record}: typed getters for its keys. */
export class YamlRecord {
  constructor(
    readonly reader: YamlReader,
    readonly node: YamlNode,
    readonly path: string,
    private readonly entries: ReadonlyMap<string, YamlNode | null>,
  ) {}

  pathOf(key: string): string {
    return joinKey(this.path, key);
  }

  /** The value node of `key`; undefined when absent or null (serde reads null as "not set" for options). */
  get(key: string): YamlNode | undefined {
    const node = this.entries.get(key);
    return node === undefined || node === null || this.reader.isNull(node) ? undefined : node;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  require(key: string, what: string): YamlNode | undefined {
    const node = this.get(key);
    if (node === undefined) this.reader.report(this.pathOf(key), this.node, `${what} is required`);
    return node;
  }

  string(key: string, fallback = ''): string {
    const node = this.get(key);
    return node === undefined ? fallback : (this.reader.string(node, this.pathOf(key)) ?? fallback);
  }

  boolean(key: string, fallback = false): boolean {
    const node = this.get(key);
    return node === undefined ? fallback : (this.reader.boolean(node, this.pathOf(key)) ?? fallback);
  }

  integer(key: string, min: number, max: number, what?: string): number | undefined {
    const node = this.get(key);
    return node === undefined ? undefined : this.reader.integer(node, this.pathOf(key), min, max, what);
  }

  oneOf<T extends string>(key: string, allowed: readonly T[]): T | undefined {
    const node = this.get(key);
    return node === undefined ? undefined : this.reader.oneOf(node, this.pathOf(key), allowed);
  }

  /** Items of a list-valued key; an absent key is an empty list. */
  items(key: string): Entry[] {
    const node = this.get(key);
    return node === undefined ? [] : (this.reader.items(node, this.pathOf(key)) ?? []);
  }

  strings(key: string): string[] {
    return this.items(key).flatMap((e) => (e.node === null ? [] : (this.reader.string(e.node, e.path) ?? [])));
  }
}

export function isList(node: YamlNode | null): boolean {
  return isSeq(node);
}

export function isMapping(node: YamlNode | null): boolean {
  return isMap(node);
}

function joinKey(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}
