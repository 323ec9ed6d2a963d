/**
 * Small shared pieces of the scenarios: the application port, service
 * declarations, and counting outcomes of repeated connections.
 */
import { tryExchange, type ExchangeResult } from './apps.js';
import { hostname, type MeshService } from './mesh.js';
import type { Netns } from './topology.js';

/** Where every echo app listens inside its pod. */
export const APP_PORT = 8080;
/** The address pods send DNS to (kube-dns's usual VIP); captured, it never needs to exist. */
export const KUBE_DNS = '10.96.0.10';

export function service(name: string, namespace: string, vip: string, ports: Record<number, number> = { 80: APP_PORT }): MeshService {
  return { name, namespace, vip, ports };
}

/** The `services` entry of a pod that backs `svc`. */
export function backs(svc: MeshService): Record<string, Record<number, number>> {
  return { [`${svc.namespace}/${hostname(svc)}`]: { ...svc.ports } };
}

export interface Tally {
  ok: number;
  failed: number;
  errors: string[];
  servers: Map<string, number>;
}

export function tally(): Tally {
  return { ok: 0, failed: 0, errors: [], servers: new Map() };
}

export function count(t: Tally, r: ExchangeResult | Error): void {
  if (r instanceof Error) {
    t.failed++;
    if (t.errors.length < 10) t.errors.push(r.message);
  } else {
    t.ok++;
    t.servers.set(r.greeting.server, (t.servers.get(r.greeting.server) ?? 0) + 1);
  }
}

export function describeTally(t: Tally): string {
  const total = t.ok + t.failed;
  const ratio = total === 0 ? 0 : t.ok / total;
  return `${t.ok}/${total} succeeded (${(ratio * 100).toFixed(1)} %), servers ${JSON.stringify(Object.fromEntries(t.servers))}${t.errors.length > 0 ? `, errors: ${t.errors.join(' | ')}` : ''}`;
}

/**
 * New connections back to back from `from` to host:port until `stop()` says
 * so, at most `maxCount` of them and for at most `maxMs`; each with its own
 * deadline. Returns the tally (for "traffic kept flowing" assertions);
 * `into` lets the caller watch it fill while the loop runs.
 */
export async function trafficLoop(
  from: Netns,
  host: string,
  port: number,
  stop: () => boolean,
  options: { maxCount?: number; maxMs?: number; timeoutMs?: number; into?: Tally } = {},
): Promise<Tally> {
  const t = options.into ?? tally();
  const maxCount = options.maxCount ?? 2_000;
  const end = Date.now() + (options.maxMs ?? 30_000);
  for (let i = 0; i < maxCount && Date.now() < end && !stop(); i++) count(t, await tryExchange(from, host, port, `loop ${i}`, options.timeoutMs ?? 3_000));
  return t;
}
