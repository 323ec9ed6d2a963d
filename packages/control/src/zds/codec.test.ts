import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Version, WorkloadRequestSchema, WorkloadResponseSchema, ZdsHelloSchema } from '../gen/istio/workload/zds/zds_pb.js';
import { formatRejections } from '../result.js';
import { decodeZdsRequest, encodeZdsAck, encodeZdsHello } from './codec.js';

const req = (payload: Parameters<typeof create<typeof WorkloadRequestSchema>>[1]) => toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, payload));
const add = req({ payload: { case: 'add', value: { uid: 'pod-uid-1', workloadInfo: { name: 'cart-0', namespace: 'shop', serviceAccount: 'cart' } } } });
const errorsOf = (r: ReturnType<typeof decodeZdsRequest>) => (r.ok ? '' : formatRejections(r.errors));

describe('ZDS codec', () => {
  it('decodes Add with its one netns fd, Keep, Del and SnapshotSent', () => {
    expect(decodeZdsRequest({ bytes: add, fds: [7] }, false)).toEqual({
      ok: true,
      value: { kind: 'add', uid: 'pod-uid-1', info: { name: 'cart-0', namespace: 'shop', serviceAccount: 'cart' }, netnsFd: 7 },
    });
    expect(decodeZdsRequest({ bytes: req({ payload: { case: 'keep', value: { uid: 'u' } } }), fds: [] }, false)).toEqual({ ok: true, value: { kind: 'keep', uid: 'u' } });
    expect(decodeZdsRequest({ bytes: req({ payload: { case: 'del', value: { uid: 'u' } } }), fds: [] }, true)).toEqual({ ok: true, value: { kind: 'del', uid: 'u' } });
    expect(decodeZdsRequest({ bytes: req({ payload: { case: 'snapshotSent', value: {} } }), fds: [] }, false)).toEqual({ ok: true, value: { kind: 'snapshot-sent' } });
  });

  it.each([
    ['Add without fd', { bytes: add, fds: [] }, false, /exactly one network namespace fd, got 0/],
    ['Add with two fds', { bytes: add, fds: [3, 4] }, false, /exactly one network namespace fd, got 2/],
    ['Add without workload info', { bytes: req({ payload: { case: 'add', value: { uid: 'u' } } }), fds: [3] }, false, /workloadInfo: is required/],
    ['Del with an fd', { bytes: req({ payload: { case: 'del', value: { uid: 'u' } } }), fds: [3] }, true, /Del must not carry file descriptors/],
    ['Keep after SnapshotSent', { bytes: req({ payload: { case: 'keep', value: { uid: 'u' } } }), fds: [] }, true, /only valid before SnapshotSent/],
    ['an empty payload', { bytes: new Uint8Array(0), fds: [] }, false, /empty or unknown WorkloadRequest payload/],
    ['garbage bytes', { bytes: Uint8Array.from([0xff, 0xff, 0xff]), fds: [] }, false, /not a WorkloadRequest/],
    ['a truncated packet', { bytes: add, fds: [3], truncated: true }, false, /truncated/],
  ])('refuses %s with a reason', (_name, packet, snapshotSent, reason) => {
    const r = decodeZdsRequest(packet, snapshotSent);
    expect(r.ok).toBe(false);
    expect(errorsOf(r)).toMatch(reason);
  });

  it('never throws on arbitrary packets', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1100 }), fc.array(fc.nat(100), { maxLength: 3 }), fc.boolean(), (bytes, fds, sent) => {
        decodeZdsRequest({ bytes, fds }, sent);
      }),
    );
  });

  it('encodes the hello (V1) and acks with or without an error', () => {
    expect(fromBinary(ZdsHelloSchema, encodeZdsHello()).version).toBe(Version.V1);
    const ok = fromBinary(WorkloadResponseSchema, encodeZdsAck());
    expect(ok.payload).toMatchObject({ case: 'ack', value: { error: '' } });
    const nack = fromBinary(WorkloadResponseSchema, encodeZdsAck('Add must carry exactly one network namespace fd'));
    expect(nack.payload).toMatchObject({ case: 'ack', value: { error: 'Add must carry exactly one network namespace fd' } });
  });
});
