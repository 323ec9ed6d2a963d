/**
 * End-to-end WDS apply benchmark: what a ztunnel does with istiod's full push.
 *
 * For N = 10k and 100k workloads (each backing one of N/10 services), starting
 * from the encoded DeltaDiscoveryResponse bytes as they arrive on the wire:
 * - the client's path: scan the outer message (the gRPC deserializer), decode
 *   the resources in slices, then decode + translate every Address and apply
 *   the batch to the store through the real WDS handler;
 * - total time, the longest event-loop block (the outer scan counts: it
 *   cannot be sliced), and retained heap per workload;
 * - baseline in the same run: decoding the same bytes into protobuf messages
 *   only (what any protobuf-based client pays at minimum).
 *
 * Run: `npm run bench -w @ambient/control`.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { anyPack } from '@bufbuild/protobuf/wkt';
import { performance } from 'node:perf_hooks';
import {
  DeltaDiscoveryResponseSchema,
  ResourceSchema,
} from '../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { AddressSchema, type Address } from '../src/gen/istio/workload/workload_pb.js';
import { systemClock } from '../src/platform/clock.js';
import { Store } from '../src/store/index.js';
import { service, workload } from '../src/testing/builders.js';
import { decodeAddressResource } from '../src/translate/address.js';
import { decodeAuthorizationResource } from '../src/translate/authorization.js';
import { ADDRESS_TYPE_URL } from '../src/xds/type-urls.js';
import { createWdsHandlers } from '../src/xds/wds.js';
import { decodeResources, scanDeltaResponse } from '../src/xds/scanned-response.js';
import { Slicer } from '../src/platform/slicer.js';
import { f, heap, median, watchEventLoop } from './measure.js';

const SIZES = (process.env["BENCH_SIZES"] ?? "10000,100000").split(",").map(Number);
const REPEATS = 3;

function encodedPush(n: number): Uint8Array {
  const resources = [];
  const services = Math.max(1, Math.floor(n / 10));
  for (let i = 0; i < services; i++) {
    const ns = `ns-${i % 200}`;
    const s = service({
      name: `svc-${i}`,
      namespace: ns,
      vips: [`10.96.${(i >> 8) & 255}.${i & 255}`],
      ports: { 80: 8080 },
    });
    const address: Address = create(AddressSchema, { type: { case: 'service', value: s } });
    resources.push(create(ResourceSchema, { name: `${ns}/${s.hostname}`, version: 'v1', resource: anyPack(AddressSchema, address) }));
  }
  for (let i = 0; i < n; i++) {
    const svc = i % services;
    const ns = `ns-${svc % 200}`;
    const w = workload({
      name: `app-${i}-7d9f8c6b5-x2x9z`,
      namespace: ns,
      serviceAccount: `sa-${svc}`,
      ips: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`],
      node: `node-${i % 50}`,
      canonicalName: `app-${svc}`,
      canonicalRevision: 'v1',
      workloadName: `app-${svc}`,
      services: { [`${ns}/svc-${svc}.${ns}.svc.cluster.local`]: { 80: 8080 } },
    });
    const address: Address = create(AddressSchema, { type: { case: 'workload', value: w } });
    resources.push(create(ResourceSchema, { name: w.uid, version: 'v1', resource: anyPack(AddressSchema, address) }));
  }
  return toBinary(DeltaDiscoveryResponseSchema, create(DeltaDiscoveryResponseSchema, { typeUrl: ADDRESS_TYPE_URL, nonce: 'n1', resources }));
}

/** Baseline: protobuf decode of every resource and nothing else (its garbage is dropped before heap is measured). */
function decodeOnly(bytes: Uint8Array): number {
  const t = performance.now();
  const msg = fromBinary(DeltaDiscoveryResponseSchema, bytes);
  for (const res of msg.resources) if (res.resource) fromBinary(AddressSchema, res.resource.value);
  return performance.now() - t;
}

/** One apply into a fresh store; the store is measured while alive and dropped on return. */
async function runOnce(bytes: Uint8Array, n: number): Promise<{ ms: number; blockMs: number; outerMs: number; retained: number }> {
  const before = heap();
  const store = new Store({ clock: systemClock });
  const handlers = createWdsHandlers({ store, decodeAddress: decodeAddressResource, decodeAuthorization: decodeAuthorizationResource, clock: systemClock });
  let outerMs = 0;
  const watched = await watchEventLoop(async () => {
    // Exactly the client's path: scan in the gRPC deserializer, decode resources in slices, hand to the WDS handler.
    const t = performance.now();
    const response = scanDeltaResponse(bytes);
    outerMs = performance.now() - t;
    const decoded = await decodeResources(response, new Slicer(systemClock));
    if (!decoded.ok) throw new Error(decoded.reason);
    const result = await handlers.address.handle(decoded.value.resources, []);
    if (result.rejected.length > 0) throw new Error(`unexpected rejections: ${result.rejected[0]?.reason}`);
  });
  const after = heap();
  const retained = after - before;
  if (process.env["BENCH_DEBUG"]) console.log(`heap before ${f(before / 1e6)} MB after ${f(after / 1e6)} MB`);
  if (store.snapshot().counts().workloads !== n) throw new Error('store is missing workloads');
  return { ms: watched.ms, blockMs: Math.max(watched.tickerMaxMs, outerMs), outerMs, retained };
}

async function benchSize(n: number): Promise<void> {
  const bytes = encodedPush(n);
  console.log(`\nN = ${n.toLocaleString('en-US')} workloads, ${Math.floor(n / 10).toLocaleString('en-US')} services: push of ${f(bytes.length / 1e6)} MB (${f(bytes.length / (n * 1.1), 0)} B/resource), median of ${REPEATS} runs`);
  const total: number[] = [];
  const block: number[] = [];
  const outer: number[] = [];
  const perWorkload: number[] = [];
  const baseline: number[] = [];
  for (let r = 0; r < REPEATS; r++) {
    // Baseline: protobuf decode of everything, nothing else.
    baseline.push(decodeOnly(bytes));

    const once = await runOnce(bytes, n);
    total.push(once.ms);
    block.push(once.blockMs);
    outer.push(once.outerMs);
    perWorkload.push(once.retained / n);
  }
  const row = (label: string, value: string) => console.log(`  ${label.padEnd(52)} ${value}`);
  row('wire bytes -> store: total time', `${f(median(total))} ms  (${f((median(total) * 1000) / n, 2)} µs/workload)  target < 2000 ms at 100k`);
  row('longest event-loop block', `${f(median(block))} ms (worst run ${f(Math.max(...block))})  target < 50 ms`);
  row('  of which the outer response scan (unsliceable)', `${f(median(outer))} ms`);
  row('retained heap (store + model objects)', `${f(median(perWorkload), 0)} B/workload  target < 1536 B`);
  row('baseline: protobuf decode only, no translation/store', `${f(median(baseline))} ms  ratio ${f(median(total) / median(baseline), 2)}x`);
}

console.log(`WDS end-to-end apply benchmark, node ${process.version}, ${process.arch}`);
for (const n of SIZES) await benchSize(n);
