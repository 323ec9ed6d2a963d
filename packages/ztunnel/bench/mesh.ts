/**
 * The mesh under test: the local control plane (in the benchmark process, on
 * a CA the benchmark also uses for HAProxy's certificates), a client and a
 * server workload, a service in front of the server, and one ztunnel per
 * workload, each its own process in dedicated mode with SOCKS5 on, bound to
 * the workload's loopback address, configured by env exactly as the Helm
 * chart / the in-process test harness do.
 */
import { request } from 'node:http';
import { join } from 'node:path';
import { LocalCaFetcher, LocalCertificateAuthority, parseIdentity, systemClock, type WorkloadCertificate } from '@ambient/control';
import { service, startTestControlPlane, workload, type TestControlPlane } from '@ambient/control/testing';
import { spawnChild, waitUntil, type Child } from './processes.js';

export interface WorkloadRef {
  readonly name: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly ip: string;
}

export interface Mesh {
  readonly cp: TestControlPlane;
  readonly ca: LocalCertificateAuthority;
  /** Issues a SPIFFE certificate for `spiffe://<td>/ns/<ns>/sa/<sa>` from the mesh CA (for the HAProxy pair). */
  certificate(namespace: string, serviceAccount: string): Promise<WorkloadCertificate>;
}

export async function startMesh(o: { client: WorkloadRef; server: WorkloadRef; vip: string; ports: Readonly<Record<number, number>> }): Promise<Mesh> {
  const ca = await LocalCertificateAuthority.generate({ clock: systemClock });
  const cp = await startTestControlPlane({ authority: ca });
  for (const w of [o.client, o.server]) {
    cp.setWorkload(workload({
      name: w.name,
      namespace: w.namespace,
      serviceAccount: w.serviceAccount,
      ips: [w.ip],
      node: 'node-a',
      ...(w === o.server ? { services: { [`${w.namespace}/app.${w.namespace}.svc.cluster.local`]: o.ports } } : {}),
    }));
  }
  cp.setService(service({ name: 'app', namespace: o.server.namespace, vips: [o.vip], ports: o.ports }));
  const fetcher = new LocalCaFetcher(ca, { clock: systemClock });
  return {
    cp,
    ca,
    certificate: async (namespace, serviceAccount) => {
      const id = parseIdentity(`spiffe://${cp.trustDomain}/ns/${namespace}/sa/${serviceAccount}`);
      if (!id.ok) throw new Error(`bad identity ${namespace}/${serviceAccount}`);
      return fetcher.fetch(id.value);
    },
  };
}

/** Starts `node dist/bin/ztunnel.js` for workload `w` and waits until /healthz/ready answers 200. */
export async function startZtunnelProcess(mesh: Mesh, w: WorkloadRef, o: { bin: string; dir: string; extraEnv?: NodeJS.ProcessEnv; nodeArgs?: readonly string[] }): Promise<Child> {
  const token = mesh.cp.token({ namespace: w.namespace, serviceAccount: w.serviceAccount, node: 'node-a' });
  const env: NodeJS.ProcessEnv = {
    PATH: process.env['PATH'],
    HOME: process.env['HOME'],
    XDS_ADDRESS: mesh.cp.url,
    CA_ADDRESS: mesh.cp.url,
    XDS_ROOT_CA: mesh.cp.rootCaPem,
    CA_ROOT_CA: mesh.cp.rootCaPem,
    AUTH_TOKEN: token,
    POD_NAME: w.name,
    POD_NAMESPACE: w.namespace,
    NODE_NAME: 'node-a',
    INSTANCE_IP: w.ip,
    PROXY_MODE: 'dedicated',
    PROXY_WORKLOAD_INFO: `${w.namespace}/${w.name}/${w.serviceAccount}`,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    ZTUNNEL_ADMIN_ADDR: `${w.ip}:15000`,
    ZTUNNEL_STATS_ADDR: `${w.ip}:15020`,
    ZTUNNEL_READINESS_ADDR: `${w.ip}:15021`,
    ZTUNNEL_INBOUND_ADDR: `${w.ip}:15008`,
    ZTUNNEL_INBOUND_PLAINTEXT_ADDR: `${w.ip}:15006`,
    ZTUNNEL_OUTBOUND_ADDR: `${w.ip}:15001`,
    ZTUNNEL_SOCKS5_ADDR: `${w.ip}:15080`,
    ISTIO_META_DNS_PROXY_ADDR: `${w.ip}:15053`,
    TERMINATION_GRACE_PERIOD_SECONDS: '3',
    LOG_FORMAT: 'json',
    ...o.extraEnv,
  };
  const child = spawnChild(`ztunnel ${w.name}`, process.execPath, [...(o.nodeArgs ?? []), o.bin], { logPath: join(o.dir, `ztunnel-${w.name}.log`), env });
  await waitUntil(`ztunnel ${w.name} readiness`, () => httpStatus(w.ip, 15021, '/healthz/ready').then((s) => s === 200), { timeoutMs: 30_000, child });
  return child;
}

export function httpStatus(ip: string, port: number, path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port, path, timeout: 2_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

/** GET a text page (metrics, config dump), bounded to 2 s. */
export function httpText(ip: string, port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ host: ip, port, path, timeout: 2_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}
