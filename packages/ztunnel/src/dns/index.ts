/** The DNS proxy (port 15053): what the app and the in-pod workload manager use. */
export { createDnsMetrics, type DnsMetricsRecorder } from './metrics.js';
export { DEFAULT_RESOLV_CONF, loadResolvConf, type Nameserver } from './resolv-conf.js';
export { startDnsProxy, type DnsProxy, type DnsProxyOptions } from './server.js';
