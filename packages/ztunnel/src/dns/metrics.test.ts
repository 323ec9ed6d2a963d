import { aWorkload } from '@ambient/control/testing';
import { describe, expect, it } from 'vitest';
import { MetricsRegistry } from '@ambient/dataplane';
import { createDnsMetrics } from './metrics.js';

describe('createDnsMetrics', () => {
  it('exposes ztunnel names, HELP texts, label order and buckets', async () => {
    const root = new MetricsRegistry();
    const dns = createDnsMetrics(root.sub('istio'));
    const source = aWorkload({ uid: 'c', canonicalName: 'sleep', canonicalRevision: 'v1' });
    dns.request({ queryType: 'a', protocol: 'udp', source });
    dns.request({ queryType: 'a', protocol: 'udp', source });
    dns.upstreamRequest({ queryType: 'srv', protocol: 'tcp', source });
    dns.upstreamFailure({ queryType: 'srv', protocol: 'tcp', source });
    dns.upstreamDuration({ queryType: 'srv', protocol: 'tcp', source }, 0.003);
    const text = await root.encode('prometheus');
    const labels = 'request_query_type="a",request_protocol="udp",source_canonical_service="sleep",source_canonical_revision="v1"';
    const srv = 'request_query_type="srv",request_protocol="tcp",source_canonical_service="sleep",source_canonical_revision="v1"';
    expect(text).toContain('# HELP istio_dns_requests_total Total number of DNS requests (unstable).\n# TYPE istio_dns_requests_total counter');
    expect(text).toContain(`istio_dns_requests_total{${labels}} 2`);
    expect(text).toContain('# HELP istio_dns_upstream_requests_total Total number of DNS requests forwarded to upstream (unstable).');
    expect(text).toContain(`istio_dns_upstream_requests_total{${srv}} 1`);
    expect(text).toContain('# HELP istio_dns_upstream_failures_total Total number of DNS requests that failed to forward upstream (unstable).');
    expect(text).toContain(`istio_dns_upstream_failures_total{${srv}} 1`);
    expect(text).toContain(
      '# HELP istio_dns_upstream_request_duration_seconds Total time in seconds Istio takes to get DNS response from upstream (unstable).\n# TYPE istio_dns_upstream_request_duration_seconds histogram',
    );
    const buckets = [...text.matchAll(/istio_dns_upstream_request_duration_seconds_bucket\{[^}]*le="([^"]+)"\} (\d+)/g)].map((m) => [m[1], m[2]]);
    expect(buckets).toEqual([
      ['0.0005', '0'],
      ['0.001', '0'],
      ['0.01', '1'],
      ['0.1', '1'],
      ['1', '1'],
      ['5', '1'],
      ['+Inf', '1'],
    ]);
    expect(text).toContain(`istio_dns_upstream_request_duration_seconds_count{${srv}} 1`);
  });

  it('an unknown client or empty canonical labels are "unknown"', async () => {
    const root = new MetricsRegistry();
    const dns = createDnsMetrics(root.sub('istio'));
    dns.request({ queryType: 'aaaa', protocol: 'tcp', source: undefined });
    dns.request({ queryType: 'a', protocol: 'udp', source: aWorkload({ uid: 'x' }) });
    const text = await root.encode('prometheus');
    expect(text).toContain('istio_dns_requests_total{request_query_type="aaaa",request_protocol="tcp",source_canonical_service="unknown",source_canonical_revision="unknown"} 1');
    expect(text).toContain('istio_dns_requests_total{request_query_type="a",request_protocol="udp",source_canonical_service="unknown",source_canonical_revision="unknown"} 1');
  });

  it('families without samples are not exposed', async () => {
    const root = new MetricsRegistry();
    createDnsMetrics(root.sub('istio'));
    expect(await root.encode('prometheus')).not.toContain('istio_dns');
  });
});
