/**
 * The Gateway API mesh conformance suite as vitest describes: one `describe`
 * per upstream test (its ShortName), in upstream run order, each applying its
 * manifests before its cases and deleting them after, one `it` per case (the
 * upstream subtest name) run with the upstream convergence rule, and one `it`
 * for each weighted-distribution check. The mesh (control plane, pods,
 * ztunnels) and the waypoint start once for the file, with its first case,
 * and are closed in afterAll, also when something failed.
 *
 * MeshConsumerRoute is not applicable in ambient, as in Istio (its ambient
 * suite removes the MeshConsumerRoute feature; a waypoint only considers
 * routes in the service's or its own namespace). Instead of skipping it, its
 * cases assert that the consumer route is NOT applied: both clients reach
 * echo-v1 without X-Header-Set. So that this cannot pass merely because the
 * waypoint has not read the route yet, a sentinel route of ours (on
 * echo-v2:8080, written after the consumer route) must take effect first.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { awaitConvergence, checkDistribution, tryOnce, type ConvergenceRules } from './checker.js';
import { MESH_NAMESPACE, startMesh, type Mesh, type WaypointPlan } from './mesh.js';
import { loadBase, loadIndex, loadScenario, type Scenario, type ScenarioCase } from './scenarios.js';
import { clientPod, parseClientArgs, resolveArgs } from './suite.js';

export interface WaypointUnderTest {
  close(): Promise<void>;
}

export interface MeshConformanceOptions {
  /** First three octets of pod IPs and of VIPs: unique per test file so files run side by side. */
  readonly podNet: string;
  readonly vipNet: string;
  /** Starts the waypoint for the mesh's waypoint plan, reading `mesh.configDir`. */
  readonly startWaypoint: (mesh: Mesh, waypoint: WaypointPlan) => Promise<WaypointUnderTest>;
}

const CONSUMER_ROUTE_TEST = 'MeshConsumerRoute';
const SENTINEL = { name: 'conformance-sentinel', header: 'X-Conformance-Sentinel', value: 'consumer-route-written-before' };
const SENTINEL_YAML = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: ${SENTINEL.name}
  namespace: ${MESH_NAMESPACE}
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: echo-v2
    port: 8080
  rules:
  - filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: ${SENTINEL.header}
          value: ${SENTINEL.value}
    backendRefs:
    - name: echo-v2
      port: 8080
`;

function rulesOf(s: Scenario): ConvergenceRules {
  const polls = s.convergence.pollIntervalAfterFailureMs;
  const main = Object.entries(polls).find(([k]) => k.startsWith('main'));
  // Upstream's 30 s; WAYPOINT_CONFORMANCE_MAX_CONVERGENCE_S shortens it for a local run that expects failures (never lengthens it).
  const override = Number(process.env['WAYPOINT_CONFORMANCE_MAX_CONVERGENCE_S']);
  const seconds = Number.isFinite(override) && override > 0 ? Math.min(override, s.convergence.maxTimeToConsistencySeconds) : s.convergence.maxTimeToConsistencySeconds;
  return {
    requiredConsecutiveSuccesses: s.convergence.requiredConsecutiveSuccesses,
    maxTimeMs: seconds * 1000,
    pollIntervalMs: main?.[1] ?? Math.min(...Object.values(polls)),
  };
}

/** Upstream subtest names, made unique where two cases share one (MeshPorts has two "No port set"). */
function caseNames(cases: readonly ScenarioCase[]): string[] {
  const seen = new Map<string, number>();
  for (const c of cases) seen.set(c.name, (seen.get(c.name) ?? 0) + 1);
  return cases.map((c) => ((seen.get(c.name) ?? 0) > 1 ? `${c.name} [case ${c.index}: ${c.request.url}]` : c.name));
}

export function defineMeshConformance(o: MeshConformanceOptions): void {
  const index = loadIndex();
  const base = loadBase();
  let mesh: Mesh | undefined;
  let waypoint: WaypointUnderTest | undefined;
  // The mesh and the waypoint start with the first case that needs them (not in a beforeAll: a failed start must
  // fail every case with its reason, where vitest would report the cases of a failed beforeAll as skipped).
  let starting: Promise<Mesh> | undefined;
  const started = () =>
    (starting ??= (async () => {
      mesh = await startMesh({ base, podNet: o.podNet, vipNet: o.vipNet, waypoint: 'namespace' });
      const plan = mesh.plan.waypoint;
      if (plan === undefined) throw new Error('the mesh has no waypoint plan');
      waypoint = await o.startWaypoint(mesh, plan);
      return mesh;
    })());

  afterAll(async () => {
    try {
      await waypoint?.close();
    } finally {
      await mesh?.close();
    }
  }, 30_000);

  it('runs every transcribed test: 23 tests, 85 cases, 2 distribution checks', () => {
    expect(index.upstreamRunOrder).toHaveLength(index.tests.length);
    const scenarios = index.upstreamRunOrder.map((n) => loadScenario(n));
    expect(scenarios.reduce((a, s) => a + s.cases.length, 0)).toBe(index.totalCases);
    expect(scenarios.filter((s) => s.distribution !== null).map((s) => s.name).sort()).toEqual(['MeshGRPCRouteWeight', 'MeshHTTPRouteWeight']);
  });

  for (const name of index.upstreamRunOrder) {
    const scenario = loadScenario(name);
    const rules = rulesOf(scenario);
    const names = caseNames(scenario.cases);
    // The convergence limit, plus room for the mesh start (first case) or the manifests and sentinel (first of a test).
    const caseTimeout = 2 * rules.maxTimeMs + 60_000;

    describe(name, () => {
      // The test's manifests are applied once, before its first case; MeshConsumerRoute's cases then wait for the
      // sentinel. A failure of either fails each case (none is skipped).
      let applied: Promise<Mesh> | undefined;
      const prepared = () =>
        (applied ??= (async () => {
          const m = await started();
          await m.apply(name, scenario.manifests.map((x) => x.yaml));
          if (name === CONSUMER_ROUTE_TEST) await awaitSentinel(m, rules);
          return m;
        })());
      afterAll(async () => {
        await mesh?.remove(name);
        if (name === CONSUMER_ROUTE_TEST) await mesh?.remove(SENTINEL.name);
      });

      scenario.cases.forEach((c, i) => {
        const consumer = name === CONSUMER_ROUTE_TEST;
        const title = consumer
          ? `not applicable in ambient (Istio's ambient suite drops MeshConsumerRoute; a waypoint ignores routes outside the service's and its own namespace): the consumer route is not applied — ${names[i]}`
          : (names[i] as string);
        const expectation: ScenarioCase = consumer
          ? { ...c, expected: { ...c.expected, responseHeaders: {}, absentResponseHeaders: [...new Set([...c.expected.absentResponseHeaders, 'X-Header-Set'])] } }
          : c;
        it(
          title,
          async () => {
            const m = await prepared();
            const from = clientPod(m, { namespace: c.client.namespace, selector: c.client.selector });
            const call = parseClientArgs(resolveArgs(m, scenario, c.request.echoClientArgs));
            await awaitConvergence(rules, () => tryOnce(name, expectation, () => m.call(from, call)));
          },
          caseTimeout,
        );
      });

      const d = scenario.distribution;
      if (d !== null) {
        it(
          `${scenario.cases[0]?.name ?? 'distribution'}: ${d.requestsPerAttempt} requests within ±${d.toleranceAbsolute} of ${JSON.stringify(d.expectedWeights)} (up to ${d.maxAttempts} attempts)`,
          async () => {
            const m = await prepared();
            const from = clientPod(m, d.client);
            const call = parseClientArgs(resolveArgs(m, scenario, d.echoClientArgs));
            const grpc = call.url.startsWith('grpc://');
            const attempts: string[] = [];
            for (let attempt = 1; attempt <= d.maxAttempts; attempt++) {
              try {
                const r = await m.call(from, call);
                const outcome = checkDistribution(d, r.responses);
                const problems = [...outcome.problems];
                // The batch itself must have had the upstream shape: one connection per HTTP request, one for all gRPC requests.
                const wantConnections = grpc ? 1 : d.requestsPerAttempt;
                if (r.connections !== wantConnections) problems.push(`the batch used ${r.connections} connections, want ${wantConnections}`);
                if (problems.length === 0) return;
                attempts.push(`attempt ${attempt}: ${JSON.stringify(outcome.counts)}: ${problems.join('; ')}`);
              } catch (err) {
                attempts.push(`attempt ${attempt}: ${(err as Error).message}`);
              }
            }
            throw new Error(`no attempt had the expected distribution:\n${attempts.join('\n')}`);
          },
          d.maxAttempts * 7_000 + 60_000,
        );
      }
    });
  }
}

/** Waits until the sentinel route (written after the consumer route) is in effect: the waypoint has read the directory with both. */
async function awaitSentinel(mesh: Mesh, rules: ConvergenceRules): Promise<void> {
  await mesh.apply(SENTINEL.name, [SENTINEL_YAML]);
  const from = mesh.pod(MESH_NAMESPACE, 'app=echo,version=v1');
  const probe: ScenarioCase = {
    index: 0,
    name: 'sentinel',
    client: { var: 'client', namespace: MESH_NAMESPACE, selector: 'app=echo,version=v1' },
    request: { protocol: 'http', url: 'http://echo-v2:8080', headers: {}, connectTo: { kind: 'service', port: 8080 }, echoClientArgs: ['client', 'http://echo-v2:8080'] },
    expected: {
      statusCodes: [200],
      backendPodPrefix: 'echo-v2',
      requestHeaders: null,
      absentRequestHeaders: [],
      responseHeaders: { [SENTINEL.header]: SENTINEL.value },
      absentResponseHeaders: [],
    },
  };
  await awaitConvergence({ ...rules, requiredConsecutiveSuccesses: 1 }, () => tryOnce('sentinel', probe, () => mesh.call(from, { url: 'http://echo-v2:8080' })));
}
