/** `host:port` listen addresses for the control plane. */
import { fail, ok, rejection, type Result } from '../result.js';

/** A parsed listen address. */
export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

/** Parses `host:port` / `[v6]:port`; port 0 is allowed. */
export function parseListenAddress(text: string, field = 'listen'): Result<ListenAddress> {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:[\]]+):(\d+)$/.exec(text);
  if (!m?.[1] || m[2] === undefined) {
    return fail(rejection(field, `"${text}" must be host:port, e.g. 127.0.0.1:15012 or [::1]:15012`));
  }
  const port = Number(m[2]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    return fail(rejection(field, `port ${m[2]} must be between 0 and 65535`));
  }
  return ok({ host: m[1], port });
}
