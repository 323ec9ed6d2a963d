/**
 * The Istio CA client against a real gRPC server over TLS on 127.0.0.1:0. The
 * server is a minimal CreateCertificate implementation written here, scripted
 * per test to answer honestly or badly, and recording what it received.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { Client, credentials, Metadata, Server, ServerCredentials, status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { LocalCertificateAuthority } from '../src/ca/authority.js';
import { IstioCaClient, type IstioCaClientOptions } from '../src/ca/ca-client.js';
import { CertManager } from '../src/ca/cert-manager.js';
import { generateKeyAndCsr } from '../src/ca/csr.js';
import { CaError } from '../src/ca/types.js';
import { authCallCredentials } from '../src/auth/metadata.js';
import { controlPlaneCredentials, resolveControlPlaneChannel } from '../src/grpc/channel.js';
import {
  IstioCertificateRequestSchema,
  IstioCertificateResponseSchema,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../src/gen/istio/v1/auth/ca_pb.js';
import { parseIdentity, type Identity } from '../src/model/identity.js';
import { systemClock } from '../src/platform/clock.js';
import { ManualClock } from '../src/testing/manual-clock.js';
import { CREATE_CERTIFICATE_METHOD } from '../src/xds/type-urls.js';

const ME: Identity = { trustDomain: 'cluster.local', namespace: 'istio-system', serviceAccount: 'ztunnel' };
const POD: Identity = { trustDomain: 'cluster.local', namespace: 'bookinfo', serviceAccount: 'reviews' };
const POD_ID = 'spiffe://cluster.local/ns/bookinfo/sa/reviews';

interface Received {
  readonly request: IstioCertificateRequest;
  readonly metadata: Record<string, unknown>;
}

type Answer = (request: IstioCertificateRequest, metadata: Metadata) => Promise<IstioCertificateResponse | { code: status; details: string } | 'hang'>;

/** A CreateCertificate server whose answer each test scripts. */
class ScriptedCaServer {
  readonly received: Received[] = [];
  answer: Answer = async () => ({ code: status.UNIMPLEMENTED, details: 'no answer scripted' });
  readonly #server = new Server();
  #onRequest: (() => void) | undefined;

  async start(credentials: ServerCredentials): Promise<number> {
    this.#server.addService(
      {
        createCertificate: {
          path: CREATE_CERTIFICATE_METHOD,
          requestStream: false,
          responseStream: false,
          requestSerialize: (m: IstioCertificateRequest) => Buffer.from(toBinary(IstioCertificateRequestSchema, m)),
          requestDeserialize: (b: Buffer) => fromBinary(IstioCertificateRequestSchema, b),
          responseSerialize: (m: IstioCertificateResponse) => Buffer.from(toBinary(IstioCertificateResponseSchema, m)),
          responseDeserialize: (b: Buffer) => fromBinary(IstioCertificateResponseSchema, b),
        },
      },
      {
        createCertificate: (call: ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>, callback: sendUnaryData<IstioCertificateResponse>) => {
          this.received.push({ request: call.request, metadata: call.metadata.getMap() });
          this.#onRequest?.();
          this.answer(call.request, call.metadata).then(
            (a) => {
              if (a === 'hang') return;
              if ('code' in a) callback({ code: a.code, details: a.details });
              else callback(null, a);
            },
            (err: unknown) => callback({ code: status.INTERNAL, details: String(err) }),
          );
        },
      },
    );
    return new Promise((resolve, reject) => {
      this.#server.bindAsync('127.0.0.1:0', credentials, (err, port) => (err ? reject(err) : resolve(port)));
    });
  }

  nextRequest(): Promise<void> {
    return new Promise((resolve) => (this.#onRequest = resolve));
  }

  stop(): void {
    this.#server.forceShutdown();
  }
}

function response(certChain: readonly string[]): IstioCertificateResponse {
  return create(IstioCertificateResponseSchema, { certChain: [...certChain] });
}

function identityOf(request: IstioCertificateRequest, fallback: Identity): Identity {
  const asked = request.metadata?.['ImpersonatedIdentity'];
  if (typeof asked !== 'string') return fallback;
  const parsed = parseIdentity(asked);
  return parsed.ok ? parsed.value : fallback;
}

describe('IstioCaClient against a gRPC CA over TLS', () => {
  let dir: string;
  let ca: LocalCertificateAuthority;
  let otherCa: LocalCertificateAuthority;
  let server: ScriptedCaServer;
  let port: number;
  let tokenPath: string;
  let rootsPath: string;
  const clients: IstioCaClient[] = [];
  const managers: CertManager[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'ca-client-'));
    ca = await LocalCertificateAuthority.generate({ clock: systemClock });
    otherCa = await LocalCertificateAuthority.generate({ clock: systemClock, commonName: 'unrelated CA' });
    tokenPath = join(dir, 'istio-token');
    rootsPath = join(dir, 'root-cert.pem');
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  beforeEach(async () => {
    await writeFile(tokenPath, 'token-one');
    await writeFile(rootsPath, ca.rootsPem.join(''));
    // Only a DNS name: the client dials 127.0.0.1 and must accept it through ALT_CA_HOSTNAME.
    const serving = await ca.issueServerCertificate(['istiod.istio-system.svc'], []);
    server = new ScriptedCaServer();
    port = await server.start(ServerCredentials.createSsl(null, [{ private_key: Buffer.from(serving.privateKeyPem), cert_chain: Buffer.from(serving.chainPem.join('')) }], false));
    server.answer = async (request) => response(await ca.sign(request.csr, identityOf(request, ME), Number(request.validityDuration)));
  });

  afterEach(() => {
    for (const m of managers.splice(0)) m.close();
    for (const c of clients.splice(0)) c.close();
    server.stop();
  });

  function options(): IstioCaClientOptions {
    return {
      connection: { address: `https://127.0.0.1:${port}`, roots: { kind: 'file', path: rootsPath }, altHostname: 'istiod.istio-system.svc' },
      auth: { token: { kind: 'file', path: tokenPath }, clusterId: 'Kubernetes', extraHeaders: [['x-ca-extra', 'extra-value']] },
      clock: systemClock,
      readFile,
      impersonate: true,
      ttlSeconds: 3600,
    };
  }

  async function client(overrides: Partial<IstioCaClientOptions> = {}, base: IstioCaClientOptions = options()): Promise<IstioCaClient> {
    const created = await IstioCaClient.create({ ...base, ...overrides });
    if (!created.ok) throw new Error(JSON.stringify(created.errors));
    clients.push(created.value);
    return created.value;
  }

  it('gets a verified certificate, sending the bearer token, clusterid, extra headers, TTL and ImpersonatedIdentity', async () => {
    const c = await client();
    const cert = await c.fetch(POD);
    expect(cert.identity).toEqual(POD);
    expect(cert.rootsPem).toEqual(ca.rootsPem);
    expect(cert.notAfter - cert.notBefore).toBe(3600_000 + 60_000);
    expect(cert.privateKeyPem).toMatch(/BEGIN PRIVATE KEY/);

    const [got] = server.received;
    expect(got?.metadata['authorization']).toBe('Bearer token-one');
    expect(got?.metadata['clusterid']).toBe('Kubernetes');
    expect(got?.metadata['x-ca-extra']).toBe('extra-value');
    expect(got?.request.validityDuration).toBe(3600n);
    expect(got?.request.metadata).toEqual({ ImpersonatedIdentity: POD_ID });
    expect(got?.request.csr).toMatch(/^-----BEGIN CERTIFICATE REQUEST-----/);
  });

  it('re-reads the token file for every request (projected token rotation)', async () => {
    const c = await client();
    await c.fetch(POD);
    await writeFile(tokenPath, 'token-two');
    await c.fetch(POD);
    expect(server.received.map((r) => r.metadata['authorization'])).toEqual(['Bearer token-one', 'Bearer token-two']);
  });

  it('sends no ImpersonatedIdentity in dedicated mode, and the default TTL of 24h', async () => {
    const { ttlSeconds: _ttl, ...withoutTtl } = options();
    const c = await client({ impersonate: false }, withoutTtl);
    const cert = await c.fetch(ME);
    expect(cert.identity).toEqual(ME);
    expect(server.received[0]?.request.metadata).toBeUndefined();
    expect(server.received[0]?.request.validityDuration).toBe(86_400n);
  });

  it('refuses a certificate for another identity (F-07) and the manager installs nothing', async () => {
    server.answer = async () => {
      const stranger = await generateKeyAndCsr(ME);
      return response(await ca.sign(stranger.csrPem, ME, 3600));
    };
    const c = await client();
    const err = await c.fetch(POD).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CaError);
    expect(err).toMatchObject({ code: 'CA_IDENTITY_MISMATCH' });

    const manager = new CertManager({ fetcher: c, clock: systemClock });
    managers.push(manager);
    const installed: unknown[] = [];
    manager.onCertificate((_, cert) => installed.push(cert));
    await expect(manager.fetchCertificate(POD)).rejects.toMatchObject({ code: 'CERT_UNAVAILABLE', cause: { code: 'CA_IDENTITY_MISMATCH' } });
    expect(manager.state(POD)?.kind).toBe('Unavailable');
    expect(installed).toEqual([]);
  });

  it('refuses an expired certificate', async () => {
    // A CA whose clock runs two hours behind issues ten-minute certificates.
    const lateCa = await LocalCertificateAuthority.generate({ clock: new ManualClock({ now: Date.now() - 2 * 3600_000 }) });
    server.answer = async (request) => response(await lateCa.sign(request.csr, POD, 600));
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_EXPIRED' });
  });

  it('refuses a chain that does not verify against the returned roots', async () => {
    server.answer = async (request) => {
      const chain = await otherCa.sign(request.csr, POD, 600);
      return response([chain[0] as string, ca.rootsPem.join('')]);
    };
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_BAD_RESPONSE', message: expect.stringMatching(/not signed by any returned root/) });
  });

  it('refuses an empty or leaf-only answer', async () => {
    server.answer = async () => response([]);
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_BAD_RESPONSE' });
  });

  it('maps an error status from istiod to CA_REJECTED with the details', async () => {
    server.answer = async () => ({ code: status.UNAUTHENTICATED, details: 'request impersonation authentication failure' });
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_REJECTED', message: expect.stringContaining('UNAUTHENTICATED: request impersonation authentication failure') });
  });

  it('maps an unreachable CA to CA_UNAVAILABLE', async () => {
    server.stop();
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_UNAVAILABLE' });
  });

  it('refuses a server whose certificate matches neither the dialled nor the alternate name', async () => {
    const c = await client({ connection: { address: `https://127.0.0.1:${port}`, roots: { kind: 'file', path: rootsPath } } });
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_UNAVAILABLE' });
    expect(server.received).toEqual([]);
  });

  it('gives up when the CA does not answer within the deadline (injected clock)', async () => {
    server.answer = async () => 'hang';
    const clock = new ManualClock({ now: Date.now() });
    const c = await client({ clock, timeoutMs: 30_000 });
    const result = c.fetch(POD).catch((e: unknown) => e);
    await server.nextRequest();
    await clock.advance(30_000);
    expect(await result).toMatchObject({ code: 'CA_UNAVAILABLE', message: expect.stringMatching(/within 30000 ms/) });
  });

  it('rebuilds the channel when the CA_ROOT_CA file changes', async () => {
    await writeFile(rootsPath, otherCa.rootsPem.join(''));
    const c = await client();
    await expect(c.fetch(POD)).rejects.toMatchObject({ code: 'CA_UNAVAILABLE' });
    await writeFile(rootsPath, ca.rootsPem.join(''));
    await expect(c.fetch(POD)).resolves.toMatchObject({ identity: POD });
  });

  it('reports a bad CA_ADDRESS or unreadable CA_ROOT_CA at creation', async () => {
    const bad = await IstioCaClient.create({
      connection: { address: 'ftp://istiod:15012', roots: { kind: 'system' } },
      auth: { token: { kind: 'none' }, clusterId: 'Kubernetes', extraHeaders: [] },
      clock: systemClock,
      readFile,
      impersonate: true,
    });
    expect(bad).toMatchObject({ ok: false, errors: [{ field: 'CA_ADDRESS' }] });
    const noRoots = await IstioCaClient.create({
      connection: { address: 'https://istiod:15012', roots: { kind: 'file', path: join(dir, 'missing.pem') } },
      auth: { token: { kind: 'none' }, clusterId: 'Kubernetes', extraHeaders: [] },
      clock: systemClock,
      readFile,
      impersonate: true,
    });
    expect(noRoots).toMatchObject({ ok: false, errors: [{ field: 'CA_ROOT_CA' }] });
  });

  it('serves a CertManager end to end: shared fetch, then the cached certificate', async () => {
    const c = await client();
    const manager = new CertManager({ fetcher: c, clock: systemClock });
    managers.push(manager);
    const [a, b] = await Promise.all([manager.fetchCertificate(POD), manager.fetchCertificate(POD)]);
    expect(a).toBe(b);
    expect(await manager.fetchCertificate(POD)).toBe(a);
    expect(server.received).toHaveLength(1);
    expect(manager.certificates()[0]).toMatchObject({ identity: POD_ID, state: 'Available' });
  });

  it('authCallCredentials puts the same headers on every call of a TLS channel (the xDS client uses it)', async () => {
    const spec = await resolveControlPlaneChannel({ address: `127.0.0.1:${port}`, roots: { kind: 'static', pem: ca.rootsPem.join('') }, altHostname: 'istiod.istio-system.svc' }, readFile, 'XDS');
    if (!spec.ok) throw new Error(JSON.stringify(spec.errors));
    const auth = { token: { kind: 'file', path: tokenPath }, clusterId: 'east', extraHeaders: [['x-xds-extra', '1']] } as const;
    const channel = credentials.combineChannelCredentials(controlPlaneCredentials(spec.value), authCallCredentials(auth, readFile));
    const raw = new Client(spec.value.endpoint.target, channel);
    try {
      const { csrPem } = await generateKeyAndCsr(ME);
      const call = (): Promise<void> => new Promise((resolve, reject) => {
        raw.makeUnaryRequest(
          CREATE_CERTIFICATE_METHOD,
          (m: IstioCertificateRequest) => Buffer.from(toBinary(IstioCertificateRequestSchema, m)),
          (b: Buffer) => fromBinary(IstioCertificateResponseSchema, b),
          create(IstioCertificateRequestSchema, { csr: csrPem, validityDuration: 60n }),
          new Metadata(),
          (err) => (err ? reject(err) : resolve()),
        );
      });
      await call();
      await writeFile(tokenPath, 'rotated');
      await call();
      expect(server.received.map((r) => [r.metadata['authorization'], r.metadata['clusterid'], r.metadata['x-xds-extra']])).toEqual([
        ['Bearer token-one', 'east', '1'],
        ['Bearer rotated', 'east', '1'],
      ]);
    } finally {
      raw.close();
    }
  });
});
