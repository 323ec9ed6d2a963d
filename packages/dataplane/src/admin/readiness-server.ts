/**
 * The readiness server (15021, ztunnel src/readiness/server.rs):
 * `GET /healthz/ready` answers 200 "ready\n" or 500 "not ready, pending:
 * <tasks>\n"; other methods 405; other paths 404.
 */
import type { Logger } from '@ambient/control';
import type { ListenAddress } from '../net/address.js';
import { empty, startHttpServer, text, urlOf, type HttpHandler, type RunningServer } from './http-server.js';
import type { Readiness } from './readiness.js';

export function readinessHandler(readiness: Readiness): HttpHandler {
  return (req) => {
    if (urlOf(req).pathname !== '/healthz/ready') return empty(404);
    if (req.method !== 'GET') return empty(405);
    const pending = readiness.pending();
    return pending.length === 0 ? text(200, 'ready\n') : text(500, `not ready, pending: ${pending.join(', ')}\n`);
  };
}

export function startReadinessServer(
  deps: { readonly readiness: Readiness; readonly log: Logger; readonly ipv6?: boolean; /** For bind-error hints (ztunnel: ZTUNNEL_READINESS_ADDR). */ readonly addressSetting?: string },
  addr: ListenAddress,
): Promise<RunningServer> {
  return startHttpServer(addr, readinessHandler(deps.readiness), {
    name: 'readiness',
    envVar: deps.addressSetting ?? 'the readiness address setting',
    log: deps.log,
    ...(deps.ipv6 === undefined ? {} : { ipv6: deps.ipv6 }),
  });
}
