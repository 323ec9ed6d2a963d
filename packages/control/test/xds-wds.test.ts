/**
 * WDS handlers: decode each resource through the injected translator, apply
 * the accepted ones plus removals in one store call, report the rest.
 */
import { create } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import type { Any } from '@bufbuild/protobuf/wkt';
import type { PackedResource } from '../src/xds/type-urls.js';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import type { Authorization } from '../src/model/authorization.js';
import type { Workload } from '../src/model/workload.js';
import { fail, ok, rejection } from '../src/result.js';
import type { Result } from '../src/result.js';
import type { AddressResource, AddressUpdate, PolicyUpdate } from '../src/store/types.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { DeltaXdsClient } from '../src/xds/delta-client.js';
import type { XdsResource } from '../src/xds/delta-client.js';
import { buildNode } from '../src/xds/node.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/xds/type-urls.js';
import { createWdsHandlers } from '../src/xds/wds.js';
import type { WdsStore } from '../src/xds/wds.js';
import { ScriptedAdsServer, resource } from './xds-scripted-server.js';

const text = new TextEncoder();
const untext = new TextDecoder();

/** Test payloads carry a label; "bad:<field>:<reason>" makes the fake translator reject it, "throw" makes it throw. */
function packed(typeUrl: string, label: string): Any {
  return create(AnySchema, { typeUrl, value: text.encode(label) });
}

function fakeDecode<T>(make: (label: string) => T): (any: PackedResource) => Result<T> {
  return (any) => {
    const label = untext.decode(any.value);
    if (label === 'throw') throw new Error('translator bug');
    if (label.startsWith('bad:')) {
      const [, field = '', reason = ''] = label.split(':');
      return fail(rejection(field, reason), rejection('second', 'also wrong'));
    }
    return ok(make(label));
  };
}

const decodeAddress = fakeDecode<AddressResource>((label) => ({
  kind: 'workload',
  workload: { uid: label } as unknown as Workload,
}));
const decodeAuthorization = fakeDecode<Authorization>((label) => ({ name: label }) as unknown as Authorization);

class FakeStore implements WdsStore {
  readonly addressUpdates: AddressUpdate[] = [];
  readonly policyUpdates: PolicyUpdate[] = [];
  applyAddresses(update: AddressUpdate): unknown {
    this.addressUpdates.push(update);
    return { workloads: new Set(), services: new Set(), policies: new Set() };
  }
  applyPolicies(update: PolicyUpdate): unknown {
    this.policyUpdates.push(update);
    return undefined;
  }
}

function res(name: string, label: string | undefined, typeUrl = ADDRESS_TYPE_URL): XdsResource {
  return { name, version: 'v1', resource: label === undefined ? undefined : packed(typeUrl, label) };
}

describe('createWdsHandlers', () => {
  it('declares the two WDS types; Address on demand only when asked, Authorization never', () => {
    const store = new FakeStore();
    const wildcard = createWdsHandlers({ store, decodeAddress, decodeAuthorization });
    expect(wildcard.address.typeUrl).toBe('type.googleapis.com/istio.workload.Address');
    expect(wildcard.authorization.typeUrl).toBe('type.googleapis.com/istio.security.Authorization');
    expect(wildcard.address.onDemand).toBe(false);
    const onDemand = createWdsHandlers({ store, decodeAddress, decodeAuthorization, onDemandAddresses: true });
    expect(onDemand.address.onDemand).toBe(true);
    expect(onDemand.authorization.onDemand).toBe(false);
  });

  it('applies good addresses and removals in one store call and rejects each bad one with its reasons', async () => {
    const store = new FakeStore();
    const { address } = createWdsHandlers({ store, decodeAddress, decodeAuthorization });
    const out = await address.handle(
      [
        res('default/a', 'uid-a'),
        res('default/bad', 'bad:addresses[0]:must be 4 or 16 bytes, got 5'),
        res('default/empty', undefined),
        res('default/throws', 'throw'),
        res('default/b', 'uid-b'),
      ],
      ['default/old', 'ns/svc.ns.svc.cluster.local'],
    );
    expect(store.addressUpdates).toHaveLength(1);
    expect(store.addressUpdates[0]).toEqual({
      upserts: [
        { name: 'default/a', resource: { kind: 'workload', workload: { uid: 'uid-a' } } },
        { name: 'default/b', resource: { kind: 'workload', workload: { uid: 'uid-b' } } },
      ],
      removals: ['default/old', 'ns/svc.ns.svc.cluster.local'],
    });
    expect(out.rejected).toEqual([
      { name: 'default/bad', reason: 'addresses[0]: must be 4 or 16 bytes, got 5; second: also wrong' },
      { name: 'default/empty', reason: 'resource: missing, expected a packed resource' },
      { name: 'default/throws', reason: 'translator failed: translator bug' },
    ]);
    expect(store.policyUpdates).toEqual([]);
  });

  it('applies policies and removals in one store call', async () => {
    const store = new FakeStore();
    const { authorization } = createWdsHandlers({ store, decodeAddress, decodeAuthorization });
    const out = await authorization.handle(
      [res('ns/allow', 'allow', AUTHORIZATION_TYPE_URL), res('ns/bad', 'bad:rules[0]:unknown match', AUTHORIZATION_TYPE_URL)],
      ['ns/gone'],
    );
    expect(store.policyUpdates).toEqual([
      { upserts: [{ name: 'ns/allow', policy: { name: 'allow' } }], removals: ['ns/gone'] },
    ]);
    expect(out.rejected).toEqual([{ name: 'ns/bad', reason: 'rules[0]: unknown match; second: also wrong' }]);
    expect(store.addressUpdates).toEqual([]);
  });

  it('waits for an asynchronous store and lets its failure propagate (nothing applied)', async () => {
    let release: () => void = () => undefined;
    const store: WdsStore = {
      applyAddresses: () => new Promise<void>((r) => (release = r)),
      applyPolicies: () => Promise.reject(new Error('store closed')),
    };
    const { address, authorization } = createWdsHandlers({ store, decodeAddress, decodeAuthorization });
    let done = false;
    const p = address.handle([res('a', 'a')], []).then(() => (done = true));
    await new Promise((r) => setImmediate(r));
    expect(done).toBe(false);
    release();
    await p;
    expect(done).toBe(true);
    await expect(authorization.handle([], ['x'])).rejects.toThrow('store closed');
  });
});

describe('WDS over the delta client', () => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  it('NACKs a bad Address by name while the good one reaches the store, then is ready', async () => {
    const server = await ScriptedAdsServer.start();
    cleanups.push(() => server.close());
    const store = new FakeStore();
    const handlers = createWdsHandlers({ store, decodeAddress, decodeAuthorization });
    const node = buildNode({ nodeType: 'ztunnel', env: {} });
    if (!node.ok) throw new Error('node');
    const client = new DeltaXdsClient({
      target: server.target,
      credentials: grpc.credentials.createInsecure(),
      callMetadata: () => new grpc.Metadata(),
      node: node.value,
      handlers: [handlers.address, handlers.authorization],
      clock: new ManualClock(),
      log: pino({ level: 'silent' }),
    });
    cleanups.push(() => client.close());
    client.start();
    const stream = await server.nextStream();
    await stream.nextRequest();
    await stream.nextRequest();

    const n1 = stream.send(ADDRESS_TYPE_URL, [
      resource('default/good', '1', packed(ADDRESS_TYPE_URL, 'uid-good')),
      resource('default/bad', '1', packed(ADDRESS_TYPE_URL, 'bad:uid:must not be empty')),
    ]);
    const nack = await stream.expectNack(ADDRESS_TYPE_URL, n1);
    expect(nack.message).toBe('default/bad: uid: must not be empty; second: also wrong');
    expect(store.addressUpdates.map((u) => u.upserts.map((x) => x.name))).toEqual([['default/good']]);

    const n2 = stream.send(ADDRESS_TYPE_URL, [resource('default/bad', '2', packed(ADDRESS_TYPE_URL, 'uid-fixed'))]);
    await stream.expectAck(ADDRESS_TYPE_URL, n2);
    const n3 = stream.send(AUTHORIZATION_TYPE_URL, [resource('ns/p', '1', packed(AUTHORIZATION_TYPE_URL, 'p'))]);
    await stream.expectAck(AUTHORIZATION_TYPE_URL, n3);
    await client.ready;
    expect(store.policyUpdates).toEqual([{ upserts: [{ name: 'ns/p', policy: { name: 'p' } }], removals: [] }]);
  });
});
