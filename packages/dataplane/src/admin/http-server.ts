/**
 * The small HTTP/1.1 servers behind the admin (15000), metrics (15020) and
 * readiness (15021) ports: bind (both loopbacks for `localhost`, like
 * ztunnel's `Address::Localhost`), route to one handler, turn handler
 * failures into 500s, and close without waiting on idle keep-alive
 * connections. A port that is taken fails `start` with a message naming the
 * server, the address and the variable that moves it.
 *
 * Invariants:
 * - After `close()` starts, every accepted socket is destroyed as soon as it
 *   has no request in flight; `close()` resolves when only sockets answering
 *   "detached" requests (see StartOptions.detached) remain, and those are
 *   destroyed right after their answer.
 * - A handler exception never escapes: the request gets a 500.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from '@ambient/control';
import { formatSocketAddress, type ListenAddress } from '../net/address.js';

/** A bound, serving server. */
export interface RunningServer {
  /** The first bound address (the one to print and dial). */
  readonly address: { readonly host: string; readonly port: number };
  /** Every bound address (two for `localhost` with IPv6). */
  readonly addresses: ReadonlyArray<{ readonly host: string; readonly port: number }>;
  /** Stops accepting, closes idle connections, waits for in-flight requests; idempotent. */
  close(): Promise<void>;
}

export interface HttpResponse {
  readonly status: number;
  readonly body?: string | Buffer;
  readonly headers?: Readonly<Record<string, string>>;
}

/**
 * Answers one request. The request body is drained by the server; handlers
 * see only the method, URL and headers.
 */
export type HttpHandler = (req: IncomingMessage) => Promise<HttpResponse> | HttpResponse;

export interface StartOptions {
  /** Short name for messages: "admin", "stats", "readiness". */
  readonly name: string;
  /** The variable that moves this server, for the port-conflict hint. */
  /** The setting that chose the address (e.g. ZTUNNEL_ADMIN_ADDR), named in bind-error hints; the proxy passes it. */
  readonly envVar: string;
  readonly log: Logger;
  /** Also bind ::1 for `localhost` (default true; IPV6_ENABLED). */
  readonly ipv6?: boolean;
  /**
   * Requests that must not hold up `close()` (e.g. /quitquitquit, which is
   * itself waiting for the shutdown that closes this server).
   */
  readonly detached?: (req: IncomingMessage) => boolean;
}

export class ServerStartError extends Error {
  constructor(
    message: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ServerStartError';
  }
}

export const TEXT_PLAIN = 'text/plain; charset=utf-8';

export function text(status: number, body: string): HttpResponse {
  return { status, body, headers: { 'content-type': TEXT_PLAIN } };
}

export function empty(status: number): HttpResponse {
  return { status };
}

export async function startHttpServer(addr: ListenAddress, handler: HttpHandler, o: StartOptions): Promise<RunningServer> {
  const hosts = addr.host === 'localhost' ? ['127.0.0.1', ...(o.ipv6 === false ? [] : ['::1'])] : [addr.host];
  const servers: Server[] = [];
  /** In-flight requests per open socket. */
  const sockets = new Map<Socket, { attached: number; detached: number }>();
  let closing = false;
  let closed: Promise<void> | undefined;
  let settle: (() => void) | undefined;
  const checkSettled = () => {
    if (!closing || settle === undefined) return;
    for (const c of sockets.values()) if (c.attached > 0 || c.detached === 0) return;
    settle();
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const counts = sockets.get(socket);
    const detached = o.detached?.(req) === true;
    if (counts) {
      if (detached) counts.detached++;
      else counts.attached++;
    }
    req.resume(); // bodies are never needed
    res.once('close', () => {
      if (counts) {
        if (detached) counts.detached--;
        else counts.attached--;
        if (closing && counts.attached === 0 && counts.detached === 0) socket.destroy();
      }
      checkSettled();
    });
    Promise.resolve()
      .then(() => handler(req))
      .then(
        (r) => send(res, r, closing),
        (err: unknown) => {
          o.log.error({ err, method: req.method, url: req.url }, `${o.name} server: request failed`);
          send(res, text(500, `internal error: ${err instanceof Error ? err.message : String(err)}\n`), closing);
        },
      )
      .catch((err: unknown) => {
        o.log.warn({ err }, `${o.name} server: failed to write a response`);
        res.destroy();
      });
  };

  const bound: Array<{ host: string; port: number }> = [];
  try {
    let port = addr.port;
    for (const [i, host] of hosts.entries()) {
      const server = createServer({ keepAliveTimeout: 5_000 }, onRequest);
      server.on('connection', (s: Socket) => {
        if (closing) {
          s.destroy();
          return;
        }
        sockets.set(s, { attached: 0, detached: 0 });
        s.once('close', () => {
          sockets.delete(s);
          checkSettled();
        });
      });
      server.on('clientError', (err: NodeJS.ErrnoException, s: Socket) => {
        o.log.debug({ err: err.message }, `${o.name} server: bad request`);
        if (s.writable) s.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
        else s.destroy();
      });
      try {
        await listen(server, host, port);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // The IPv6 loopback is best effort (hosts without IPv6 on lo), as in ztunnel.
        if (i > 0 && (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT')) {
          o.log.info({ host }, `${o.name} server: IPv6 loopback unavailable; serving on IPv4 only`);
          continue;
        }
        throw bindError(o, host, port, err);
      }
      servers.push(server);
      port = (server.address() as AddressInfo).port;
      bound.push({ host, port });
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  const first = bound[0];
  if (first === undefined) throw new ServerStartError(`${o.name} server: nothing was bound`, undefined);
  o.log.info({ address: bound.map((b) => formatSocketAddress({ ip: b.host, port: b.port })).join(', ') }, `${o.name} server listening`);

  return {
    address: first,
    addresses: bound,
    close() {
      closed ??= new Promise<void>((resolve) => {
        closing = true;
        settle = resolve;
        for (const s of servers) s.close(); // stops accepting now
        for (const [s, c] of sockets) if (c.attached === 0 && c.detached === 0) s.destroy();
        checkSettled();
      });
      return closed;
    },
  };
}

function send(res: ServerResponse, r: HttpResponse, closing: boolean): void {
  if (res.headersSent || res.destroyed) return;
  const headers: Record<string, string | number> = { ...r.headers };
  const body = r.body ?? '';
  headers['content-length'] = Buffer.byteLength(body);
  if (closing) headers['connection'] = 'close';
  res.writeHead(r.status, headers);
  res.end(body);
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = () => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen({ host, port, ipv6Only: host === '::1' });
  });
}

function bindError(o: StartOptions, host: string, port: number, err: unknown): ServerStartError {
  const e = err as NodeJS.ErrnoException;
  const where = formatSocketAddress({ ip: host, port: port });
  const hint =
    e.code === 'EADDRINUSE'
      ? `; another process is using the port: stop it or move this server with ${o.envVar}`
      : e.code === 'EACCES'
        ? `; binding port ${port} needs privileges: choose a port above 1023 with ${o.envVar}`
        : e.code === 'EADDRNOTAVAIL' || e.code === 'EAFNOSUPPORT'
          ? `; the address is not available on this host (set IPV6_ENABLED=false on hosts without IPv6, or use ${o.envVar})`
          : '';
  return new ServerStartError(`${o.name} server: cannot listen on ${where}: ${e.message}${hint}`, e.code, { cause: err });
}

/** The path and query of a request URL. */
export function urlOf(req: IncomingMessage): URL {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return new URL('http://localhost/');
  }
}
