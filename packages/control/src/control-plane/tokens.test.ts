import { describe, expect, it } from 'vitest';
import { authenticate, parseTokenFile, TokenRegistry } from './tokens.js';

const md = (entries: Record<string, string>) => ({ get: (k: string) => (entries[k] === undefined ? [] : [entries[k]]) });

describe('parseTokenFile', () => {
  it('reads a list of token entries', () => {
    const r = parseTokenFile('- token: t1\n  namespace: istio-system\n  serviceAccount: ztunnel\n  node: node-a\n', 'tokens.yaml');
    expect(r).toEqual({ ok: true, value: [{ token: 't1', namespace: 'istio-system', serviceAccount: 'ztunnel', node: 'node-a' }] });
    expect(parseTokenFile('', 'tokens.yaml')).toEqual({ ok: true, value: [] });
  });

  it('reports every problem with its entry and field', () => {
    const r = parseTokenFile(
      '- token: t1\n  namespace: a\n  serviceAccount: b\n  colour: red\n- token: t1\n  namespace: "bad/ns"\n',
      'tokens.yaml',
    );
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.field)).toEqual([
      'tokens.yaml[0].colour',
      'tokens.yaml[1].serviceAccount',
      'tokens.yaml[1].namespace',
      'tokens.yaml[1].token',
    ]);
  });

  it('refuses a document that is not a list', () => {
    const r = parseTokenFile('tokens: []\n', 'tokens.yaml');
    expect(r.ok).toBe(false);
  });
});

describe('authenticate', () => {
  const tokens = new TokenRegistry([{ token: 'secret', namespace: 'ns', serviceAccount: 'sa' }]);

  it('accepts "Bearer <token>" in any case', () => {
    expect(authenticate(md({ authorization: 'Bearer secret' }), tokens)).toMatchObject({ ok: true, caller: { namespace: 'ns' } });
    expect(authenticate(md({ authorization: 'bearer secret' }), tokens).ok).toBe(true);
  });

  it('says why it refuses', () => {
    expect(authenticate(md({}), tokens)).toEqual({ ok: false, reason: 'no "authorization: Bearer <token>" header' });
    expect(authenticate(md({ authorization: 'Basic x' }), tokens).ok).toBe(false);
    expect(authenticate(md({ authorization: 'Bearer nope' }), tokens)).toEqual({ ok: false, reason: 'the bearer token is not in the token table' });
  });

  it('checks the clusterid header only when a cluster id is configured, and accepts its absence', () => {
    const headers = md({ authorization: 'Bearer secret', clusterid: 'west' });
    expect(authenticate(headers, tokens).ok).toBe(true);
    expect(authenticate(headers, tokens, 'east').ok).toBe(false);
    expect(authenticate(md({ authorization: 'Bearer secret' }), tokens, 'east').ok).toBe(true);
  });
});
