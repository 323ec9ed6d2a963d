/**
 * `istio.v1.auth.IstioCertificateService/CreateCertificate`: authenticates the
 * caller by bearer token, decides which identity it may have, checks the CSR
 * and TTL, and returns the chain as istiod does.
 *
 * Follows istiod (`security/pkg/server/ca/server.go` `CreateCertificate`,
 * `node_auth.go` `authenticateImpersonation`, `security/pkg/pki/ca/ca.go`):
 * - no valid token -> UNAUTHENTICATED "request authenticate failure" (we add
 *   the reason after a colon; istiod only logs it);
 * - without `metadata.ImpersonatedIdentity` the certificate is for the
 *   caller's own identity;
 * - with it, the caller's `namespace/serviceAccount` must be a trusted node
 *   account (CA_TRUSTED_NODE_ACCOUNTS; Helm sets `istio-system/ztunnel`), the
 *   identity must parse, the caller must have a node, and at least one
 *   workload with that namespace and service account must run on that node;
 *   any failure -> UNAUTHENTICATED "request impersonation authentication
 *   failure" exactly (the reason is only logged, as istiod does);
 * - validity_duration <= 0 means the default TTL (DEFAULT_WORKLOAD_CERT_TTL,
 *   24h); above the maximum (MAX_WORKLOAD_CERT_TTL, 90 days: `pkg/cmd`
 *   DefaultMaxWorkloadCertTTL) istiod refuses with INVALID_ARGUMENT "requested
 *   TTL %s is greater than the max allowed TTL %s", and so do we;
 * - a CSR that does not parse -> INVALID_ARGUMENT (istiod's CSRError);
 * - the answer has one PEM per element, each ending in "\n", leaf first and
 *   roots last.
 */
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type JsonObject } from '@bufbuild/protobuf';
import type { Logger } from 'pino';
import type { CertificateAuthority } from '../ca/types.js';
import {
  IstioCertificateRequestSchema,
  IstioCertificateResponseSchema,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../gen/istio/v1/auth/ca_pb.js';
import { identityToString, parseIdentity, type Identity } from '../model/identity.js';
import { formatRejections } from '../result.js';
import { CREATE_CERTIFICATE_METHOD } from '../xds/type-urls.js';
import { checkCsr } from './csr-check.js';
import type { MeshState } from './mesh-state.js';
import { authenticate, type Caller, type TokenRegistry } from './tokens.js';

/** istiod `pkg/cmd` DefaultWorkloadCertTTL. */
export const DEFAULT_WORKLOAD_CERT_TTL_SECONDS = 24 * 60 * 60;
/** istiod `pkg/cmd` DefaultMaxWorkloadCertTTL. */
export const MAX_WORKLOAD_CERT_TTL_SECONDS = 90 * 24 * 60 * 60;
/** Helm's `CA_TRUSTED_NODE_ACCOUNTS` for the ztunnel chart. */
export const DEFAULT_TRUSTED_NODE_ACCOUNTS: readonly string[] = ['istio-system/ztunnel'];
/** The metadata key ztunnel sets (`istio/istio:pkg/security/security.go` ImpersonatedIdentity). */
const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';

const AUTHENTICATE_FAILURE = 'request authenticate failure';
export const IMPERSONATION_FAILURE = 'request impersonation authentication failure';

/** What the CA saw and decided, for tests and debugging. */
export interface CaRequestRecord {
  /** Request headers (gRPC metadata), first value per key; binary values as base64. */
  readonly headers: Readonly<Record<string, string>>;
  /** The request's `metadata` Struct, as sent. */
  readonly metadata: JsonObject | undefined;
  readonly validityDuration: bigint;
  readonly csr: string;
  readonly caller?: Caller | undefined;
  readonly outcome:
    | { readonly ok: true; readonly identity: string; readonly ttlSeconds: number; readonly certChain: readonly string[] }
    | { readonly ok: false; readonly code: grpc.status; readonly message: string };
}

export interface CaServiceOptions {
  readonly authority: CertificateAuthority;
  readonly tokens: TokenRegistry;
  readonly state: MeshState;
  readonly trustDomain: string;
  readonly clusterId?: string | undefined;
  /** `namespace/serviceAccount` entries allowed to impersonate (default: istio-system/ztunnel). */
  readonly trustedNodeAccounts?: readonly string[] | undefined;
  readonly defaultTtlSeconds?: number | undefined;
  readonly maxTtlSeconds?: number | undefined;
  readonly logger: Logger;
  readonly onRequest?: ((record: CaRequestRecord) => void) | undefined;
}

const caServiceDefinition: grpc.ServiceDefinition = {
  CreateCertificate: {
    path: CREATE_CERTIFICATE_METHOD,
    requestStream: false,
    responseStream: false,
    requestSerialize: (r: IstioCertificateRequest) => Buffer.from(toBinary(IstioCertificateRequestSchema, r)),
    requestDeserialize: (b: Buffer) => fromBinary(IstioCertificateRequestSchema, b),
    responseSerialize: (r: IstioCertificateResponse) => Buffer.from(toBinary(IstioCertificateResponseSchema, r)),
    responseDeserialize: (b: Buffer) => fromBinary(IstioCertificateResponseSchema, b),
  },
};

type Failure = { readonly ok: false; readonly code: grpc.status; readonly message: string };
type Decision = { readonly ok: true; readonly identity: Identity; readonly ttlSeconds: number } | Failure;

export class CaService {
  readonly definition = caServiceDefinition;
  readonly implementation: grpc.UntypedServiceImplementation;
  private readonly trusted: ReadonlySet<string>;
  private readonly defaultTtl: number;
  private readonly maxTtl: number;
  private readonly log: Logger;

  constructor(private readonly options: CaServiceOptions) {
    this.trusted = new Set(options.trustedNodeAccounts ?? DEFAULT_TRUSTED_NODE_ACCOUNTS);
    this.defaultTtl = options.defaultTtlSeconds ?? DEFAULT_WORKLOAD_CERT_TTL_SECONDS;
    this.maxTtl = options.maxTtlSeconds ?? MAX_WORKLOAD_CERT_TTL_SECONDS;
    this.log = options.logger.child({ component: 'ca' });
    this.implementation = {
      CreateCertificate: ((call, callback) => {
        void this.handle(call).then((r) => {
          if (r.ok) callback(null, r.response);
          else callback({ code: r.code, details: r.message });
        });
      }) as grpc.handleUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
    };
  }

  /** Handles one request; never rejects. */
  async handle(
    call: grpc.ServerUnaryCall<IstioCertificateRequest, IstioCertificateResponse>,
  ): Promise<{ ok: true; response: IstioCertificateResponse } | Failure> {
    const request = call.request;
    const auth = authenticate(call.metadata, this.options.tokens, this.options.clusterId);
    const caller = auth.ok ? auth.caller : undefined;
    const record = (outcome: CaRequestRecord['outcome']) =>
      this.options.onRequest?.({
        headers: headersOf(call.metadata),
        metadata: request.metadata,
        validityDuration: request.validityDuration,
        csr: request.csr,
        caller,
        outcome,
      });

    let result: { ok: true; response: IstioCertificateResponse; identity: string; ttl: number } | Failure;
    try {
      result = await this.issue(request, auth.ok ? auth.caller : undefined, auth.ok ? '' : auth.reason, call.getPeer());
    } catch (err) {
      this.log.error({ err }, 'internal error issuing a certificate');
      result = { ok: false, code: grpc.status.INTERNAL, message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
    }
    if (result.ok) {
      record({ ok: true, identity: result.identity, ttlSeconds: result.ttl, certChain: result.response.certChain });
      return { ok: true, response: result.response };
    }
    record(result);
    return result;
  }

  private async issue(
    request: IstioCertificateRequest,
    caller: Caller | undefined,
    authFailure: string,
    peer: string,
  ): Promise<{ ok: true; response: IstioCertificateResponse; identity: string; ttl: number } | Failure> {
    if (!caller) {
      this.log.warn({ peer, reason: authFailure }, 'CSR refused: authentication failed');
      return { ok: false, code: grpc.status.UNAUTHENTICATED, message: `${AUTHENTICATE_FAILURE}: ${authFailure}` };
    }
    const decision = this.decide(request, caller, peer);
    if (!decision.ok) return decision;
    const uri = identityToString(decision.identity);

    const csr = await checkCsr(request.csr, uri);
    if (!csr.ok) {
      this.log.warn({ peer, identity: uri, problems: formatRejections(csr.errors) }, 'CSR refused');
      return { ok: false, code: grpc.status.INVALID_ARGUMENT, message: `CSR signing error (${formatRejections(csr.errors)})` };
    }

    let chain: readonly string[];
    try {
      chain = await this.options.authority.sign(request.csr, decision.identity, decision.ttlSeconds);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      this.log.error({ peer, identity: uri, err }, 'CSR signing failed');
      return { ok: false, code: grpc.status.INTERNAL, message: `CSR signing error (${message})` };
    }
    const certChain = chain.flatMap(splitPem).map((pem) => `${pem}\n`);
    this.log.info({ peer, identity: uri, ttlSeconds: decision.ttlSeconds }, 'issued workload certificate');
    return { ok: true, response: create(IstioCertificateResponseSchema, { certChain }), identity: uri, ttl: decision.ttlSeconds };
  }

  /** Which identity the caller gets, for how long; or why not. */
  private decide(request: IstioCertificateRequest, caller: Caller, peer: string): Decision {
    const ttl = this.ttlFor(request.validityDuration);
    if (!ttl.ok) return ttl;

    const own: Identity = { trustDomain: this.options.trustDomain, namespace: caller.namespace, serviceAccount: caller.serviceAccount };
    // istiod reads the field with GetStringValue(): a missing or non-string value means "no impersonation".
    const requested = request.metadata?.[IMPERSONATED_IDENTITY_KEY];
    if (typeof requested !== 'string' || requested === '') return { ok: true, identity: own, ttlSeconds: ttl.seconds };

    const refuse = (reason: string): Failure => {
      this.log.warn({ peer, caller: identityToString(own), impersonated: requested, reason }, 'impersonation refused');
      return { ok: false, code: grpc.status.UNAUTHENTICATED, message: IMPERSONATION_FAILURE };
    };
    const account = `${caller.namespace}/${caller.serviceAccount}`;
    if (!this.trusted.has(account)) return refuse(`caller ${account} is not a trusted node account (${[...this.trusted].join(', ')})`);
    const parsed = parseIdentity(requested);
    if (!parsed.ok) return refuse(`failed to validate impersonated identity: ${formatRejections(parsed.errors)}`);
    const target = parsed.value;
    if (target.trustDomain !== this.options.trustDomain) {
      return refuse(`impersonated identity is in trust domain "${target.trustDomain}", this CA signs for "${this.options.trustDomain}"`);
    }
    if (!caller.node) return refuse(`caller ${account} has no node in the token table`);
    if (!this.options.state.index().hasServiceAccountOnNode(caller.node, target.namespace, target.serviceAccount)) {
      return refuse(`no instances of "${target.namespace}/${target.serviceAccount}" found on node "${caller.node}"`);
    }
    return { ok: true, identity: target, ttlSeconds: ttl.seconds };
  }

  private ttlFor(requested: bigint): { ok: true; seconds: number } | Failure {
    if (requested <= 0n) return { ok: true, seconds: this.defaultTtl };
    if (requested > BigInt(this.maxTtl)) {
      return {
        ok: false,
        code: grpc.status.INVALID_ARGUMENT,
        message: `CSR signing error (requested TTL ${goDuration(requested)} is greater than the max allowed TTL ${goDuration(BigInt(this.maxTtl))})`,
      };
    }
    return { ok: true, seconds: Number(requested) };
  }
}

/** Splits concatenated PEM certificates into single PEMs (without trailing newline). */
function splitPem(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}

/** Go's time.Duration formatting for whole seconds (e.g. "2160h0m0s"), as istiod prints TTLs. */
function goDuration(seconds: bigint): string {
  if (seconds === 0n) return '0s';
  const h = seconds / 3600n;
  const m = (seconds % 3600n) / 60n;
  const s = seconds % 60n;
  if (h > 0n) return `${h}h${m}m${s}s`;
  if (m > 0n) return `${m}m${s}s`;
  return `${s}s`;
}

function headersOf(metadata: grpc.Metadata): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, values] of Object.entries(metadata.getMap())) {
    out[key] = typeof values === 'string' ? values : values.toString('base64');
  }
  return out;
}
