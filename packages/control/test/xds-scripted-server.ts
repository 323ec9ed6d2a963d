/**
 * A strict, scripted delta ADS server for tests: a real grpc-js server on
 * 127.0.0.1:0 whose every stream and request must be consumed by the test.
 * The test pulls streams (`nextStream`) and requests (`nextRequest`,
 * `expectAck`, `expectNack`) in the order it expects them and pushes
 * responses or terminations by hand; anything that arrives and is never
 * consumed makes `close()` throw, naming it. Waits are bounded (a guard, not a
 * sleep) so a missing request fails with a message instead of a test timeout.
 */
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import type { Any } from '@bufbuild/protobuf/wkt';
import * as grpc from '@grpc/grpc-js';
import {
  DeltaDiscoveryRequestSchema,
  DeltaDiscoveryResponseSchema,
  ResourceSchema,
} from '../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import type {
  DeltaDiscoveryRequest,
  DeltaDiscoveryResponse,
  Resource,
} from '../src/gen/envoy/service/discovery/v3/discovery_pb.js';
import { DELTA_ADS_METHOD } from '../src/xds/type-urls.js';

const WAIT_MS = 5_000;

/** A FIFO whose consumer can wait, with a bounded wait that names what was missing. */
export class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<(item: T) => void> = [];

  push(item: T): void {
    const w = this.waiters.shift();
    if (w) w(item);
    else this.items.push(item);
  }

  next(what: string): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(deliver);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`scripted ADS server: expected ${what}, but none arrived within ${WAIT_MS} ms`));
      }, WAIT_MS);
      const deliver = (v: T): void => {
        clearTimeout(timer);
        resolve(v);
      };
      this.waiters.push(deliver);
    });
  }

  leftovers(): readonly T[] {
    return this.items;
  }
}

export function resource(name: string, version: string, payload?: Any): Resource {
  return create(ResourceSchema, payload === undefined ? { name, version } : { name, version, resource: payload });
}

export class ScriptedStream {
  readonly requests = new Inbox<DeltaDiscoveryRequest>();
  /** Resolves when the client cancels the stream or the connection goes away. */
  readonly closed: Promise<void>;
  private nonce = 0;
  private finished = false;

  constructor(
    readonly id: number,
    private readonly call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>,
  ) {
    call.on('data', (req: DeltaDiscoveryRequest) => this.requests.push(req));
    call.on('error', () => undefined);
    this.closed = new Promise<void>((resolve) => {
      call.on('cancelled', () => resolve());
      call.on('close', () => resolve());
      call.on('finish', () => resolve());
    });
  }

  get metadata(): grpc.Metadata {
    return this.call.metadata;
  }

  nextRequest(): Promise<DeltaDiscoveryRequest> {
    return this.requests.next(`a request on stream ${this.id}`);
  }

  /** Next request must be an ACK for `nonce`. */
  async expectAck(typeUrl: string, nonce: string): Promise<DeltaDiscoveryRequest> {
    const req = await this.nextRequest();
    if (req.typeUrl !== typeUrl || req.responseNonce !== nonce || req.errorDetail !== undefined) {
      throw new Error(`stream ${this.id}: expected ACK ${typeUrl} nonce ${nonce}, got ${describeRequest(req)}`);
    }
    return req;
  }

  /** Next request must be a NACK for `nonce`; returns its error detail message. */
  async expectNack(typeUrl: string, nonce: string): Promise<{ code: number; message: string }> {
    const req = await this.nextRequest();
    if (req.typeUrl !== typeUrl || req.responseNonce !== nonce || req.errorDetail === undefined) {
      throw new Error(`stream ${this.id}: expected NACK ${typeUrl} nonce ${nonce}, got ${describeRequest(req)}`);
    }
    return { code: req.errorDetail.code, message: req.errorDetail.message };
  }

  /** Sends a response; returns its nonce. */
  send(typeUrl: string, resources: Resource[], removed: string[] = []): string {
    const nonce = `n${this.id}-${++this.nonce}`;
    this.call.write(create(DeltaDiscoveryResponseSchema, { typeUrl, resources, removedResources: removed, nonce }));
    return nonce;
  }

  /** Sends response headers, so a later failure counts as a stream (not connection) error. */
  sendHeaders(): void {
    this.call.sendMetadata(new grpc.Metadata());
  }

  /** Ends the stream with status OK. */
  end(): void {
    this.finished = true;
    this.call.end();
  }

  /** Ends the stream with an error status. */
  fail(code: grpc.status, details: string): void {
    this.finished = true;
    this.call.emit('error', { code, details, metadata: new grpc.Metadata() });
  }

  unconsumed(): string[] {
    return this.requests.leftovers().map((r) => `stream ${this.id}: ${describeRequest(r)}`);
  }

  get ended(): boolean {
    return this.finished;
  }
}

export function describeRequest(r: DeltaDiscoveryRequest): string {
  return JSON.stringify({
    typeUrl: r.typeUrl,
    nonce: r.responseNonce,
    subscribe: r.resourceNamesSubscribe,
    unsubscribe: r.resourceNamesUnsubscribe,
    initial: r.initialResourceVersions,
    error: r.errorDetail?.message,
    node: r.node?.id,
  });
}

export class ScriptedAdsServer implements AsyncDisposable {
  private readonly streams = new Inbox<ScriptedStream>();
  private readonly all: ScriptedStream[] = [];

  private constructor(
    private readonly server: grpc.Server,
    readonly target: string,
  ) {}

  /** Starts on 127.0.0.1, on `port` (default: any free port). */
  static async start(options: { port?: number } = {}): Promise<ScriptedAdsServer> {
    const server = new grpc.Server();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${options.port ?? 0}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    const self = new ScriptedAdsServer(server, `127.0.0.1:${port}`);
    server.addService(
      {
        deltaAggregatedResources: {
          path: DELTA_ADS_METHOD,
          requestStream: true,
          responseStream: true,
          requestDeserialize: (b: Buffer) => fromBinary(DeltaDiscoveryRequestSchema, b),
          requestSerialize: (r: DeltaDiscoveryRequest) => Buffer.from(toBinary(DeltaDiscoveryRequestSchema, r)),
          responseSerialize: (r: DeltaDiscoveryResponse) => Buffer.from(toBinary(DeltaDiscoveryResponseSchema, r)),
          responseDeserialize: (b: Buffer) => fromBinary(DeltaDiscoveryResponseSchema, b),
        },
      },
      {
        deltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, DeltaDiscoveryResponse>) => {
          const stream = new ScriptedStream(self.all.length + 1, call);
          self.all.push(stream);
          self.streams.push(stream);
        },
      },
    );
    return self;
  }

  nextStream(): Promise<ScriptedStream> {
    return this.streams.next('a new ADS stream');
  }

  /** Every stream opened so far. */
  get streamCount(): number {
    return this.all.length;
  }

  /** Shuts the server down, then fails if any stream or request was never consumed by the test. */
  async close(): Promise<void> {
    this.server.forceShutdown();
    const problems = [
      ...this.streams.leftovers().map((s) => `stream ${s.id} was opened but never expected`),
      ...this.all.flatMap((s) => s.unconsumed()),
    ];
    if (problems.length > 0) throw new Error(`scripted ADS server: unexpected traffic:\n${problems.join('\n')}`);
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
