/**
 * Duration strings as Istio's ztunnel reads them from the environment
 * (SECRET_TTL=24h, POOL_UNUSED_RELEASE_TIMEOUT=5m, KEEPALIVE_TIME=180s): a
 * sequence of <number><unit> terms, optionally separated by spaces, or a bare
 * number of seconds. Units: d, h, m, s, ms, us (or µs), ns.
 */
const UNIT_MS: Readonly<Record<string, number>> = {
  d: 86_400_000,
  h: 3_600_000,
  m: 60_000,
  s: 1_000,
  ms: 1,
  us: 0.001,
  'µs': 0.001,
  ns: 0.000_001,
};

const TERM = /(\d+(?:\.\d+)?)\s*(ms|us|µs|ns|d|h|m|s)\s*/y;

/** Milliseconds, or a message saying what was expected. */
export function parseDuration(text: string): { ok: true; ms: number } | { ok: false; reason: string } {
  const trimmed = text.trim();
  const expected = 'expected a duration such as "24h", "1h30m", "500ms" or a number of seconds';
  if (trimmed === '') return { ok: false, reason: `empty; ${expected}` };
  if (/^\d+(\.\d+)?$/.test(trimmed)) return { ok: true, ms: Number(trimmed) * 1000 };
  let total = 0;
  TERM.lastIndex = 0;
  while (TERM.lastIndex < trimmed.length) {
    const at = TERM.lastIndex;
    const m = TERM.exec(trimmed);
    if (!m || m.index !== at) return { ok: false, reason: `"${text}" is not a duration; ${expected}` };
    total += Number(m[1]) * (UNIT_MS[m[2] ?? ''] ?? Number.NaN);
  }
  if (!Number.isFinite(total)) return { ok: false, reason: `"${text}" is out of range` };
  return { ok: true, ms: total };
}
