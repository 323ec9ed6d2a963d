/**
 * Turns a transcribed conformance case into what the echo client runs: the
 * exact upstream argv (`client <url> --method=GET -H k:v …`) with the
 * `${var.Address}` placeholders replaced by the named client's pod IP, parsed
 * the way the client's flags are (cobra: `-H` repeated, `--method=`,
 * `--count=`).
 */
import type { EchoCall } from '../support/echo-client.js';
import type { Mesh, MeshPod } from './mesh.js';
import type { ClientRef, Scenario } from './scenarios.js';

/** Parses `client <url> [--method=M] [--count=N] [-H k:v]…`. */
export function parseClientArgs(argv: readonly string[]): EchoCall {
  if (argv[0] !== 'client' || argv.length < 2) throw new Error(`echo client argv must start with "client <url>": ${JSON.stringify(argv)}`);
  const headers: Array<[string, string]> = [];
  let method: string | undefined;
  let count: number | undefined;
  for (let i = 2; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a === '-H' || a === '--header') {
      const kv = argv[++i];
      const colon = kv?.indexOf(':') ?? -1;
      if (kv === undefined || colon <= 0) throw new Error(`-H needs name:value, got ${JSON.stringify(kv)}`);
      headers.push([kv.slice(0, colon), kv.slice(colon + 1)]);
    } else if (a.startsWith('--method=')) {
      method = a.slice('--method='.length);
    } else if (a.startsWith('--count=')) {
      count = Number(a.slice('--count='.length));
      if (!Number.isInteger(count) || count < 1) throw new Error(`bad ${a}`);
    } else {
      throw new Error(`echo client flag ${a} is not supported by the stand-in`);
    }
  }
  return { url: argv[1] as string, headers, ...(method !== undefined ? { method } : {}), ...(count !== undefined ? { count } : {}) };
}

/** The pod a client reference names (the first matching pod, as echo.ConnectToApp picks it). */
export function clientPod(mesh: Mesh, ref: ClientRef): MeshPod {
  return mesh.pod(ref.namespace, ref.selector);
}

/** The argv with `${var.Address}` replaced by the pod IP of that client of the scenario. */
export function resolveArgs(mesh: Mesh, scenario: Scenario, argv: readonly string[]): string[] {
  return argv.map((a) =>
    a.replace(/\$\{(\w+)\.Address\}/g, (_m, v: string) => {
      const ref = scenario.clients[v];
      if (ref === undefined) throw new Error(`${scenario.name}: argv names \${${v}.Address} but the scenario has no client "${v}"`);
      return clientPod(mesh, ref).ip;
    }),
  );
}
