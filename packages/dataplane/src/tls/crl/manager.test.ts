import { X509Certificate } from 'node:crypto';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ok, systemClock } from '@ambient/control';
import { ManualClock } from '@ambient/control/testing';
import { newCa, signerOf, workloadCert } from '../../testing/certs.js';
import { crlPem } from '../../testing/crl.js';
import { CrlManager, type CrlMetrics, type CrlReporter } from './manager.js';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (l: string) => lines.push(JSON.parse(l) as Record<string, unknown>) });
  const has = (level: number, text: string) => lines.some((l) => l['level'] === level && String(l['msg']).includes(text));
  return { log, lines, has };
}

function fakeMetrics() {
  const counts: Record<string, number> = {};
  const metrics: CrlMetrics = {
    rejected: (r: CrlReporter) => void (counts[`rejected:${r}`] = (counts[`rejected:${r}`] ?? 0) + 1),
    untracked: (r: CrlReporter) => void (counts[`untracked:${r}`] = (counts[`untracked:${r}`] ?? 0) + 1),
  };
  return { counts, metrics };
}

async function fixture() {
  const clock = new ManualClock({ now: systemClock.now() });
  const ca = await newCa(clock);
  const root = await signerOf(ca);
  const leaf = await workloadCert(ca, 'spiffe://cluster.local/ns/a/sa/one', clock);
  const roots = [new X509Certificate(ca.signingCertPem)];
  const files = new Map<string, string>();
  const readFile = (p: string) => {
    const v = files.get(p);
    return v === undefined ? Promise.reject(Object.assign(new Error(`ENOENT: no such file, open '${p}'`), { code: 'ENOENT' })) : Promise.resolve(v);
  };
  let onChange: (() => void) | undefined;
  const watch = (_p: string, o: { onChange: () => void }) => ((onChange = o.onChange), ok({ close: () => void (onChange = undefined) }));
  return { clock, root, leaf, roots, files, readFile, watch, change: () => onChange?.() };
}

describe('CrlManager', () => {
  it('starts without revocations when the file is missing, and loads it once it appears', async () => {
    const f = await fixture();
    const { log, has } = capture();
    const { counts, metrics } = fakeMetrics();
    const m = await CrlManager.start({ path: '/crl/ca-crl.pem', readFile: f.readFile, clock: f.clock, log, metrics, watch: f.watch });
    expect(has(40, 'CRL file not found')).toBe(true);
    const inbound = m.source('destination');
    expect(inbound.check([f.leaf.leaf], f.roots).revoked).toBe(false);
    let reloads = 0;
    inbound.onReload(() => reloads++);
    f.files.set('/crl/ca-crl.pem', await crlPem(f.root, [f.leaf.leaf.serialNumber]));
    expect(await m.reload()).toBe(true);
    expect(reloads).toBe(1);
    expect(inbound.check([f.leaf.leaf], f.roots).revoked).toBe(true);
    expect(counts).toEqual({ 'rejected:destination': 1 });
    m.close();
  });

  it('keeps the last good CRLs when the file turns invalid or disappears, and says why', async () => {
    const f = await fixture();
    const { log, has } = capture();
    f.files.set('/crl/ca-crl.pem', await crlPem(f.root, [f.leaf.leaf.serialNumber]));
    const m = await CrlManager.start({ path: '/crl/ca-crl.pem', readFile: f.readFile, clock: f.clock, log, metrics: fakeMetrics().metrics, watch: f.watch });
    let reloads = 0;
    m.source('source').onReload(() => reloads++);
    f.files.set('/crl/ca-crl.pem', 'not a valid CRL');
    expect(await m.reload()).toBe(false);
    expect(has(50, 'CRL file refused; keeping the last good CRLs (1 CRLs, 1 revoked serials)')).toBe(true);
    f.files.delete('/crl/ca-crl.pem');
    expect(await m.reload()).toBe(false);
    expect(has(50, 'cannot read the CRL file')).toBe(true);
    expect(reloads).toBe(0);
    expect(m.current.check([f.leaf.leaf], f.roots).revoked).toBe(true);
    m.close();
  });

  it('starts without revocations on a malformed file (logged as an error), and an empty file clears revocations', async () => {
    const f = await fixture();
    const { log, has } = capture();
    f.files.set('/crl/ca-crl.pem', 'garbage');
    const m = await CrlManager.start({ path: '/crl/ca-crl.pem', readFile: f.readFile, clock: f.clock, log, metrics: fakeMetrics().metrics, watch: f.watch });
    expect(has(50, 'CRL file refused; keeping the state without revocations')).toBe(true);
    f.files.set('/crl/ca-crl.pem', await crlPem(f.root, [f.leaf.leaf.serialNumber]));
    f.change();
    await expect.poll(() => m.generation).toBe(1);
    f.files.set('/crl/ca-crl.pem', '');
    expect(await m.reload()).toBe(true);
    expect(m.current.check([f.leaf.leaf], f.roots).revoked).toBe(false);
    m.close();
  });

  it('warns about a CRL past its nextUpdate but still applies it', async () => {
    const f = await fixture();
    const { log, has } = capture();
    const old = new Date(systemClock.now() - 10 * 86_400_000);
    f.files.set('/crl/ca-crl.pem', await crlPem(f.root, [f.leaf.leaf.serialNumber], { thisUpdate: old, nextUpdate: new Date(old.getTime() + 1000) }));
    const m = await CrlManager.start({ path: '/crl/ca-crl.pem', readFile: f.readFile, clock: f.clock, log, metrics: fakeMetrics().metrics, watch: false });
    expect(has(40, 'past its nextUpdate')).toBe(true);
    expect(m.current.check([f.leaf.leaf], f.roots).revoked).toBe(true);
    m.close();
  });
});
