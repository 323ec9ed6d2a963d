/**
 * A deliberately raw gRPC client for the control-plane tests: real TLS with
 * the exported root, real HTTP/2, hand-written delta xDS messages. It does
 * not use our delta client, so the server is tested against the protocol and
 * not against our own reading of it.
 */
import * as grpc from '@grpc/grpc-js';
import { create, fromBinary, toBinary, type MessageInitShape } from '@bufbuild/protobuf';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
} from '../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import {
  IstioCertificateRequestSchema,
  IstioCertificateResponseSchema,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../src/gen/istio/v1/auth/ca_pb.js';
import { CREATE_CERTIFICATE_METHOD, DELTA_ADS_METHOD } from '../src/xds/type-urls.js';

const WAIT_MS = 10_000;

export interface ConnectOptions {
  /** `host:port` to dial; the TLS name checked is `localhost` unless `serverName` says otherwise. */
  readonly port: number;
  readonly rootCaPem: string;
  readonly token?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly host?: string;
}

function client(o: ConnectOptions): grpc.Client {
  return new grpc.Client(`${o.host ?? 'localhost'}:${o.port}`, grpc.credentials.createSsl(Buffer.from(o.rootCaPem)));
}

function metadata(o: ConnectOptions): grpc.Metadata {
  const md = new grpc.Metadata();
  if (o.token !== undefined) md.set('authorization', `Bearer ${o.token}`);
  for (const [k, v] of Object.entries(o.headers ?? {})) md.set(k, v);
  return md;
}

/** One delta ADS stream. */
export class RawAdsStream {
  private readonly queue: DeltaDiscoveryResponse[] = [];
  private waiter: { typeUrl: string | undefined; resolve: (r: DeltaDiscoveryResponse) => void } | undefined;
  private readonly grpcClient: grpc.Client;
  private readonly call: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>;
  /** Resolves with the final status when the stream ends. */
  readonly status: Promise<grpc.StatusObject>;

  constructor(o: ConnectOptions) {
    this.grpcClient = client(o);
    this.call = this.grpcClient.makeBidiStreamRequest(
      DELTA_ADS_METHOD,
      (r: DeltaDiscoveryRequest) => Buffer.from(toBinary(DeltaDiscoveryRequestSchema, r)),
      (b: Buffer) => fromBinary(DeltaDiscoveryResponseSchema, b),
      metadata(o),
    );
    this.status = new Promise((resolve) => this.call.on('status', resolve));
    this.call.on('error', () => {
      /* reported through `status` */
    });
    this.call.on('data', (r: DeltaDiscoveryResponse) => {
      if (this.waiter && (this.waiter.typeUrl === undefined || this.waiter.typeUrl === r.typeUrl)) {
        const w = this.waiter;
        this.waiter = undefined;
        w.resolve(r);
      } else this.queue.push(r);
    });
  }

  send(init: MessageInitShape<typeof DeltaDiscoveryRequestSchema>): void {
    this.call.write(create(DeltaDiscoveryRequestSchema, init));
  }

  ack(r: DeltaDiscoveryResponse): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce });
  }

  nack(r: DeltaDiscoveryResponse, message: string): void {
    this.send({ typeUrl: r.typeUrl, responseNonce: r.nonce, errorDetail: { code: 3, message } });
  }

  /** The next response (of `typeUrl`, when given); queued responses first. */
  next(typeUrl?: string): Promise<DeltaDiscoveryResponse> {
    const i = this.queue.findIndex((r) => typeUrl === undefined || r.typeUrl === typeUrl);
    if (i >= 0) return Promise.resolve(this.queue.splice(i, 1)[0] as DeltaDiscoveryResponse);
    if (this.waiter) throw new Error('RawAdsStream.next: one waiter at a time');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`no DeltaDiscoveryResponse${typeUrl ? ` for ${typeUrl}` : ''} within ${WAIT_MS} ms`));
      }, WAIT_MS);
      this.waiter = {
        typeUrl,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
    });
  }

  /** Responses received and not yet taken by `next`. */
  pending(): readonly DeltaDiscoveryResponse[] {
    return this.queue;
  }

  close(): void {
    this.call.cancel();
    this.grpcClient.close();
  }
}

export type CaResult =
  | { readonly ok: true; readonly response: IstioCertificateResponse }
  | { readonly ok: false; readonly code: grpc.status; readonly details: string };

/** One CreateCertificate call. */
export function createCertificate(
  o: ConnectOptions,
  request: MessageInitShape<typeof IstioCertificateRequestSchema>,
): Promise<CaResult> {
  const c = client(o);
  return new Promise<CaResult>((resolve) => {
    c.makeUnaryRequest(
      CREATE_CERTIFICATE_METHOD,
      (r: IstioCertificateRequest) => Buffer.from(toBinary(IstioCertificateRequestSchema, r)),
      (b: Buffer) => fromBinary(IstioCertificateResponseSchema, b),
      create(IstioCertificateRequestSchema, request),
      metadata(o),
      (err, response) => {
        if (err) resolve({ ok: false, code: err.code, details: err.details });
        else if (response) resolve({ ok: true, response });
        else resolve({ ok: false, code: grpc.status.UNKNOWN, details: 'no response' });
      },
    );
  }).finally(() => c.close());
}
