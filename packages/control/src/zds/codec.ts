/**
 * The ztunnel <-> istio-cni node agent protocol (ZDS, istio.workload.zds),
 * as pure codecs: one protobuf message per SOCK_SEQPACKET packet, file
 * descriptors alongside (SCM_RIGHTS). The socket itself lives with the
 * capture code; this module only decides what a packet means and whether it
 * breaks the protocol's rules (ztunnel src/inpod/protocol.rs):
 * - an Add carries exactly one fd (the pod's network namespace) and a
 *   WorkloadInfo; any other message carries none;
 * - Keep is only valid before SnapshotSent;
 * - a truncated packet (MSG_TRUNC / MSG_CTRUNC) is an error.
 * Every violation is returned as a rejection (the caller answers with an
 * error Ack and closes any fds it received); nothing here throws.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  Version,
  WorkloadRequestSchema,
  WorkloadResponseSchema,
  ZdsHelloSchema,
} from '../gen/istio/workload/zds/zds_pb.js';
import { fail, ok, rejection, type Result } from '../result.js';

/** ztunnel reads ZDS packets into a 1024-byte buffer. */
export const ZDS_MAX_PACKET_BYTES = 1024;

export interface ZdsWorkloadInfo {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
}

export type ZdsRequest =
  | { readonly kind: 'add'; readonly uid: string; readonly info: ZdsWorkloadInfo; readonly netnsFd: number }
  | { readonly kind: 'keep'; readonly uid: string }
  | { readonly kind: 'del'; readonly uid: string }
  | { readonly kind: 'snapshot-sent' };

export interface ZdsPacket {
  readonly bytes: Uint8Array;
  /** File descriptors received with the packet (SCM_RIGHTS). */
  readonly fds: readonly number[];
  /** MSG_TRUNC or MSG_CTRUNC was set. */
  readonly truncated?: boolean;
}

/** Decodes one request packet. `snapshotSent`: whether SnapshotSent was already received on this connection. */
export function decodeZdsRequest(packet: ZdsPacket, snapshotSent: boolean): Result<ZdsRequest> {
  if (packet.truncated === true) return fail(rejection('packet', `truncated: a ZDS packet must fit in ${ZDS_MAX_PACKET_BYTES} bytes with its control data`));
  if (packet.bytes.length > ZDS_MAX_PACKET_BYTES) return fail(rejection('packet', `${packet.bytes.length} bytes is larger than the ${ZDS_MAX_PACKET_BYTES}-byte ZDS packet limit`));
  let msg;
  try {
    msg = fromBinary(WorkloadRequestSchema, packet.bytes);
  } catch (err) {
    return fail(rejection('packet', `not a WorkloadRequest: ${err instanceof Error ? err.message : String(err)}`));
  }
  const fds = packet.fds.length;
  const noFds = (what: string) => (fds === 0 ? undefined : rejection('fds', `${what} must not carry file descriptors, got ${fds}`));
  const p = msg.payload;
  switch (p.case) {
    case 'add': {
      const problems = [];
      if (fds !== 1) problems.push(rejection('fds', `Add must carry exactly one network namespace fd, got ${fds}`));
      if (p.value.uid === '') problems.push(rejection('add.uid', 'must not be empty'));
      const info = p.value.workloadInfo;
      if (info === undefined) problems.push(rejection('add.workloadInfo', 'is required'));
      else if (info.namespace === '' || info.name === '') problems.push(rejection('add.workloadInfo', 'name and namespace are required'));
      if (problems.length > 0 || info === undefined) return fail(...problems);
      return ok({
        kind: 'add',
        uid: p.value.uid,
        info: { name: info.name, namespace: info.namespace, serviceAccount: info.serviceAccount === '' ? 'default' : info.serviceAccount },
        netnsFd: packet.fds[0] as number,
      });
    }
    case 'keep': {
      const problems = [noFds('Keep')].filter((x) => x !== undefined);
      if (snapshotSent) problems.push(rejection('keep', 'Keep is only valid before SnapshotSent'));
      if (p.value.uid === '') problems.push(rejection('keep.uid', 'must not be empty'));
      return problems.length > 0 ? fail(...problems) : ok({ kind: 'keep', uid: p.value.uid });
    }
    case 'del': {
      const problems = [noFds('Del')].filter((x) => x !== undefined);
      if (p.value.uid === '') problems.push(rejection('del.uid', 'must not be empty'));
      return problems.length > 0 ? fail(...problems) : ok({ kind: 'del', uid: p.value.uid });
    }
    case 'snapshotSent': {
      const bad = noFds('SnapshotSent');
      return bad ? fail(bad) : ok({ kind: 'snapshot-sent' });
    }
    default:
      return fail(rejection('payload', 'empty or unknown WorkloadRequest payload; expected add, keep, del or snapshot_sent'));
  }
}

/** The Ack for a request: success with an empty error, or an error message (a NACK). */
export function encodeZdsAck(error = ''): Uint8Array {
  return toBinary(WorkloadResponseSchema, create(WorkloadResponseSchema, { payload: { case: 'ack', value: { error } } }));
}

/** ztunnel's first message on every connection: ZdsHello { version: V1 }. */
export function encodeZdsHello(): Uint8Array {
  return toBinary(ZdsHelloSchema, create(ZdsHelloSchema, { version: Version.V1 }));
}
