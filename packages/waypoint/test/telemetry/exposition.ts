/**
 * Reads Prometheus text exposition back into series and evaluates the small
 * PromQL subset the Istio dashboards' waypoint panels use on one scrape:
 * `sum by (l1, l2) (name{matchers})` with `=`, `!=`, `=~`, `!~` (regexes
 * anchored, as in PromQL). Enough to show that a dashboard query finds a
 * series and which label values it groups by; not a PromQL engine.
 */

export interface Series {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  /** Label names in the order the exposition wrote them. */
  readonly order: readonly string[];
  readonly value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)/y;

export function parseExposition(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    const order: string[] = [];
    const body = m[2] ?? '';
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < body.length) {
      const l = LABEL.exec(body);
      if (l === null) throw new Error(`bad labels in: ${line}`);
      const name = l[1] ?? '';
      labels[name] = (l[2] ?? '').replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      order.push(name);
    }
    const v = m[3] ?? '';
    out.push({ name: m[1] ?? '', labels, order, value: v === '+Inf' ? Infinity : Number(v) });
  }
  return out;
}

type Matcher = readonly [name: string, op: '=' | '!=' | '=~' | '!~', value: string];

function parseSelector(selector: string): { name: string; matchers: Matcher[] } {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$/.exec(selector.trim());
  if (m === null) throw new Error(`selector: ${selector}`);
  const matchers: Matcher[] = [];
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)/y;
  const body = m[2] ?? '';
  while (re.lastIndex < body.length) {
    const x = re.exec(body);
    if (x === null) throw new Error(`matchers: ${body}`);
    matchers.push([x[1] ?? '', x[2] as Matcher[1], x[3] ?? '']);
  }
  return { name: m[1] ?? '', matchers };
}

/** The series a selector such as `istio_requests_total{reporter=~"source|waypoint"}` selects. */
export function select(series: readonly Series[], selector: string): Series[] {
  const { name, matchers } = parseSelector(selector);
  const tests = matchers.map(([label, op, value]) => {
    const re = op === '=~' || op === '!~' ? new RegExp(`^(?:${value})$`) : undefined;
    return (s: Series) => {
      const v = s.labels[label] ?? '';
      switch (op) {
        case '=':
          return v === value;
        case '!=':
          return v !== value;
        case '=~':
          return re?.test(v) === true;
        case '!~':
          return re?.test(v) !== true;
      }
    };
  });
  return series.filter((s) => s.name === name && tests.every((t) => t(s)));
}

/** `sum by (by...) (selector)`: group key (label values joined by ",") → sum. */
export function sumBy(series: readonly Series[], by: readonly string[], selector: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of select(series, selector)) {
    const key = by.map((l) => s.labels[l] ?? '').join(',');
    out.set(key, (out.get(key) ?? 0) + s.value);
  }
  return out;
}
