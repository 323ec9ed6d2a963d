import { describe, expect, it } from 'vitest';
import { loadToken, parseToken, type ReadFile } from './token.js';

function files(contents: Record<string, string>): ReadFile & { reads: string[] } {
  const reads: string[] = [];
  const fn = async (path: string) => {
    reads.push(path);
    const v = contents[path];
    if (v === undefined) throw Object.assign(new Error(`ENOENT: no such file, open '${path}'`), { code: 'ENOENT' });
    return v;
  };
  return Object.assign(fn, { reads });
}

describe('loadToken', () => {
  it('sends nothing without a token source', async () => {
    expect(await loadToken({ kind: 'none' }, files({}))).toEqual({ ok: true, value: undefined });
  });

  it('uses a static token literally', async () => {
    expect(await loadToken({ kind: 'static', token: 'abc.def.ghi' }, files({}))).toEqual({ ok: true, value: 'abc.def.ghi' });
  });

  it('re-reads a file-based token on every call, so projected token rotation is picked up', async () => {
    const contents: Record<string, string> = { '/var/run/secrets/tokens/istio-token': 'token-1' };
    const readFile = files(contents);
    const source = { kind: 'file', path: '/var/run/secrets/tokens/istio-token' } as const;
    expect(await loadToken(source, readFile)).toEqual({ ok: true, value: 'token-1' });
    contents['/var/run/secrets/tokens/istio-token'] = 'token-2\n';
    expect(await loadToken(source, readFile)).toEqual({ ok: true, value: 'token-2' });
    expect(readFile.reads).toHaveLength(2);
  });

  it('accepts bytes from the file system', async () => {
    const readFile: ReadFile = async () => new TextEncoder().encode('jwt');
    expect(await loadToken({ kind: 'file', path: '/t' }, readFile)).toEqual({ ok: true, value: 'jwt' });
  });

  it('reports an unreadable token file with its path instead of throwing', async () => {
    const result = await loadToken({ kind: 'file', path: '/missing' }, files({}));
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.errors[0]?.field).toBe('AUTH_TOKEN');
      expect(result.errors[0]?.reason).toContain('/missing');
    }
  });

  it('refuses an empty token file (ztunnel: "token file exists, but was empty")', async () => {
    const result = await loadToken({ kind: 'file', path: '/t' }, files({ '/t': '  \n' }));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.errors[0]?.reason).toMatch(/empty/);
  });
});

describe('parseToken', () => {
  it('refuses characters that cannot go in a header value', () => {
    expect(parseToken('a\u0000b', 'AUTH_TOKEN').ok).toBe(false);
    expect(parseToken('a b', 'AUTH_TOKEN').ok).toBe(false);
    expect(parseToken('eyJhbGciOi.x-y_z', 'AUTH_TOKEN')).toEqual({ ok: true, value: 'eyJhbGciOi.x-y_z' });
  });
});
