/**
 * What every proxy handler of one workload proxy shares (ztunnel's ProxyInputs),
 * narrowed to what handlers may use: lookups, sockets, time, logging, config.
 */
import type { TcpSocketOptions } from '@ambient/dataplane';
import type { Clock, Snapshot, Store, Workload } from '@ambient/control';
import type { Logger } from 'pino';
import type { SocketFactory } from '@ambient/dataplane';

export interface InboundContext {
  readonly store: Pick<Store, 'snapshot' | 'subscribe'>;
  /** The workload this proxy serves at `localIp` (in-pod / dedicated: one workload). */
  readonly localWorkload: (snapshot: Snapshot, localIp: string) => Workload | undefined;
  /** How long an inbound connection waits for its local workload to appear (ztunnel: 5 s). */
  readonly localWorkloadWaitMs: number;
  readonly network: string;
  readonly illegalPorts: ReadonlySet<number>;
  readonly sockets: SocketFactory;
  /** The factory binds non-local source addresses (in-pod, IP_TRANSPARENT): connect to apps from the client's own IP. */
  readonly transparentSource?: boolean;
  readonly clock: Clock;
  readonly connectTimeoutMs: number;
  /** TCP_NODELAY and keepalive for upstream sockets (KEEPALIVE_*). */
  readonly tcp: TcpSocketOptions;
  readonly authzInfoLogging: boolean;
  readonly log: Logger;
}
