import { describe, expect, it } from 'vitest';
import { formatRejections } from '../result.js';
import { parseControlEnv, type Env, type EnvProbe } from './control-env.js';

const noFiles: EnvProbe = { fileExists: () => false };
const files = (...paths: string[]): EnvProbe => ({ fileExists: (p: string) => paths.includes(p) });

function parse(env: Env, probe: EnvProbe = noFiles) {
  const r = parseControlEnv(env, probe);
  if (!r.ok) throw new Error(formatRejections(r.errors));
  return r.value;
}

describe('parseControlEnv', () => {
  it('applies ztunnel defaults outside Kubernetes', () => {
    const c = parse({});
    expect(c.xdsAddress).toBe('https://localhost:15012');
    expect(c.caAddress).toBe('https://localhost:15012');
    expect(c.clusterId).toBe('Kubernetes');
    expect(c.clusterDomain).toBe('cluster.local');
    expect(c.trustDomain).toBe('cluster.local');
    expect(c.secretTtlSeconds).toBe(86_400);
    expect(c.instanceIp).toBe('1.1.1.1');
    expect(c.auth).toEqual({ kind: 'none' });
    expect(c.xdsRootCa).toEqual({ kind: 'file', path: './var/run/secrets/istio/root-cert.pem' });
    expect(c.fakeCa).toBe(false);
    expect(c.localXds).toBeUndefined();
  });

  it('defaults to istiod in istio-system inside Kubernetes and adds https:// when no scheme is given', () => {
    expect(parse({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }).xdsAddress).toBe('https://istiod.istio-system.svc:15012');
    expect(parse({ XDS_ADDRESS: 'istiod-rev0.istio-system-2:15012' }).xdsAddress).toBe('https://istiod-rev0.istio-system-2:15012');
  });

  it('disables xDS with XDS_ADDRESS="" and the CA client with FAKE_CA=true', () => {
    const c = parse({ XDS_ADDRESS: '', FAKE_CA: 'true' });
    expect(c.xdsAddress).toBeUndefined();
    expect(c.caAddress).toBeUndefined();
  });

  it('prefers ISTIO_META_CLUSTER_ID over CLUSTER_ID and collects metadata and headers', () => {
    const c = parse({
      CLUSTER_ID: 'a',
      ISTIO_META_CLUSTER_ID: 'b',
      ISTIO_META_DNS_CAPTURE: 'false',
      ISTIO_METAJSON_LABELS: '{"app":"x"}',
      XDS_HEADER_X_Tenant: 'blue',
      CA_HEADER_Foo: 'bar',
    });
    expect(c.clusterId).toBe('b');
    expect(c.proxyMetadata).toMatchObject({ CLUSTER_ID: 'b', DNS_CAPTURE: 'false' });
    expect(c.proxyMetadataJson).toEqual({ LABELS: '{"app":"x"}' });
    expect(c.xdsHeaders).toEqual([['x_tenant', 'blue']]);
    expect(c.caHeaders).toEqual([['foo', 'bar']]);
  });

  it('reads roots and tokens as files when they exist, else as literals', () => {
    const c = parse({ XDS_ROOT_CA: '/etc/root.pem', CA_ROOT_CA: 'SYSTEM', AUTH_TOKEN: '/t' }, files('/etc/root.pem', '/t'));
    expect(c.xdsRootCa).toEqual({ kind: 'file', path: '/etc/root.pem' });
    expect(c.caRootCa).toEqual({ kind: 'system' });
    expect(c.auth).toEqual({ kind: 'file', path: '/t' });
    expect(parse({ AUTH_TOKEN: 'literal-token' }).auth).toEqual({ kind: 'static', token: 'literal-token' });
    const pem = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
    expect(parse({ XDS_ROOT_CA: pem }).xdsRootCa).toEqual({ kind: 'static', pem });
  });

  it('reports every bad value at once, naming the variable, the value and what was expected', () => {
    const r = parseControlEnv(
      {
        FAKE_CA: 'yes',
        SECRET_TTL: 'one day',
        XDS_ADDRESS: 'https://istiod',
        TRUST_DOMAIN: 'Bad Domain',
        INSTANCE_IP: '10.0.0.999',
        ISTIO_METAJSON_X: '{',
        LOCAL_XDS_PATH: '/a.yaml',
        LOCAL_XDS: 'workloads: []',
        XDS_ROOT_CA: '/missing.pem',
      },
      noFiles,
    );
    expect(r.ok).toBe(false);
    if (r.ok) return;
    const fields = r.errors.map((e) => e.field).sort();
    expect(fields).toEqual(
      ['FAKE_CA', 'INSTANCE_IP', 'ISTIO_METAJSON_X', 'LOCAL_XDS_PATH', 'SECRET_TTL', 'TRUST_DOMAIN', 'XDS_ADDRESS', 'XDS_ROOT_CA'].sort(),
    );
    const text = formatRejections(r.errors);
    expect(text).toContain('FAKE_CA: "yes": expected "true" or "false"');
    expect(text).toContain('SECRET_TTL: "one day"');
    expect(text).toContain('mutually exclusive');
  });
});
