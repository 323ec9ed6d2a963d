/**
 * The native seam: the few Linux system calls Node does not expose, behind one
 * small typed module. The addon (native/*.c, built by scripts/build-native.mjs
 * with node-gyp into build/Release/ztunnel_native.node) provides:
 *   - network namespaces: open a netns file, identify it (inode, dev), and
 *     create sockets inside it (setns -> socket/setsockopt/bind -> setns back,
 *     all on the calling thread; the sockets stay in that namespace);
 *   - socket options Node lacks: SO_MARK, SO_REUSEPORT, IP(V6)_TRANSPARENT,
 *     IP(V6)_FREEBIND, SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST;
 *   - AF_UNIX SOCK_SEQPACKET with SCM_RIGHTS fd passing (the ZDS transport),
 *     integrated in the event loop with uv_poll so nothing ever blocks it.
 *
 * Every file descriptor returned here is owned by the caller: hand it to Node
 * (net.Server.listen({fd}), new net.Socket({fd}), dgram bind({fd})) or close it
 * with closeFd. Descriptors received over SEQPACKET are owned by the receiver.
 * The SEQPACKET wrappers (buffering, callbacks) are in seqpacket.ts; the
 * net.Server / net.Socket / dgram factory on top of this is netns-sockets.ts.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeSeqpacketServer, NativeSeqpacketSocket, type SeqpacketErrors } from './seqpacket.js';

/** A failed system call (code = errno name, e.g. 'EADDRINUSE'), or 'ENOTNETNS' / 'EUNSUPPORTED'. */
export class NativeError extends Error {
  override readonly name = 'NativeError';
  readonly code: string;
  readonly syscall: string;
  /** The numeric errno when the error came from a system call. */
  readonly errno: number | undefined;

  constructor(code: string, syscall: string, message: string, errno?: number) {
    super(message);
    this.code = code;
    this.syscall = syscall;
    this.errno = errno;
  }
}

export interface NetnsId {
  readonly inode: bigint;
  readonly dev: bigint;
}

export interface TcpListenerOptions {
  /** A netns fd (openNetns or received over ZDS); the current namespace when absent. */
  readonly netns?: number;
  readonly host: string;
  readonly port: number;
  readonly backlog: number;
  readonly mark?: number;
  readonly reusePort?: boolean;
  readonly transparent?: boolean;
}

export interface TcpSocketOptions {
  readonly netns?: number;
  readonly family: 4 | 6;
  readonly mark?: number;
  readonly transparent?: boolean;
  readonly freebind?: boolean;
  readonly bind?: { readonly ip: string; readonly port: number };
}

export interface UdpSocketOptions {
  readonly netns?: number;
  readonly host: string;
  readonly port: number;
  readonly mark?: number;
  readonly reusePort?: boolean;
}

export interface SeqpacketPacket {
  readonly data: Buffer;
  /** Descriptors received with SCM_RIGHTS (close-on-exec); the receiver owns and must close them. */
  readonly fds: number[];
  /** MSG_TRUNC or MSG_CTRUNC: the packet or its fds did not fit (1024 bytes, like ztunnel). */
  readonly truncated: boolean;
}

/** An AF_UNIX SOCK_SEQPACKET connection, integrated in the event loop (uv_poll); never blocks the loop. */
export interface SeqpacketSocket {
  /** Sends one packet; fds (still owned by the caller) travel as SCM_RIGHTS. Throws NativeError for invalid arguments (EMSGSIZE, EBADF) or after close. */
  send(data: Uint8Array, fds?: readonly number[]): void;
  /** Packets received before this is called are buffered (while the connection is open) and delivered first. */
  onPacket(cb: (p: SeqpacketPacket) => void): void;
  /** The connection ended by itself: peer closed (no err) or an I/O error. Not called after close(). */
  onClose(cb: (err?: NativeError) => void): void;
  close(): void;
}

export interface SeqpacketServer {
  onConnection(cb: (s: SeqpacketSocket) => void): void;
  /** Stops accepting, closes the listening socket and removes its socket file. */
  close(): void;
}

export interface Native {
  /** open(O_RDONLY|O_CLOEXEC), e.g. '/proc/thread-self/ns/net' or '/var/run/netns/<name>'. */
  openNetns(path: string): number;
  /** Throws NativeError('ENOTNETNS') if fd is not a network namespace. */
  netnsId(fd: number): NetnsId;
  closeFd(fd: number): void;
  /** A listening TCP socket (non-blocking, close-on-exec, SO_REUSEADDR; '::' is dual-stack). */
  tcpListener(o: TcpListenerOptions): number;
  /** An unconnected, non-blocking TCP socket. */
  tcpSocket(o: TcpSocketOptions): number;
  /** A bound, non-blocking UDP socket. */
  udpSocket(o: UdpSocketOptions): number;
  /** SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST; undefined when the connection was not redirected. */
  originalDestination(fd: number): { ip: string; port: number } | undefined;
  /** getsockopt SO_MARK. */
  socketMark(fd: number): number;
  /** glibc malloc_trim(0): hands memory freed after a burst back to the kernel; true when some was released. */
  mallocTrim(): boolean;
  /** AF_UNIX SOCK_SEQPACKET client (ztunnel's side of ZDS). Throws e.g. ENOENT, ECONNREFUSED, EAGAIN. */
  seqpacketConnect(path: string): SeqpacketSocket;
  /** AF_UNIX SOCK_SEQPACKET server (tests, the e2e istio-cni fake). A stale socket file at path is replaced. */
  seqpacketListen(path: string): SeqpacketServer;
}

/** The raw addon surface (native/addon.c), used only by this module and seqpacket.ts. Numbers -1 mean "absent". */
interface RawError extends Error {
  errno?: number;
  code?: string;
  syscall?: string;
}
export type RawHandle = object & { readonly __brand?: 'native-handle' };
export interface RawBinding {
  openNetns(path: string): number;
  netnsId(fd: number): { inode: bigint; dev: bigint };
  closeFd(fd: number): void;
  tcpListener(netns: number, host: string, port: number, backlog: number, mark: number, reusePort: boolean, transparent: boolean): number;
  tcpSocket(netns: number, family: number, mark: number, transparent: boolean, freebind: boolean, bindIp: string | null, bindPort: number): number;
  udpSocket(netns: number, host: string, port: number, mark: number, reusePort: boolean): number;
  originalDestination(fd: number): { ip: string; port: number } | undefined;
  socketMark(fd: number): number;
  mallocTrim(): boolean;
  seqpacketConnect(path: string): RawHandle;
  seqpacketStart(
    h: RawHandle,
    onPacket: (data: Buffer, fds: number[], truncated: boolean) => void,
    onClose: (errno: number, syscall: string) => void,
  ): void;
  seqpacketSend(h: RawHandle, data: Uint8Array, fds: readonly number[]): void;
  seqpacketClose(h: RawHandle): void;
  seqpacketListen(path: string, onConnection: (h: RawHandle) => void): RawHandle;
  seqpacketServerClose(h: RawHandle): void;
}

const ADDON_FILE = 'ztunnel_native.node';

/** The package root (where binding.gyp lives), from src/platform/ under vitest or dist/platform/ when built. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'binding.gyp'))) return dir;
    dir = dirname(dir);
  }
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

/** Where the addon is expected (for messages and the build script). */
export function nativeAddonPath(): string {
  return join(packageRoot(), 'build', 'Release', ADDON_FILE);
}

let cached: Native | undefined;

/**
 * Loads the addon once. Throws NativeError('EUNSUPPORTED') off Linux or when
 * the addon has not been built, saying what to run.
 */
export function loadNative(): Native {
  if (cached !== undefined) return cached;
  if (process.platform !== 'linux') {
    throw new NativeError(
      'EUNSUPPORTED',
      'loadNative',
      `traffic capture (network namespaces, SO_MARK, SO_ORIGINAL_DST, SCM_RIGHTS) needs Linux; this is ${process.platform}. ` +
        'Use PROXY_MODE=dedicated without capture, or run ztunnel on Linux.',
    );
  }
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    throw new NativeError(
      'EUNSUPPORTED',
      'loadNative',
      `the native addon is not built (${path} is missing). Run \`npm run build -w @ambient/ztunnel\` ` +
        '(needs a C compiler, make and python3: `apt-get install -y build-essential python3`).',
    );
  }
  let raw: RawBinding;
  try {
    raw = createRequire(import.meta.url)(path) as RawBinding;
  } catch (err) {
    throw new NativeError(
      'EUNSUPPORTED',
      'loadNative',
      `the native addon at ${path} could not be loaded (${(err as Error).message}); rebuild it with \`npm run build -w @ambient/ztunnel\``,
    );
  }
  cached = wrap(raw);
  return cached;
}

const errnoNames: ReadonlyMap<number, string> = new Map(
  Object.entries(osConstants.errno).map(([name, value]) => [value, name] as const),
);

function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `ERRNO_${errno}`;
}

function toNativeError(err: unknown): unknown {
  if (err instanceof NativeError || !(err instanceof Error)) return err;
  const raw = err as RawError;
  if (raw.syscall === undefined) return err; // a TypeError from argument checking
  const code = raw.code ?? (raw.errno !== undefined ? errnoName(raw.errno) : 'EUNKNOWN');
  // Node's style: "bind EADDRINUSE: binding 0.0.0.0:15001: Address already in use".
  return new NativeError(code, raw.syscall, `${raw.syscall} ${code}: ${raw.message}`, raw.errno);
}

function call<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw toNativeError(err);
  }
}

function optionalInt(v: number | undefined): number {
  return v === undefined ? -1 : v;
}

function checkFd(name: string, fd: number): void {
  if (!Number.isInteger(fd) || fd < 0) throw new TypeError(`${name} must be a file descriptor (a non-negative integer), got ${String(fd)}`);
}

function checkNetns(netns: number | undefined): void {
  if (netns !== undefined) checkFd('netns', netns);
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`port must be an integer in 0..65535, got ${String(port)}`);
}

function checkMark(mark: number | undefined): void {
  if (mark !== undefined && (!Number.isInteger(mark) || mark < 0 || mark > 0xffffffff)) {
    throw new TypeError(`mark must be an unsigned 32-bit integer, got ${String(mark)}`);
  }
}

const seqpacketErrors: SeqpacketErrors = {
  call,
  fromErrno: (errno, syscall, message) => new NativeError(errnoName(errno), syscall, `${syscall} ${errnoName(errno)}: ${message}`, errno),
  checkFd,
};

function wrap(raw: RawBinding): Native {
  return {
    openNetns: (path) => call(() => raw.openNetns(path)),
    netnsId: (fd) => {
      checkFd('fd', fd);
      return call(() => raw.netnsId(fd));
    },
    closeFd: (fd) => {
      checkFd('fd', fd);
      call(() => raw.closeFd(fd));
    },
    tcpListener: (o) => {
      checkNetns(o.netns);
      checkPort(o.port);
      checkMark(o.mark);
      return call(() =>
        raw.tcpListener(optionalInt(o.netns), o.host, o.port, o.backlog, optionalInt(o.mark), o.reusePort === true, o.transparent === true),
      );
    },
    tcpSocket: (o) => {
      checkNetns(o.netns);
      checkMark(o.mark);
      if (o.bind !== undefined) checkPort(o.bind.port);
      return call(() =>
        raw.tcpSocket(
          optionalInt(o.netns),
          o.family,
          optionalInt(o.mark),
          o.transparent === true,
          o.freebind === true,
          o.bind?.ip ?? null,
          o.bind?.port ?? 0,
        ),
      );
    },
    udpSocket: (o) => {
      checkNetns(o.netns);
      checkPort(o.port);
      checkMark(o.mark);
      return call(() => raw.udpSocket(optionalInt(o.netns), o.host, o.port, optionalInt(o.mark), o.reusePort === true));
    },
    originalDestination: (fd) => {
      checkFd('fd', fd);
      return call(() => raw.originalDestination(fd));
    },
    socketMark: (fd) => {
      checkFd('fd', fd);
      return call(() => raw.socketMark(fd));
    },
    mallocTrim: () => call(() => raw.mallocTrim()),
    seqpacketConnect: (path) => new NativeSeqpacketSocket(raw, seqpacketErrors, call(() => raw.seqpacketConnect(path))),
    seqpacketListen: (path) => new NativeSeqpacketServer(raw, seqpacketErrors, path),
  };
}

