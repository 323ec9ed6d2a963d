/**
 * The admin (15000), metrics (15020) and readiness (15021) servers over real
 * sockets on loopback: routes, methods, bodies, content negotiation, port
 * conflicts and shutdown behaviour.
 */
import { Agent, request as httpRequest } from 'node:http';
import { gunzipSync } from 'node:zlib';
import type { Logger } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../src/log.js';
import { startAdminServer, type AdminDeps } from '../src/admin/admin-server.js';
import { ServerStartError, type RunningServer } from '../src/admin/http-server.js';
import { startMetricsServer } from '../src/admin/metrics-server.js';
import { Readiness } from '../src/admin/readiness.js';
import { startReadinessServer } from '../src/admin/readiness-server.js';
import { MetricsRegistry, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE } from '../src/metrics/registry.js';

const silent: Logger = { child: () => silent, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const LOOPBACK = { host: '127.0.0.1', port: 0 };

const running: RunningServer[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.close()));
});

async function track(p: Promise<RunningServer>): Promise<RunningServer> {
  const s = await p;
  running.push(s);
  return s;
}

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

function call(server: RunningServer | { address: { host: string; port: number } }, path: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: server.address.host, port: server.address.port, path, method: init.method ?? 'GET', headers: init.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function adminDeps(over: Partial<AdminDeps> = {}): AdminDeps {
  const { levels } = createLogger({ format: 'json', level: 'info', destination: { write: () => undefined } });
  return {
    log: silent,
    clock: new ManualClock(),
    configDump: () => ({ workloads: [], config: { proxyMode: 'dedicated' } }),
    logLevels: levels,
    shutdown: () => undefined,
    shutdownDeadlineMs: 5_000,
    ...over,
  };
}

describe('readiness server', () => {
  it('answers 500 with the sorted pending tasks, then 200 ready', async () => {
    const readiness = new Readiness();
    const release = [readiness.register('state manager'), readiness.register('proxy')];
    const s = await track(startReadinessServer({ readiness, log: silent }, LOOPBACK));
    const notReady = await call(s, '/healthz/ready');
    expect(notReady.status).toBe(500);
    expect(notReady.body.toString()).toBe('not ready, pending: proxy, state manager\n');
    for (const r of release) r();
    const ready = await call(s, '/healthz/ready');
    expect(ready.status).toBe(200);
    expect(ready.body.toString()).toBe('ready\n');
  });

  it('refuses other methods (405) and other paths (404)', async () => {
    const s = await track(startReadinessServer({ readiness: new Readiness(), log: silent }, LOOPBACK));
    expect((await call(s, '/healthz/ready', { method: 'POST' })).status).toBe(405);
    expect((await call(s, '/healthz/live')).status).toBe(404);
    expect((await call(s, '/')).status).toBe(404);
  });
});

describe('metrics server', () => {
  async function withMetrics() {
    const registry = new MetricsRegistry();
    registry.sub('istio').gaugeVec({ name: 'build', help: 'Istio component build info.', labelNames: ['component', 'tag'] }).set({ component: 'ztunnel', tag: '1.29.0' }, 1);
    registry.counterVec({ name: 'things', help: 'Things (unstable).', labelNames: ['kind'] }).inc({ kind: 'a' });
    return track(startMetricsServer({ registry, log: silent }, LOOPBACK));
  }

  it('serves the same body on /metrics and /stats/prometheus, Prometheus text by default', async () => {
    const s = await withMetrics();
    const a = await call(s, '/metrics');
    const b = await call(s, '/stats/prometheus');
    expect(a.status).toBe(200);
    expect(a.headers['content-type']).toBe(PROMETHEUS_CONTENT_TYPE);
    expect(a.body.toString()).toBe(b.body.toString());
    expect(a.body.toString()).toContain('istio_build{component="ztunnel",tag="1.29.0"} 1');
    expect(a.body.toString()).toContain('# TYPE things_total counter');
  });

  it('serves OpenMetrics when Accept asks for it', async () => {
    const s = await withMetrics();
    const r = await call(s, '/stats/prometheus', { headers: { accept: 'application/openmetrics-text;version=1.0.0,text/plain;q=0.5' } });
    expect(r.headers['content-type']).toBe(OPENMETRICS_CONTENT_TYPE);
    expect(r.body.toString()).toContain('# TYPE things counter');
    expect(r.body.toString().endsWith('# EOF\n')).toBe(true);
  });

  it('compresses with gzip when asked', async () => {
    const s = await withMetrics();
    const r = await call(s, '/metrics', { headers: { 'accept-encoding': 'gzip' } });
    expect(r.headers['content-encoding']).toBe('gzip');
    expect(gunzipSync(r.body).toString()).toContain('things_total{kind="a"} 1');
  });

  it('404s anything else', async () => {
    const s = await withMetrics();
    expect((await call(s, '/')).status).toBe(404);
    expect((await call(s, '/metrics/extra')).status).toBe(404);
  });
});

describe('admin server', () => {
  it('serves /config_dump as pretty JSON from the provider', async () => {
    const s = await track(startAdminServer(adminDeps(), LOOPBACK));
    const r = await call(s, '/config_dump');
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.body.toString()).toBe(`${JSON.stringify({ workloads: [], config: { proxyMode: 'dedicated' } }, null, 2)}\n`);
  });

  it('answers 500 when the config dump provider fails, and keeps serving', async () => {
    const s = await track(
      startAdminServer(
        adminDeps({
          configDump: () => {
            throw new Error('store not ready');
          },
        }),
        LOOPBACK,
      ),
    );
    const r = await call(s, '/config_dump');
    expect(r.status).toBe(500);
    expect(r.body.toString()).toContain('store not ready');
    expect((await call(s, '/')).status).toBe(200);
  });

  it('implements POST /logging: show, change, reset, refuse bad levels and other methods', async () => {
    const s = await track(startAdminServer(adminDeps(), LOOPBACK));
    const get = await call(s, '/logging');
    expect(get.status).toBe(405);
    expect(get.body.toString()).toMatch(/^Invalid HTTP method\n[\s\S]*POST \/logging\?level=/);

    const show = await call(s, '/logging', { method: 'POST' });
    expect([show.status, show.body.toString()]).toEqual([200, 'current log level is info\n']);

    const change = await call(s, '/logging?level=access=debug', { method: 'POST' });
    expect([change.status, change.body.toString()]).toEqual([200, 'current log level is access=debug,info\n']);

    const debug = await call(s, '/logging?level=debug', { method: 'POST' });
    expect(debug.body.toString()).toBe('current log level is access=debug,debug\n');

    const bad = await call(s, '/logging?level=chatty', { method: 'POST' });
    expect(bad.status).toBe(400);
    expect(bad.body.toString()).toMatch(/^Invalid level provided: chatty\n/);

    const reset = await call(s, '/logging?reset', { method: 'POST' });
    expect(reset.body.toString()).toBe('current log level is info\n');
  });

  it('implements POST /quitquitquit: 405 for GET, shutdown then "shutdown now"', async () => {
    let calls = 0;
    const s = await track(startAdminServer(adminDeps({ shutdown: () => void calls++ }), LOOPBACK));
    expect((await call(s, '/quitquitquit')).status).toBe(405);
    expect(calls).toBe(0);
    const r = await call(s, '/quitquitquit', { method: 'POST' });
    expect([r.status, r.body.toString()]).toEqual([200, 'shutdown now\n']);
    expect(calls).toBe(1);
  });

  it('answers /quitquitquit when the shutdown closes the admin server itself (no deadlock)', async () => {
    const self: { server?: RunningServer } = {};
    const s = await track(startAdminServer(adminDeps({ shutdown: () => self.server?.close() }), LOOPBACK));
    self.server = s;
    const r = await call(s, '/quitquitquit', { method: 'POST' });
    expect(r.body.toString()).toBe('shutdown now\n');
    await s.close();
    await expect(call(s, '/')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('answers /quitquitquit at the deadline when the shutdown does not finish', async () => {
    const clock = new ManualClock();
    let started!: () => void;
    const shutdownStarted = new Promise<void>((resolve) => (started = resolve));
    const s = await track(
      startAdminServer(
        adminDeps({
          clock,
          shutdownDeadlineMs: 25_000,
          shutdown: () => {
            started();
            return new Promise<void>(() => undefined);
          },
        }),
        LOOPBACK,
      ),
    );
    const reply = call(s, '/quitquitquit', { method: 'POST' });
    await shutdownStarted;
    await clock.advance(24_999);
    let answered = false;
    void reply.then(() => (answered = true));
    await clock.flush();
    expect(answered).toBe(false);
    await clock.advance(1);
    expect((await reply).body.toString()).toBe('shutdown now\n');
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('serves an index page and 404s unknown paths', async () => {
    const s = await track(startAdminServer(adminDeps(), LOOPBACK));
    const index = await call(s, '/');
    expect(index.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(index.body.toString()).toContain('config_dump');
    expect((await call(s, '/debug/pprof/profile')).status).toBe(404);
  });

  it('binds both loopbacks for "localhost"', async () => {
    const s = await track(startAdminServer(adminDeps(), { host: 'localhost', port: 0 }));
    expect(s.addresses.map((a) => a.host)).toEqual(['127.0.0.1', '::1']);
    expect(new Set(s.addresses.map((a) => a.port)).size).toBe(1);
    for (const a of s.addresses) expect((await call({ address: a }, '/')).status).toBe(200);
  });

  it('refuses a non-loopback address', async () => {
    await expect(startAdminServer(adminDeps(), { host: '0.0.0.0', port: 0 })).rejects.toThrow(/loopback/);
  });
});

describe('server lifecycle', () => {
  it('fails to start on a taken port with a message naming the server, address and variable', async () => {
    const first = await track(startMetricsServer({ registry: new MetricsRegistry(), log: silent }, LOOPBACK));
    // The proxy names its own setting; nothing in the shared package knows a proxy's variable names.
    const conflict = startMetricsServer({ registry: new MetricsRegistry(), log: silent, addressSetting: 'WAYPOINT_STATS_ADDR' }, { host: '127.0.0.1', port: first.address.port });
    await expect(conflict).rejects.toBeInstanceOf(ServerStartError);
    await expect(conflict).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await expect(conflict).rejects.toThrow(new RegExp(`^stats server: cannot listen on 127\\.0\\.0\\.1:${first.address.port}: .*WAYPOINT_STATS_ADDR`));
    // The first server is unaffected.
    expect((await call(first, '/metrics')).status).toBe(200);
  });

  it('fails cleanly when the second loopback of "localhost" is taken', async () => {
    // The ::1 port is ours, but 127.0.0.1 on the same number is not reserved: on a shared machine another
    // process can take it between our steps. A real leak fails every attempt; a stolen port only one.
    const failures: string[] = [];
    for (let attempt = 0; attempt < 5; attempt++) {
      const v6 = await track(startReadinessServer({ readiness: new Readiness(), log: silent }, { host: '::1', port: 0 }));
      await expect(startAdminServer(adminDeps(), { host: 'localhost', port: v6.address.port })).rejects.toMatchObject({ code: 'EADDRINUSE' });
      // 127.0.0.1 on that port was released again.
      try {
        const again = await track(startReadinessServer({ readiness: new Readiness(), log: silent }, { host: '127.0.0.1', port: v6.address.port }));
        expect(again.address.port).toBe(v6.address.port);
        return;
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
      }
    }
    expect.fail(`127.0.0.1 was never released after the failed dual bind:\n${failures.join('\n')}`);
  });

  it('closes idle keep-alive connections when it closes', async () => {
    const s = await startReadinessServer({ readiness: new Readiness(), log: silent }, LOOPBACK);
    const agent = new Agent({ keepAlive: true });
    try {
      const res = await new Promise<{ status: number; socketClosed: Promise<void> }>((resolve, reject) => {
        const req = httpRequest({ host: s.address.host, port: s.address.port, path: '/healthz/ready', agent }, (r) => {
          const socketClosed = new Promise<void>((c) => r.socket.once('close', () => c()));
          r.resume();
          r.on('end', () => resolve({ status: r.statusCode ?? 0, socketClosed }));
        });
        req.on('error', reject);
        req.end();
      });
      expect(res.status).toBe(200);
      await s.close();
      // The server closed the idle connection; the client did not.
      await res.socketClosed;
    } finally {
      agent.destroy();
    }
  });

  it('waits for in-flight requests on close and answers them with connection: close', async () => {
    let entered!: () => void;
    const handling = new Promise<void>((resolve) => (entered = resolve));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const s = await startAdminServer(
      adminDeps({
        configDump: async () => {
          entered();
          await gate;
          return { ok: true };
        },
      }),
      LOOPBACK,
    );
    const inFlight = call(s, '/config_dump');
    await handling;
    let closed = false;
    const closing = s.close().then(() => (closed = true));
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(closed).toBe(false);
    await expect(call(s, '/')).rejects.toThrow(/ECONNREFUSED/);
    release();
    const r = await inFlight;
    expect(r.status).toBe(200);
    expect(r.headers['connection']).toBe('close');
    await closing;
  });
});
