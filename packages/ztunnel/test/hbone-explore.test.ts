import { afterEach, beforeAll, it } from 'vitest';
import { systemClock, type LocalCertificateAuthority, type WorkloadCertificate } from '@ambient/control';
import { newCa, workloadCert } from './support/hbone-certs.js';
import { startHarness } from './support/hbone-server-harness.js';
import { connectHeaders, connectTls, data, FRAME, frame, headers, PREFACE, rawH2, settings, FLAG, hpack } from './support/raw-h2.js';

const clock = systemClock;
let ca: LocalCertificateAuthority;
let serverCert: WorkloadCertificate;
let clientCert: WorkloadCertificate;
const cleanup: Array<() => Promise<void> | void> = [];

beforeAll(async () => {
  ca = await newCa(clock);
  serverCert = await workloadCert(ca, 'spiffe://cluster.local/ns/server/sa/server', clock);
  clientCert = await workloadCert(ca, 'spiffe://cluster.local/ns/client/sa/client', clock);
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
});

async function raw(port: number) {
  const s = await connectTls(port, clientCert);
  cleanup.push(() => { s.destroy(); });
  const r = rawH2(s);
  await r.waitFor((f) => f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK), 'server SETTINGS');
  r.write(PREFACE, settings(), settings([], true));
  return r;
}

function show(r: ReturnType<typeof rawH2>) {
  return r.frames.map((f) => `${f.type}/${f.flags}/${f.streamId}${f.type === 3 || f.type === 7 ? `:${f.payload.readUInt32BE(f.type === 7 ? 4 : 0)}` : ''}`).slice(0, 30).join(' ');
}

it('explore', async () => {
  const cases: Record<string, (r: ReturnType<typeof rawH2>) => void> = {
    bigHeader: (r) => r.write(connectHeaders(1, '1.2.3.4:80', [['x-big', 'a'.repeat(70_000)]])),
    header60k: (r) => r.write(connectHeaders(1, '1.2.3.4:80', [['x-big', 'a'.repeat(60_000)], ['x-big2', 'a'.repeat(10_000)]])),
    header60kThenOk: (r) => r.write(connectHeaders(1, '1.2.3.4:80', [['x-big', 'a'.repeat(60_000)], ['x-big2', 'a'.repeat(10_000)]]), connectHeaders(3)),
  };
  for (const [name, act] of Object.entries(cases)) {
    const h = await startHarness({ clock, certificate: serverCert, limits: { maxSessionInvalidFrames: 10 } }, cleanup);
    const r = await raw(h.port);
    act(r);
    const outcome = await Promise.race([r.closed.then(() => 'closed'), new Promise((res) => setTimeout(() => res('open'), 3000))]);
    console.log(name, outcome, 'requests', h.requests.items.length, 'limits', h.limits.items, show(r).slice(0, 300));
    console.log('   logs', h.logs.items.filter((l) => l.level !== 'debug').map((l) => `${l.msg} ${JSON.stringify(l.fields.reason ?? l.fields.limit ?? '')}`).join(' | '));
    r.destroy();
  }
}, 60_000);
