/**
 * The upstream nameservers of the DNS proxy: the `nameserver` lines of
 * ztunnel's own /etc/resolv.conf (not the pod's), as ztunnel's forwarder
 * reads them. The forwarder never applies a search list (queries reach us
 * with the client's search domain already applied; ztunnel removes it too)
 * and `options` are ignored. The search list is returned for dedicated mode
 * only, where ztunnel strips the search domains of its own resolv.conf
 * (which is then the workload's) instead of the per-pod Kubernetes ones.
 */
import { readFile as fsReadFile } from 'node:fs/promises';
import { canonicalIp } from '@ambient/control';

const DNS_PORT = 53;
export const DEFAULT_RESOLV_CONF = '/etc/resolv.conf';

export interface Nameserver {
  /** Canonical IP. */
  readonly ip: string;
  readonly port: number;
  /** IPv6 zone (`fe80::1%eth0` -> `eth0`). */
  readonly scope?: string;
}

export interface ResolvConf {
  readonly nameservers: readonly Nameserver[];
  /** The last `search` (or `domain`) line's domains, lower case, without trailing dots. */
  readonly search: readonly string[];
  /** Lines that were not understood (reported, never fatal). */
  readonly warnings: readonly string[];
}

/** Parses resolv.conf text; comments start with `#` or `;`. */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: Nameserver[] = [];
  const warnings: string[] = [];
  let search: string[] = [];
  const lines = text.split(/\r?\n/);
  lines.forEach((raw, i) => {
    const line = raw.replace(/[#;].*$/, '').trim();
    if (line === '') return;
    const [keyword, value, ...rest] = line.split(/\s+/);
    if (keyword === 'search' || keyword === 'domain') {
      // Like glibc: the last of these lines wins; `domain x` means `search x`.
      search = (keyword === 'domain' ? [value] : [value, ...rest])
        .filter((d): d is string => d !== undefined && d !== '' && d !== '.')
        .map((d) => d.toLowerCase().replace(/\.$/, ''));
      return;
    }
    if (keyword !== 'nameserver') return;
    if (value === undefined || rest.length > 0) {
      warnings.push(`line ${i + 1}: expected "nameserver <ip>", got "${raw.trim()}"`);
      return;
    }
    const percent = value.indexOf('%');
    const ipText = percent < 0 ? value : value.slice(0, percent);
    const scope = percent < 0 ? '' : value.slice(percent + 1);
    const ip = canonicalIp(ipText);
    if (ip === undefined || (percent >= 0 && (scope === '' || !ip.includes(':')))) {
      warnings.push(`line ${i + 1}: "${value}" is not an IP address`);
      return;
    }
    nameservers.push(scope === '' ? { ip, port: DNS_PORT } : { ip, port: DNS_PORT, scope });
  });
  return { nameservers, search, warnings };
}

/** Reads and parses a resolv.conf file (default /etc/resolv.conf). Rejects when it cannot be read. */
export async function loadResolvConf(
  path: string = DEFAULT_RESOLV_CONF,
  readFile: (path: string) => Promise<string> = (p) => fsReadFile(p, 'utf8'),
): Promise<ResolvConf> {
  return parseResolvConf(await readFile(path));
}

/** `ip` or `ip%scope`, as socket APIs take it. */
export function nameserverHost(ns: Nameserver): string {
  return ns.scope === undefined ? ns.ip : `${ns.ip}%${ns.scope}`;
}

/** `ip:port` / `[ip%scope]:port` for logs. */
export function formatNameserver(ns: Nameserver): string {
  const host = nameserverHost(ns);
  return host.includes(':') ? `[${host}]:${ns.port}` : `${host}:${ns.port}`;
}
