/**
 * Gateway API RegularExpression values are RE2 (Envoy safe_regex, always a full match). We run them
 * with JavaScript's RegExp, compiled once by the route compiler, anchored as `^(?:…)$`.
 *
 * RE2 and JavaScript differ; this module narrows the gap and refuses what it cannot vouch for:
 * - accepted and translated: RE2 named groups `(?P<name>…)` → `(?<name>…)`; a leading flag group
 *   `(?i)`, `(?s)`, `(?m)` (or a combination) → the RegExp flags `i`, `s`, `m`;
 * - refused (RE2 rejects them, so Envoy would reject the route): lookahead/lookbehind `(?=` `(?!`
 *   `(?<=` `(?<!`, backreferences `\1`…`\9` and `\k<…>`;
 * - refused because JavaScript cannot compile it, or would silently read it differently: the
 *   pattern is compiled in Unicode mode (`u`, strict escapes); when that fails (RE2 allows escaping
 *   any punctuation, e.g. `\-`, which `u` mode rejects) it is retried without `u` only if every
 *   escape is punctuation or one both engines read alike (`\d \D \w \W \s \S \b \B \t \n \r \f \v`).
 * Remaining known differences, accepted: JavaScript's `\s` also matches Unicode spaces; `.` never
 * matches `\n` in either without `(?s)`. Patterns run against header values and paths only.
 */
export type CompiledRegex =
  | { readonly ok: true; readonly regex: RegExp }
  | { readonly ok: false; readonly error: string };

const SAFE_LETTER_ESCAPES = new Set(['d', 'D', 'w', 'W', 's', 'S', 'b', 'B', 't', 'n', 'r', 'f', 'v']);

/** Compiles an RE2 pattern for a full match, or says why it cannot. */
export function compileFullMatch(pattern: string): CompiledRegex {
  let source = pattern;
  let flags = '';
  const lead = /^\(\?([ims]+)\)/.exec(source);
  if (lead !== null) {
    flags = [...new Set(lead[1])].join('');
    source = source.slice(lead[0].length);
  }
  if (/\(\?<?[=!]/.test(source)) {
    return { ok: false, error: `lookaround assertions are not RE2 syntax: ${JSON.stringify(pattern)}` };
  }
  if (/\\[1-9]|\\k</.test(source)) {
    return { ok: false, error: `backreferences are not RE2 syntax: ${JSON.stringify(pattern)}` };
  }
  source = source.replace(/\(\?P</g, '(?<');
  const anchored = `^(?:${source})$`;
  try {
    return { ok: true, regex: new RegExp(anchored, `${flags}u`) };
  } catch (unicodeError) {
    for (const m of source.matchAll(/\\(.)/gs)) {
      const c = m[1] as string;
      const letterOrDigit = /[A-Za-z0-9]/.test(c);
      if (letterOrDigit && !SAFE_LETTER_ESCAPES.has(c)) {
        return {
          ok: false,
          error: `not a regular expression this proxy can run as RE2 does (${(unicodeError as Error).message}): ${JSON.stringify(pattern)}`,
        };
      }
    }
    try {
      return { ok: true, regex: new RegExp(anchored, flags) };
    } catch (error) {
      return { ok: false, error: `invalid regular expression ${JSON.stringify(pattern)}: ${(error as Error).message}` };
    }
  }
}
