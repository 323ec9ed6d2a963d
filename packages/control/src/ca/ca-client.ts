/**
 * Client for istiod's certificate service (ztunnel `identity/caclient.rs`):
 * one unary `istio.v1.auth.IstioCertificateService/CreateCertificate` call per
 * certificate, over the shared control-plane channel (grpc/channel.ts), with
 * the auth headers of auth/metadata.ts and the CA_HEADER_* extras.
 *
 * - Each fetch makes a fresh ECDSA P-256 key and CSR (ca/csr.ts).
 * - `validity_duration` is SECRET_TTL (default 86400 s); istiod may shorten it.
 * - When acting for another workload (shared node proxy) the request carries
 *   `metadata = Struct{ImpersonatedIdentity: "spiffe://..."}`; ztunnel sets it
 *   exactly when PROXY_MODE=shared.
 * - The answer is verified (ca/chain.ts) before it is returned; ztunnel checks
 *   the SAN only when impersonating, we always do.
 * - A file-based CA_ROOT_CA is re-read at each fetch and the channel rebuilt
 *   when it changed (ztunnel watches the directory and rebuilds at the next
 *   fetch; a failed reload keeps the old channel).
 * - Every failure is a CaError: transport problems CA_UNAVAILABLE, error
 *   statuses from the CA CA_REJECTED, bad answers CA_BAD_RESPONSE /
 *   CA_IDENTITY_MISMATCH / CA_EXPIRED.
 */
import { settleWithin } from '../platform/settle.js';
import { Client, status, type ChannelOptions, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import {
  IstioCertificateRequestSchema,
  IstioCertificateResponseSchema,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../gen/istio/v1/auth/ca_pb.js';
import { loadAuthMetadata, type ControlPlaneAuth } from '../auth/metadata.js';
import { DEFAULT_SECRET_TTL_SECONDS } from '../config/control-env.js';
import { errorMessage, type ReadFile } from '../auth/token.js';
import {
  CONTROL_PLANE_CHANNEL_OPTIONS,
  controlPlaneCredentials,
  resolveControlPlaneChannel,
  type ControlPlaneChannelSpec,
  type ControlPlaneConnection,
} from '../grpc/channel.js';
import { identityToString, type Identity } from '../model/identity.js';
import type { Clock } from '../platform/clock.js';
import { formatRejections, ok, type Result } from '../result.js';
import { CREATE_CERTIFICATE_METHOD } from '../xds/type-urls.js';
import { chainError, verifyCertificateChain } from './chain.js';
import { generateKeyAndCsr } from './csr.js';
import { CaError, type CertificateFetcher, type WorkloadCertificate } from './types.js';

const DEFAULT_CA_TIMEOUT_MS = 30_000;

/** The Struct key istiod reads (istio/istio pkg/security ImpersonatedIdentity). */
export const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';

export interface IstioCaClientOptions {
  /** CA_ADDRESS, CA_ROOT_CA, ALT_CA_HOSTNAME. */
  readonly connection: ControlPlaneConnection;
  /** Token, CLUSTER_ID and CA_HEADER_* headers. */
  readonly auth: ControlPlaneAuth;
  readonly clock: Clock;
  readonly readFile: ReadFile;
  /** Requested lifetime (SECRET_TTL), default 86400 s. */
  readonly ttlSeconds?: number;
  /**
   * Whether to ask for the identity on another workload's behalf. ztunnel:
   * `true` in shared (node proxy) mode, `false` in dedicated mode.
   */
  readonly impersonate: boolean | ((identity: Identity) => boolean);
  /** Deadline per CreateCertificate call, default 30 s. */
  readonly timeoutMs?: number;
  readonly channelOptions?: ChannelOptions;
  readonly log?: Pick<Logger, 'debug' | 'warn'>;
}

type Decoded = { readonly ok: true; readonly value: IstioCertificateResponse } | { readonly ok: false; readonly reason: string };

export class IstioCaClient implements CertificateFetcher {
  readonly #options: IstioCaClientOptions;
  #client: Client;
  #rootsKey: string;
  #closed = false;

  private constructor(options: IstioCaClientOptions, spec: ControlPlaneChannelSpec) {
    this.#options = options;
    this.#client = makeClient(spec, options.channelOptions);
    this.#rootsKey = rootsKey(spec);
  }

  /** Validates the address and loads the roots; fails with rejections naming CA_ADDRESS / CA_ROOT_CA. */
  static async create(options: IstioCaClientOptions): Promise<Result<IstioCaClient>> {
    const spec = await resolveControlPlaneChannel(options.connection, options.readFile, 'CA');
    if (!spec.ok) return spec;
    return ok(new IstioCaClient(options, spec.value));
  }

  async fetch(identity: Identity, signal?: AbortSignal): Promise<WorkloadCertificate> {
    if (this.#closed) throw new CaError('CA_UNAVAILABLE', 'CA client is closed');
    await this.#reloadRootsIfChanged();
    const id = identityToString(identity);
    const { csrPem, privateKeyPem } = await generateKeyAndCsr(identity);
    const impersonate = typeof this.#options.impersonate === 'function' ? this.#options.impersonate(identity) : this.#options.impersonate;
    const request = create(IstioCertificateRequestSchema, {
      csr: csrPem,
      validityDuration: BigInt(this.#options.ttlSeconds ?? DEFAULT_SECRET_TTL_SECONDS),
      ...(impersonate ? { metadata: { [IMPERSONATED_IDENTITY_KEY]: id } } : {}),
    });
    const metadata = await loadAuthMetadata(this.#options.auth, this.#options.readFile);
    if (!metadata.ok) throw new CaError('CA_UNAVAILABLE', `cannot authenticate to the CA: ${formatRejections(metadata.errors)}`);

    const response = await this.#call(request, metadata.value, id, signal);
    if (!response.ok) throw new CaError('CA_BAD_RESPONSE', `CA response for ${id} could not be decoded: ${response.reason}`);
    const verified = verifyCertificateChain({
      certChain: response.value.certChain,
      identity,
      privateKeyPem,
      now: this.#options.clock.now(),
    });
    if (!verified.ok) throw chainError(identity, verified.errors);
    this.#options.log?.debug({ identity: id, notAfter: new Date(verified.value.notAfter).toISOString() }, 'certificate issued by CA');
    return verified.value;
  }

  close(): void {
    this.#closed = true;
    this.#client.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  #call(request: IstioCertificateRequest, metadata: Metadata, id: string, signal: AbortSignal | undefined): Promise<Decoded> {
    const { clock } = this.#options;
    const timeoutMs = this.#options.timeoutMs ?? DEFAULT_CA_TIMEOUT_MS;
    let call: { cancel(): void } | undefined;
    return settleWithin<Decoded>(
      {
        clock,
        timeoutMs,
        onTimeout: () => ({ error: new CaError('CA_UNAVAILABLE', `CA did not answer within ${timeoutMs} ms for ${id}`) }),
        signal,
        onAbort: (reason) => ({ error: new CaError('CA_UNAVAILABLE', `certificate request for ${id} aborted`, { cause: reason }) }),
      },
      (settle) => {
        call = this.#client.makeUnaryRequest<IstioCertificateRequest, Decoded>(
          CREATE_CERTIFICATE_METHOD,
          (req) => Buffer.from(toBinary(IstioCertificateRequestSchema, req)),
          decodeResponse,
          request,
          metadata,
          // The deadline travels as grpc-timeout so istiod stops work too; the
          // Clock deadline of settleWithin is what enforces it locally.
          { deadline: clock.now() + timeoutMs },
          (err, value) => {
            if (err) settle.reject(caErrorFromStatus(err, id));
            else if (value === undefined) settle.reject(new CaError('CA_BAD_RESPONSE', `CA returned no message for ${id}`));
            else settle.resolve(value);
          },
        );
        // A deadline or an abort cancels the call (its callback then finds the operation settled).
        return (outcome) => {
          if (outcome === 'rejected') call?.cancel();
        };
      },
    );
  }

  async #reloadRootsIfChanged(): Promise<void> {
    if (this.#options.connection.roots.kind !== 'file') return;
    const spec = await resolveControlPlaneChannel(this.#options.connection, this.#options.readFile, 'CA');
    if (!spec.ok) {
      // As ztunnel: keep the working channel and try again at the next fetch.
      this.#options.log?.warn({ error: formatRejections(spec.errors) }, 'failed to reload CA_ROOT_CA; keeping the current channel');
      return;
    }
    const key = rootsKey(spec.value);
    if (key === this.#rootsKey) return;
    this.#options.log?.debug({}, 'CA_ROOT_CA changed; rebuilding the channel to the CA');
    const old = this.#client;
    this.#client = makeClient(spec.value, this.#options.channelOptions);
    this.#rootsKey = key;
    old.close();
  }
}

/**
 * Maps a failed call to a CaError. Transport-level outcomes (no connection,
 * deadline, cancellation, overload) are CA_UNAVAILABLE; an explicit error
 * status from the CA (authentication, impersonation denied, bad CSR, internal
 * signing error) is CA_REJECTED.
 */
function caErrorFromStatus(err: ServiceError, id: string): CaError {
  const name = status[err.code] ?? String(err.code);
  const detail = `CreateCertificate for ${id} failed: ${name}: ${err.details || err.message}`;
  switch (err.code) {
    case status.UNAVAILABLE:
    case status.DEADLINE_EXCEEDED:
    case status.CANCELLED:
    case status.RESOURCE_EXHAUSTED:
    case status.ABORTED:
      return new CaError('CA_UNAVAILABLE', detail, { cause: err });
    default:
      return new CaError('CA_REJECTED', detail, { cause: err });
  }
}

function decodeResponse(buf: Buffer): Decoded {
  try {
    return { ok: true, value: fromBinary(IstioCertificateResponseSchema, buf) };
  } catch (err) {
    return { ok: false, reason: errorMessage(err) };
  }
}

function makeClient(spec: ControlPlaneChannelSpec, extra: ChannelOptions | undefined): Client {
  return new Client(spec.endpoint.target, controlPlaneCredentials(spec), { ...CONTROL_PLANE_CHANNEL_OPTIONS, ...extra });
}

function rootsKey(spec: ControlPlaneChannelSpec): string {
  return spec.roots.kind === 'system' ? 'system' : spec.roots.pem;
}
