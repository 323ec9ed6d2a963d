import { describe, expect, it } from 'vitest';
import { applyHeaderModifier, HeaderList } from './headers.js';
import type { HeaderModifier } from '../resources/types.js';

const mod = (over: Partial<HeaderModifier>): HeaderModifier => ({ set: [], add: [], remove: [], ...over });

/** How the conformance checker reads a request header: all values joined with "," (no space). */
const checkerValue = (list: HeaderList, name: string) => list.getAll(name).join(',');

describe('HeaderList', () => {
  it('keeps raw lines in order, names as received, duplicates as separate lines', () => {
    const list = HeaderList.fromRaw(['Host', 'echo', 'X-A', '1', 'x-a', '2', 'Accept', '*/*']);
    expect(list.size).toBe(4);
    expect(list.getAll('x-a')).toEqual(['1', '2']);
    expect(list.get('X-A')).toBe('1');
    expect(list.joined('x-A')).toBe('1,2');
    expect(list.toRaw()).toEqual(['Host', 'echo', 'X-A', '1', 'x-a', '2', 'Accept', '*/*']);
    expect(list.entries()).toEqual([
      ['Host', 'echo'],
      ['X-A', '1'],
      ['x-a', '2'],
      ['Accept', '*/*'],
    ]);
  });

  it('answers absent headers with undefined / [] / false', () => {
    const list = HeaderList.fromRaw(['a', '1']);
    expect(list.get('b')).toBeUndefined();
    expect(list.getAll('b')).toEqual([]);
    expect(list.joined('b')).toBeUndefined();
    expect(list.has('b')).toBe(false);
    expect(list.has('A')).toBe(true);
  });

  it('ignores an odd trailing name and does not alias the source array', () => {
    const raw = ['a', '1', 'dangling'];
    const list = HeaderList.fromRaw(raw);
    expect(list.size).toBe(1);
    list.add('b', '2');
    expect(raw).toEqual(['a', '1', 'dangling']);
  });

  it('set replaces every line of the name with one line at the end; add appends; remove drops all', () => {
    const list = HeaderList.fromPairs([
      ['x-set', 'old1'],
      ['keep', 'k'],
      ['X-Set', 'old2'],
    ]);
    list.set('X-Set', 'new');
    expect(list.entries()).toEqual([
      ['keep', 'k'],
      ['X-Set', 'new'],
    ]);
    list.add('keep', 'k2');
    expect(list.getAll('KEEP')).toEqual(['k', 'k2']);
    expect(list.remove('Keep')).toBe(2);
    expect(list.remove('keep')).toBe(0);
    expect(list.entries()).toEqual([['X-Set', 'new']]);
  });

  it('clone is independent', () => {
    const a = HeaderList.fromRaw(['a', '1']);
    const b = a.clone();
    b.set('a', '2');
    expect(a.get('a')).toBe('1');
    expect(b.get('a')).toBe('2');
  });

  it('passes HTTP/2 pseudo-headers through as ordinary lines', () => {
    const list = HeaderList.fromRaw([':method', 'GET', ':path', '/x', 'te', 'trailers']);
    expect(list.get(':path')).toBe('/x');
    const lines: string[] = [];
    list.forEach((name, value, lower) => lines.push(`${name}|${value}|${lower}`));
    expect(lines).toEqual([':method|GET|:method', ':path|/x|:path', 'te|trailers|te']);
  });
});

describe('applyHeaderModifier (MeshHTTPRouteRequestHeaderModifier cases)', () => {
  it('/set: set adds a header that was absent', () => {
    const list = HeaderList.fromRaw(['Some-Other-Header', 'val']);
    applyHeaderModifier(list, mod({ set: [['X-Header-Set', 'set-overwrites-values']] }));
    expect(checkerValue(list, 'some-other-header')).toBe('val');
    expect(checkerValue(list, 'x-header-set')).toBe('set-overwrites-values');
  });

  it('/set: set overwrites an existing value', () => {
    const list = HeaderList.fromRaw(['Some-Other-Header', 'val', 'X-Header-Set', 'some-other-value']);
    applyHeaderModifier(list, mod({ set: [['X-Header-Set', 'set-overwrites-values']] }));
    expect(checkerValue(list, 'x-header-set')).toBe('set-overwrites-values');
  });

  it('/add: add to an absent header', () => {
    const list = HeaderList.fromRaw(['Some-Other-Header', 'val']);
    applyHeaderModifier(list, mod({ add: [['X-Header-Add', 'add-appends-values']] }));
    expect(checkerValue(list, 'x-header-add')).toBe('add-appends-values');
  });

  it('/add: add appends a second line to an existing header', () => {
    const list = HeaderList.fromRaw(['Some-Other-Header', 'val', 'X-Header-Add', 'some-other-value']);
    applyHeaderModifier(list, mod({ add: [['X-Header-Add', 'add-appends-values']] }));
    expect(list.getAll('x-header-add')).toEqual(['some-other-value', 'add-appends-values']);
    expect(checkerValue(list, 'x-header-add')).toBe('some-other-value,add-appends-values');
  });

  it('/remove', () => {
    const list = HeaderList.fromRaw(['X-Header-Remove', 'val']);
    applyHeaderModifier(list, mod({ remove: ['X-Header-Remove'] }));
    expect(list.has('x-header-remove')).toBe(false);
  });

  it('/multiple', () => {
    const list = HeaderList.fromRaw([
      'X-Header-Set-2', 'set-val-2',
      'X-Header-Add-2', 'add-val-2',
      'X-Header-Remove-2', 'remove-val-2',
      'Another-Header', 'another-header-val',
    ]);
    applyHeaderModifier(
      list,
      mod({
        set: [['X-Header-Set-1', 'header-set-1'], ['X-Header-Set-2', 'header-set-2']],
        add: [['X-Header-Add-1', 'header-add-1'], ['X-Header-Add-2', 'header-add-2'], ['X-Header-Add-3', 'header-add-3']],
        remove: ['X-Header-Remove-1', 'X-Header-Remove-2'],
      }),
    );
    expect(checkerValue(list, 'x-header-set-1')).toBe('header-set-1');
    expect(checkerValue(list, 'x-header-set-2')).toBe('header-set-2');
    expect(checkerValue(list, 'x-header-add-1')).toBe('header-add-1');
    expect(checkerValue(list, 'x-header-add-2')).toBe('add-val-2,header-add-2');
    expect(checkerValue(list, 'x-header-add-3')).toBe('header-add-3');
    expect(checkerValue(list, 'another-header')).toBe('another-header-val');
    expect(list.has('x-header-remove-1')).toBe(false);
    expect(list.has('x-header-remove-2')).toBe(false);
  });

  it('/case-insensitivity: canonical filter names act on lower-case request names', () => {
    const list = HeaderList.fromRaw([
      'x-header-set', 'original-val-set',
      'x-header-add', 'original-val-add',
      'x-header-remove', 'original-val-remove',
      'Another-Header', 'another-header-val',
    ]);
    applyHeaderModifier(list, mod({ set: [['X-Header-Set', 'header-set']], add: [['X-Header-Add', 'header-add']], remove: ['X-Header-Remove'] }));
    expect(checkerValue(list, 'X-Header-Set')).toBe('header-set');
    expect(checkerValue(list, 'X-Header-Add')).toBe('original-val-add,header-add');
    expect(list.has('X-Header-Remove')).toBe(false);
    expect(checkerValue(list, 'another-header')).toBe('another-header-val');
  });

  it('runs remove before set and add (Envoy order): a removed-and-added header ends with the added value', () => {
    const list = HeaderList.fromRaw(['x-a', 'old']);
    applyHeaderModifier(list, mod({ remove: ['x-a'], add: [['x-a', 'new']] }));
    expect(list.getAll('x-a')).toEqual(['new']);
  });

  it('never touches pseudo-headers or host', () => {
    const list = HeaderList.fromRaw([':path', '/x', 'host', 'echo', ':authority', 'echo']);
    applyHeaderModifier(list, mod({ set: [[':path', '/y'], ['Host', 'evil']], add: [[':authority', 'evil']], remove: [':path', 'HOST'] }));
    expect(list.entries()).toEqual([
      [':path', '/x'],
      ['host', 'echo'],
      [':authority', 'echo'],
    ]);
  });
});
