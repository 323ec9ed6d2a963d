import { connect, createServer, type Server } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LocalCertificateAuthority, type IssuedCertificate } from '../ca/authority.js';
import { ManualClock } from '../testing/manual-clock.js';
import { controlPlaneTlsOptions, loadRootCerts, parseControlPlaneAddress, resolveControlPlaneChannel, serverIdentityCheck, type LoadedRoots } from './channel.js';

describe('parseControlPlaneAddress', () => {
  it.each([
    ['https://istiod.istio-system.svc:15012', { target: 'istiod.istio-system.svc:15012', host: 'istiod.istio-system.svc', port: 15012, secure: true }],
    ['istiod-rev0.istio-system-2:15012', { target: 'istiod-rev0.istio-system-2:15012', host: 'istiod-rev0.istio-system-2', port: 15012, secure: true }],
    ['https://10.0.0.1:15012/', { target: '10.0.0.1:15012', host: '10.0.0.1', port: 15012, secure: true }],
    ['https://[fd00::1]:15012', { target: '[fd00::1]:15012', host: 'fd00::1', port: 15012, secure: true }],
    ['https://istiod.example.com', { target: 'istiod.example.com:443', host: 'istiod.example.com', port: 443, secure: true }],
    ['http://localhost:15010', { target: 'localhost:15010', host: 'localhost', port: 15010, secure: false }],
  ])('%s', (address, expected) => {
    expect(parseControlPlaneAddress(address, 'XDS_ADDRESS')).toEqual({ ok: true, value: expected });
  });

  it.each(['ftp://istiod:15012', 'https://istiod:15012/path', 'https://user@istiod:15012', 'https://:15012', 'https://istiod:99999'])('refuses %s naming the setting', (address) => {
    const result = parseControlPlaneAddress(address, 'CA_ADDRESS');
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]?.field).toBe('CA_ADDRESS');
  });
});

describe('loadRootCerts', () => {
  let ca: LocalCertificateAuthority;
  beforeAll(async () => {
    ca = await LocalCertificateAuthority.generate({ clock: new ManualClock() });
  });

  it('uses the system store for SYSTEM', async () => {
    expect(await loadRootCerts({ kind: 'system' }, async () => '', 'XDS_ROOT_CA')).toEqual({ ok: true, value: { kind: 'system' } });
  });

  it('reads roots from a file and from inline PEM', async () => {
    const pem = ca.rootsPem[0] as string;
    expect(await loadRootCerts({ kind: 'file', path: '/root-cert.pem' }, async (p) => (p === '/root-cert.pem' ? pem : ''), 'CA_ROOT_CA')).toEqual({ ok: true, value: { kind: 'pem', pem } });
    expect(await loadRootCerts({ kind: 'static', pem }, async () => '', 'CA_ROOT_CA')).toEqual({ ok: true, value: { kind: 'pem', pem } });
  });

  it('reports a missing file or a file without certificates', async () => {
    const missing = await loadRootCerts({ kind: 'file', path: '/nope' }, async () => {
      throw new Error('ENOENT');
    }, 'CA_ROOT_CA');
    expect(missing).toMatchObject({ ok: false, errors: [{ field: 'CA_ROOT_CA', reason: expect.stringContaining('/nope') }] });
    const empty = await loadRootCerts({ kind: 'file', path: '/empty' }, async () => 'hello', 'XDS_ROOT_CA');
    expect(empty).toMatchObject({ ok: false, errors: [{ field: 'XDS_ROOT_CA' }] });
  });

  it('resolveControlPlaneChannel skips roots for a plaintext endpoint', async () => {
    const spec = await resolveControlPlaneChannel({ address: 'http://127.0.0.1:15010', roots: { kind: 'file', path: '/does-not-exist' } }, async () => {
      throw new Error('must not be read');
    }, 'XDS');
    expect(spec).toMatchObject({ ok: true, value: { endpoint: { secure: false } } });
  });
});

describe('control-plane TLS', () => {
  let ca: LocalCertificateAuthority;
  let serving: IssuedCertificate;
  let server: Server | undefined;
  beforeAll(async () => {
    ca = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: Date.UTC(2020, 0, 1) }), validitySeconds: 100 * 365 * 86400 });
    serving = await ca.issueServerCertificate(['istiod.istio-system.svc'], [], 50 * 365 * 86400);
  });
  afterEach(() => {
    server?.close();
    server = undefined;
  });

  async function listen(maxVersion: 'TLSv1.2' | 'TLSv1.3'): Promise<number> {
    const s = createServer({ key: serving.privateKeyPem, cert: serving.chainPem.join(''), maxVersion }, (sock) => sock.end());
    server = s;
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
    return (s.address() as AddressInfo).port;
  }

  function handshake(port: number, servername: string, alt: string | undefined): Promise<string> {
    const roots: LoadedRoots = { kind: 'pem', pem: ca.rootsPem.join('') };
    return new Promise((resolve, reject) => {
      const sock = connect({ host: '127.0.0.1', port, servername, ...controlPlaneTlsOptions(roots), checkServerIdentity: serverIdentityCheck(alt) }, () => {
        resolve(sock.getProtocol() ?? '');
        sock.destroy();
      });
      sock.on('error', reject);
    });
  }

  it('speaks TLS 1.3 and verifies the server name', async () => {
    const port = await listen('TLSv1.3');
    await expect(handshake(port, 'istiod.istio-system.svc', undefined)).resolves.toBe('TLSv1.3');
    await expect(handshake(port, 'other.example', undefined)).rejects.toThrow(/altnames|Hostname/i);
  });

  it('accepts the alternate name (ALT_*_HOSTNAME) when the dialled name does not match', async () => {
    const port = await listen('TLSv1.3');
    await expect(handshake(port, 'localhost', 'istiod.istio-system.svc')).resolves.toBe('TLSv1.3');
    await expect(handshake(port, 'localhost', 'wrong.example')).rejects.toThrow(/altnames|Hostname/i);
  });

  it('refuses a server that only offers TLS 1.2', async () => {
    const port = await listen('TLSv1.2');
    await expect(handshake(port, 'istiod.istio-system.svc', undefined)).rejects.toThrow(/version|protocol/i);
  });
});
