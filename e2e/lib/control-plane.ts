/**
 * The local control plane (delta ADS + Istio CA over TLS on :15012) as a
 * child process in the fabric namespace, fed by a mesh file and a token file
 * in the cluster's temp dir. Changing the mesh = rewriting the file: the
 * control plane watches it and pushes the difference to the ztunnels.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { meshYaml, tokensYaml, writeAtomic, type Mesh, type TokenEntry } from './mesh.js';
import { NetnsProcess } from './processes.js';
import type { Netns } from './topology.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const CONTROL_PLANE_BIN = join(REPO_ROOT, 'packages/control/dist/bin/ambient-control-plane.js');
export const CONTROL_PLANE_PORT = 15012;

export class ControlPlaneProcess {
  private constructor(
    readonly process: NetnsProcess,
    readonly address: string,
    readonly rootCertPath: string,
    readonly meshPath: string,
  ) {}

  static async start(o: { netns: Netns; host: string; dir: string; mesh: Mesh; tokens: readonly TokenEntry[] }): Promise<ControlPlaneProcess> {
    if (!existsSync(CONTROL_PLANE_BIN)) throw new Error(`${CONTROL_PLANE_BIN} is missing: build first (\`npx turbo run build\` at the repository root)`);
    const meshPath = join(o.dir, 'mesh.yaml');
    const tokensPath = join(o.dir, 'tokens.yaml');
    const rootCertPath = join(o.dir, 'root-cert.pem');
    writeAtomic(meshPath, meshYaml(o.mesh));
    writeAtomic(tokensPath, tokensYaml(o.tokens));
    const address = `${o.host}:${CONTROL_PLANE_PORT}`;
    const proc = new NetnsProcess({
      name: 'control-plane',
      netns: o.netns.name,
      args: [CONTROL_PLANE_BIN, '--mesh', meshPath, '--tokens', tokensPath, '--listen', address, '--root-cert-out', rootCertPath, '--log-level', 'info'],
      env: {},
      logPath: join(o.dir, 'control-plane.log'),
    });
    const listening = proc.waitForLine(/listening on/, 20_000);
    const exited = proc.exited.then((e) => {
      throw new Error(`the control plane exited (${e.signal ?? e.code}) before listening:\n${proc.tail(40)}`);
    });
    await Promise.race([listening, exited]);
    exited.catch(() => undefined);
    if (!existsSync(rootCertPath)) throw new Error(`the control plane did not write ${rootCertPath}`);
    return new ControlPlaneProcess(proc, address, rootCertPath, meshPath);
  }

  /** Rewrites the mesh file; the control plane reloads it and pushes the changes. */
  update(mesh: Mesh): void {
    writeAtomic(this.meshPath, meshYaml(mesh));
  }
}
