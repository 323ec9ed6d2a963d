/**
 * The control plane's files: the mesh file (ztunnel static-config shape) and
 * the token file are loaded at startup, watched, and reloaded; a refused
 * reload keeps the last good state; a refused startup names every problem;
 * the root CA is written where the user asked.
 */
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalCertificateAuthority } from '../src/ca/authority.js';
import { generateKeyAndCsr } from '../src/ca/csr.js';
import { systemClock } from '../src/platform/clock.js';
import { ControlPlaneError, startControlPlane } from '../src/control-plane/server.js';
import { startTestControlPlane, ztunnelNode, type TestControlPlane } from '../src/testing/index.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../src/xds/type-urls.js';
import { createCertificate, RawAdsStream } from './control-plane-raw-client.js';

let dir: string;
let cp: TestControlPlane | undefined;
const streams: RawAdsStream[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'control-plane-files-'));
});

afterEach(async () => {
  for (const s of streams.splice(0)) s.close();
  await cp?.close();
  cp = undefined;
  await rm(dir, { recursive: true, force: true });
});

function workloadYaml(name: string, ip: string): string {
  return `
  - uid: Kubernetes//Pod/default/${name}
    name: ${name}
    namespace: default
    serviceAccount: ${name.replace(/-\d+$/, '')}
    trustDomain: cluster.local
    workloadIps: ["${ip}"]
    protocol: HBONE
    node: node-a
    services: {}`;
}

function meshYaml(workloads: ReadonlyArray<[string, string]>, denyPort = 9000): string {
  return `workloads:${workloads.map(([n, ip]) => workloadYaml(n, ip)).join('')}
policies:
  - name: deny-debug
    namespace: default
    scope: Namespace
    action: Deny
    dryRun: false
    rules:
      - - - destinationPorts: [${denyPort}]
`;
}

const TOKENS = `- token: ztunnel-node-a
  namespace: istio-system
  serviceAccount: ztunnel
  node: node-a
`;

/** Writes the way editors do: a temporary file renamed over the original. */
async function swapIn(path: string, content: string): Promise<void> {
  const tmp = `${path}.swp`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

async function startWithFiles(mesh: string) {
  const meshPath = join(dir, 'mesh.yaml');
  const tokensPath = join(dir, 'tokens.yaml');
  await writeFile(meshPath, mesh);
  await writeFile(tokensPath, TOKENS);
  cp = await startTestControlPlane({ meshPath, tokensPath });
  const s = new RawAdsStream({ port: cp.port, rootCaPem: cp.rootCaPem, token: 'ztunnel-node-a' });
  streams.push(s);
  s.send({ node: ztunnelNode(), typeUrl: ADDRESS_TYPE_URL });
  s.send({ typeUrl: AUTHORIZATION_TYPE_URL });
  const addresses = await s.next(ADDRESS_TYPE_URL);
  const policies = await s.next(AUTHORIZATION_TYPE_URL);
  s.ack(addresses);
  s.ack(policies);
  return { cp, s, meshPath, tokensPath, addresses, policies };
}

describe('mesh file', () => {
  it('serves the file and pushes only the delta when it is replaced (rename swap)', async () => {
    const { cp, s, meshPath, addresses, policies } = await startWithFiles(meshYaml([['a-0', '10.0.0.1']]));
    expect(addresses.resources.map((r) => r.name)).toEqual(['Kubernetes//Pod/default/a-0']);
    expect(policies.resources.map((r) => r.name)).toEqual(['default/deny-debug']);

    await swapIn(meshPath, meshYaml([['a-0', '10.0.0.1'], ['b-0', '10.0.0.2']]));
    expect((await cp.nextReload()).ok).toBe(true);
    const push = await s.next(ADDRESS_TYPE_URL);
    expect(push.resources.map((r) => r.name)).toEqual(['Kubernetes//Pod/default/b-0']);
    expect(push.removedResources).toEqual([]);
  });

  it('picks up an in-place write too, and pushes removals and policy changes', async () => {
    const { cp, s, meshPath } = await startWithFiles(meshYaml([['a-0', '10.0.0.1'], ['b-0', '10.0.0.2']]));
    await writeFile(meshPath, meshYaml([['a-0', '10.0.0.1']], 9001));
    await cp.nextReload((e) => e.ok);
    const removal = await s.next(ADDRESS_TYPE_URL);
    expect(removal.removedResources).toEqual(['Kubernetes//Pod/default/b-0']);
    const policy = await s.next(AUTHORIZATION_TYPE_URL);
    expect(policy.resources.map((r) => r.name)).toEqual(['default/deny-debug']);
  });

  it('keeps serving the last good mesh when a reload is malformed, and reports every problem', async () => {
    const { cp, s, meshPath } = await startWithFiles(meshYaml([['a-0', '10.0.0.1']]));
    const broken = meshYaml([['a-0', 'not-an-ip']]).replace('action: Deny', 'action: Maybe');
    await swapIn(meshPath, broken);
    const refused = await cp.nextReload();
    expect(refused.ok).toBe(false);
    const text = refused.problems.map((p) => `${p.field}: ${p.reason}`).join('\n');
    expect(text).toContain('not-an-ip');
    expect(text).toContain('Maybe');
    expect(refused.problems.length).toBeGreaterThanOrEqual(2);

    // Nothing was pushed for the refused file: the next push is exactly the
    // difference between the last good mesh and the next good one.
    await swapIn(meshPath, meshYaml([['a-0', '10.0.0.1'], ['c-0', '10.0.0.3']]));
    await cp.nextReload((e) => e.ok);
    const push = await s.next(ADDRESS_TYPE_URL);
    expect(push.resources.map((r) => r.name)).toEqual(['Kubernetes//Pod/default/c-0']);
    expect(push.removedResources).toEqual([]);
    expect(s.pending()).toEqual([]);
  });

  it('refuses to start on a malformed mesh or token file, listing every problem in one error', async () => {
    const meshPath = join(dir, 'mesh.yaml');
    const tokensPath = join(dir, 'tokens.yaml');
    await writeFile(meshPath, meshYaml([['a-0', 'not-an-ip']]).replace('action: Deny', 'action: Maybe'));
    await writeFile(tokensPath, '- token: t\n  namespace: default\n');
    const error = await startControlPlane({ meshPath, tokensPath, listen: '127.0.0.1:0' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ControlPlaneError);
    const e = error as ControlPlaneError;
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.problems.length).toBeGreaterThanOrEqual(3);
    expect(e.message).toContain('not-an-ip');
    expect(e.message).toContain('Maybe');
    expect(e.message).toContain(`${tokensPath}[0].serviceAccount: is required`);
  });
});

describe('token file', () => {
  it('authenticates callers from the file and picks up new tokens on change', async () => {
    const { cp, tokensPath } = await startWithFiles(meshYaml([['a-0', '10.0.0.1']]));
    const { csrPem } = await generateKeyAndCsr({ trustDomain: 'cluster.local', namespace: 'default', serviceAccount: 'sleep' });
    const ask = () => createCertificate({ port: cp.port, rootCaPem: cp.rootCaPem, token: 'sleep-token' }, { csr: csrPem, validityDuration: 3600n });

    const before = await ask();
    expect(before.ok ? 'issued' : before.code).toBe(grpc.status.UNAUTHENTICATED);
    await swapIn(tokensPath, `${TOKENS}- token: sleep-token\n  namespace: default\n  serviceAccount: sleep\n`);
    await cp.nextReload((e) => e.file === 'tokens' && e.ok);
    expect((await ask()).ok).toBe(true);
  });
});

describe('root certificate output', () => {
  it('writes the root CA PEM the clients should trust', async () => {
    const rootCertOutPath = join(dir, 'root-cert.pem');
    const plane = await startControlPlane({ listen: '127.0.0.1:0', rootCertOutPath });
    try {
      expect(await readFile(rootCertOutPath, 'utf8')).toBe(plane.rootCaPem);
      expect(plane.rootCaPem).toContain('BEGIN CERTIFICATE');
      expect(plane.port).toBeGreaterThan(0);
      expect(plane.address).toBe(`127.0.0.1:${plane.port}`);
    } finally {
      await plane.close();
    }
  });

  it('refuses a listen address that is not <ip>:<port>, [<ipv6>]:<port> or localhost:<port>, naming the option', async () => {
    const error = await startControlPlane({ listen: 'istiod.example:15012' }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ControlPlaneError);
    expect((error as ControlPlaneError).code).toBe('CONFIG_INVALID');
    expect((error as ControlPlaneError).problems).toEqual([expect.objectContaining({ field: 'listen', reason: expect.stringContaining('expected <ip>:<port>') })]);
  });

  it('fails clearly when the port is taken', async () => {
    const first = await startControlPlane({ listen: '127.0.0.1:0' });
    try {
      const error = await startControlPlane({ listen: `127.0.0.1:${first.port}` }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ControlPlaneError);
      expect((error as ControlPlaneError).code).toBe('LISTEN_FAILED');
      expect((error as ControlPlaneError).message).toContain(`127.0.0.1:${first.port}`);
    } finally {
      await first.close();
    }
  });
});

describe('CA files', () => {
  it('signs with a given CA certificate and key, and names the file when one is unusable', async () => {
    const ca = await LocalCertificateAuthority.generate({ clock: systemClock, commonName: 'given root' });
    const caCertPath = join(dir, 'ca-cert.pem');
    const caKeyPath = join(dir, 'ca-key.pem');
    await writeFile(caCertPath, ca.signingCertPem);
    await writeFile(caKeyPath, ca.exportSigningKeyPem());
    const plane = await startControlPlane({ listen: '127.0.0.1:0', caCertPath, caKeyPath });
    try {
      expect(plane.rootCaPem).toBe(ca.rootsPem.join(''));
    } finally {
      await plane.close();
    }

    await writeFile(caKeyPath, 'not a key');
    const error = await startControlPlane({ listen: '127.0.0.1:0', caCertPath, caKeyPath }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ControlPlaneError);
    expect((error as ControlPlaneError).problems.map((p) => p.field)).toEqual([caKeyPath]);
  });
});
