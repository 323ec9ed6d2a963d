/**
 * The last phase every proxy path shares: relay bytes both ways, count them
 * into the connection's metrics, and record how the connection ended.
 *
 * Like ztunnel's copy.rs, a peer resetting or closing is an ordinary end of a
 * TCP conversation (NotConnected, UnexpectedEof, ConnectionReset and
 * BrokenPipe are ignored there), not a proxy failure; only other errors count
 * as failed. A connection the connection manager closed (policy change,
 * drain) is recorded with the reason it was given (e.g. DENY).
 */
import type { Duplex } from 'node:stream';
import type { Clock } from '@ambient/control';
import { ProxyError } from '@ambient/dataplane';
import { proxyBidirectional, type CopyResult } from '@ambient/dataplane';
import type { ConnectionResult } from '../metrics/connection-result.js';

function copyOutcome(copied: CopyResult): ProxyError | undefined {
  const e = copied.error;
  if (e === undefined || e.kind === 'reset' || e.kind === 'closed') return undefined;
  return new ProxyError('INTERNAL', `relay failed on side ${e.side}: ${e.message}`, { cause: e.cause });
}

/** Relays `downstream` ↔ `upstream` until both end; records the result once. Never rejects. */
export async function relayAndRecord(
  downstream: Duplex,
  upstream: Duplex,
  result: ConnectionResult,
  abort: AbortSignal,
  clock: Clock,
): Promise<void> {
  const copied = await proxyBidirectional(downstream, upstream, {
    clock,
    signal: abort,
    onBytes: (direction, n) => (direction === 'received' ? result.addReceived(n) : result.addSent(n)),
  });
  if (abort.aborted && abort.reason instanceof ProxyError) result.record(abort.reason);
  else result.record(copyOutcome(copied));
}
