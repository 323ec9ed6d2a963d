/**
 * The istio-cni node agent's side of ZDS (istio.workload.zds): encoding the
 * requests it sends and decoding ztunnel's hello and acks. ztunnel never
 * needs this; the e2e suite's node agent fake and the in-pod tests do, and
 * they get it from the same generated messages as ztunnel's side, so both
 * ends agree on field numbers by construction.
 */
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import { WorkloadRequestSchema, WorkloadResponseSchema, ZdsHelloSchema } from '../gen/istio/workload/zds/zds_pb.js';
import { fail, ok, rejection, type Result } from '../result.js';
import type { ZdsWorkloadInfo } from './codec.js';

export type ZdsNodeAgentRequest =
  | { readonly kind: 'add'; readonly uid: string; readonly info?: ZdsWorkloadInfo }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshot-sent' };

/** One WorkloadRequest packet (the netns fd of an Add travels beside it as SCM_RIGHTS). */
export function encodeZdsRequest(req: ZdsNodeAgentRequest): Uint8Array {
  const payload = ((): NonNullable<MessageInitShape<typeof WorkloadRequestSchema>['payload']> => {
    switch (req.kind) {
      case 'add':
        return { case: 'add', value: { uid: req.uid, ...(req.info === undefined ? {} : { workloadInfo: { ...req.info } }) } };
      case 'keep':
        return { case: 'keep', value: { uid: req.uid } };
      case 'del':
        return { case: 'del', value: { uid: req.uid } };
      case 'snapshot-sent':
        return { case: 'snapshotSent', value: {} };
    }
  })();
  return toBinary(WorkloadRequestSchema, create(WorkloadRequestSchema, { payload }));
}

/** ztunnel's answer to one request: `error` is empty for an Ack, the reason for a NACK. */
export function decodeZdsResponse(bytes: Uint8Array): Result<{ readonly error: string }> {
  try {
    const msg = fromBinary(WorkloadResponseSchema, bytes);
    if (msg.payload.case !== 'ack') return fail(rejection('payload', 'expected an Ack'));
    return ok({ error: msg.payload.value.error });
  } catch (err) {
    return fail(rejection('packet', `not a WorkloadResponse: ${err instanceof Error ? err.message : String(err)}`));
  }
}

/** ztunnel's first packet: ZdsHello { version }. */
export function decodeZdsHello(bytes: Uint8Array): Result<{ readonly version: number }> {
  try {
    return ok({ version: fromBinary(ZdsHelloSchema, bytes).version });
  } catch (err) {
    return fail(rejection('packet', `not a ZdsHello: ${err instanceof Error ? err.message : String(err)}`));
  }
}
