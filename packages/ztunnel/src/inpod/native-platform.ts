/**
 * The in-pod platform on Linux, from the native module: ZDS over
 * SOCK_SEQPACKET, network namespace identity (dev:inode), and per-pod socket
 * factories that create every socket inside the pod's namespace with
 * ztunnel's mark (PACKET_MARK, 1337), SO_REUSEPORT on listeners
 * (INPOD_PORT_REUSE) and transparent upstreams (ENABLE_ORIG_SRC).
 */
import type { ZtunnelConfig } from '../config.js';
import type { Native } from '../platform/native.js';
import { nativeOriginalDestination, netnsSocketFactory, type TransparentMode } from '../platform/netns-sockets.js';
import type { InpodPlatform } from './platform.js';

export function nativeInpodPlatform(native: Native, config: ZtunnelConfig): InpodPlatform {
  const transparent = transparentMode(config.requireOriginalSource);
  return {
    connect: (path) => native.seqpacketConnect(path),
    identifyNetns: (fd) => {
      const id = native.netnsId(fd);
      return `${id.dev}:${id.inode}`;
    },
    closeFd: (fd) => native.closeFd(fd),
    socketsFor: (netns) =>
      netnsSocketFactory({
        native,
        netns,
        ...(config.packetMark === undefined ? {} : { mark: config.packetMark }),
        reusePort: config.inpodPortReuse,
        transparent,
      }),
    originalDestination: nativeOriginalDestination(native),
  };
}

/** ENABLE_ORIG_SRC: unset = best effort, true = required, false = off. */
export function transparentMode(requireOriginalSource: boolean | undefined): TransparentMode {
  return requireOriginalSource === undefined ? 'best-effort' : requireOriginalSource ? 'required' : 'off';
}

/**
 * ztunnel's startup check in shared mode: it must be able to enter network
 * namespaces and mark sockets, or no pod could ever be served. Throws with
 * the capabilities to grant.
 */
export function verifyInpodCapabilities(native: Native, mark: number): void {
  let own: number | undefined;
  let probe: number | undefined;
  try {
    own = native.openNetns('/proc/thread-self/ns/net');
    // Entering our own namespace exercises setns() without changing anything.
    probe = native.tcpSocket({ netns: own, family: 4, mark });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`in-pod mode cannot enter network namespaces or mark sockets (${why}); run ztunnel as root or with CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW`);
  } finally {
    if (probe !== undefined) native.closeFd(probe);
    if (own !== undefined) native.closeFd(own);
  }
}
