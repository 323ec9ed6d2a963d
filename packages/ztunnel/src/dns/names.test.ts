import { describe, expect, it } from 'vitest';
import { aliasesFor, hasDomain, kubeExpansions, normalizeName, searchDomainsFor, trimDomain, wildcardsOf } from './names.js';

const D = 'cluster.local';

describe('kubeExpansions (ztunnel to_kube_fqdns) for a client in ns1', () => {
  it.each([
    ['name', ['name.ns1.svc.cluster.local']],
    ['name.ns2', ['name.ns2.svc.cluster.local', 'name.ns2.ns1.svc.cluster.local']],
    ['name.ns2.svc', ['name.ns2.svc.cluster.local', 'name.ns2.svc.svc.cluster.local']],
    ['name.ns2.not-svc', ['name.ns2.not-svc.svc.cluster.local']],
    ['pod.sub-domain.ns.svc', ['pod.sub-domain.ns.svc.cluster.local']],
    ['pod.sub-domain.ns.not-svc', []],
    ['name.ns2.svc.cluster', []],
    ['name.ns2.svc.cluster.local', []],
    ['www.google.com', ['www.google.com.svc.cluster.local']],
  ])('%s', (host, expected) => {
    expect(kubeExpansions(host, 'ns1', D)).toEqual(expected);
  });

  it('uses the configured cluster domain', () => {
    expect(kubeExpansions('name.ns2', 'ns1', 'corp.example')).toEqual(['name.ns2.svc.corp.example', 'name.ns2.ns1.svc.corp.example']);
  });
});

describe('normalizeName', () => {
  it.each([
    ['name.', 'name'],
    ['Name.NS1.Svc.Cluster.Local.', 'name.ns1.svc.cluster.local'],
    ['name', 'name'],
    ['.', ''],
  ])('%s -> %s', (input, expected) => expect(normalizeName(input)).toBe(expected));
});

describe('search domains', () => {
  it('are the fixed per-pod list of shared mode', () => {
    expect(searchDomainsFor('default-ns', D)).toEqual(['default-ns.svc.cluster.local', 'svc.cluster.local', 'cluster.local']);
  });

  it('hasDomain needs at least one more label than the domain', () => {
    expect(hasDomain('name.ns.svc.cluster.local', 'svc.cluster.local')).toBe(true);
    expect(hasDomain('name.ns.a.different.domain', 'svc.cluster.local')).toBe(false);
    expect(hasDomain('cluster.com', 'svc.cluster.local')).toBe(false);
    expect(hasDomain('svc.cluster.local', 'svc.cluster.local')).toBe(false);
  });

  it('trimDomain strips the domain, or says it cannot', () => {
    expect(trimDomain('name.ns.svc.cluster.local', 'svc.cluster.local')).toBe('name.ns');
    expect(trimDomain('name.ns.a.different.domain', 'svc.cluster.local')).toBeUndefined();
    expect(trimDomain('svc.cluster.local', 'svc.cluster.local')).toBeUndefined();
  });
});

describe('aliasesFor (ztunnel get_aliases)', () => {
  const search = searchDomainsFor('ns1', D);
  const aliases = (name: string) => aliasesFor(normalizeName(name), 'ns1', D, search);

  it('one label: the name, then the client namespace FQDN', () => {
    expect(aliases('productpage.')).toEqual([
      { name: 'productpage', stripped: undefined },
      { name: 'productpage.ns1.svc.cluster.local', stripped: undefined },
    ]);
  });

  it('two labels: svc.ns and the pod.subdomain form', () => {
    expect(aliases('example.ns2').map((a) => a.name)).toEqual(['example.ns2', 'example.ns2.svc.cluster.local', 'example.ns2.ns1.svc.cluster.local']);
  });

  it('x.y.svc gets the cluster domain', () => {
    expect(aliases('example.ns2.svc').map((a) => a.name)).toEqual([
      'example.ns2.svc',
      'example.ns2.svc.cluster.local',
      'example.ns2.svc.svc.cluster.local',
    ]);
  });

  it('an FQDN with a trailing dot is tried as is, then with each search domain stripped', () => {
    expect(aliases('productpage.ns1.svc.cluster.local.')).toEqual([
      { name: 'productpage.ns1.svc.cluster.local', stripped: undefined },
      { name: 'productpage', stripped: 'productpage' },
      { name: 'productpage.ns1', stripped: 'productpage.ns1' },
      { name: 'productpage.ns1.ns1.svc.cluster.local', stripped: 'productpage.ns1' },
      { name: 'productpage.ns1.svc', stripped: 'productpage.ns1.svc' },
      { name: 'productpage.ns1.svc.svc.cluster.local', stripped: 'productpage.ns1.svc' },
    ]);
  });

  it('a search-domain expansion of a short name is stripped back and re-expanded (glibc ndots:5 queries)', () => {
    const out = aliases('www.google.com.ns1.svc.cluster.local.');
    expect(out[0]).toEqual({ name: 'www.google.com.ns1.svc.cluster.local', stripped: undefined });
    expect(out).toContainEqual({ name: 'www.google.com', stripped: 'www.google.com' });
    expect(out).toContainEqual({ name: 'www.google.com.svc.cluster.local', stripped: 'www.google.com' });
  });

  it('lists each name once, the first occurrence winning', () => {
    const names = aliases('productpage.ns1.ns1.svc.cluster.local').map((a) => a.name);
    expect(new Set(names).size).toBe(names.length);
    expect(aliases('productpage.ns1.ns1.svc.cluster.local')).toContainEqual({ name: 'productpage.ns1', stripped: 'productpage.ns1' });
  });
});

describe('wildcardsOf (ztunnel get_wildcards)', () => {
  it('a single label has no wildcard', () => {
    expect(wildcardsOf('svc1')).toEqual(['svc1']);
  });

  it('replaces leading labels with * in decreasing specificity', () => {
    expect(wildcardsOf('svc1.ns1.svc.cluster.local')).toEqual([
      'svc1.ns1.svc.cluster.local',
      '*.ns1.svc.cluster.local',
      '*.svc.cluster.local',
      '*.cluster.local',
      '*.local',
    ]);
  });

  it('a wildcard query name does not count its * as a label', () => {
    expect(wildcardsOf('*.wildcard')).toEqual(['*.wildcard']);
  });
});
