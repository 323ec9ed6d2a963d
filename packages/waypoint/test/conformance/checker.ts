/**
 * What the mesh conformance suite checks, as the upstream Go helpers do it
 * (`conformance/utils/echo/pod.go` compareRequest, `http.AwaitConvergence`,
 * `weight.TestWeightedDistributionBatch`), plus the stricter checks of our
 * suite:
 *
 * - compare: the status code (first `StatusCode=`; for gRPC an expected 0
 *   means 200) must be one of the expected; each expected request header
 *   must have been received with that value (name case-insensitive, values
 *   joined with "," and no space); absent request headers must not have been
 *   received; response headers by `Get` (last line wins); absent response
 *   headers must not be there; `Hostname=` must start with the backend
 *   prefix ('' = anything, also no backend).
 * - stricter (not upstream): a redirect must carry exactly the `Location`
 *   derived from the manifest (`derivedLocation`), and a request whose
 *   Go literal names `ExpectedRequest.Path` must reach the backend with that
 *   path (the path part of the echoed `URL=`), except the one upstream slip
 *   the transcription documents (MeshHTTPRouteNamedRule's `/unnamed` case
 *   names `/named`).
 * - convergence: a case passes after N consecutive passing tries (no delay
 *   between them); a failure resets the streak and waits the poll interval;
 *   the case fails when the streak is not reached in the time limit, with the
 *   last failure's reasons and output.
 * - distribution: a batch passes when it parsed exactly N responses, every
 *   backend (Hostname minus its last two `-` parts) is expected, the number of
 *   backends seen equals the number of weights > 0, and each share is within
 *   the tolerance; up to `maxAttempts` batches.
 */
import { EchoClientError, type EchoCallResult, type ParsedEchoResponse } from '../support/echo-client.js';
import { canonicalHeaderName } from '../support/echo-server.js';
import type { Distribution, ScenarioCase } from './scenarios.js';

/** Cases whose `notAssertedByMeshHelper.expectedRequest.Path` is an upstream mistake, not a rewrite expectation. */
const PATH_SLIPS: ReadonlyArray<{ readonly test: string; readonly url: string; readonly reason: string }> = [
  { test: 'MeshHTTPRouteNamedRule', url: 'http://echo/unnamed', reason: 'the Go literal copies Path "/named" into the /unnamed case; no rewrite is configured' },
];

export function comparePaths(test: string, c: ScenarioCase): string | undefined {
  const path = c.notAssertedByMeshHelper?.expectedRequest?.Path;
  if (path === undefined) return undefined;
  if (PATH_SLIPS.some((s) => s.test === test && s.url === c.request.url)) return undefined;
  return path;
}

/** Every way `response` differs from what the case expects (empty = pass). */
export function compareResponse(test: string, c: ScenarioCase, response: ParsedEchoResponse): string[] {
  const problems: string[] = [];
  const e = c.expected;
  const wantCodes = e.statusCodes.map((code) => String(c.request.protocol === 'grpc' && code === 0 ? 200 : code));
  if (!wantCodes.includes(response.statusCode)) problems.push(`status code ${response.statusCode || '(none)'}, want one of ${wantCodes.join(', ')}`);
  for (const [name, want] of Object.entries(e.requestHeaders ?? {})) {
    const got = response.requestHeaders.get(canonicalHeaderName(name));
    if (got === undefined) problems.push(`request header ${name} not received by the backend, want "${want}"`);
    else if (got.join(',') !== want) problems.push(`request header ${name} received as "${got.join(',')}", want "${want}"`);
  }
  for (const name of e.absentRequestHeaders) {
    const got = response.requestHeaders.get(canonicalHeaderName(name));
    if (got !== undefined) problems.push(`request header ${name} should be absent, backend received "${got.join(',')}"`);
  }
  for (const [name, want] of Object.entries(e.responseHeaders)) {
    const got = response.responseHeaders.get(canonicalHeaderName(name));
    if (got !== want) problems.push(`response header ${name} is ${got === undefined ? 'missing' : `"${got}"`}, want "${want}"`);
  }
  for (const name of e.absentResponseHeaders) {
    const got = response.responseHeaders.get(canonicalHeaderName(name));
    if (got !== undefined) problems.push(`response header ${name} should be absent, got "${got}"`);
  }
  if (!response.hostname.startsWith(e.backendPodPrefix)) problems.push(`answered by "${response.hostname || '(no backend)'}", want a pod starting with "${e.backendPodPrefix}"`);

  // Stricter than upstream.
  const location = c.notAssertedByMeshHelper?.derivedLocation;
  if (location !== undefined) {
    const got = response.responseHeaders.get('Location');
    if (got !== location) problems.push(`redirect Location is ${got === undefined ? 'missing' : `"${got}"`}, want "${location}"`);
  }
  const path = comparePaths(test, c);
  if (path !== undefined) {
    const received = response.url.split('?')[0] ?? '';
    if (received !== path) problems.push(`backend received path "${received || '(no request)'}", want "${path}"`);
  }
  return problems;
}

export interface ConvergenceRules {
  readonly requiredConsecutiveSuccesses: number;
  readonly maxTimeMs: number;
  readonly pollIntervalMs: number;
}

export interface TryOutcome {
  readonly ok: boolean;
  readonly problems: readonly string[];
  readonly output: string;
}

/** One try: run the request, compare; a client failure (non-zero exit) is a failed try. */
export async function tryOnce(test: string, c: ScenarioCase, send: () => Promise<EchoCallResult>): Promise<TryOutcome> {
  let result: EchoCallResult;
  try {
    result = await send();
  } catch (err) {
    const output = err instanceof EchoClientError ? err.output : '';
    return { ok: false, problems: [`echo client failed: ${(err as Error).message}`], output };
  }
  const [first] = result.responses;
  if (result.responses.length !== 1 || first === undefined) {
    return { ok: false, problems: [`expected one response, parsed ${result.responses.length}`], output: result.output };
  }
  const problems = compareResponse(test, c, first);
  return { ok: problems.length === 0, problems, output: result.output };
}

export interface ConvergenceReport {
  readonly tries: number;
  readonly elapsedMs: number;
}

/** AwaitConvergence: resolves after N consecutive passes, rejects with the last failure when time runs out. */
export async function awaitConvergence(rules: ConvergenceRules, attempt: () => Promise<TryOutcome>): Promise<ConvergenceReport> {
  const start = performance.now();
  let streak = 0;
  let tries = 0;
  let last: TryOutcome | undefined;
  while (performance.now() - start < rules.maxTimeMs) {
    tries++;
    const outcome = await attempt();
    if (outcome.ok) {
      streak++;
      if (streak >= rules.requiredConsecutiveSuccesses) return { tries, elapsedMs: performance.now() - start };
      continue;
    }
    streak = 0;
    last = outcome;
    await new Promise((r) => setTimeout(r, rules.pollIntervalMs));
  }
  throw new Error(
    `did not converge within ${rules.maxTimeMs} ms (${tries} tries, ${rules.requiredConsecutiveSuccesses} consecutive passes needed); last failure:\n  - ${(last?.problems ?? ['(none: the streak never completed)']).join('\n  - ')}\nclient output:\n${last?.output ?? ''}`,
  );
}

/** Hostname → backend name: the last two `-` parts dropped (pod-template-hash, suffix); fewer than 3 parts used whole. */
export function backendOf(hostname: string): string {
  const parts = hostname.split('-');
  return parts.length < 3 ? hostname : parts.slice(0, -2).join('-');
}

export interface DistributionOutcome {
  readonly ok: boolean;
  readonly counts: Readonly<Record<string, number>>;
  readonly problems: readonly string[];
}

/** One weighted-distribution attempt on the parsed batch. */
export function checkDistribution(d: Distribution, responses: readonly ParsedEchoResponse[]): DistributionOutcome {
  const problems: string[] = [];
  const counts: Record<string, number> = {};
  if (responses.length !== d.requestsPerAttempt) problems.push(`parsed ${responses.length} responses, want ${d.requestsPerAttempt}`);
  for (const r of responses) {
    const name = backendOf(r.hostname);
    counts[name] = (counts[name] ?? 0) + 1;
  }
  for (const name of Object.keys(counts)) {
    if (!(name in d.expectedWeights)) problems.push(`unexpected backend "${name || '(empty Hostname)'}" (${counts[name]} responses)`);
  }
  const positive = Object.entries(d.expectedWeights).filter(([, w]) => w > 0);
  if (Object.keys(counts).length !== positive.length) problems.push(`saw ${Object.keys(counts).length} backends, want ${positive.length}`);
  for (const [name, weight] of positive) {
    const share = (counts[name] ?? 0) / d.requestsPerAttempt;
    if (Math.abs(share - weight) > d.toleranceAbsolute) problems.push(`${name} got ${share.toFixed(3)} of the traffic, want ${weight} ± ${d.toleranceAbsolute}`);
  }
  return { ok: problems.length === 0, counts, problems };
}
