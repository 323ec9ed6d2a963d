/**
 * Store benchmark: applying istiod-sized Address pushes.
 *
 * For N = 10k and 100k workloads (each backing one of N/10 services, fields
 * shaped like istiod's), it measures:
 * - apply time of the whole push, and the longest event-loop block while it
 *   runs (a setImmediate ticker, and perf_hooks' event-loop delay histogram);
 * - retained heap per workload (gc before and after) for the input objects,
 *   for the store's indexes, and for a baseline native Map uid → workload;
 * - a re-push of every workload (what a reconnect without versions costs);
 * - single-workload incremental updates (median and p99);
 * - lookup costs.
 * The baseline is measured in the same run so ratios mean something on a
 * noisy 2-core machine.
 *
 * Run: `npm run bench -w @ambient/control` (compiles with tsc, runs with --expose-gc).
 */
import { performance } from 'node:perf_hooks';
import type { Service } from '../src/model/service.js';
import type { Workload } from '../src/model/workload.js';
import { Store, type AddressUpdate } from '../src/store/index.js';
import { f, heap, median, pct, watchEventLoop } from './measure.js';

const SIZES = [10_000, 100_000];
const REPEATS = 3;
const SINGLE_UPDATES = 300;


// protobuf-es decodes every string field into a fresh string; do the same so
// the heap numbers are not flattered by V8 sharing literal strings.
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const fresh = (s: string): string => decoder.decode(encoder.encode(s));

function makeService(i: number): Service {
  const ns = `ns-${i % 200}`;
  const hostname = `svc-${i}.${ns}.svc.cluster.local`;
  return {
    name: fresh(`svc-${i}`),
    namespace: fresh(ns),
    hostname: fresh(hostname),
    vips: [{ network: fresh(''), address: fresh(`10.96.${(i >> 8) & 255}.${i & 255}`) }],
    cidrVips: [],
    ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }],
    subjectAltNames: [],
    waypoint: undefined,
    weightedWaypoints: [],
    loadBalancing: undefined,
    ipFamilies: 'IPv4',
    canonical: true,
    ingressUseWaypoint: false,
    visibility: 'Public',
  };
}

// What a translator that interns low-cardinality strings (namespace, node,
// service account, trust domain, ...) would hand over instead; measured for
// comparison only.
const internTable = new Map<string, string>();
const interned = (s: string): string => {
  const known = internTable.get(s);
  if (known !== undefined) return known;
  internTable.set(s, s);
  return s;
};

function makeWorkload(i: number, generation = 0, low: (s: string) => string = fresh): Workload {
  const svc = Math.floor(i / 10);
  const ns = `ns-${svc % 200}`;
  const app = `app-${svc}`;
  const name = `${app}-7d9f8b6c5d-${(i * 7919).toString(36).padStart(5, 'x').slice(-5)}`;
  return {
    uid: fresh(`Kubernetes//Pod/${ns}/${name}`),
    name: fresh(name),
    namespace: low(ns),
    addresses: [fresh(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`)],
    hostname: low(''),
    network: low(''),
    protocol: 'HBONE',
    identity: { trustDomain: low('cluster.local'), namespace: low(ns), serviceAccount: low(`${app}-sa`) },
    waypoint: undefined,
    networkGateway: undefined,
    node: low(`gke-prod-pool-1-9c2d4f1e-${(i % 50).toString().padStart(4, '0')}`),
    canonicalName: low(app),
    canonicalRevision: low(generation === 0 ? 'v1' : `v${generation + 1}`),
    workloadType: 'deployment',
    workloadName: low(app),
    nativeTunnel: false,
    applicationTunnel: undefined,
    services: [
      {
        key: low(`${ns}/svc-${svc}.${ns}.svc.cluster.local`),
        ports: [{ servicePort: 80, targetPort: 8080, appProtocol: 'HTTP11' }],
      },
    ],
    authorizationPolicies: [],
    status: 'Healthy',
    clusterId: low('Kubernetes'),
    locality: { region: low('us-central1'), zone: low(`us-central1-${'abc'[i % 3]}`), subzone: low('') },
    networkMode: 'Standard',
    capacity: 1,
  };
}

function pushFor(workloads: readonly Workload[], services: readonly Service[]): AddressUpdate {
  return {
    upserts: [
      ...services.map((service) => ({ name: `${service.namespace}/${service.hostname}`, resource: { kind: 'service' as const, service } })),
      ...workloads.map((workload) => ({ name: workload.uid, resource: { kind: 'workload' as const, workload } })),
    ],
    removals: [],
  };
}



async function benchSize(n: number): Promise<void> {
  const nServices = n / 10;
  const h0 = heap();
  const services = Array.from({ length: nServices }, (_, i) => makeService(i));
  const workloads = Array.from({ length: n }, (_, i) => makeWorkload(i));
  const objectBytes = (heap() - h0) / n;
  const push = pushFor(workloads, services);
  const h1 = heap();
  const internedWorkloads = Array.from({ length: n }, (_, i) => makeWorkload(i, 0, interned));
  const internedBytes = (heap() - h1) / n;
  internedWorkloads.length = 0;
  internTable.clear();

  // Baseline: the same workloads into a native Map (synchronously, one block).
  // Every map and store built stays referenced until its size has been
  // measured: a dead one still held in a register would make the next
  // "before" reading include it.
  const baseline: { ms: number; bytes: number }[] = [];
  const maps: Map<string, Workload>[] = [];
  for (let r = 0; r < REPEATS; r++) {
    const before = heap();
    const t = performance.now();
    const map = new Map<string, Workload>();
    for (const w of workloads) map.set(w.uid, w);
    const ms = performance.now() - t;
    maps.push(map);
    baseline.push({ ms, bytes: (heap() - before) / n });
  }
  maps.length = 0;

  // The store's own slices (wall time between its yields) are measured
  // through the yield hook; the ticker and histogram see every block,
  // including GC pauses and time the OS gave to other processes.
  const applies: { ms: number; ticker: number; hist: number; slice: number }[] = [];
  let storeBytes = NaN;
  let store = new Store();
  for (let r = 0; r < REPEATS; r++) {
    const slices: number[] = [];
    let sliceStart = performance.now();
    const yieldToEventLoop = () =>
      new Promise<void>((resolve) => {
        slices.push(performance.now() - sliceStart);
        setImmediate(() => {
          sliceStart = performance.now();
          resolve();
        });
      });
    const fresh = new Store({ localNode: 'gke-prod-pool-1-9c2d4f1e-0000', yieldToEventLoop });
    // Heap is measured on the first run only, when no earlier store exists
    // that a stale register could keep alive through the "before" reading.
    const before = r === 0 ? heap() : 0;
    const run = await watchEventLoop(async () => {
      sliceStart = performance.now();
      await fresh.applyAddresses(push);
      slices.push(performance.now() - sliceStart);
    });
    if (r === 0) storeBytes = (heap() - before) / n;
    applies.push({ ms: run.ms, ticker: run.tickerMaxMs, hist: run.histogramMaxMs, slice: Math.max(...slices) });
    const counts = fresh.snapshot().counts();
    if (counts.workloads !== n || counts.services !== nServices || counts.stagedServices !== 0) throw new Error('store counts');
    store = fresh;
  }

  // Re-push of every workload on a full store (new objects, same keys).
  const repush = pushFor(Array.from({ length: n }, (_, i) => makeWorkload(i, 1)), []);
  const re = await watchEventLoop(() => store.applyAddresses(repush));

  // Single-workload updates on the full store, once the re-push's garbage is collected.
  heap();
  const singles: number[] = [];
  for (let k = 0; k < SINGLE_UPDATES; k++) {
    const i = (k * 7_919) % n;
    const workload = makeWorkload(i, k + 2);
    const update: AddressUpdate = { upserts: [{ name: workload.uid, resource: { kind: 'workload', workload } }], removals: [] };
    const t = performance.now();
    await store.applyAddresses(update);
    singles.push(performance.now() - t);
  }

  // Lookups on the final snapshot.
  const snap = store.snapshot();
  const LOOKUPS = 200_000;
  let hits = 0;
  let t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    const i = (k * 7_919) % n;
    if (snap.workloadByAddress('', `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`) !== undefined) hits++;
  }
  const byIpNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  const nativeByIp = new Map<string, Workload>();
  for (const w of snap.workloads()) nativeByIp.set(w.addresses[0] ?? '', w);
  t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    const i = (k * 7_919) % n;
    if (nativeByIp.get(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`) !== undefined) hits++;
  }
  const nativeByIpNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    const i = (k * 7_919) % nServices;
    if (snap.serviceByVip('', `10.96.${(i >> 8) & 255}.${i & 255}`, 'ns-0') !== undefined) hits++;
  }
  const byVipNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  t = performance.now();
  for (let k = 0; k < LOOKUPS; k++) {
    const i = (k * 7_919) % nServices;
    const ns = `ns-${i % 200}`;
    hits += snap.endpoints(`${ns}/svc-${i}.${ns}.svc.cluster.local`).length;
  }
  const endpointsNs = ((performance.now() - t) * 1e6) / LOOKUPS;
  if (hits === 0) throw new Error('lookups found nothing');

  const a = {
    ms: median(applies.map((x) => x.ms)),
    ticker: median(applies.map((x) => x.ticker)),
    tickerMax: Math.max(...applies.map((x) => x.ticker)),
    hist: median(applies.map((x) => x.hist)),
    slice: median(applies.map((x) => x.slice)),
    sliceMax: Math.max(...applies.map((x) => x.slice)),
    bytes: storeBytes,
  };
  const b = { ms: median(baseline.map((x) => x.ms)), bytes: median(baseline.map((x) => x.bytes)) };
  const line = (label: string, value: string) => console.log(`  ${label.padEnd(52)} ${value}`);
  console.log(`\nN = ${n.toLocaleString('en')} workloads, ${nServices.toLocaleString('en')} services (median of ${REPEATS} runs)`);
  line('input objects (workload + its share of services)', `${f(objectBytes, 0)} B/workload`);
  line('  same workloads with low-cardinality strings interned', `${f(internedBytes, 0)} B/workload (translator option)`);
  line('apply full push: time', `${f(a.ms)} ms  (${f((a.ms * 1000) / n, 2)} µs/workload)`);
  line('apply full push: longest event-loop block', `${f(a.ticker)} ms ticker (worst run ${f(a.tickerMax)}), ${f(a.hist)} ms histogram`);
  line('apply full push: longest slice of store code', `${f(a.slice)} ms (worst run ${f(a.sliceMax)})`);
  line('apply full push: store heap (indexes only)', `${f(a.bytes, 0)} B/workload`);
  line('apply full push: store + input objects', `${f(a.bytes + objectBytes, 0)} B/workload`);
  line('baseline native Map uid->workload: time', `${f(b.ms)} ms (one block)  ratio store/baseline ${f(a.ms / b.ms, 1)}x`);
  line('baseline native Map uid->workload: heap', `${f(b.bytes, 0)} B/workload  ratio ${f(a.bytes / b.bytes, 1)}x`);
  line('re-push every workload on a full store: time', `${f(re.ms)} ms, block ${f(re.tickerMaxMs)} ms ticker / ${f(re.histogramMaxMs)} ms histogram`);
  line('single-workload update: median / p99 / max', `${f(median(singles) * 1000, 0)} / ${f(pct(singles, 0.99) * 1000, 0)} / ${f(Math.max(...singles) * 1000, 0)} µs`);
  line('lookup workloadByAddress / serviceByVip / endpoints', `${f(byIpNs, 0)} / ${f(byVipNs, 0)} / ${f(endpointsNs, 0)} ns (incl. building the key)`);
  line('baseline native Map get by IP', `${f(nativeByIpNs, 0)} ns  ratio workloadByAddress/baseline ${f(byIpNs / nativeByIpNs, 1)}x`);
}

console.log(`store benchmark, node ${process.version}, ${process.arch}`);
for (const n of SIZES) await benchSize(n);
