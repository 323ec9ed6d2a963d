/**
 * Logging the way ztunnel logs: a pino logger whose lines are either
 * ztunnel's plain format (`<time>\t<level>\t<scope>\t<message>\t<k=v ...>`) or
 * JSON (`LOG_FORMAT=json`: level, time, scope, message, fields), filtered by a
 * RUST_LOG-style directive list that can be changed at runtime (admin
 * `POST /logging`),.
 *
 * Scopes: a logger's scope is its `scope` binding, else its `component`
 * binding; filter directives `target=level` match scopes that start with the
 * target (tracing's `Targets` semantics; a `ztunnel::` prefix is ignored).
 * As in ztunnel, a filter without a bare level turns everything else off.
 */
import { fail, ok, rejection, systemClock, type Clock, type Result } from '@ambient/control';
import { pino, type Logger as PinoLogger } from 'pino';

/** LOG_FORMAT: ztunnel's plain lines or JSON. */
export type LogFormat = 'plain' | 'json';

// ---------------------------------------------------------------------------
// Filter

export type FilterLevel = 'off' | 'error' | 'warn' | 'info' | 'debug' | 'trace';

const FILTER_LEVELS: Readonly<Record<FilterLevel, number>> = {
  off: Number.POSITIVE_INFINITY,
  error: 50,
  warn: 40,
  info: 30,
  debug: 20,
  trace: 10,
};

export interface LogDirective {
  /** undefined: the default for every scope no targeted directive matches. */
  readonly target: string | undefined;
  readonly level: FilterLevel;
}

/** A parsed RUST_LOG-style filter: targeted directives (last wins per target) and an optional default. */
export interface LogFilter {
  readonly directives: readonly LogDirective[];
}

export const DEFAULT_LOG_FILTER = 'info';

const TARGET = /^[A-Za-z0-9_.:-]+$/;

/** Parses `info`, `access=debug,info`, `ztunnel::proxy=trace,warn`. */
export function parseLogFilter(text: string): Result<LogFilter> {
  const byTarget = new Map<string | undefined, FilterLevel>();
  const errors = [];
  for (const raw of text.split(',')) {
    const clause = raw.trim();
    if (clause === '') continue;
    const eq = clause.indexOf('=');
    const target = eq >= 0 ? clause.slice(0, eq).trim() : undefined;
    const levelText = (eq >= 0 ? clause.slice(eq + 1) : clause).trim().toLowerCase();
    if (!(levelText in FILTER_LEVELS)) {
      errors.push(rejection('level', `"${clause}": expected a level (off, error, warn, info, debug, trace) or <target>=<level>`));
      continue;
    }
    if (target !== undefined && !TARGET.test(target)) {
      errors.push(rejection('level', `"${clause}": "${target}" is not a valid target`));
      continue;
    }
    const key = target?.startsWith('ztunnel::') ? target.slice('ztunnel::'.length) : target;
    byTarget.delete(key); // the last directive for a target wins and moves to the end
    byTarget.set(key, levelText as FilterLevel);
  }
  if (errors.length > 0) return fail(...errors);
  if (byTarget.size === 0) return fail(rejection('level', `"${text}": empty filter; expected e.g. "info" or "access=debug,info"`));
  const directives: LogDirective[] = [];
  for (const [target, level] of byTarget) if (target !== undefined) directives.push({ target, level });
  const dflt = byTarget.get(undefined);
  if (dflt !== undefined) directives.push({ target: undefined, level: dflt });
  return ok({ directives });
}

/** The filter as text, in a canonical form (`access=debug,info`). */
export function formatLogFilter(f: LogFilter): string {
  return f.directives.map((d) => (d.target === undefined ? d.level : `${d.target}=${d.level}`)).join(',');
}

/** The minimum pino level number enabled for `scope` (Infinity when off). */
export function thresholdFor(f: LogFilter, scope: string): number {
  let best: LogDirective | undefined;
  for (const d of f.directives) {
    if (d.target === undefined || !scope.startsWith(d.target)) continue;
    if (best === undefined || (best.target ?? '').length < d.target.length) best = d;
  }
  best ??= f.directives.find((d) => d.target === undefined);
  return best === undefined ? Number.POSITIVE_INFINITY : FILTER_LEVELS[best.level];
}

/** The runtime control behind admin `POST /logging`. */
export interface LogLevelControl {
  /** The current filter, e.g. "access=debug,info". */
  current(): string;
  /**
   * ztunnel's `/logging` semantics: `level` is appended to the current filter
   * (later directives win); `reset` starts again from the startup default
   * (plus `level` when given). Returns the new filter, or why `level` is invalid.
   */
  change(reset: boolean, level: string): Result<string>;
  /** Whether a record at `level` for `scope` would be written (to skip building expensive fields). */
  enabled(scope: string, level: Exclude<FilterLevel, 'off'>): boolean;
}

class FilterState implements LogLevelControl {
  #filter: LogFilter;
  #cache = new Map<string, number>();

  constructor(
    private readonly initial: LogFilter,
    private readonly onChange: (text: string) => void,
  ) {
    this.#filter = initial;
  }

  enabled(scope: string, level: number | Exclude<FilterLevel, 'off'>): boolean {
    if (typeof level === 'string') level = FILTER_LEVELS[level];
    let t = this.#cache.get(scope);
    if (t === undefined) {
      t = thresholdFor(this.#filter, scope);
      this.#cache.set(scope, t);
    }
    return level >= t;
  }

  current(): string {
    return formatLogFilter(this.#filter);
  }

  change(reset: boolean, level: string): Result<string> {
    if (!reset && level === '') return ok(this.current());
    for (const clause of level === '' ? [] : level.split(',')) {
      const c = clause.trim();
      if (!(c in FILTER_LEVELS) && !c.includes('=')) return fail(rejection('level', `level ${c} is invalid`));
    }
    const base = reset ? formatLogFilter(this.initial) : this.current();
    const parsed = parseLogFilter(level === '' ? base : `${base},${level}`);
    if (!parsed.ok) return parsed;
    this.#filter = parsed.value;
    this.#cache = new Map();
    const text = this.current();
    this.onChange(text);
    return ok(text);
  }
}

// ---------------------------------------------------------------------------
// Logger

/** Where formatted lines go (stdout by default). */
export interface LogSink {
  write(line: string): unknown;
}

export interface CreateLoggerOptions {
  readonly format: LogFormat;
  /** RUST_LOG-style filter text; must parse (see parseLogFilter). */
  readonly level: string;
  readonly destination?: LogSink;
  /** Timestamps come from here (default: the system clock). */
  readonly clock?: Pick<Clock, 'now'>;
}

export interface ProcessLogger {
  /** The root logger; use `.child({ scope })` or `.child({ component })` per module. */
  readonly logger: PinoLogger;
  readonly levels: LogLevelControl;
}

const PINO_LEVEL_NAMES: Readonly<Record<number, string>> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'error' };

/** Builds the process logger. Throws only if `level` does not parse (validate it with parseLogFilter first). */
export function createLogger(o: CreateLoggerOptions): ProcessLogger {
  const parsed = parseLogFilter(o.level);
  if (!parsed.ok) throw new Error(`invalid log filter: ${parsed.errors.map((e) => e.reason).join('; ')}`);
  const clock = o.clock ?? systemClock;
  const sink: LogSink = o.destination ?? pino.destination({ dest: 1, sync: true });
  const out: LogSink = o.format === 'json' ? sink : { write: (line: string) => sink.write(formatPlainLine(line)) };
  const scopes = new WeakMap<object, string>();
  const scopeOf = (l: PinoLogger): string => {
    let s = scopes.get(l);
    if (s === undefined) {
      const b = l.bindings() as { scope?: unknown; component?: unknown };
      s = typeof b.scope === 'string' ? b.scope : typeof b.component === 'string' ? b.component : '';
      scopes.set(l, s);
    }
    return s;
  };
  const announce: { logger?: PinoLogger } = {};
  const state = new FilterState(parsed.value, (text) => announce.logger?.info(`new log filter is ${text}`));
  const root = pino(
    {
      level: 'trace', // filtering happens per scope in the logMethod hook
      base: null,
      messageKey: 'message',
      timestamp: () => `,"time":"${new Date(clock.now()).toISOString()}"`,
      formatters: { level: (_label, n) => ({ level: PINO_LEVEL_NAMES[n] ?? 'info' }) },
      hooks: {
        logMethod(args, method, level) {
          if (state.enabled(scopeOf(this), level)) method.apply(this, args);
        },
      },
    },
    out as pino.DestinationStream,
  );
  announce.logger = root;
  return { logger: root, levels: state };
}

/** The plain rendering of one pino JSON line (ztunnel's `IstioFormat`). */
export function formatPlainLine(jsonLine: string): string {
  let rec: Record<string, unknown>;
  try {
    rec = JSON.parse(jsonLine) as Record<string, unknown>;
  } catch {
    return jsonLine.endsWith('\n') ? jsonLine : `${jsonLine}\n`;
  }
  const { level, time, message, ...rest } = rec;
  let scope = 'ztunnel';
  if (typeof rest['scope'] === 'string') {
    scope = rest['scope'];
    delete rest['scope'];
  } else if (typeof rest['component'] === 'string') {
    scope = rest['component'];
    delete rest['component'];
  }
  let line = `${String(time)}\t${String(level)}\t${scope}`;
  if (message !== undefined) line += `\t${String(message)}`;
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${plainValue(k, v)}`);
  if (fields.length > 0) line += `\t${fields.join(' ')}`;
  return `${line}\n`;
}

function plainValue(key: string, v: unknown): string {
  if (typeof v === 'string') return key.endsWith('addr') ? v : JSON.stringify(v);
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (typeof v === 'object' && v !== null && 'message' in v && typeof (v as { message: unknown }).message === 'string') {
    return JSON.stringify((v as { message: string }).message);
  }
  return JSON.stringify(v);
}
