/** The DNS proxy (port 15053): what the app and the in-pod workload manager use. */
export { createDnsMetrics, noDnsMetrics, DNS_DURATION_BUCKETS, type DnsMetricLabels, type DnsMetricsRecorder } from './metrics.js';
export { DEFAULT_RESOLV_CONF, loadResolvConf, parseResolvConf, type Nameserver, type ResolvConf } from './resolv-conf.js';
export { DEFAULT_DNS_PROXY_LIMITS, DNS_PROXY_PORT, startDnsProxy, type DnsProxy, type DnsProxyLimits, type DnsProxyOptions } from './server.js';
