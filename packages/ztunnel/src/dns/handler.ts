/**
 * One DNS message in, at most one response out (ztunnel `dns/handler.rs`
 * and `Store::lookup` in `dns/server.rs`), whatever the bytes: the response
 * codes for bad input, the client pod's workload, local answers for mesh
 * names, forwarding for the rest, the `istio_dns_*` metrics and the DNS
 * access log (scope `dns`, debug).
 *
 * Decisions, in order:
 * - shorter than a header: dropped (nothing to answer to);
 * - a response sent as a query: FORMERR; an opcode other than QUERY: NOTIMP;
 * - undecodable, or not exactly one question: FORMERR;
 * - the client pod's workload not in workload discovery within the wait
 *   (ztunnel: 5 s): SERVFAIL;
 * - A/AAAA for a name the mesh knows: answered here, authoritative,
 *   recursion available, TTL 30 s (resolve.ts);
 * - anything else: forwarded; the upstream's answer is relayed (not
 *   authoritative, recursion available); no usable upstream answer: SERVFAIL.
 * Error responses carry no OPT record and RA unset, like ztunnel's.
 */
import type { Clock, Logger, Random, Snapshot, Store, Workload } from '@ambient/control';
import type { Answer, Question } from 'dns-packet';
import { awaitWorkload } from '../proxy/await-workload.js';
import type { DnsForwarder } from './forwarder.js';
import type { DnsMetricLabels, DnsMetricsRecorder } from './metrics.js';
import { normalizeName, searchDomainsFor } from './names.js';
import { resolveQuestion, type DnsRecord } from './resolve.js';
import {
  decodeMessage,
  encodeResponse,
  MAX_TCP_MESSAGE_BYTES,
  OPCODE_QUERY,
  peekHeader,
  queryTypeLabel,
  queryTypeName,
  RCODE,
  relayedResponse,
  udpResponseLimit,
  type DecodedMessage,
  type HeaderPeek,
  type Protocol,
} from './wire.js';

export interface DnsHandlerOptions {
  readonly store: Pick<Store, 'snapshot' | 'subscribe'>;
  /** The client pod's workload in a snapshot (in-pod: `snapshot.findLocalWorkload(info)`). */
  readonly localWorkload: (snapshot: Snapshot) => Workload | undefined;
  /** How long a query waits for that workload to appear (ztunnel: 5 s). */
  readonly localWorkloadWaitMs: number;
  /** e.g. `cluster.local`. */
  readonly clusterDomain: string;
  readonly ipv6Enabled: boolean;
  /**
   * Search domains stripped from query names. Undefined (shared mode): the
   * client's Kubernetes list, `<ns>.svc.<domain> svc.<domain> <domain>`;
   * dedicated mode passes its own resolv.conf search list.
   */
  readonly searchDomains?: readonly string[] | undefined;
  /** PREFERED_SERVICE_NAMESPACE; undefined: the snapshot's. */
  readonly preferredServiceNamespace: string | undefined;
  readonly forwarder: Pick<DnsForwarder, 'forward'>;
  readonly clock: Clock;
  readonly random: Random;
  /** Scope `dns`. */
  readonly log: Logger;
  readonly metrics: DnsMetricsRecorder;
}

interface IncomingMessage {
  readonly message: Buffer;
  readonly protocol: Protocol;
  /** The client's `ip:port`, for logs. */
  readonly source: string;
  /** Aborted when the proxy closes: no response is produced then. */
  readonly signal?: AbortSignal;
}

/** Resolves with the response to send, or undefined to send nothing; never rejects. */
export type DnsHandler = (incoming: IncomingMessage) => Promise<Buffer | undefined>;

export function createDnsHandler(o: DnsHandlerOptions): DnsHandler {
  const clusterDomain = normalizeName(o.clusterDomain);
  return async (incoming) => {
    try {
      return await handle(o, clusterDomain, incoming);
    } catch (err) {
      // A bug, not bad input: answer SERVFAIL rather than leave the client waiting.
      o.log.error({ src: incoming.source, error: err instanceof Error ? err.message : String(err) }, 'DNS request handling failed');
      const header = peekHeader(incoming.message);
      return header === undefined ? undefined : errorResponse(header, RCODE.SERVFAIL, [], limitFor(incoming.protocol, undefined));
    }
  };
}

async function handle(o: DnsHandlerOptions, clusterDomain: string, incoming: IncomingMessage): Promise<Buffer | undefined> {
  const { message, protocol, source, signal } = incoming;
  const header = peekHeader(message);
  if (header === undefined) {
    o.log.warn({ src: source, bytes: message.length }, 'dropped a DNS message shorter than the 12-byte header');
    return undefined;
  }
  if (header.response) {
    o.log.warn({ src: source, id: header.id }, 'got a response as a request');
    return errorResponse(header, RCODE.FORMERR, echoable(message), limitFor(protocol, undefined));
  }
  if (header.opcode !== OPCODE_QUERY) {
    o.log.warn({ src: source, opcode: header.opcode }, `unimplemented op_code ${header.opcode}`);
    return errorResponse(header, RCODE.NOTIMP, echoable(message), limitFor(protocol, undefined));
  }
  const decoded = decodeMessage(message);
  if (!decoded.ok) {
    o.log.warn({ src: source, reason: decoded.reason }, 'malformed DNS query');
    return errorResponse(header, RCODE.FORMERR, [], limitFor(protocol, undefined));
  }
  const m = decoded.message;
  const question = m.questions[0];
  if (m.questions.length !== 1 || question === undefined) {
    o.log.warn({ src: source, questions: m.questions.length }, `a DNS query must have exactly one question, got ${m.questions.length}`);
    return errorResponse(header, RCODE.FORMERR, [], limitFor(protocol, undefined));
  }
  const limit = limitFor(protocol, m);
  const echoed = m.verbatim ? [question] : [];
  const queryType = queryTypeLabel(question.type);

  const found = await awaitWorkload(o.store, o.localWorkload, o.clock, o.localWorkloadWaitMs, signal);
  if (signal?.aborted) return undefined;
  if (found === undefined) {
    o.metrics.request({ queryType, protocol, source: undefined });
    o.log.warn({ src: source, query: queryTypeName(question.type), domain: domainOf(question) }, 'unknown source: the client pod is not in workload discovery; answering SERVFAIL');
    return errorResponse(header, RCODE.SERVFAIL, echoed, limit);
  }
  const client = found.workload;
  const labels: DnsMetricLabels = { queryType, protocol, source: client };
  const access = (result: string, endpoints: number, extra: Record<string, unknown> = {}) =>
    o.log.debug({
      'src.workload': client.name === '' ? 'unknown' : client.name,
      'src.namespace': client.namespace === '' ? 'unknown' : client.namespace,
      query: queryTypeName(question.type),
      domain: domainOf(question),
      result,
      endpoints,
      ...extra,
    });

  // Only A and AAAA are answered here; a question we could not echo byte for byte is left to the upstream.
  if ((question.type === 'A' || question.type === 'AAAA') && m.verbatim) {
    const preferred = o.preferredServiceNamespace ?? found.snapshot.preferredServiceNamespace;
    const resolution = resolveQuestion(
      found.snapshot,
      client,
      { name: question.name, type: question.type },
      { clusterDomain, searchDomains: o.searchDomains ?? searchDomainsFor(client.namespace, clusterDomain), ipv6Enabled: o.ipv6Enabled, preferredServiceNamespace: preferred },
      o.random,
    );
    if (resolution.kind === 'answer') {
      o.metrics.request(labels);
      access(resolution.result, resolution.records.filter((r) => r.type !== 'CNAME').length);
      return encodeResponse(
        {
          id: header.id,
          opcode: header.opcode,
          rcode: RCODE.NOERROR,
          authoritative: true,
          recursionDesired: header.recursionDesired,
          recursionAvailable: true,
          checkingDisabled: header.checkingDisabled,
          questions: [question],
          answers: resolution.records.map(toAnswer),
          edns: m.edns,
        },
        limit,
      );
    }
  }

  o.metrics.request(labels);
  o.metrics.upstreamRequest(labels);
  const started = o.clock.monotonic();
  const outcome = await o.forwarder.forward(signal === undefined ? { query: message, question, protocol } : { query: message, question, protocol, signal });
  if (outcome.kind === 'failed' && outcome.aborted) return undefined;
  o.metrics.upstreamDuration(labels, Math.max(0, o.clock.monotonic() - started) / 1000);
  if (outcome.kind === 'failed') {
    o.metrics.upstreamFailure(labels);
    access(`forwarding failed (${outcome.reason})`, 0);
    return errorResponse(header, RCODE.SERVFAIL, echoed, limit);
  }
  // ztunnel's resolver reports NXDOMAIN and empty answers as lookup errors, so they count as upstream failures.
  if (outcome.rcode !== RCODE.NOERROR || outcome.answerCount === 0) o.metrics.upstreamFailure(labels);
  access('forwarded', outcome.answerCount, { rcode: outcome.rcode });
  return (
    relayedResponse(outcome.response, header.id, limit) ??
    encodeResponse(
      {
        id: header.id,
        opcode: header.opcode,
        rcode: outcome.rcode,
        authoritative: false,
        recursionDesired: header.recursionDesired,
        recursionAvailable: true,
        checkingDisabled: header.checkingDisabled,
        questions: echoed,
        answers: [],
        truncated: true,
        edns: m.edns,
      },
      limit,
    )
  );
}

function limitFor(protocol: Protocol, m: DecodedMessage | undefined): number {
  return protocol === 'tcp' ? MAX_TCP_MESSAGE_BYTES : udpResponseLimit(m?.edns);
}

/** The questions of a message we refuse, when they decode and re-encode exactly; otherwise none. */
function echoable(message: Buffer): readonly Question[] {
  const decoded = decodeMessage(message);
  return decoded.ok && decoded.message.verbatim ? decoded.message.questions : [];
}

function errorResponse(header: HeaderPeek, rcode: number, questions: readonly Question[], limit: number): Buffer {
  return encodeResponse(
    {
      id: header.id,
      opcode: header.opcode,
      rcode,
      authoritative: false,
      recursionDesired: header.recursionDesired,
      recursionAvailable: false,
      checkingDisabled: header.checkingDisabled,
      questions,
      answers: [],
    },
    limit,
  );
}

function toAnswer(r: DnsRecord): Answer {
  return { type: r.type, name: r.name, ttl: r.ttl, class: 'IN', data: r.data };
}

/** hickory's rendering of the query name: lower case, fully qualified. */
function domainOf(q: Question): string {
  const name = normalizeName(q.name);
  return `${name}.`;
}
