#!/usr/bin/env node
/**
 * `ambient-control-plane`: runs the local control plane (delta ADS + Istio CA
 * over TLS 1.3) from a mesh file until SIGINT/SIGTERM. A second signal exits
 * at once.
 */
import { pino } from 'pino';
import { formatRejections } from '../result.js';
import { parseCliArgs, USAGE } from '../control-plane/cli-args.js';
import { ControlPlaneError, startControlPlane } from '../control-plane/server.js';

async function main(): Promise<number> {
  const parsed = parseCliArgs(process.argv.slice(2));
  if (!parsed.ok) {
    process.stderr.write(`ambient-control-plane: ${formatRejections(parsed.errors)}\n\n${USAGE}`);
    return 2;
  }
  if (parsed.value.kind === 'help') {
    process.stdout.write(USAGE);
    return 0;
  }
  const o = parsed.value.options;
  const logger = pino({ level: o.logLevel, base: { name: 'ambient-control-plane' } });
  let plane;
  try {
    plane = await startControlPlane({
      meshPath: o.meshPath,
      listen: o.listen,
      tokensPath: o.tokensPath,
      rootCertOutPath: o.rootCertOutPath,
      caCertPath: o.caCertPath,
      caKeyPath: o.caKeyPath,
      trustDomain: o.trustDomain,
      clusterId: o.clusterId,
      trustedNodeAccounts: o.trustedNodeAccounts,
      logger,
    });
  } catch (err) {
    if (err instanceof ControlPlaneError) {
      for (const p of err.problems) logger.error({ field: p.field, reason: p.reason }, 'configuration problem');
      process.stderr.write(`ambient-control-plane: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
  process.stdout.write(`ambient-control-plane listening on ${plane.address}\n`);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting now');
        resolve(1);
        return;
      }
      stopping = true;
      logger.info({ signal }, 'stopping');
      plane.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`ambient-control-plane: unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
