/**
 * The Kubernetes-less mesh the conformance suite runs in, built from
 * base-manifests.json the way a cluster would run it:
 *
 * - Namespaces; Deployments become one pod each (no replicas field → 1),
 *   named like Deployment pods, `<deployment>-<10-char hash>-<5-char suffix>`
 *   (deterministic, so the weight checks can recover `echo-v1` from it), with
 *   the template labels and their own loopback IP.
 * - Services get a ClusterIP VIP on 127.x; endpoints by selector (`echo`
 *   selects both versions) with targetPort resolution.
 * - Ambient enrolment as Istio's ambient conformance run does it: a waypoint
 *   Gateway `namespace` in gateway-conformance-mesh (Service `namespace` with
 *   ports 15021 and 15008, one pod with service account `namespace`, identity
 *   spiffe://cluster.local/ns/gateway-conformance-mesh/sa/namespace), the
 *   namespace labelled `istio.io/use-waypoint=namespace`, `--for all`: every
 *   Service AND every pod of that namespace names the waypoint (by hostname,
 *   as istiod writes it); the consumer namespace has no waypoint. With
 *   `waypoint: 'none'` nothing names a waypoint (plain ambient, used to prove
 *   the harness before the waypoint exists).
 * - Everything reaches every ztunnel (and the waypoint) over real delta xDS
 *   from the test control plane, as WDS Workload and Service resources.
 * - DNS as the pod sees it: `name` in the pod's namespace, `name.ns`,
 *   `name.ns.svc`, `name.ns.svc.cluster.local`; IPs resolve to themselves.
 * - Each pod runs the echo server (its Deployment's listeners) and its own
 *   ztunnel in dedicated mode on its IP; clients send through that ztunnel's
 *   SOCKS5 listener.
 * - The waypoint's config directory: the base Services as YAML, then each
 *   test's manifests in their own file, applied before the test and deleted
 *   after it (route names are reused between tests). Files are written under
 *   a temporary name and renamed, so a watcher never reads half a file.
 *
 * `planMesh` is pure (names, IPs, WDS resources); `startMesh` does the side
 * effects and `close()` undoes all of them, also after a failed start.
 */
import { createHash } from 'node:crypto';
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';
import { service, startTestControlPlane, workload, type GatewaySpec, type TestControlPlane } from '@ambient/control/testing';
import { echoCall, type EchoCall, type EchoCallResult, type EchoClientPod } from '../support/echo-client.js';
import { startEchoServer, type EchoServer } from '../support/echo-server.js';
import { startPodZtunnel, type PodZtunnel } from './pod-ztunnel.js';
import { parseSelector, type BaseManifests } from './scenarios.js';

export const MESH_NAMESPACE = 'gateway-conformance-mesh';
export const WAYPOINT_NAME = 'namespace';
export const TRUST_DOMAIN = 'cluster.local';
const NODE = 'node-a';
/** Deployment pod-name alphabet (k8s.io/apimachinery rand.SafeEncodeString). */
const POD_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

export interface MeshOptions {
  readonly base: BaseManifests;
  /** First three octets of pod IPs, e.g. `127.0.90` (pods get .10, .11, …; the waypoint .2). */
  readonly podNet: string;
  /** First three octets of Service VIPs, e.g. `127.90.0` (VIPs .10, .11, …; the waypoint Service .2). */
  readonly vipNet: string;
  /** `namespace`: Istio's ambient conformance setup; `none`: no waypoint anywhere. */
  readonly waypoint: 'namespace' | 'none';
}

export interface PodPlan {
  readonly namespace: string;
  readonly deployment: string;
  readonly name: string;
  readonly ip: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly serviceAccount: string;
  /** `--port` listeners (HTTP/1.1 + h2c) and `--grpc` listeners. */
  readonly httpPorts: readonly number[];
  readonly grpcPorts: readonly number[];
}

export interface ServicePortPlan {
  readonly name: string;
  readonly port: number;
  readonly targetPort: number;
  readonly appProtocol: string | null;
}

export interface ServicePlan {
  readonly namespace: string;
  readonly name: string;
  readonly hostname: string;
  readonly vip: string;
  readonly selector: Readonly<Record<string, string>>;
  readonly ports: readonly ServicePortPlan[];
  /** Pods selected (the endpoints). */
  readonly endpoints: readonly PodPlan[];
}

export interface WaypointPlan {
  readonly namespace: string;
  readonly name: string;
  readonly serviceAccount: string;
  readonly identity: string;
  readonly podName: string;
  readonly ip: string;
  readonly vip: string;
  readonly hostname: string;
}

export interface MeshPlan {
  readonly pods: readonly PodPlan[];
  readonly services: readonly ServicePlan[];
  readonly waypoint: WaypointPlan | undefined;
}

/** A deterministic Deployment-style pod name. */
export function podName(namespace: string, deployment: string): string {
  const digest = createHash('sha256').update(`${namespace}/${deployment}`).digest();
  const pick = (from: number, n: number) => Array.from(digest.subarray(from, from + n), (b) => POD_ALPHABET[b % POD_ALPHABET.length]).join('');
  return `${deployment}-${pick(0, 10)}-${pick(10, 5)}`;
}

/** The echo server's listeners from its args (`--port`, `--grpc`; defaults 8080 and 7070 when no args). TLS ports are left out: not served here. */
function listeners(args: readonly string[]): { http: number[]; grpc: number[] } {
  const values = (flag: string) => args.filter((a) => a.startsWith(`--${flag}=`)).map((a) => Number(a.slice(flag.length + 3)));
  const tls = new Set(values('tls'));
  const http = values('port').filter((p) => !tls.has(p));
  const grpc = values('grpc');
  return { http: args.length === 0 || http.length === 0 ? [8080] : http, grpc: grpc.length === 0 ? [7070] : grpc };
}

const selects = (selector: Readonly<Record<string, string>>, labels: Readonly<Record<string, string>>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

export function planMesh(o: MeshOptions): MeshPlan {
  let podHost = 10;
  let vipHost = 10;
  const pods: PodPlan[] = o.base.model.deployments.map((d) => {
    const l = listeners(d.args);
    return {
      namespace: d.namespace,
      deployment: d.name,
      name: podName(d.namespace, d.name),
      ip: `${o.podNet}.${podHost++}`,
      labels: d.podLabels,
      serviceAccount: 'default',
      httpPorts: l.http,
      grpcPorts: l.grpc,
    };
  });
  const services: ServicePlan[] = o.base.model.services.map((s) => {
    const selector = parseSelector(s.selector);
    return {
      namespace: s.namespace,
      name: s.name,
      hostname: `${s.name}.${s.namespace}.svc.${TRUST_DOMAIN}`,
      vip: `${o.vipNet}.${vipHost++}`,
      selector,
      ports: s.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, appProtocol: p.appProtocol })),
      endpoints: pods.filter((p) => p.namespace === s.namespace && selects(selector, p.labels)),
    };
  });
  const waypoint: WaypointPlan | undefined =
    o.waypoint === 'none'
      ? undefined
      : {
          namespace: MESH_NAMESPACE,
          name: WAYPOINT_NAME,
          serviceAccount: WAYPOINT_NAME,
          identity: `spiffe://${TRUST_DOMAIN}/ns/${MESH_NAMESPACE}/sa/${WAYPOINT_NAME}`,
          podName: podName(MESH_NAMESPACE, WAYPOINT_NAME),
          ip: `${o.podNet}.2`,
          vip: `${o.vipNet}.2`,
          hostname: `${WAYPOINT_NAME}.${MESH_NAMESPACE}.svc.${TRUST_DOMAIN}`,
        };
  return { pods, services, waypoint };
}

/** The WDS resources istiod would send for the plan. */
export function wdsResources(plan: MeshPlan): { workloads: ReturnType<typeof workload>[]; services: ReturnType<typeof service>[] } {
  const wp = plan.waypoint;
  const waypointRef = (namespace: string): GatewaySpec | undefined =>
    wp !== undefined && namespace === wp.namespace ? { destination: `${wp.namespace}/${wp.hostname}`, hboneMtlsPort: 15008 } : undefined;
  const workloads = plan.pods.map((p) => {
    const svcs: Record<string, Record<number, number>> = {};
    for (const s of plan.services) {
      if (s.endpoints.includes(p)) svcs[`${s.namespace}/${s.hostname}`] = Object.fromEntries(s.ports.map((sp) => [sp.port, sp.targetPort]));
    }
    const ref = waypointRef(p.namespace);
    return workload({
      name: p.name,
      namespace: p.namespace,
      serviceAccount: p.serviceAccount,
      trustDomain: TRUST_DOMAIN,
      ips: [p.ip],
      node: NODE,
      services: svcs,
      canonicalName: p.labels['app'] ?? p.deployment,
      canonicalRevision: p.labels['version'] ?? 'latest',
      workloadName: p.deployment,
      ...(ref ? { waypoint: ref } : {}),
    });
  });
  const services = plan.services.map((s) => {
    const ref = waypointRef(s.namespace);
    return service({
      name: s.name,
      namespace: s.namespace,
      hostname: s.hostname,
      vips: [s.vip],
      ports: Object.fromEntries(s.ports.map((p) => [p.port, p.targetPort])),
      ...(ref ? { waypoint: ref } : {}),
    });
  });
  if (wp !== undefined) {
    const ports = { 15021: 15021, 15008: 15008 };
    // The waypoint's own Service and pod never get a waypoint.
    services.push(service({ name: wp.name, namespace: wp.namespace, hostname: wp.hostname, vips: [wp.vip], ports }));
    workloads.push(
      workload({
        name: wp.podName,
        namespace: wp.namespace,
        serviceAccount: wp.serviceAccount,
        trustDomain: TRUST_DOMAIN,
        ips: [wp.ip],
        node: NODE,
        services: { [`${wp.namespace}/${wp.hostname}`]: ports },
        canonicalName: wp.name,
        canonicalRevision: 'latest',
        workloadName: wp.name,
      }),
    );
  }
  return { workloads, services };
}

/** The pod's DNS: short names in its namespace, `name.ns[.svc[.cluster.local]]`, IPs as themselves. */
export function resolverFor(plan: MeshPlan, namespace: string): (host: string) => string | undefined {
  const byFqdn = new Map<string, string>();
  for (const s of plan.services) byFqdn.set(s.hostname, s.vip);
  if (plan.waypoint) byFqdn.set(plan.waypoint.hostname, plan.waypoint.vip);
  return (host) => {
    if (/^\d+\.\d+\.\d+\.\d+$/.test(host)) return host;
    const h = host.toLowerCase().replace(/\.$/, '');
    const parts = h.split('.');
    const candidates =
      parts.length === 1
        ? [`${h}.${namespace}.svc.${TRUST_DOMAIN}`]
        : parts.length === 2
          ? [`${h}.svc.${TRUST_DOMAIN}`, `${h}.${namespace}.svc.${TRUST_DOMAIN}`]
          : parts.length === 3 && parts[2] === 'svc'
            ? [`${h}.${TRUST_DOMAIN}`]
            : [h];
    for (const c of candidates) {
      const ip = byFqdn.get(c);
      if (ip !== undefined) return ip;
    }
    return undefined;
  };
}

export interface MeshPod extends PodPlan {
  readonly echo: EchoServer;
  readonly ztunnel: PodZtunnel;
  /** What the conformance client in this pod uses. */
  readonly client: EchoClientPod;
}

export interface Mesh {
  readonly cp: TestControlPlane;
  readonly plan: MeshPlan;
  readonly pods: readonly MeshPod[];
  /** The waypoint's config directory (base Services, then the current test's manifests). */
  readonly configDir: string;
  /** The first pod in `namespace` matching `selector` (`app=echo,version=v1`), as the suite picks clients. */
  pod(namespace: string, selector: string): MeshPod;
  /** Runs the echo client in that pod. */
  call(from: MeshPod, call: EchoCall): Promise<EchoCallResult>;
  /** Writes one test's manifests (YAML documents, verbatim) as `<name>.yaml`. */
  apply(name: string, yamls: readonly string[]): Promise<void>;
  /** Deletes what `apply(name)` wrote. */
  remove(name: string): Promise<void>;
  close(): Promise<void>;
}

/** The base manifests' Service documents, verbatim, as one multi-document YAML file. */
export function baseServicesYaml(base: BaseManifests): string {
  const docs = parseAllDocuments(base.yaml);
  const services = docs.filter((d) => (d.toJS() as { kind?: unknown } | null)?.kind === 'Service');
  if (services.length !== base.model.services.length) {
    throw new Error(`base manifests: ${services.length} Service documents in the YAML, ${base.model.services.length} in the model`);
  }
  return services.map((d) => { const text = d.toString(); return text.startsWith('---') ? text : `---\n${text}`; }).join('');
}

export async function startMesh(o: MeshOptions): Promise<Mesh> {
  const plan = planMesh(o);
  const cleanups: Array<() => Promise<void>> = [];
  const closeAll = async () => {
    const errors: unknown[] = [];
    while (cleanups.length > 0) {
      try {
        await cleanups.pop()?.();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'closing the conformance mesh');
  };
  try {
    const configDir = await mkdtemp(path.join(os.tmpdir(), 'waypoint-conformance-'));
    cleanups.push(() => rm(configDir, { recursive: true, force: true }));
    const writeAtomically = async (name: string, text: string) => {
      const tmp = path.join(configDir, `.${name}.tmp`);
      await writeFile(tmp, text);
      await rename(tmp, path.join(configDir, name));
    };
    await writeAtomically('00-base-services.yaml', baseServicesYaml(o.base));

    const cp = await startTestControlPlane({ trustDomain: TRUST_DOMAIN });
    cleanups.push(() => cp.close());
    const wds = wdsResources(plan);
    for (const s of wds.services) cp.setService(s);
    for (const w of wds.workloads) cp.setWorkload(w);

    const pods = await Promise.all(
      plan.pods.map(async (p): Promise<MeshPod> => {
        const echo = await startEchoServer({ ip: p.ip, hostname: p.name, httpPorts: p.httpPorts, grpcPorts: p.grpcPorts });
        cleanups.push(() => echo.close());
        const ztunnel = await startPodZtunnel(cp, { ip: p.ip, namespace: p.namespace, podName: p.name, serviceAccount: p.serviceAccount, node: NODE });
        cleanups.push(() => ztunnel.close());
        return { ...p, echo, ztunnel, client: { ip: p.ip, socks5: ztunnel.socks5, resolve: resolverFor(plan, p.namespace) } };
      }),
    );

    const applied = new Set<string>();
    return {
      cp,
      plan,
      pods,
      configDir,
      pod: (namespace, selector) => {
        const want = parseSelector(selector);
        const found = pods.find((p) => p.namespace === namespace && selects(want, p.labels));
        if (!found) throw new Error(`no pod in ${namespace} matches ${selector}`);
        return found;
      },
      call: (from, call) => echoCall(from.client, call),
      apply: async (name, yamls) => {
        if (!/^[A-Za-z0-9-]+$/.test(name)) throw new Error(`manifest set name "${name}" must be letters, digits and dashes`);
        await writeAtomically(`${name}.yaml`, yamls.map((y) => `---\n${y.endsWith('\n') ? y : `${y}\n`}`).join(''));
        applied.add(name);
      },
      remove: async (name) => {
        if (!applied.delete(name)) return;
        await unlink(path.join(configDir, `${name}.yaml`));
      },
      close: closeAll,
    };
  } catch (err) {
    await closeAll().catch(() => {});
    throw err;
  }
}
