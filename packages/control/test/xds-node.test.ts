import { describe, expect, it } from 'vitest';
import { buildNode, nodeId } from '../src/xds/node.js';

const podEnv = {
  POD_NAME: 'ztunnel-abcde',
  POD_NAMESPACE: 'istio-system',
  NODE_NAME: 'worker-1',
  INSTANCE_IP: '10.244.1.7',
};

describe('buildNode (ztunnel xds/client.rs Config::node)', () => {
  it('builds the id and the base metadata as strings', () => {
    const r = buildNode({ nodeType: 'ztunnel', env: podEnv });
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.value.id).toBe('ztunnel~10.244.1.7~ztunnel-abcde.istio-system~istio-system.svc.cluster.local');
    expect(r.value.metadata).toEqual({
      NAME: 'ztunnel-abcde',
      NAMESPACE: 'istio-system',
      INSTANCE_IPS: '10.244.1.7',
      NODE_NAME: 'worker-1',
      CLUSTER_ID: 'Kubernetes',
    });
    expect(r.value.cluster).toBe('');
  });

  it('defaults INSTANCE_IP to 1.1.1.1 and missing names to empty strings', () => {
    const r = buildNode({ nodeType: 'ztunnel', env: {} });
    if (!r.ok) throw new Error('unexpected rejection');
    expect(r.value.id).toBe('ztunnel~1.1.1.1~.~.svc.cluster.local');
    expect(r.value.metadata).toMatchObject({ NAME: '', NAMESPACE: '', INSTANCE_IPS: '1.1.1.1', NODE_NAME: '' });
  });

  it('uses the node type parameter (istiod model.NodeType waypoint)', () => {
    expect(nodeId('waypoint', { POD_NAME: 'wp-1', POD_NAMESPACE: 'ns', INSTANCE_IP: '10.0.0.9' })).toBe(
      'waypoint~10.0.0.9~wp-1.ns~ns.svc.cluster.local',
    );
  });

  it('CLUSTER_ID: ISTIO_META_CLUSTER_ID wins over CLUSTER_ID, which wins over Kubernetes', () => {
    const a = buildNode({ nodeType: 'ztunnel', env: { CLUSTER_ID: 'c2' } });
    const b = buildNode({ nodeType: 'ztunnel', env: { CLUSTER_ID: 'c2', ISTIO_META_CLUSTER_ID: 'c1' } });
    expect(a.ok && a.value.metadata?.['CLUSTER_ID']).toBe('c2');
    expect(b.ok && b.value.metadata?.['CLUSTER_ID']).toBe('c1');
  });

  it('adds proxyMetadata (prefix stripped), then ISTIO_META_* env (prefix stripped) overriding it', () => {
    const r = buildNode({
      nodeType: 'ztunnel',
      env: { ...podEnv, ISTIO_META_DNS_CAPTURE: 'false', ISTIO_META_FOO: 'from-env', OTHER: 'ignored' },
      proxyMetadata: { ISTIO_META_FOO: 'from-proxy-config', BAR: 'bar' },
    });
    if (!r.ok) throw new Error('unexpected rejection');
    expect(r.value.metadata).toMatchObject({ DNS_CAPTURE: 'false', FOO: 'from-env', BAR: 'bar' });
    expect(r.value.metadata).not.toHaveProperty('OTHER');
    expect(r.value.metadata).not.toHaveProperty('METAJSON_X');
  });

  it('parses ISTIO_METAJSON_* values as JSON', () => {
    const r = buildNode({
      nodeType: 'ztunnel',
      env: { ISTIO_METAJSON_LABELS: '{"app":"x","n":3,"ok":true,"l":[1,null]}', ISTIO_METAJSON_N: '42' },
    });
    if (!r.ok) throw new Error('unexpected rejection');
    expect(r.value.metadata?.['LABELS']).toEqual({ app: 'x', n: 3, ok: true, l: [1, null] });
    expect(r.value.metadata?.['N']).toBe(42);
  });

  it('rejects every malformed ISTIO_METAJSON_* value, naming the variable and value', () => {
    const r = buildNode({
      nodeType: 'ztunnel',
      env: { ISTIO_METAJSON_A: '{not json', ISTIO_METAJSON_B: '{"fine":1}', ISTIO_METAJSON_C: '' },
    });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.field)).toEqual(['ISTIO_METAJSON_A', 'ISTIO_METAJSON_C']);
    expect(r.errors[0]?.reason).toContain('must be a JSON value, got "{not json"');
  });

  it('ignores undefined entries in the record', () => {
    const r = buildNode({ nodeType: 'ztunnel', env: { ISTIO_META_X: undefined, ISTIO_METAJSON_Y: undefined } });
    expect(r.ok && Object.keys(r.value.metadata ?? {}).sort()).toEqual([
      'CLUSTER_ID',
      'INSTANCE_IPS',
      'NAME',
      'NAMESPACE',
      'NODE_NAME',
    ]);
  });
});
