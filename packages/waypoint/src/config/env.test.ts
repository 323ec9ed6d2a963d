import { describe, expect, it } from 'vitest';
import { formatRejections } from '@ambient/control';
import { parseWaypointConfig, waypointHostname } from './env.js';

/** The pod's mounts: the projected token and the root certificate ConfigMap. */
const podFiles = { fileExists: (p: string) => p === '/var/run/secrets/tokens/istio-token' || p === '/var/run/secrets/istio/root-cert.pem' };

/** The environment istiod's waypoint template gives the pod (files/waypoint.yaml), with a config dir. */
const POD_ENV = {
  POD_NAME: 'waypoint-5d9c7f8b4-x2l9q',
  POD_NAMESPACE: 'demo',
  INSTANCE_IP: '10.244.1.7',
  SERVICE_ACCOUNT: 'waypoint',
  ISTIO_META_SERVICE_ACCOUNT: 'waypoint',
  ISTIO_META_NODE_NAME: 'node-a',
  CA_ADDR: 'istiod.istio-system.svc:15012',
  PROXY_CONFIG: JSON.stringify({ discoveryAddress: 'istiod.istio-system.svc:15012', terminationDrainDuration: '7s', tracing: { zipkin: { address: 'zipkin.istio-system:9411' } } }),
  ISTIO_META_CLUSTER_ID: 'Kubernetes',
  ISTIO_META_NETWORK: 'net-1',
  ISTIO_META_WORKLOAD_NAME: 'waypoint',
  TRUST_DOMAIN: 'cluster.local',
  WAYPOINT_CONFIG_DIR: '/etc/waypoint',
};

function parse(env: Record<string, string>, argv: string[] = []) {
  const r = parseWaypointConfig(env, podFiles, argv);
  if (!r.ok) throw new Error(formatRejections(r.errors));
  return r.value;
}

function problems(env: Record<string, string>, argv: string[] = []): string {
  const r = parseWaypointConfig(env, podFiles, argv);
  if (r.ok) throw new Error('expected the config to be rejected');
  return formatRejections(r.errors);
}

describe('parseWaypointConfig', () => {
  it("translates the waypoint pod's pilot-agent environment into workload discovery and CA settings", () => {
    const c = parse(POD_ENV);
    expect(c.control.xdsAddress).toBe('https://istiod.istio-system.svc:15012');
    expect(c.control.caAddress).toBe('https://istiod.istio-system.svc:15012');
    expect(c.control.auth).toEqual({ kind: 'file', path: '/var/run/secrets/tokens/istio-token' });
    expect(c.control.xdsRootCa).toEqual({ kind: 'file', path: '/var/run/secrets/istio/root-cert.pem' });
    expect(c.control.serviceAccount).toBe('waypoint');
    expect(c.control.network).toBe('net-1');
    expect(c.control.nodeName).toBe('node-a');
    expect(c.gateway).toEqual({ namespace: 'demo', name: 'waypoint' });
    expect(waypointHostname(c)).toBe('waypoint.demo.svc.cluster.local');
    expect(c.drainDurationMs).toBe(7000);
    expect(c.zipkinAddress).toBe('zipkin.istio-system:9411');
    expect(c.connectTimeoutMs).toBe(10_000);
    expect(c.accessLog).toEqual({ file: '', encoding: 'TEXT' });
  });

  it("binds Istio's waypoint ports by default: 15008 HBONE, 15000 admin on localhost, 15020 stats, 15021 readiness", () => {
    const c = parse(POD_ENV);
    expect(c.addresses).toEqual({
      inbound: { host: '::', port: 15008 },
      admin: { host: 'localhost', port: 15000 },
      stats: { host: '::', port: 15020 },
      readiness: { host: '::', port: 15021 },
    });
  });

  it('explicit XDS_ADDRESS / CA_ADDRESS win over the pilot-agent names', () => {
    const c = parse({ ...POD_ENV, XDS_ADDRESS: 'https://127.0.0.1:15012', CA_ADDRESS: 'https://127.0.0.1:15013' });
    expect(c.control.xdsAddress).toBe('https://127.0.0.1:15012');
    expect(c.control.caAddress).toBe('https://127.0.0.1:15013');
  });

  it('accepts the arguments Istio\'s template passes, and --config-dir', () => {
    const { WAYPOINT_CONFIG_DIR: _dir, ...env } = POD_ENV;
    const c = parse(env, ['proxy', 'waypoint', '--domain', 'demo.svc.cluster.local', '--serviceCluster', 'waypoint.demo', '--proxyLogLevel=warning', '--log_as_json', '--config-dir', '/srv/manifests']);
    expect(c.configSource).toEqual({ kind: 'directory', path: '/srv/manifests' });
  });

  it('uses the Kubernetes source in a cluster when no directory is given', () => {
    const { WAYPOINT_CONFIG_DIR: _dir, ...env } = POD_ENV;
    expect(parse({ ...env, KUBERNETES_SERVICE_HOST: '10.96.0.1' }).configSource).toEqual({ kind: 'kubernetes' });
  });

  it.each([
    [{ WAYPOINT_CONFIG_DIR: '' }, 'WAYPOINT_CONFIG_DIR', 'no config source'],
    [{ PROXY_CONFIG: '{not json' }, 'PROXY_CONFIG', 'not JSON'],
    [{ PROXY_CONFIG: '[]' }, 'PROXY_CONFIG', 'expected a JSON object'],
    [{ PROXY_CONFIG: '{"discoveryAddress": 15012}' }, 'PROXY_CONFIG.discoveryAddress', 'expected a string'],
    [{ WAYPOINT_INBOUND_ADDR: '15008' }, 'WAYPOINT_INBOUND_ADDR', 'expected <ip>:<port>'],
    [{ WAYPOINT_CONNECT_TIMEOUT: 'soon' }, 'WAYPOINT_CONNECT_TIMEOUT', 'expected a duration'],
    [{ WAYPOINT_ACCESS_LOG_ENCODING: 'xml' }, 'WAYPOINT_ACCESS_LOG_ENCODING', 'expected TEXT or JSON'],
    [{ WAYPOINT_GATEWAY_NAME: 'Not_A_Name' }, 'WAYPOINT_GATEWAY_NAME', 'RFC 1123'],
    [{ LOG_FORMAT: 'xml' }, 'LOG_FORMAT', 'expected json or plain'],
  ])('rejects %o naming %s', (override, variable, reason) => {
    const text = problems({ ...POD_ENV, ...override });
    expect(text).toContain(variable);
    expect(text).toContain(reason);
  });

  it('reports every problem at once', () => {
    const text = problems({ ...POD_ENV, POD_NAMESPACE: '', WAYPOINT_STATS_ADDR: 'x', WAYPOINT_CONNECT_TIMEOUT: 'never' });
    expect(text).toContain('POD_NAMESPACE');
    expect(text).toContain('WAYPOINT_STATS_ADDR');
    expect(text).toContain('WAYPOINT_CONNECT_TIMEOUT');
  });

  it('refuses unknown arguments instead of ignoring them', () => {
    expect(problems(POD_ENV, ['--confg-dir', '/x'])).toContain('unknown argument "--confg-dir"');
  });
});
