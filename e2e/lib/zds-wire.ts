/**
 * The istio-cni node agent's side of ZDS (istio.workload.zds), as the fake
 * node agent uses it: the control package's node-agent codec (built from the
 * same generated messages as ztunnel's side), in the shapes cni-agent.ts
 * works with.
 */
import { decodeZdsHello as decodeHello, decodeZdsResponse, encodeZdsRequest, formatRejections, type ZdsNodeAgentRequest, type ZdsWorkloadInfo } from '@ambient/control';

export type WorkloadInfo = ZdsWorkloadInfo;
export type WorkloadRequest = ZdsNodeAgentRequest;

export function encodeWorkloadRequest(req: WorkloadRequest): Uint8Array {
  return encodeZdsRequest(req);
}

export function decodeZdsHello(bytes: Uint8Array): { version: number } | { error: string } {
  const r = decodeHello(bytes);
  return r.ok ? { version: r.value.version } : { error: formatRejections(r.errors) };
}

/** `ack` is the Ack's error text ('' for success); `error` means the packet was not a WorkloadResponse. */
export function decodeWorkloadResponse(bytes: Uint8Array): { ack: string } | { error: string } {
  const r = decodeZdsResponse(bytes);
  return r.ok ? { ack: r.value.error } : { error: formatRejections(r.errors) };
}
