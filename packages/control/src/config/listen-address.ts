/**
 * The one parser of listen-address settings (every proxy's `*_ADDR`
 * variables, `ISTIO_META_DNS_PROXY_ADDR`, the control plane's `--listen`):
 * `<ip>:<port>`, `[<ipv6>]:<port>` or `localhost:<port>`, port 0-65535 (0
 * asks the OS for a free port). IPs come back canonical (RFC 5952 for IPv6).
 * Names other than `localhost` are refused: a listener binds addresses, and
 * what a name resolves to is not a setting anyone can read off.
 */
import { canonicalIp } from '../model/ip.js';
import { fail, ok, rejection, type Result } from '../result.js';

/**
 * Where a listener binds. `host` is a canonical IP literal, or `localhost`,
 * which means 127.0.0.1 plus ::1 when IPv6 is enabled (ztunnel's
 * `Address::Localhost`).
 */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

const EXPECTED = 'expected <ip>:<port>, [<ipv6>]:<port> or localhost:<port>';

/**
 * Parses one listen-address setting. `setting` names it (`ZTUNNEL_STATS_ADDR`,
 * `--listen`): it is the rejection's field, and the reason quotes the value
 * and says the expected form.
 */
export function parseListenAddress(text: string, setting: string): Result<ListenAddress> {
  const refuse = (problem?: string) => fail(rejection(setting, `"${text}": ${problem === undefined ? '' : `${problem}; `}${EXPECTED}`));
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  if (!m) return refuse();
  const port = Number(m[3]);
  if (port > 65_535) return refuse(`port ${port} is out of range (0-65535)`);
  const bracketed = m[1];
  const bare = m[2];
  if (bare === 'localhost') return ok({ host: 'localhost', port });
  const ip = canonicalIp(bracketed ?? bare ?? '');
  if (bracketed !== undefined) {
    if (ip === undefined) return refuse(`"${bracketed}" is not an IPv6 address`);
    if (!ip.includes(':')) return refuse(`brackets are for IPv6 addresses only, not "${bracketed}"`);
  } else if (ip === undefined) {
    return refuse(`"${bare}" is not an IP address (the only name accepted is localhost)`);
  }
  return ok({ host: ip, port });
}
