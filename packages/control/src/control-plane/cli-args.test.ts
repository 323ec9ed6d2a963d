import { describe, expect, it } from 'vitest';
import { parseCliArgs } from './cli-args.js';

describe('parseCliArgs', () => {
  it('parses every flag, in both --flag value and --flag=value forms', () => {
    const r = parseCliArgs([
      '--mesh', 'mesh.yaml', '--listen=127.0.0.1:0', '--tokens', 't.yaml', '--root-cert-out', 'root.pem',
      '--ca-cert', 'ca.pem', '--ca-key', 'ca-key.pem', '--trust-domain', 'example.org', '--cluster-id', 'east',
      '--trusted-node-accounts', 'istio-system/ztunnel, kube-system/proxy', '--log-level', 'debug',
    ]);
    expect(r).toEqual({
      ok: true,
      value: {
        kind: 'run',
        options: {
          meshPath: 'mesh.yaml', listen: '127.0.0.1:0', tokensPath: 't.yaml', rootCertOutPath: 'root.pem',
          caCertPath: 'ca.pem', caKeyPath: 'ca-key.pem', trustDomain: 'example.org', clusterId: 'east',
          trustedNodeAccounts: ['istio-system/ztunnel', 'kube-system/proxy'], logLevel: 'debug',
        },
      },
    });
  });

  it('reports every problem at once', () => {
    const r = parseCliArgs(['--listen', 'localhost', '--ca-cert', 'x.pem', '--colour', 'red', '--log-level', 'loud', '--tokens']);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.errors.map((e) => e.field).sort()).toEqual(['--ca-key', '--colour', '--listen', '--log-level', '--mesh', '--tokens', 'red'].sort());
  });

  it('refuses a --listen host that is a name other than localhost, naming the flag and the expected form', () => {
    expect(parseCliArgs(['--mesh', 'm.yaml', '--listen', 'istiod.example:15012'])).toEqual({
      ok: false,
      errors: [
        {
          field: '--listen',
          reason: '"istiod.example:15012": "istiod.example" is not an IP address (the only name accepted is localhost); expected <ip>:<port>, [<ipv6>]:<port> or localhost:<port>',
        },
      ],
    });
    expect(parseCliArgs(['--mesh', 'm.yaml', '--listen', 'localhost:15012'])).toMatchObject({ ok: true, value: { options: { listen: 'localhost:15012' } } });
  });

  it('recognises --help', () => {
    expect(parseCliArgs(['--help'])).toEqual({ ok: true, value: { kind: 'help' } });
  });
});
