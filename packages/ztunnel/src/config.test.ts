import { describe, expect, it } from 'vitest';
import {
  MESH_CONFIG_PATH,
  parseCommand,
  parseConfig,
  terminationDeadlineFromGracePeriod,
  type ConfigProbe,
  type ZtunnelConfig,
} from './config.js';

const probe: ConfigProbe = { fileExists: () => false, cpuCount: 8 };

function parsed(env: Record<string, string>, argv: string[] = [], p: ConfigProbe = probe): ZtunnelConfig {
  const r = parseConfig(env, p, argv);
  if (!r.ok) throw new Error(`expected a config, got ${JSON.stringify(r.errors)}`);
  return r.value;
}

function problems(env: Record<string, string>, argv: string[] = []): string[] {
  const r = parseConfig(env, probe, argv);
  if (r.ok) throw new Error('expected errors');
  return r.errors.map((e) => `${e.field}: ${e.reason}`);
}

describe('parseConfig defaults', () => {
  it('matches ztunnel with an empty environment', () => {
    const c = parsed({});
    expect(c.command).toBe('proxy');
    expect(c.proxyMode).toBe('shared');
    expect(c.proxyWorkloadInfo).toBeUndefined();
    expect(c.packetMark).toBe(1337);
    expect(c.inpodUds).toBe('/var/run/ztunnel/ztunnel.sock');
    expect(c.inpodPortReuse).toBe(true);
    expect(c.enableProxy).toBe(true);
    expect(c.requireOriginalSource).toBeUndefined();
    expect(c.localhostAppTunnel).toBe(true);
    expect(c.ipv6Enabled).toBe(true);
    expect(c.socks5Enabled).toBe(false);
    expect(c.pool).toEqual({ maxStreamsPerConnection: 100, unusedReleaseTimeoutMs: 300_000 });
    expect(c.http2).toEqual({ streamWindowSize: 4_194_304, connectionWindowSize: 16_777_216, frameSize: 1_048_576 });
    expect(c.socket).toEqual({
      keepaliveTimeMs: 180_000,
      keepaliveIntervalMs: 180_000,
      keepaliveRetries: 9,
      keepaliveEnabled: true,
      userTimeoutEnabled: false,
      tcp: { noDelay: true, keepAlive: true, keepAliveTimeMs: 180_000 },
    });
    expect(c.terminationDeadlineMs).toBe(5_000);
    expect(c.connectTimeoutMs).toBe(10_000);
    expect(c.workerThreads).toBe(2); // max(ceil(8 * 0.25), 2)
    expect(c.tls12Enabled).toBe(false);
    expect(c.enableResponseBaggage).toBe(true);
    expect(c.authzPolicyInfoLogging).toBe(false);
    expect(c.logFilter).toBe('info');
    expect(c.logFormat).toBe('plain');
    expect(c.crlPath).toBeUndefined();
    expect(c.dnsProxy).toBe(true);
    expect(c.limits).toEqual({ tlsHandshakeTimeoutMs: 10_000, h2PrefaceTimeoutMs: 10_000, socks5HandshakeTimeoutMs: 10_000, maxConnections: 100_000 });
    expect(c.addresses).toEqual({
      admin: { host: 'localhost', port: 15000 },
      stats: { host: '::', port: 15020 },
      readiness: { host: '::', port: 15021 },
      inbound: { host: '::', port: 15008 },
      inboundPlaintext: { host: '::', port: 15006 },
      outbound: { host: '::', port: 15001 },
      socks5: undefined,
      dnsProxy: { host: 'localhost', port: 15053 },
    });
    expect(c.hbonePort).toBe(15008);
    expect([...c.illegalPorts].sort()).toEqual([15001, 15006, 15008]);
    expect(c.istioVersion).toBe('unknown');
    expect(c.ztunnelIdentity).toBeUndefined();
    expect(c.warnings).toEqual([]);
    expect(c.control.clusterId).toBe('Kubernetes');
    expect(c.control.xdsAddress).toBe('https://localhost:15012');
  });

  it('binds the wildcards on IPv4 only when IPV6_ENABLED=false', () => {
    const c = parsed({ IPV6_ENABLED: 'false' });
    expect(c.addresses.stats.host).toBe('0.0.0.0');
    expect(c.addresses.readiness.host).toBe('0.0.0.0');
    expect(c.addresses.inbound.host).toBe('0.0.0.0');
    expect(c.addresses.admin.host).toBe('localhost');
  });

  it('adds the SOCKS5 listener (127.0.0.1:15080) and its port to the illegal ports', () => {
    const c = parsed({ UNSTABLE_ENABLE_SOCKS5: 'true' });
    expect(c.addresses.socks5).toEqual({ host: '127.0.0.1', port: 15080 });
    expect(c.illegalPorts.has(15080)).toBe(true);
  });
});

describe('parseConfig variables', () => {
  it.each<[string, Record<string, string>, (c: ZtunnelConfig) => unknown, unknown]>([
    ['dedicated mode', { PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'shop/cart-0/cart' }, (c) => [c.proxyMode, c.proxyWorkloadInfo, c.packetMark], ['dedicated', { namespace: 'shop', name: 'cart-0', serviceAccount: 'cart' }, undefined]],
    ['explicit packet mark', { PACKET_MARK: '42' }, (c) => c.packetMark, 42],
    ['orig src required', { ENABLE_ORIG_SRC: 'true' }, (c) => c.requireOriginalSource, true],
    ['orig src off', { ENABLE_ORIG_SRC: 'false' }, (c) => c.requireOriginalSource, false],
    ['pool', { POOL_MAX_STREAMS_PER_CONNECTION: '7', POOL_UNUSED_RELEASE_TIMEOUT: '30s' }, (c) => c.pool, { maxStreamsPerConnection: 7, unusedReleaseTimeoutMs: 30_000 }],
    ['http2', { HTTP2_STREAM_WINDOW_SIZE: '65535', HTTP2_CONNECTION_WINDOW_SIZE: '262140', HTTP2_FRAME_SIZE: '16384' }, (c) => c.http2, { streamWindowSize: 65_535, connectionWindowSize: 262_140, frameSize: 16_384 }],
    ['keepalive', { KEEPALIVE_TIME: '1m', KEEPALIVE_INTERVAL: '15s', KEEPALIVE_RETRIES: '3', KEEPALIVE_ENABLED: 'false', USER_TIMEOUT_ENABLED: 'true' }, (c) => c.socket, { keepaliveTimeMs: 60_000, keepaliveIntervalMs: 15_000, keepaliveRetries: 3, keepaliveEnabled: false, userTimeoutEnabled: true, tcp: { noDelay: true, keepAlive: false, keepAliveTimeMs: 60_000 } }],
    ['keepalive time applied to sockets', { KEEPALIVE_TIME: '30s' }, (c) => c.socket.tcp, { noDelay: true, keepAlive: true, keepAliveTimeMs: 30_000 }],
    ['explicit termination deadline wins', { CONNECTION_TERMINATION_DEADLINE: '12s', TERMINATION_GRACE_PERIOD_SECONDS: '30' }, (c) => c.terminationDeadlineMs, 12_000],
    ['chart grace period 30 s gives 25 s', { TERMINATION_GRACE_PERIOD_SECONDS: '30' }, (c) => c.terminationDeadlineMs, 25_000],
    ['grace period 10 s gives 9 s', { TERMINATION_GRACE_PERIOD_SECONDS: '10' }, (c) => c.terminationDeadlineMs, 9_000],
    ['grace period 0 gives 1 s', { TERMINATION_GRACE_PERIOD_SECONDS: '0' }, (c) => c.terminationDeadlineMs, 1_000],
    ['worker threads fixed', { ZTUNNEL_WORKER_THREADS: '3' }, (c) => c.workerThreads, 3],
    ['worker threads 0 = all CPUs', { ZTUNNEL_WORKER_THREADS: '0' }, (c) => c.workerThreads, 8],
    ['worker threads percentage', { ZTUNNEL_WORKER_THREADS: '50%' }, (c) => c.workerThreads, 4],
    ['worker threads from CPU limit', { ZTUNNEL_RESOURCE_CPU_LIMIT: '500m' }, (c) => c.workerThreads, 1],
    ['worker threads floor from request', { ZTUNNEL_RESOURCE_CPU_REQUEST: '3' }, (c) => c.workerThreads, 3],
    ['worker threads from ProxyConfig concurrency', { PROXY_CONFIG: 'concurrency: 6' }, (c) => c.workerThreads, 6],
    ['tls 1.2 on', { TLS12_ENABLED: 'true' }, (c) => c.tls12Enabled, true],
    ['baggage off', { ENABLE_RESPONSE_BAGGAGE: 'false' }, (c) => c.enableResponseBaggage, false],
    ['authz info logging', { AUTHZ_POLICY_INFO_LOGGING: 'true' }, (c) => c.authzPolicyInfoLogging, true],
    ['RUST_LOG', { RUST_LOG: 'access=debug,info' }, (c) => c.logFilter, 'access=debug,info'],
    ['json logs', { LOG_FORMAT: 'json' }, (c) => c.logFormat, 'json'],
    ['CRL path enables revocation checking, without a warning', { CRL_PATH: '/etc/crl.pem' }, (c) => [c.crlPath, c.warnings.some((w) => w.includes('CRL'))], ['/etc/crl.pem', false]],
    ['istio version', { ISTIO_META_ISTIO_VERSION: '1.29.0' }, (c) => c.istioVersion, '1.29.0'],
    ['DNS capture off', { ISTIO_META_DNS_CAPTURE: 'false' }, (c) => c.dnsProxy, false],
    ['DNS proxy address', { ISTIO_META_DNS_PROXY_ADDR: '127.0.0.1:16053' }, (c) => c.addresses.dnsProxy, { host: '127.0.0.1', port: 16053 }],
    ['our limits', { ZTUNNEL_TLS_HANDSHAKE_TIMEOUT: '2s', ZTUNNEL_H2_PREFACE_TIMEOUT: '3s', ZTUNNEL_SOCKS5_HANDSHAKE_TIMEOUT: '4s', ZTUNNEL_MAX_CONNECTIONS: '10' }, (c) => c.limits, { tlsHandshakeTimeoutMs: 2_000, h2PrefaceTimeoutMs: 3_000, socks5HandshakeTimeoutMs: 4_000, maxConnections: 10 }],
    ['connect timeout', { ZTUNNEL_CONNECT_TIMEOUT: '250ms' }, (c) => c.connectTimeoutMs, 250],
    [
      'our address overrides (two ztunnels on one machine)',
      {
        UNSTABLE_ENABLE_SOCKS5: 'true',
        ZTUNNEL_ADMIN_ADDR: '127.0.0.1:16000',
        ZTUNNEL_STATS_ADDR: '127.0.0.20:15020',
        ZTUNNEL_READINESS_ADDR: '127.0.0.20:15021',
        ZTUNNEL_INBOUND_ADDR: '127.0.0.20:15008',
        ZTUNNEL_INBOUND_PLAINTEXT_ADDR: '127.0.0.20:15006',
        ZTUNNEL_OUTBOUND_ADDR: '127.0.0.20:15001',
        ZTUNNEL_SOCKS5_ADDR: '[::1]:16080',
      },
      (c) => [c.addresses, c.hbonePort, [...c.illegalPorts].sort()],
      [
        {
          admin: { host: '127.0.0.1', port: 16000 },
          stats: { host: '127.0.0.20', port: 15020 },
          readiness: { host: '127.0.0.20', port: 15021 },
          inbound: { host: '127.0.0.20', port: 15008 },
          inboundPlaintext: { host: '127.0.0.20', port: 15006 },
          outbound: { host: '127.0.0.20', port: 15001 },
          socks5: { host: '::1', port: 16080 },
          dnsProxy: { host: 'localhost', port: 15053 },
        },
        15008,
        [15001, 15006, 15008, 16080],
      ],
    ],
    ['HBONE port follows the inbound listener', { ZTUNNEL_INBOUND_ADDR: '127.0.0.1:17008' }, (c) => c.hbonePort, 17008],
    ['explicit HBONE port', { ZTUNNEL_INBOUND_ADDR: '127.0.0.1:0', ZTUNNEL_HBONE_PORT: '15008' }, (c) => [c.hbonePort, [...c.illegalPorts].sort()], [15008, [15001, 15006]]],
    ['ztunnel identity from the downward API', { POD_NAMESPACE: 'istio-system', SERVICE_ACCOUNT: 'ztunnel', POD_NAME: 'ztunnel-abcde', TRUST_DOMAIN: 'example.org' }, (c) => [c.ztunnelIdentity, c.ztunnelWorkload], [{ trustDomain: 'example.org', namespace: 'istio-system', serviceAccount: 'ztunnel' }, { namespace: 'istio-system', name: 'ztunnel-abcde', serviceAccount: 'ztunnel' }]],
  ])('%s', (_name, env, pick, expected) => {
    expect(pick(parsed(env))).toEqual(expected);
  });

  it('reads ProxyConfig from PROXY_CONFIG: discovery address, ports, metadata (ISTIO_META_ stripped, env wins)', () => {
    const c = parsed({
      PROXY_CONFIG: [
        'discoveryAddress: istiod-rev0.istio-system-2:15012',
        'proxyAdminPort: 15999',
        'statsPort: 15888',
        'proxyMetadata:',
        '  ISTIO_META_BAR: bar',
        '  ISTIO_META_FOOBAR: foobar-from-config',
        '  NO_PREFIX: no-prefix',
      ].join('\n'),
      ISTIO_META_FOOBAR: 'foobar-env',
    });
    expect(c.control.xdsAddress).toBe('https://istiod-rev0.istio-system-2:15012');
    expect(c.addresses.admin).toEqual({ host: 'localhost', port: 15999 });
    expect(c.addresses.stats.port).toBe(15888);
    expect(c.control.proxyMetadata).toEqual({ BAR: 'bar', FOOBAR: 'foobar-env', NO_PREFIX: 'no-prefix' });
  });

  it('lets XDS_ADDRESS win over ProxyConfig discoveryAddress', () => {
    const c = parsed({ PROXY_CONFIG: 'discoveryAddress: a:15012', XDS_ADDRESS: 'b:15012' });
    expect(c.control.xdsAddress).toBe('https://b:15012');
  });

  it('merges the mesh config defaultConfig under PROXY_CONFIG', () => {
    const files: Record<string, string> = {
      [MESH_CONFIG_PATH]: 'defaultConfig:\n  proxyAdminPort: 15099\n  statsPort: 15888\n  proxyMetadata:\n    FOO: foo\n',
    };
    const p: ConfigProbe = { fileExists: (f) => f in files, cpuCount: 4, readFile: (f) => files[f] };
    const c = parsed({ PROXY_CONFIG: '{"statsPort": 15777}' }, [], p);
    expect(c.addresses.admin.port).toBe(15099);
    expect(c.addresses.stats.port).toBe(15777);
    expect(c.control.proxyMetadata).toEqual({ FOO: 'foo' });
  });
});

describe('parseConfig errors', () => {
  it('reports every error at once, naming the variable, the value and what was expected', () => {
    const errs = problems({
      PROXY_MODE: 'sidecar',
      IPV6_ENABLED: 'yes',
      POOL_MAX_STREAMS_PER_CONNECTION: 'many',
      KEEPALIVE_TIME: 'soon',
      LOG_FORMAT: 'xml',
      HTTP2_FRAME_SIZE: '100',
      ZTUNNEL_STATS_ADDR: 'everywhere',
      TRUST_DOMAIN: 'Bad Domain',
    });
    expect(errs).toEqual(
      expect.arrayContaining([
        'PROXY_MODE: "sidecar": expected "shared" or "dedicated"',
        'IPV6_ENABLED: "yes": expected "true" or "false"',
        'POOL_MAX_STREAMS_PER_CONNECTION: "many": expected an integer between 1 and 65535',
        expect.stringMatching(/^KEEPALIVE_TIME: .*soon.*duration/),
        'LOG_FORMAT: "xml": expected "plain" or "json"',
        'HTTP2_FRAME_SIZE: "100": expected an integer between 16384 and 16777215',
        expect.stringMatching(/^ZTUNNEL_STATS_ADDR: "everywhere": expected/),
        expect.stringMatching(/^TRUST_DOMAIN: /),
      ]),
    );
    expect(errs).toHaveLength(8);
  });

  it.each<[string, Record<string, string>, RegExp]>([
    ['dedicated without workload info', { PROXY_MODE: 'dedicated' }, /^PROXY_WORKLOAD_INFO: PROXY_MODE=dedicated requires/],
    ['workload info with two parts', { PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'ns/name' }, /^PROXY_WORKLOAD_INFO: "ns\/name": expected exactly three parts/],
    ['workload info with four parts', { PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'ns/name/sa/x' }, /three parts/],
    ['workload info with a bad namespace', { PROXY_MODE: 'dedicated', PROXY_WORKLOAD_INFO: 'n s/name/sa' }, /namespace/],
    ['admin on a routable address', { ZTUNNEL_ADMIN_ADDR: '0.0.0.0:15000' }, /^ZTUNNEL_ADMIN_ADDR: .*loopback/],
    ['port out of range', { ZTUNNEL_INBOUND_ADDR: '127.0.0.1:70000' }, /out of range/],
    ['HBONE port 0', { ZTUNNEL_HBONE_PORT: '0' }, /^ZTUNNEL_HBONE_PORT: "0": expected an integer between 1 and 65535/],
    ['bad grace period', { TERMINATION_GRACE_PERIOD_SECONDS: '-3' }, /^TERMINATION_GRACE_PERIOD_SECONDS: "-3"/],
    ['bad worker threads', { ZTUNNEL_WORKER_THREADS: '150%' }, /^ZTUNNEL_WORKER_THREADS: "150%": percentage/],
    ['bad CPU quantity', { ZTUNNEL_RESOURCE_CPU_LIMIT: 'lots' }, /^ZTUNNEL_RESOURCE_CPU_LIMIT: "lots": expected a positive CPU quantity/],
    ['PROXY_CONFIG not YAML', { PROXY_CONFIG: 'a: [' }, /^PROXY_CONFIG: not valid YAML/],
    ['PROXY_CONFIG with a bad port', { PROXY_CONFIG: 'statsPort: http' }, /^PROXY_CONFIG\.statsPort: "http": expected an integer/],
    ['PROXY_CONFIG not a mapping', { PROXY_CONFIG: '- a' }, /^PROXY_CONFIG: expected a YAML mapping/],
    ['DNS proxy with on-demand xDS', { XDS_ON_DEMAND: 'true' }, /^XDS_ON_DEMAND: the DNS proxy does not support on-demand/],
    ['nothing to run', { ENABLE_PROXY: 'false', ISTIO_META_DNS_CAPTURE: 'false' }, /^ENABLE_PROXY: ztunnel would run without any servers/],
    ['bad DNS proxy address', { ISTIO_META_DNS_PROXY_ADDR: 'dns' }, /^ISTIO_META_DNS_PROXY_ADDR: "dns"/],
    ['bad compliance policy', { COMPLIANCE_POLICY: 'fips' }, /^COMPLIANCE_POLICY: "fips"/],
    ['pqc cannot be met: fail closed', { COMPLIANCE_POLICY: 'pqc' }, /^COMPLIANCE_POLICY: "pqc": .*X25519MLKEM768.*does not offer/],
    ['bad RUST_LOG', { RUST_LOG: 'access=chatty' }, /^RUST_LOG: "access=chatty": .*expected a level/],
    ['unknown command', {}, /^argv: unknown command "serve"/],
  ])('%s', (name, env, pattern) => {
    const errs = problems(env, name === 'unknown command' ? ['serve'] : []);
    expect(errs).toEqual([expect.stringMatching(pattern)]);
  });
});

describe('settings Node.js cannot apply are warned about, never silently ignored', () => {
  it.each<[string, Record<string, string>, RegExp]>([
    ['keepalive interval', { KEEPALIVE_INTERVAL: '15s' }, /^KEEPALIVE_INTERVAL=15s \/ KEEPALIVE_RETRIES=9 cannot be applied: .*tcp_keepalive_intvl/],
    ['keepalive retries', { KEEPALIVE_RETRIES: '3' }, /KEEPALIVE_RETRIES=3 cannot be applied/],
    ['user timeout', { USER_TIMEOUT_ENABLED: 'true' }, /^USER_TIMEOUT_ENABLED=true cannot be applied: .*TCP_USER_TIMEOUT/],
    ['TLS 1.2', { TLS12_ENABLED: 'true' }, /^TLS12_ENABLED=true is ignored: HBONE stays TLS 1.3-only/],
  ])('%s', (_name, env, pattern) => {
    expect(parsed(env).warnings).toEqual([expect.stringMatching(pattern)]);
  });

  it('defaults warn about nothing', () => {
    expect(parsed({}).warnings).toEqual([]);
    // Keepalive off: its interval and retries do not matter.
    expect(parsed({ KEEPALIVE_ENABLED: 'false', KEEPALIVE_RETRIES: '3' }).warnings).toEqual([]);
  });
});

describe('parseCommand', () => {
  it.each<[string[], string | undefined]>([
    [[], 'proxy'],
    [['proxy'], 'proxy'],
    [['proxy', 'ztunnel'], 'proxy'],
    [['version'], 'version'],
    [['help'], 'help'],
    [['proxy', 'sidecar'], undefined],
    [['version', 'x'], undefined],
    [['--help'], undefined],
  ])('%j -> %s', (argv, command) => {
    const r = parseCommand(argv);
    if (command === undefined) expect(r.ok).toBe(false);
    else expect(r).toEqual({ ok: true, value: { command, proxyArgs: argv.join(' ') } });
  });
});

describe('terminationDeadlineFromGracePeriod', () => {
  it.each([
    [30, 25],
    [11, 6],
    [10, 9],
    [2, 1],
    [1, 1],
    [0, 1],
  ])('%i s -> %i s', (secs, expected) => {
    expect(terminationDeadlineFromGracePeriod(secs)).toBe(expected);
  });
});
