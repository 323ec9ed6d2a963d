/**
 * What in-pod mode needs from the operating system, as one seam: the ZDS
 * transport (SOCK_SEQPACKET with SCM_RIGHTS), network namespace checks, and
 * socket factories that create sockets inside a pod's namespace. main.ts
 * builds it from the native module; nothing else touches the native code.
 */
import { Socket } from 'node:net';
import type { OriginalDestination, SocketFactory } from '@ambient/dataplane';
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

/**
 * A pod's factory that refuses new sockets once the pod's proxy has drained:
 * the manager then closes the pod's netns fd, and the number may be reused
 * (even by another pod's namespace), so nothing may enter it afterwards.
 */
export function retiringSockets(inner: SocketFactory, retired: () => boolean): SocketFactory {
  const gone = () => Object.assign(new Error("the pod's proxy was removed; no new sockets in its network namespace"), { code: 'ESHUTDOWN' });
  return {
    listen: (options, onConnection) => (retired() ? Promise.reject(gone()) : inner.listen(options, onConnection)),
    connect: (options) => {
      if (!retired()) return inner.connect(options);
      const socket = new Socket();
      process.nextTick(() => socket.destroy(gone()));
      return socket;
    },
    udp: (options) => (retired() ? Promise.reject(gone()) : inner.udp(options)),
  };
}
