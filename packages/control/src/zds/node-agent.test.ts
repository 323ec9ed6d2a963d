import { describe, expect, it } from 'vitest';
import { decodeZdsRequest, encodeZdsAck, encodeZdsHello } from './codec.js';
import { decodeZdsHello, decodeZdsResponse, encodeZdsRequest } from './node-agent.js';

describe("the node agent's side of ZDS", () => {
  it('encodes requests that ztunnel decodes back to the same meaning', () => {
    const info = { name: 'p', namespace: 'ns', serviceAccount: 'sa' };
    expect(decodeZdsRequest({ bytes: encodeZdsRequest({ kind: 'add', uid: 'u1', info }), fds: [7] }, false)).toEqual({
      ok: true,
      value: { kind: 'add', uid: 'u1', info, netnsFd: 7 },
    });
    expect(decodeZdsRequest({ bytes: encodeZdsRequest({ kind: 'keep', uid: 'u2' }), fds: [] }, false)).toEqual({ ok: true, value: { kind: 'keep', uid: 'u2' } });
    expect(decodeZdsRequest({ bytes: encodeZdsRequest({ kind: 'del', uid: 'u3' }), fds: [] }, true)).toEqual({ ok: true, value: { kind: 'del', uid: 'u3' } });
    expect(decodeZdsRequest({ bytes: encodeZdsRequest({ kind: 'snapshot-sent' }), fds: [] }, false)).toEqual({ ok: true, value: { kind: 'snapshot-sent' } });
  });

  it("uses Istio's field numbers: Del's uid is field 2, Keep is payload field 5", () => {
    // WorkloadRequest.del (2) { DelWorkload.uid (2) = "x" }
    expect([...encodeZdsRequest({ kind: 'del', uid: 'x' })]).toEqual([0x12, 0x03, 0x12, 0x01, 0x78]);
    // WorkloadRequest.keep (5) { KeepWorkload.uid (1) = "x" }
    expect([...encodeZdsRequest({ kind: 'keep', uid: 'x' })]).toEqual([0x2a, 0x03, 0x0a, 0x01, 0x78]);
    // WorkloadRequest.snapshot_sent (3) {}
    expect([...encodeZdsRequest({ kind: 'snapshot-sent' })]).toEqual([0x1a, 0x00]);
  });

  it("decodes ztunnel's hello and acks, and rejects garbage", () => {
    expect(decodeZdsHello(encodeZdsHello())).toEqual({ ok: true, value: { version: 1 } });
    expect(decodeZdsResponse(encodeZdsAck(''))).toEqual({ ok: true, value: { error: '' } });
    expect(decodeZdsResponse(encodeZdsAck('no'))).toEqual({ ok: true, value: { error: 'no' } });
    expect(decodeZdsResponse(new Uint8Array([0xff, 0xff])).ok).toBe(false);
    expect(decodeZdsResponse(new Uint8Array()).ok).toBe(false);
  });
});
