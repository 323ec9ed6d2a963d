/**
 * The control plane's IstioCertificateService over real TLS: who gets which
 * identity (own, or impersonated by a trusted node proxy for a workload on
 * its node), and the errors istiod gives otherwise.
 */
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateKeyAndCsr } from '../src/ca/csr.js';
import { startTestControlPlane, workload, type TestControlPlane } from '../src/testing/index.js';
import { createCertificate, type CaResult } from './control-plane-raw-client.js';

let cp: TestControlPlane;

beforeEach(async () => {
  cp = await startTestControlPlane();
  cp.setWorkload(workload({ name: 'productpage-0', namespace: 'bookinfo', serviceAccount: 'productpage', node: 'node-a', ips: ['10.0.0.5'] }));
});

afterEach(async () => {
  await cp.close();
});

const identity = (namespace: string, serviceAccount: string) => ({ trustDomain: 'cluster.local', namespace, serviceAccount });
const uri = (namespace: string, serviceAccount: string) => `spiffe://cluster.local/ns/${namespace}/sa/${serviceAccount}`;

async function request(opts: {
  token?: string;
  csrFor: { namespace: string; serviceAccount: string };
  validityDuration?: bigint;
  impersonate?: string;
  headers?: Record<string, string>;
}): Promise<CaResult> {
  const { csrPem } = await generateKeyAndCsr(identity(opts.csrFor.namespace, opts.csrFor.serviceAccount));
  return createCertificate(
    { port: cp.port, rootCaPem: cp.rootCaPem, ...(opts.token ? { token: opts.token } : {}), ...(opts.headers ? { headers: opts.headers } : {}) },
    {
      csr: csrPem,
      validityDuration: opts.validityDuration ?? 3600n,
      ...(opts.impersonate ? { metadata: { ImpersonatedIdentity: opts.impersonate } } : {}),
    },
  );
}

function issued(r: CaResult): string[] {
  if (!r.ok) throw new Error(`expected a certificate, got ${grpc.status[r.code]}: ${r.details}`);
  return r.response.certChain;
}

function refused(r: CaResult): { code: grpc.status; details: string } {
  if (r.ok) throw new Error('expected the CA to refuse');
  return { code: r.code, details: r.details };
}

describe('own identity', () => {
  it("issues the caller's identity with the requested lifetime, leaf first and root last, one PEM per element", async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const chain = issued(await request({ token, csrFor: { namespace: 'default', serviceAccount: 'sleep' }, validityDuration: 3600n }));

    expect(chain.length).toBeGreaterThanOrEqual(2);
    for (const pem of chain) {
      expect(pem.endsWith('-----END CERTIFICATE-----\n')).toBe(true);
      expect(pem.match(/BEGIN CERTIFICATE/g)).toHaveLength(1);
    }
    const leaf = new X509Certificate(chain[0]!);
    const root = new X509Certificate(chain[chain.length - 1]!);
    expect(leaf.subjectAltName).toBe(`URI:${uri('default', 'sleep')}`);
    expect(leaf.verify(root.publicKey)).toBe(true);
    expect(root.toString().trim()).toBe(cp.rootCaPem.trim());
    const lifetime = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    expect(lifetime).toBeGreaterThanOrEqual(3600);
    expect(lifetime).toBeLessThanOrEqual(3600 + 120);

    const seen = await cp.nextCaRequest();
    expect(seen.headers['authorization']).toBe(`Bearer ${token}`);
    expect(seen.outcome).toMatchObject({ ok: true, identity: uri('default', 'sleep'), ttlSeconds: 3600 });
  });

  it('uses the default 24h lifetime when validity_duration is 0', async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const chain = issued(await request({ token, csrFor: { namespace: 'default', serviceAccount: 'sleep' }, validityDuration: 0n }));
    const leaf = new X509Certificate(chain[0]!);
    const lifetime = (Date.parse(leaf.validTo) - Date.parse(leaf.validFrom)) / 1000;
    expect(lifetime).toBeGreaterThanOrEqual(86400);
    expect(lifetime).toBeLessThanOrEqual(86400 + 120);
  });

  it('refuses a lifetime above the 90-day maximum with INVALID_ARGUMENT, as istiod does', async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const r = refused(await request({ token, csrFor: { namespace: 'default', serviceAccount: 'sleep' }, validityDuration: 90n * 86400n + 1n }));
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toBe('CSR signing error (requested TTL 2160h0m1s is greater than the max allowed TTL 2160h0m0s)');
  });

  it('refuses a CSR for another identity with INVALID_ARGUMENT', async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const r = refused(await request({ token, csrFor: { namespace: 'bookinfo', serviceAccount: 'productpage' } }));
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toContain(uri('default', 'sleep'));
  });

  it('refuses a CSR that does not parse with INVALID_ARGUMENT', async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const r = refused(await createCertificate({ port: cp.port, rootCaPem: cp.rootCaPem, token }, { csr: 'not a csr', validityDuration: 3600n }));
    expect(r.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(r.details).toContain('csr: is not a PEM PKCS#10 certificate request');
  });
});

describe('authentication', () => {
  it('refuses a missing or unknown bearer token with UNAUTHENTICATED', async () => {
    const missing = refused(await request({ csrFor: { namespace: 'default', serviceAccount: 'sleep' } }));
    expect(missing.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(missing.details).toBe('request authenticate failure: no "authorization: Bearer <token>" header');

    const unknown = refused(await request({ token: 'who-am-i', csrFor: { namespace: 'default', serviceAccount: 'sleep' } }));
    expect(unknown.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(unknown.details).toBe('request authenticate failure: the bearer token is not in the token table');
  });

  it('refuses a clusterid header naming another cluster', async () => {
    await cp.close();
    cp = await startTestControlPlane({ clusterId: 'east' });
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep' });
    const r = refused(await request({ token, csrFor: { namespace: 'default', serviceAccount: 'sleep' }, headers: { clusterid: 'west' } }));
    expect(r.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(r.details).toContain('client claims to be in cluster "west"');
    // The local cluster's own name is fine.
    expect((await request({ token, csrFor: { namespace: 'default', serviceAccount: 'sleep' }, headers: { clusterid: 'east' } })).ok).toBe(true);
  });
});

describe('impersonation (metadata.ImpersonatedIdentity)', () => {
  const target = uri('bookinfo', 'productpage');

  it('issues a workload identity to the node proxy of the node that workload runs on', async () => {
    const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
    const chain = issued(await request({ token, csrFor: { namespace: 'bookinfo', serviceAccount: 'productpage' }, impersonate: target }));
    expect(new X509Certificate(chain[0]!).subjectAltName).toBe(`URI:${target}`);
    const seen = await cp.nextCaRequest();
    expect(seen.metadata).toEqual({ ImpersonatedIdentity: target });
    expect(seen.caller).toMatchObject({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
  });

  it('refuses a caller that is not a trusted node account, with istiod\'s message', async () => {
    const token = cp.token({ namespace: 'default', serviceAccount: 'sleep', node: 'node-a' });
    const r = refused(await request({ token, csrFor: { namespace: 'bookinfo', serviceAccount: 'productpage' }, impersonate: target }));
    expect(r).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'request impersonation authentication failure' });
  });

  it('refuses a node proxy on a node where no workload has that identity', async () => {
    const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-b' });
    const r = refused(await request({ token, csrFor: { namespace: 'bookinfo', serviceAccount: 'productpage' }, impersonate: target }));
    expect(r).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'request impersonation authentication failure' });
  });

  it('follows the mesh: the identity becomes available when a workload with it lands on the node', async () => {
    const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-b' });
    const csrFor = { namespace: 'bookinfo', serviceAccount: 'productpage' };
    expect((await request({ token, csrFor, impersonate: target })).ok).toBe(false);
    cp.setWorkload(workload({ name: 'productpage-1', namespace: 'bookinfo', serviceAccount: 'productpage', node: 'node-b', ips: ['10.0.0.6'] }));
    expect((await request({ token, csrFor, impersonate: target })).ok).toBe(true);
  });

  it('refuses an impersonated identity that is not a SPIFFE identity', async () => {
    const token = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
    const r = refused(await request({ token, csrFor: { namespace: 'bookinfo', serviceAccount: 'productpage' }, impersonate: 'productpage' }));
    expect(r).toEqual({ code: grpc.status.UNAUTHENTICATED, details: 'request impersonation authentication failure' });
  });

  it('honours CA_TRUSTED_NODE_ACCOUNTS-style configuration', async () => {
    await cp.close();
    cp = await startTestControlPlane({ trustedNodeAccounts: ['kube-system/node-proxy'] });
    cp.setWorkload(workload({ name: 'productpage-0', namespace: 'bookinfo', serviceAccount: 'productpage', node: 'node-a' }));
    const ztunnel = cp.token({ namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' });
    const custom = cp.token({ namespace: 'kube-system', serviceAccount: 'node-proxy', node: 'node-a' });
    const csrFor = { namespace: 'bookinfo', serviceAccount: 'productpage' };
    expect((await request({ token: ztunnel, csrFor, impersonate: target })).ok).toBe(false);
    expect((await request({ token: custom, csrFor, impersonate: target })).ok).toBe(true);
  });
});
