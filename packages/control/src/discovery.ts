/**
 * Workload discovery, assembled: the store, fed by a static config
 * (LOCAL_XDS_PATH / LOCAL_XDS) and/or the delta ADS client to istiod, with the
 * WDS handlers translating every resource on the way in. ztunnel and the
 * waypoint call this once from their composition roots; everything it needs
 * (clock, logger, file reads) is passed in.
 */
import type * as grpc from '@grpc/grpc-js';
import type { AuthSource, ControlEnv, Env } from './config/control-env.js';
import { loadAuthMetadata, type ControlPlaneAuth } from './auth/metadata.js';
import type { ReadFile } from './auth/token.js';
import { controlPlaneCredentials, resolveControlPlaneChannel } from './grpc/channel.js';
import { loadStaticConfig } from './local/static-config.js';
import type { Clock, Random } from './platform/clock.js';
import { fail, formatRejections, nestRejections, ok, rejection, type Result } from './result.js';
import { createStore, type Store } from './store/store.js';
import { decodeAddressResource } from './translate/address.js';
import { decodeAuthorizationResource } from './translate/authorization.js';
import { DeltaXdsClient, type Logger, type XdsClientEvents } from './xds/delta-client.js';
import { buildNode, type NodeType } from './xds/node.js';
import { createWdsHandlers } from './xds/wds.js';

export interface WorkloadDiscoveryOptions {
  readonly config: ControlEnv;
  /** The raw environment (node metadata: POD_NAME, ISTIO_META_*, ...). */
  readonly env: Env;
  readonly nodeType: NodeType;
  /** ProxyConfig proxyMetadata, merged under ISTIO_META_* (optional). */
  readonly proxyMetadata?: Readonly<Record<string, string>>;
  readonly clock: Clock;
  readonly random?: Random;
  readonly log: Logger;
  readonly readFile: ReadFile;
  readonly events?: XdsClientEvents;
  /** Use this store instead of a new one (tests, or a shared store). */
  readonly store?: Store;
}

export interface WorkloadDiscovery extends AsyncDisposable {
  readonly store: Store;
  /** The xDS client, when XDS_ADDRESS is set. */
  readonly xds: DeltaXdsClient | undefined;
  /**
   * Resolves once the first full state is in the store: the static config is
   * loaded and every wildcard xDS type has been ACKed. Never rejects.
   */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

function controlPlaneAuth(config: ControlEnv, extraHeaders: ControlEnv['xdsHeaders']): ControlPlaneAuth {
  const token: AuthSource = config.auth;
  return { token, clusterId: config.clusterId, extraHeaders };
}

/**
 * Loads the static config (if any) and starts the xDS client (if configured).
 * Fails, listing every problem, when the static config or the node metadata is
 * invalid; a control plane that is unreachable is not a failure (the client
 * keeps retrying and `ready` stays pending).
 */
export async function startWorkloadDiscovery(o: WorkloadDiscoveryOptions): Promise<Result<WorkloadDiscovery>> {
  const store = o.store ?? createStore({
    clock: o.clock,
    ...(o.config.preferedServiceNamespace !== undefined ? { preferredServiceNamespace: o.config.preferedServiceNamespace } : {}),
    ...(o.config.nodeName !== '' ? { localNode: o.config.nodeName } : {}),
  });
  const log = o.log.child({ component: 'discovery' });

  if (o.config.localXds !== undefined) {
    const local = o.config.localXds;
    let text: string;
    const source = local.kind === 'path' ? local.path : 'LOCAL_XDS';
    if (local.kind === 'path') {
      try {
        const raw = await o.readFile(local.path);
        text = typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8');
      } catch (err) {
        return fail(rejection('LOCAL_XDS_PATH', `cannot read "${local.path}": ${(err as Error).message}`));
      }
    } else {
      text = local.yaml;
    }
    const loaded = loadStaticConfig(text, source);
    if (!loaded.ok) return fail(...nestRejections(local.kind === 'path' ? 'LOCAL_XDS_PATH' : 'LOCAL_XDS', loaded.errors));
    await store.replaceAll(loaded.value.update, loaded.value.policies);
    log.info(
      { source, addresses: loaded.value.update.upserts.length, policies: loaded.value.policies.upserts.length },
      'loaded static config',
    );
  }

  if (o.config.xdsAddress === undefined) {
    return ok({
      store,
      xds: undefined,
      ready: Promise.resolve(),
      close: async () => {},
      [Symbol.asyncDispose]: async () => {},
    });
  }

  const node = buildNode({ nodeType: o.nodeType, env: o.env, ...(o.proxyMetadata ? { proxyMetadata: o.proxyMetadata } : {}) });
  if (!node.ok) return node;

  const connection = { address: o.config.xdsAddress, roots: o.config.xdsRootCa, altHostname: o.config.altXdsHostname };
  // Resolve once up front so configuration mistakes fail startup with a clear message.
  const first = await resolveControlPlaneChannel(connection, o.readFile, 'XDS');
  if (!first.ok) return first;
  const auth = controlPlaneAuth(o.config, o.config.xdsHeaders);

  const handlers = createWdsHandlers({
    store,
    decodeAddress: decodeAddressResource,
    decodeAuthorization: decodeAuthorizationResource,
    onDemandAddresses: o.config.xdsOnDemand,
    clock: o.clock,
  });
  const client = new DeltaXdsClient({
    target: first.value.endpoint.target,
    // Re-read the roots on every connection attempt, so a rotated root file is picked up.
    credentials: async () => {
      const spec = await resolveControlPlaneChannel(connection, o.readFile, 'XDS');
      if (!spec.ok) throw new Error(formatRejections(spec.errors));
      return controlPlaneCredentials(spec.value);
    },
    callMetadata: async (): Promise<grpc.Metadata> => {
      const md = await loadAuthMetadata(auth, o.readFile);
      if (!md.ok) throw new Error(formatRejections(md.errors));
      return md.value;
    },
    node: node.value,
    handlers: [handlers.address, handlers.authorization],
    clock: o.clock,
    log: o.log,
    ...(o.random ? { random: o.random } : {}),
    ...(o.events ? { events: o.events } : {}),
  });
  client.start();
  const close = () => client.close();
  return ok({ store, xds: client, ready: client.ready, close, [Symbol.asyncDispose]: close });
}
