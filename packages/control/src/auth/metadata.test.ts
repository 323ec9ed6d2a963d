import { describe, expect, it } from 'vitest';
import { authHeaders, loadAuthMetadata, toMetadata } from './metadata.js';

describe('authHeaders', () => {
  it('sends authorization: Bearer and clusterid when a token is configured', () => {
    expect(authHeaders('jwt', 'Kubernetes', [])).toEqual([
      ['authorization', 'Bearer jwt'],
      ['clusterid', 'Kubernetes'],
    ]);
  });

  it('sends neither authorization nor clusterid without a token, as ztunnel (AuthSource::None)', () => {
    expect(authHeaders(undefined, 'Kubernetes', [['x-extra', '1']])).toEqual([['x-extra', '1']]);
  });

  it('keeps extra headers, and authorization/clusterid override extras of the same name', () => {
    const headers = authHeaders('jwt', 'c1', [
      ['header_foo', 'foo'],
      ['authorization', 'spoofed'],
      ['ClusterID', 'other'],
    ]);
    expect(Object.fromEntries(headers)).toEqual({ header_foo: 'foo', authorization: 'Bearer jwt', clusterid: 'c1' });
  });
});

describe('loadAuthMetadata', () => {
  it('builds grpc metadata reading the token through the injected readFile', async () => {
    const md = await loadAuthMetadata(
      { token: { kind: 'file', path: '/tok' }, clusterId: 'east', extraHeaders: [['ca-extra', 'v']] },
      async () => 'tok-value',
    );
    expect(md.ok).toBe(true);
    if (md.ok) {
      expect(md.value.get('authorization')).toEqual(['Bearer tok-value']);
      expect(md.value.get('clusterid')).toEqual(['east']);
      expect(md.value.get('ca-extra')).toEqual(['v']);
    }
  });

  it('fails (does not send an unauthenticated request) when the token file cannot be read', async () => {
    const md = await loadAuthMetadata(
      { token: { kind: 'file', path: '/tok' }, clusterId: 'east', extraHeaders: [] },
      async () => {
        throw new Error('EACCES');
      },
    );
    expect(md.ok).toBe(false);
  });

  it('toMetadata preserves every header', () => {
    expect(toMetadata([['a', '1'], ['b', '2']]).getMap()).toEqual({ a: '1', b: '2' });
  });
});
