/**
 * The certificate source a proxy's CertManager uses, chosen from the control
 * settings: a local in-process CA with FAKE_CA=true or no CA address, else the
 * Istio CA client (CreateCertificate over gRPC with the proxy's token). One
 * choice for both proxies; only ztunnel in shared mode impersonates.
 */
import { formatRejections } from '../result.js';
import type { Clock } from '../platform/clock.js';
import type { ControlEnv } from '../config/control-env.js';
import type { ReadFile } from '../auth/token.js';
import { LocalCertificateAuthority } from './authority.js';
import { IstioCaClient } from './ca-client.js';
import { LocalCaFetcher } from './local-fetcher.js';
import type { CertificateFetcher } from './types.js';

export async function createCertificateFetcher(
  control: ControlEnv,
  deps: { readonly clock: Clock; readonly readFile: ReadFile; readonly impersonate: boolean },
): Promise<CertificateFetcher> {
  if (control.fakeCa || control.caAddress === undefined) {
    const ca = await LocalCertificateAuthority.generate({ clock: deps.clock });
    return new LocalCaFetcher(ca, { clock: deps.clock, ttlSeconds: control.secretTtlSeconds });
  }
  const client = await IstioCaClient.create({
    connection: { address: control.caAddress, roots: control.caRootCa, altHostname: control.altCaHostname },
    auth: { token: control.auth, clusterId: control.clusterId, extraHeaders: control.caHeaders },
    clock: deps.clock,
    readFile: deps.readFile,
    impersonate: deps.impersonate,
    ttlSeconds: control.secretTtlSeconds,
  });
  if (!client.ok) throw new Error(`CA client: ${formatRejections(client.errors)}`);
  return client.value;
}
