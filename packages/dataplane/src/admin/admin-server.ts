/**
 * The admin server (localhost:15000, ztunnel src/admin.rs): `/config_dump`
 * (pretty JSON from an injected provider), `POST /logging` (show or change
 * the log filter), `POST /quitquitquit` (graceful shutdown), `/` (an index
 * page); anything else 404. It binds loopback addresses only: it must never
 * be reachable from a pod or over HBONE.
 */
import type { IncomingMessage } from 'node:http';
import { settleWithin, type Clock, type Logger } from '@ambient/control';
import type { LogLevelControl } from '../log.js';
import { isLoopbackHost, type ListenAddress } from '../net/address.js';
import { empty, ServerStartError, startHttpServer, text, urlOf, type HttpHandler, type HttpResponse, type RunningServer } from './http-server.js';

export interface AdminDeps {
  readonly log: Logger;
  readonly clock: Pick<Clock, 'setTimer'>;
  /** The `/config_dump` document (workloads, services, policies, certificates, config, version, ...). */
  configDump(): unknown;
  readonly logLevels: LogLevelControl;
  /** Starts the graceful shutdown; resolves when it is complete. Called at most once. */
  shutdown(): Promise<void> | void;
  /** How long `/quitquitquit` waits for the shutdown before answering (the termination deadline). */
  readonly shutdownDeadlineMs: number;
  readonly ipv6?: boolean;
  /** The setting that chose the address, for bind-error hints (ztunnel: ZTUNNEL_ADMIN_ADDR). */
  readonly addressSetting?: string;
  /** Names the proxy on the index page (default "proxy"). */
  readonly proxyName?: string;
}

const LOGGING_HELP = [
  '',
  'POST /logging                                  show the current log filter',
  'POST /logging?level=<level>                    set the default level',
  'POST /logging?level=<target>=<level>,...       set levels per target (e.g. access=debug)',
  'POST /logging?reset                            back to the startup filter (combine with level=)',
  '',
  'levels:  off | error | warn | info | debug | trace',
  'targets: access, xds, proxy, ... (a target matches every scope it prefixes)',
  '',
].join('\n');

const ENDPOINTS: ReadonlyArray<readonly [string, string]> = [
  ['config_dump', 'dump the current configuration and state'],
  ['logging', 'query or change log levels (POST)'],
  ['quitquitquit', 'shut down gracefully (POST)'],
];

export function adminHandler(deps: AdminDeps): HttpHandler {
  let shuttingDown: Promise<'done' | 'failed'> | undefined;

  const quit = async (req: IncomingMessage): Promise<HttpResponse> => {
    if (req.method !== 'POST') return empty(405);
    deps.log.info({}, 'shutdown requested through /quitquitquit');
    shuttingDown ??= Promise.resolve()
      .then(() => deps.shutdown())
      .then(
        () => 'done' as const,
        (err: unknown) => {
          deps.log.error({ err }, 'shutdown failed');
          return 'failed' as const;
        },
      );
    const running = shuttingDown;
    const outcome = await settleWithin<'done' | 'failed' | 'timeout'>(
      { clock: deps.clock, timeoutMs: deps.shutdownDeadlineMs, onTimeout: () => ({ value: 'timeout' }) },
      (settle) => void running.then((o) => settle.resolve(o)),
    );
    if (outcome === 'done') deps.log.info({}, 'shutdown completed gracefully');
    else if (outcome === 'timeout') deps.log.warn({ deadlineMs: deps.shutdownDeadlineMs }, 'graceful shutdown did not complete in time, terminating now');
    return text(200, 'shutdown now\n');
  };

  const logging = (req: IncomingMessage, query: URLSearchParams): HttpResponse => {
    if (req.method !== 'POST') return text(405, `Invalid HTTP method\n${LOGGING_HELP}`);
    const level = query.get('level') ?? '';
    const reset = query.has('reset');
    const r = deps.logLevels.change(reset, level);
    if (!r.ok) return text(400, `Invalid level provided: ${level}\n${r.errors.map((e) => e.reason).join('\n')}\n${LOGGING_HELP}`);
    if (reset || level !== '') deps.log.info({ filter: r.value }, 'log filter changed through /logging');
    return text(200, `current log level is ${r.value}\n`);
  };

  const configDump = async (): Promise<HttpResponse> => {
    const dump = await deps.configDump();
    return { status: 200, body: `${JSON.stringify(dump, null, 2)}\n`, headers: { 'content-type': 'application/json' } };
  };

  return (req) => {
    const url = urlOf(req);
    switch (url.pathname) {
      case '/':
        return { status: 200, body: indexPage(deps.proxyName ?? 'proxy'), headers: { 'content-type': 'text/html; charset=utf-8' } };
      case '/config_dump':
        return configDump();
      case '/logging':
        return logging(req, url.searchParams);
      case '/quitquitquit':
        return quit(req);
      default:
        return empty(404);
    }
  };
}

function indexPage(proxyName: string): string {
  const rows = ENDPOINTS.map(([path, what]) => `<tr><td><a href="${path}">/${path}</a></td><td>${what}</td></tr>`).join('\n');
  return `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>${proxyName} admin</title></head>
<body><h1>${proxyName} admin</h1>
<table>
${rows}
</table>
</body></html>
`;
}

/** Starts the admin server; refuses a non-loopback address. */
export async function startAdminServer(deps: AdminDeps, addr: ListenAddress): Promise<RunningServer> {
  if (!isLoopbackHost(addr.host)) {
    throw new ServerStartError(`admin server: refusing to listen on ${addr.host}: the admin API must only be reachable on a loopback address`, undefined);
  }
  return startHttpServer(addr, adminHandler(deps), {
    name: 'admin',
    envVar: deps.addressSetting ?? 'the admin address setting',
    log: deps.log,
    ...(deps.ipv6 === undefined ? {} : { ipv6: deps.ipv6 }),
    // /quitquitquit waits for the shutdown that closes this server.
    detached: (req) => urlOf(req).pathname === '/quitquitquit',
  });
}
