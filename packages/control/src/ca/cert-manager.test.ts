import { beforeAll, describe, expect, it } from 'vitest';
import { identityToString, type Identity } from '../model/identity.js';
import { ManualClock } from '../testing/manual-clock.js';
import { LocalCertificateAuthority } from './authority.js';
import { CertManager, type CertManagerOptions } from './cert-manager.js';
import { LocalCaFetcher } from './local-fetcher.js';
import { CaError, type CertificateFetcher, type WorkloadCertificate } from './types.js';

const T0 = Date.UTC(2025, 5, 1);
const ident = (sa: string): Identity => ({ trustDomain: 'cluster.local', namespace: 'ns', serviceAccount: sa });
const A = ident('a');
const B = ident('b');

interface Call {
  readonly identity: Identity;
  readonly signal: AbortSignal | undefined;
  resolve(cert: WorkloadCertificate): void;
  reject(err: unknown): void;
}

/** A CertificateFetcher the test answers by hand, call by call. */
class ScriptedFetcher implements CertificateFetcher {
  readonly calls: Call[] = [];
  fetch(identity: Identity, signal?: AbortSignal): Promise<WorkloadCertificate> {
    return new Promise((resolve, reject) => this.calls.push({ identity, signal, resolve, reject }));
  }
  /** Names of the identities fetched, in call order. */
  order(): string[] {
    return this.calls.map((c) => c.identity.serviceAccount);
  }
  last(): Call {
    const call = this.calls.at(-1);
    if (call === undefined) throw new Error('no fetch was made');
    return call;
  }
}

let template: WorkloadCertificate;
beforeAll(async () => {
  const clock = new ManualClock({ now: T0 });
  const ca = await LocalCertificateAuthority.generate({ clock });
  template = await new LocalCaFetcher(ca, { clock, ttlSeconds: 3600 }).fetch(A);
});

/** A certificate for `identity` valid from `notBefore` for `lifetimeMs`. */
function cert(identity: Identity, notBefore: number, lifetimeMs: number): WorkloadCertificate {
  return { ...template, identity, notBefore, notAfter: notBefore + lifetimeMs };
}

function setup(options: Partial<CertManagerOptions> = {}) {
  const clock = new ManualClock({ now: T0 });
  const fetcher = new ScriptedFetcher();
  const manager = new CertManager({ fetcher, clock, random: () => 0.5, ...options });
  return { clock, fetcher, manager };
}

const unavailableCa = () => new CaError('CA_UNAVAILABLE', 'connection refused');

describe('CertManager', () => {
  it('shares one fetch among concurrent requests for the same identity', async () => {
    const { clock, fetcher, manager } = setup();
    const requests = [manager.fetchCertificate(A), manager.fetchCertificate(A), manager.fetchCertificate(A, 'warmup')];
    expect(fetcher.calls).toHaveLength(1);
    const c = cert(A, T0, 3600_000);
    fetcher.last().resolve(c);
    await clock.flush();
    for (const r of await Promise.all(requests)) expect(r).toBe(c);
    expect(await manager.fetchCertificate(A)).toBe(c);
    expect(fetcher.calls).toHaveLength(1);
  });

  it('keeps at most 8 CSRs in flight and starts the next when one settles', async () => {
    const { clock, fetcher, manager } = setup();
    const ids = Array.from({ length: 10 }, (_, i) => ident(`w${i}`));
    const pending = ids.map((id) => manager.fetchCertificate(id).catch((e: unknown) => e));
    expect(fetcher.calls).toHaveLength(8);
    fetcher.calls[0]?.resolve(cert(ids[0] as Identity, T0, 3600_000));
    await clock.flush();
    expect(fetcher.calls).toHaveLength(9);
    fetcher.calls[1]?.reject(unavailableCa());
    await clock.flush();
    expect(fetcher.calls).toHaveLength(10);
    expect(fetcher.order()).toEqual(ids.map((i) => i.serviceAccount));
    expect(await pending[1]).toMatchObject({ code: 'CERT_UNAVAILABLE' });
  });

  it('starts queued work by priority: RealTime, then Warmup, then Background refresh', async () => {
    const { clock, fetcher, manager } = setup({ concurrency: 1 });
    // R is installed with a short lifetime so its refresh becomes queued Background work.
    void manager.fetchCertificate(ident('r'));
    fetcher.last().resolve(cert(ident('r'), T0, 2000));
    await clock.flush();
    void manager.fetchCertificate(ident('busy')); // occupies the only slot
    await clock.advance(1000); // R's half-life: refresh queued behind "busy"
    manager.prefetch(ident('warm'));
    void manager.fetchCertificate(ident('now'));
    expect(fetcher.order()).toEqual(['r', 'busy']);
    const release = async () => {
      fetcher.last().resolve(cert(fetcher.last().identity, clock.now(), 3600_000));
      await clock.flush();
    };
    await release();
    await release();
    await release();
    expect(fetcher.order()).toEqual(['r', 'busy', 'now', 'warm', 'r']);
  });

  it('raises the priority of a queued prefetch when a connection starts waiting for it', async () => {
    const { clock, fetcher, manager } = setup({ concurrency: 1 });
    void manager.fetchCertificate(ident('busy'));
    manager.prefetch(ident('w1'));
    manager.prefetch(ident('w2'));
    const waiting = manager.fetchCertificate(ident('w2'));
    fetcher.last().resolve(cert(ident('busy'), T0, 3600_000));
    await clock.flush();
    expect(fetcher.last().identity).toEqual(ident('w2'));
    const c = cert(ident('w2'), T0, 3600_000);
    fetcher.last().resolve(c);
    await expect(waiting).resolves.toBe(c);
  });

  it('prefetch fetches at Warmup without waiting; later requests get the cached certificate', async () => {
    const { clock, fetcher, manager } = setup();
    manager.prefetch(A);
    expect(manager.state(A)).toEqual({ kind: 'Initializing' });
    expect(fetcher.calls).toHaveLength(1);
    const c = cert(A, T0, 3600_000);
    fetcher.last().resolve(c);
    await clock.flush();
    expect(manager.state(A)).toEqual({ kind: 'Available', certificate: c });
    await expect(manager.fetchCertificate(A)).resolves.toBe(c);
    expect(fetcher.calls).toHaveLength(1);
  });

  it('refreshes at half-life and notifies subscribers of the rotation', async () => {
    const { clock, fetcher, manager } = setup();
    const seen: Array<[string, WorkloadCertificate]> = [];
    manager.onCertificate((id, c) => seen.push([identityToString(id), c]));
    const first = cert(A, T0 - 2000, 10_000); // half-life at T0 + 3000
    void manager.fetchCertificate(A);
    fetcher.last().resolve(first);
    await clock.flush();
    await clock.advance(2999);
    expect(fetcher.calls).toHaveLength(1);
    await clock.advance(1);
    expect(fetcher.calls).toHaveLength(2);
    expect(await manager.fetchCertificate(A)).toBe(first); // still served while refreshing
    const second = cert(A, clock.now(), 10_000);
    fetcher.last().resolve(second);
    await clock.flush();
    expect(await manager.fetchCertificate(A)).toBe(second);
    expect(seen).toEqual([[identityToString(A), first], [identityToString(A), second]]);
    expect(clock.pendingTimers()).toEqual([5000]);
  });

  it('never schedules a refresh in the past for a back-dated certificate (no CSR storm)', async () => {
    const { clock, fetcher, manager } = setup();
    // Back-dated by 60 s with 10 s left: the half-life (T0 - 25 s) has passed already.
    const backdated = cert(A, T0 - 60_000, 70_000);
    void manager.fetchCertificate(A);
    fetcher.last().resolve(backdated);
    await clock.flush();
    expect(clock.pendingTimers()).toEqual([5000]); // half of the remaining 10 s
    await clock.advance(4999);
    expect(fetcher.calls).toHaveLength(1);
    await clock.advance(1);
    expect(fetcher.calls).toHaveLength(2);
  });

  it('keeps serving a valid certificate when renewal fails, retries at min(backoff, expiry), then fails closed after expiry (F-06)', async () => {
    const { clock, fetcher, manager } = setup();
    const c = cert(A, T0, 4000); // half-life at +2000, expiry at +4000
    void manager.fetchCertificate(A);
    fetcher.last().resolve(c);
    await clock.flush();
    await clock.advance(2000);
    fetcher.last().reject(unavailableCa()); // T0+2000
    await clock.flush();
    expect(manager.state(A)).toEqual({ kind: 'Available', certificate: c });
    expect(clock.pendingTimers()).toEqual([500]);
    await clock.advance(500);
    fetcher.last().reject(unavailableCa()); // T0+2500
    await clock.flush();
    expect(clock.pendingTimers()).toEqual([1000]);
    await clock.advance(1000);
    fetcher.last().reject(unavailableCa()); // T0+3500, backoff 2000 > 500 to expiry
    await clock.flush();
    expect(clock.pendingTimers()).toEqual([500]);
    await expect(manager.fetchCertificate(A)).resolves.toBe(c);

    await clock.advance(500); // T0+4000: the certificate has expired; retry in flight
    expect(fetcher.calls).toHaveLength(5);
    await expect(manager.fetchCertificate(A)).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE' });
    expect(manager.state(A)?.kind).toBe('Unavailable');
    fetcher.last().reject(unavailableCa());
    await clock.flush();
    const err = await manager.fetchCertificate(A).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CERT_UNAVAILABLE', cause: { code: 'CA_UNAVAILABLE' } });
    expect(clock.pendingTimers()).toEqual([4000]);

    // Recovery on the next success.
    await clock.advance(4000);
    const fresh = cert(A, clock.now(), 4000);
    fetcher.last().resolve(fresh);
    await clock.flush();
    await expect(manager.fetchCertificate(A)).resolves.toBe(fresh);
  });

  it('fails the first request fast when the CA is unavailable, and does not refetch on every request (F-05)', async () => {
    const { clock, fetcher, manager } = setup();
    const first = manager.fetchCertificate(A);
    fetcher.last().reject(unavailableCa());
    const err = await first.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaError);
    expect(err).toMatchObject({ code: 'CERT_UNAVAILABLE', cause: { code: 'CA_UNAVAILABLE' } });
    await expect(manager.fetchCertificate(A)).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE' });
    expect(fetcher.calls).toHaveLength(1);
    // Other identities are unaffected.
    const b = manager.fetchCertificate(B);
    const cb = cert(B, T0, 3600_000);
    fetcher.last().resolve(cb);
    await expect(b).resolves.toBe(cb);
    await clock.advance(500);
    expect(fetcher.order()).toEqual(['a', 'b', 'a']);
  });

  it('backs off 500 ms, 1 s, 2 s ... capped at 150 s', async () => {
    const { clock, fetcher, manager } = setup();
    manager.prefetch(A);
    const delays: number[] = [];
    for (let i = 0; i < 12; i++) {
      fetcher.last().reject(unavailableCa());
      await clock.flush();
      const [delay] = clock.pendingTimers();
      delays.push(delay as number);
      await clock.advance(delay as number);
    }
    expect(delays).toEqual([500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 150000, 150000, 150000]);
  });

  it('applies ±20 % jitter and never exceeds the cap', async () => {
    for (const [random, factor] of [[0, 0.8], [0.999999, 1.2]] as const) {
      const { clock, fetcher, manager } = setup({ random: () => random });
      manager.prefetch(A);
      const delays: number[] = [];
      for (let i = 0; i < 11; i++) {
        fetcher.last().reject(unavailableCa());
        await clock.flush();
        const [delay] = clock.pendingTimers();
        delays.push(delay as number);
        await clock.advance(delay as number);
      }
      expect(delays[0]).toBeCloseTo(500 * factor, 1);
      expect(delays[3]).toBeCloseTo(4000 * factor, 1);
      for (const d of delays) expect(d).toBeLessThanOrEqual(150_000);
      expect(delays[10]).toBeCloseTo(Math.min(150_000, 150_000 * factor), 1);
    }
  });

  it('resets the backoff after a success', async () => {
    const { clock, fetcher, manager } = setup();
    manager.prefetch(A);
    fetcher.last().reject(unavailableCa());
    await clock.advance(500);
    fetcher.last().reject(unavailableCa());
    await clock.advance(1000);
    fetcher.last().reject(unavailableCa());
    await clock.advance(2000);
    fetcher.last().resolve(cert(A, clock.now(), 2000));
    await clock.advance(1000); // half-life
    fetcher.last().reject(unavailableCa());
    await clock.flush();
    expect(clock.pendingTimers()).toEqual([500]);
  });

  it('forget stops refreshes and drops the certificate', async () => {
    const { clock, fetcher, manager } = setup();
    void manager.fetchCertificate(A);
    fetcher.last().resolve(cert(A, T0, 10_000));
    await clock.flush();
    expect(clock.pendingTimers()).toEqual([5000]);
    manager.forget(A);
    expect(clock.pendingTimers()).toEqual([]);
    expect(manager.state(A)).toBeUndefined();
    await clock.advance(60_000);
    expect(fetcher.calls).toHaveLength(1);
    expect(manager.certificates()).toEqual([]);
  });

  it('forget during a fetch aborts it, rejects waiters and discards the late answer', async () => {
    const { clock, fetcher, manager } = setup();
    const installs: string[] = [];
    manager.onCertificate((id) => installs.push(id.serviceAccount));
    const waiting = manager.fetchCertificate(A);
    const call = fetcher.last();
    manager.forget(A);
    expect(call.signal?.aborted).toBe(true);
    await expect(waiting).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE', message: expect.stringMatching(/forgotten/) });
    call.resolve(cert(A, T0, 10_000));
    await clock.flush();
    expect(manager.state(A)).toBeUndefined();
    expect(installs).toEqual([]);
    expect(clock.pendingTimers()).toEqual([]);
  });

  it('never installs a certificate for another identity or an expired one (F-07)', async () => {
    const { clock, fetcher, manager } = setup();
    const installs: string[] = [];
    manager.onCertificate((id) => installs.push(id.serviceAccount));
    const wrong = manager.fetchCertificate(A);
    fetcher.last().resolve(cert(B, T0, 10_000));
    await expect(wrong).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE', cause: { code: 'CA_IDENTITY_MISMATCH' } });
    expect(manager.state(A)?.kind).toBe('Unavailable');

    await clock.advance(500);
    fetcher.last().resolve(cert(A, T0 - 20_000, 10_000));
    await clock.flush();
    expect(manager.state(A)).toMatchObject({ kind: 'Unavailable', error: { code: 'CA_EXPIRED' } });
    expect(installs).toEqual([]);
  });

  it('rejects a waiter whose signal aborts, without disturbing the fetch', async () => {
    const { clock, fetcher, manager } = setup();
    const ac = new AbortController();
    const aborted = manager.fetchCertificate(A, 'realtime', ac.signal);
    const other = manager.fetchCertificate(A);
    ac.abort(new Error('connection closed'));
    await expect(aborted).rejects.toThrow('connection closed');
    const c = cert(A, T0, 10_000);
    fetcher.last().resolve(c);
    await clock.flush();
    await expect(other).resolves.toBe(c);
  });

  it('reports state for the config dump without private keys', async () => {
    const { clock, fetcher, manager } = setup();
    manager.prefetch(B);
    manager.prefetch(A);
    expect(manager.certificates().map((d) => [d.identity, d.state])).toEqual([
      ['spiffe://cluster.local/ns/ns/sa/a', 'Initializing'],
      ['spiffe://cluster.local/ns/ns/sa/b', 'Initializing'],
    ]);
    fetcher.calls[0]?.reject(new CaError('CA_REJECTED', 'PERMISSION_DENIED: request impersonation authentication failure'));
    fetcher.calls[1]?.resolve(template); // issued for A by the local CA
    await clock.flush();
    const [a, b] = manager.certificates();
    expect(b?.state).toMatch(/^Unavailable: .*impersonation authentication failure/);
    expect(a?.state).toBe('Available');
    expect(a?.certChain).toHaveLength(1);
    expect(a?.rootCerts).toHaveLength(1);
    const leaf = a?.certChain[0];
    expect(Buffer.from(leaf?.pem ?? '', 'base64').toString()).toBe(template.chainPem[0]);
    expect(leaf?.serialNumber).toBe(BigInt(`0x${template.leaf.serialNumber}`).toString(10));
    expect(leaf?.serialNumber).toMatch(/^\d+$/);
    expect(leaf?.validFrom).toBe(new Date(template.notBefore).toISOString().replace('.000Z', 'Z'));
    expect(leaf?.expirationTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    expect(JSON.stringify(manager.certificates())).not.toContain('PRIVATE KEY');
  });

  it('close rejects waiters and stops all timers', async () => {
    const { clock, fetcher, manager } = setup();
    void manager.fetchCertificate(B).catch(() => undefined);
    fetcher.last().resolve(cert(B, T0, 10_000));
    await clock.flush();
    const waiting = manager.fetchCertificate(A);
    manager.close();
    await expect(waiting).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE' });
    expect(clock.pendingTimers()).toEqual([]);
    await expect(manager.fetchCertificate(A)).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE' });
  });
});
