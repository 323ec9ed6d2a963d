/**
 * What in-pod mode needs from the operating system, as one seam: the ZDS
 * transport (SOCK_SEQPACKET with SCM_RIGHTS), network namespace checks, and
 * socket factories that create sockets inside a pod's namespace. main.ts
 * builds it from the native module; nothing else touches the native code.
 */
import type { OriginalDestination, SocketFactory } from '../platform/sockets.js';
import type { ZdsTransport } from './zds-client.js';

export interface InpodPlatform {
  /** Connects to the node agent's ZDS socket; throws when it is not there. */
  connect(path: string): ZdsTransport;
  /** `dev:inode` of a network namespace fd; throws when the fd is not one. */
  identifyNetns(fd: number): string;
  closeFd(fd: number): void;
  /** Sockets made inside the pod's namespace (SO_MARK, SO_REUSEPORT on listeners, transparent upstreams). */
  socketsFor(netnsFd: number): SocketFactory;
  /** SO_ORIGINAL_DST of a redirected connection, else its local address. */
  readonly originalDestination: OriginalDestination;
}
