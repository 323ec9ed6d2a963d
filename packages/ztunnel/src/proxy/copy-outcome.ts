/**
 * How the end of a relayed connection is recorded. Like ztunnel's copy.rs,
 * a peer resetting or closing is an ordinary end of a TCP conversation
 * (NotConnected, UnexpectedEof, ConnectionReset and BrokenPipe are ignored
 * there), not a proxy failure; only other errors count as failed.
 */
import { ProxyError } from '../errors.js';
import type { CopyResult } from '../io/copy.js';

export function copyOutcome(copied: CopyResult): ProxyError | undefined {
  const e = copied.error;
  if (e === undefined || e.kind === 'reset' || e.kind === 'closed') return undefined;
  return new ProxyError('INTERNAL', `relay failed on side ${e.side}: ${e.message}`, { cause: e.cause });
}
