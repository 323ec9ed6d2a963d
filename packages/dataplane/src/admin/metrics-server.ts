/**
 * The metrics server (15020, ztunnel src/metrics/server.rs): `/metrics` and
 * `/stats/prometheus` serve the same exposition (any method), in Prometheus
 * text or OpenMetrics by the Accept header, gzip-compressed when asked;
 * anything else is 404.
 */
import { promisify } from 'node:util';
import { gzip as gzipCallback } from 'node:zlib';
import type { Logger } from '@ambient/control';
import type { ListenAddress } from '../net/address.js';
import { negotiateExposition, type MetricsRegistry } from '../metrics/registry.js';
import { empty, startHttpServer, urlOf, type HttpHandler, type RunningServer } from './http-server.js';

const gzip = promisify(gzipCallback);

export function metricsHandler(registry: MetricsRegistry): HttpHandler {
  return async (req) => {
    const path = urlOf(req).pathname;
    if (path !== '/metrics' && path !== '/stats/prometheus') return empty(404);
    const { format, contentType } = negotiateExposition(req.headers.accept);
    const body = await registry.encode(format);
    const wantsGzip = (req.headers['accept-encoding'] ?? '')
      .split(',')
      .some((e) => (e.split(';')[0] ?? '').trim().toLowerCase() === 'gzip');
    if (wantsGzip) {
      return { status: 200, body: await gzip(body), headers: { 'content-type': contentType, 'content-encoding': 'gzip', vary: 'accept-encoding' } };
    }
    return { status: 200, body, headers: { 'content-type': contentType } };
  };
}

export function startMetricsServer(
  deps: { readonly registry: MetricsRegistry; readonly log: Logger; readonly ipv6?: boolean; /** For bind-error hints (ztunnel: ZTUNNEL_STATS_ADDR). */ readonly addressSetting?: string },
  addr: ListenAddress,
): Promise<RunningServer> {
  return startHttpServer(addr, metricsHandler(deps.registry), {
    name: 'stats',
    envVar: deps.addressSetting ?? 'the metrics address setting',
    log: deps.log,
    ...(deps.ipv6 === undefined ? {} : { ipv6: deps.ipv6 }),
  });
}
