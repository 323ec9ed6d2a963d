/**
 * The DNS wire format at the proxy's edges, on top of `dns-packet`: decoding
 * a client's query without ever throwing, building our own responses (with
 * UDP truncation), relaying an upstream's response under the client's id,
 * and the TCP two-byte length framing. Nothing here does I/O.
 *
 * dns-packet facts this module relies on (its types do not say them):
 * `decode` throws on malformed input and also returns `opcode`/`rcode`
 * strings; `encode` takes opcode and rcode only inside the numeric `flags`;
 * names are decoded as UTF-8 text joined with ".", so a label holding a
 * "." or bytes that are not UTF-8 does not survive a decode/encode round
 * trip. Such questions are flagged (`verbatim: false`) and never echoed.
 */
import * as dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Question } from 'dns-packet';

export type Protocol = 'udp' | 'tcp';

export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
export const OPCODE_QUERY = 0;
const HEADER_BYTES = 12;
/** RFC 1035 UDP limit without EDNS. */
const CLASSIC_UDP_BYTES = 512;
/** The largest UDP payload an IPv4 datagram can carry. */
const MAX_UDP_BYTES = 65_507;
/** The largest message TCP framing can carry. */
export const MAX_TCP_MESSAGE_BYTES = 65_535;

const FLAG_QR = 1 << 15;
const FLAG_AA = 1 << 10;
const FLAG_TC = 1 << 9;
const FLAG_RD = 1 << 8;
const FLAG_RA = 1 << 7;
const FLAG_CD = 1 << 4;

/** The fixed header fields, read without decoding the rest. */
export interface HeaderPeek {
  readonly id: number;
  readonly response: boolean;
  readonly opcode: number;
  readonly rcode: number;
  readonly recursionDesired: boolean;
  readonly checkingDisabled: boolean;
  readonly questionCount: number;
  readonly answerCount: number;
}

/** The header of `msg`, or undefined when it is shorter than a DNS header. */
export function peekHeader(msg: Uint8Array): HeaderPeek | undefined {
  if (msg.length < HEADER_BYTES) return undefined;
  const view = Buffer.from(msg.buffer, msg.byteOffset, msg.byteLength);
  const flags = view.readUInt16BE(2);
  return {
    id: view.readUInt16BE(0),
    response: (flags & FLAG_QR) !== 0,
    opcode: (flags >> 11) & 0xf,
    rcode: flags & 0xf,
    recursionDesired: (flags & FLAG_RD) !== 0,
    checkingDisabled: (flags & FLAG_CD) !== 0,
    questionCount: view.readUInt16BE(4),
    answerCount: view.readUInt16BE(6),
  };
}

export interface Edns {
  readonly udpPayloadSize: number;
  readonly version: number;
  readonly dnssecOk: boolean;
}

export interface DecodedMessage {
  readonly header: HeaderPeek;
  readonly questions: readonly Question[];
  readonly answers: readonly Answer[];
  readonly edns: Edns | undefined;
  /** Every question re-encodes to exactly the bytes received, so it can be echoed and matched by name. */
  readonly verbatim: boolean;
}

/** What dns-packet's decode really returns (its types omit these). */
type RuntimeDecoded = DecodedPacket & { readonly opcode?: string; readonly rcode?: string };

/** Decodes a whole message; never throws. */
export function decodeMessage(msg: Buffer): { ok: true; message: DecodedMessage } | { ok: false; reason: string } {
  const header = peekHeader(msg);
  if (header === undefined) return { ok: false, reason: `${msg.length} bytes is shorter than a DNS header` };
  let decoded: RuntimeDecoded;
  try {
    decoded = dnsPacket.decode(msg) as RuntimeDecoded;
  } catch (err) {
    return { ok: false, reason: `malformed message: ${err instanceof Error ? err.message : String(err)}` };
  }
  const questions = decoded.questions ?? [];
  const answers = decoded.answers ?? [];
  const opt = (decoded.additionals ?? []).find((a): a is OptAnswer => a.type === 'OPT');
  const edns =
    opt === undefined
      ? undefined
      : { udpPayloadSize: opt.udpPayloadSize, version: opt.ednsVersion, dnssecOk: opt.flag_do };
  return { ok: true, message: { header, questions, answers, edns, verbatim: questionsVerbatim(msg, questions) } };
}

function questionsVerbatim(msg: Buffer, questions: readonly Question[]): boolean {
  if (questions.length === 0) return true;
  try {
    const encoded = dnsPacket.encode({ type: 'query', id: 0, flags: 0, questions: questions.map(copyQuestion) });
    const end = encoded.length;
    return end <= msg.length && encoded.subarray(HEADER_BYTES).equals(msg.subarray(HEADER_BYTES, end));
  } catch {
    return false;
  }
}

function copyQuestion(q: Question): Question {
  return q.class === undefined ? { name: q.name, type: q.type } : { name: q.name, type: q.type, class: q.class };
}

/**
 * The question section only, ignoring every record after it (an upstream
 * answer is relayed as received, so its records never need decoding here).
 */
function decodeQuestionsOnly(msg: Buffer): Question[] | undefined {
  if (msg.length < HEADER_BYTES) return undefined;
  const questionsOnly = Buffer.from(msg);
  questionsOnly.fill(0, 6, HEADER_BYTES);
  try {
    return dnsPacket.decode(questionsOnly).questions ?? [];
  } catch {
    return undefined;
  }
}

/** An upstream answer worth relaying (rcode and answer count), or why it is not ours. */
export type UpstreamMatch =
  | { readonly ok: true; readonly rcode: number; readonly answerCount: number }
  | { readonly ok: false; readonly reason: string };

/**
 * Whether `msg` answers the query we sent with `id` for `question`: a
 * response with that id echoing the question (RFC 5452). An error response
 * without a question section (FORMERR/SERVFAIL/REFUSED...) is accepted as the
 * failure it reports.
 */
export function matchUpstreamResponse(msg: Buffer, id: number, question: Question): UpstreamMatch {
  const header = peekHeader(msg);
  if (header === undefined) return { ok: false, reason: `${msg.length} bytes is shorter than a DNS header` };
  if (header.id !== id) return { ok: false, reason: `id ${header.id} is not the id ${id} we sent` };
  if (!header.response) return { ok: false, reason: 'not a response' };
  const failure = header.rcode !== RCODE.NOERROR && header.rcode !== RCODE.NXDOMAIN;
  if (header.questionCount === 0 && failure) return { ok: true, rcode: header.rcode, answerCount: 0 };
  const questions = decodeQuestionsOnly(msg);
  if (questions === undefined) return { ok: false, reason: 'malformed question section' };
  const echoed = questions[0];
  if (questions.length !== 1 || echoed === undefined || !sameQuestion(echoed, question)) {
    return { ok: false, reason: 'the question section does not echo our question' };
  }
  return { ok: true, rcode: header.rcode, answerCount: header.answerCount };
}

/** True when two questions ask the same thing (names compared case-insensitively). */
function sameQuestion(a: Question, b: Question): boolean {
  return a.name.toLowerCase() === b.name.toLowerCase() && a.type === b.type && (a.class ?? 'IN') === (b.class ?? 'IN');
}

/** The UDP response budget for a query: its EDNS payload size (at least 512), else 512. */
export function udpResponseLimit(edns: Edns | undefined): number {
  if (edns === undefined) return CLASSIC_UDP_BYTES;
  return Math.min(MAX_UDP_BYTES, Math.max(CLASSIC_UDP_BYTES, edns.udpPayloadSize));
}

/** A response we build ourselves. */
export interface ResponseSpec {
  readonly id: number;
  readonly opcode: number;
  readonly rcode: number;
  readonly authoritative: boolean;
  readonly recursionDesired: boolean;
  readonly recursionAvailable: boolean;
  readonly checkingDisabled: boolean;
  readonly questions: readonly Question[];
  readonly answers: readonly Answer[];
  /** Set TC even though every answer fits (an upstream answer too large to relay). */
  readonly truncated?: boolean;
  /** Adds an OPT record (ztunnel echoes the client's EDNS on lookups, not on errors). */
  readonly edns?: Edns | undefined;
}

/**
 * Encodes a response of at most `maxBytes`: when the answers do not fit,
 * the trailing ones are dropped and TC is set (the client retries over TCP).
 */
export function encodeResponse(spec: ResponseSpec, maxBytes: number): Buffer {
  const additionals: Answer[] = spec.edns === undefined ? [] : [optRecord(spec.edns)];
  const questions = spec.questions.map(copyQuestion);
  const flagsFor = (truncated: boolean) =>
    FLAG_QR |
    ((spec.opcode & 0xf) << 11) |
    (spec.authoritative ? FLAG_AA : 0) |
    (truncated ? FLAG_TC : 0) |
    (spec.recursionDesired ? FLAG_RD : 0) |
    (spec.recursionAvailable ? FLAG_RA : 0) |
    (spec.checkingDisabled ? FLAG_CD : 0) |
    (spec.rcode & 0xf);
  const full = { type: 'response' as const, id: spec.id, flags: flagsFor(spec.truncated === true), questions, answers: [...spec.answers], additionals };
  if (dnsPacket.encodingLength(full) <= maxBytes) return dnsPacket.encode(full);
  const base = dnsPacket.encodingLength({ ...full, answers: [] });
  const kept: Answer[] = [];
  let size = base;
  for (const a of spec.answers) {
    const n = dnsPacket.encodingLength({ answers: [a] }) - HEADER_BYTES;
    if (size + n > maxBytes) break;
    kept.push(a);
    size += n;
  }
  const truncated = { ...full, flags: flagsFor(true), answers: kept };
  // Questions plus OPT always fit in 512 bytes; drop the OPT in the impossible case they do not.
  return dnsPacket.encode(size <= maxBytes ? truncated : { ...truncated, additionals: [] });
}

function optRecord(edns: Edns): OptAnswer {
  return {
    type: 'OPT',
    name: '.',
    udpPayloadSize: Math.max(CLASSIC_UDP_BYTES, edns.udpPayloadSize),
    extendedRcode: 0,
    ednsVersion: edns.version,
    flags: edns.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
    flag_do: edns.dnssecOk,
    options: [],
  };
}

/** A copy of `msg` carrying `id` (a query sent upstream under our own id, or a response handed back under the client's). */
export function withId(msg: Buffer, id: number): Buffer {
  const out = Buffer.from(msg);
  out.writeUInt16BE(id & 0xffff, 0);
  return out;
}

/**
 * An upstream's response, handed back to the client verbatim except for the
 * client's id and ztunnel's flags for forwarded answers (not authoritative,
 * recursion available). Undefined when it is larger than `maxBytes` (the
 * caller then sends a truncated response of its own).
 */
export function relayedResponse(upstream: Buffer, clientId: number, maxBytes: number): Buffer | undefined {
  if (upstream.length > maxBytes || upstream.length < HEADER_BYTES) return undefined;
  const out = withId(upstream, clientId);
  const flags = out.readUInt16BE(2);
  out.writeUInt16BE((flags & ~FLAG_AA) | FLAG_RA, 2);
  return out;
}

/**
 * The metric label for a query type, as ztunnel writes it: hickory's record
 * type name in lower case, or `unknown` for types hickory has no name for.
 */
export function queryTypeLabel(type: string | undefined): string {
  if (type === undefined) return 'unknown';
  const upper = type.toUpperCase();
  if (HICKORY_TYPE_NAMES.has(upper)) return upper.toLowerCase();
  const code = upper.startsWith('UNKNOWN_') ? Number(upper.slice('UNKNOWN_'.length)) : Number.NaN;
  return HICKORY_TYPES_DNS_PACKET_LACKS.get(code) ?? 'unknown';
}

// hickory-proto RecordType names (the ones dns-packet also knows by name).
const HICKORY_TYPE_NAMES: ReadonlySet<string> = new Set([
  'A', 'AAAA', 'ANY', 'AXFR', 'CAA', 'CDNSKEY', 'CDS', 'CNAME', 'DNSKEY', 'DS', 'HINFO', 'IXFR', 'KEY', 'MX', 'NAPTR', 'NS',
  'NSEC', 'NSEC3', 'NSEC3PARAM', 'NULL', 'OPT', 'PTR', 'RRSIG', 'SIG', 'SOA', 'SRV', 'SSHFP', 'TLSA', 'TSIG', 'TXT',
]);
// hickory names for codes dns-packet decodes as UNKNOWN_<n>.
const HICKORY_TYPES_DNS_PACKET_LACKS: ReadonlyMap<number, string> = new Map([
  [0, 'zero'],
  [61, 'openpgpkey'],
  [62, 'csync'],
  [64, 'svcb'],
  [65, 'https'],
  [65305, 'aname'],
]);

/** hickory's upper-case name for the access log's `query` field. */
export function queryTypeName(type: string | undefined): string {
  const label = queryTypeLabel(type);
  return label === 'unknown' ? 'Unknown' : label.toUpperCase();
}

/** `len(2) || msg`; undefined when `msg` is too large for TCP framing. */
export function frameTcp(msg: Buffer): Buffer | undefined {
  if (msg.length > MAX_TCP_MESSAGE_BYTES) return undefined;
  const prefix = Buffer.alloc(2);
  prefix.writeUInt16BE(msg.length, 0);
  return Buffer.concat([prefix, msg]);
}

/**
 * Splits a TCP byte stream into length-prefixed messages. Holds at most one
 * partial message; a declared length above `maxMessageBytes` (or zero) is a
 * framing error reported once, after which the stream is unusable.
 */
export class TcpFrameReader {
  readonly #maxMessageBytes: number;
  #buffer: Buffer = Buffer.alloc(0);
  #failed = false;

  constructor(maxMessageBytes: number) {
    this.#maxMessageBytes = Math.min(maxMessageBytes, MAX_TCP_MESSAGE_BYTES);
  }

  /** Bytes held for an incomplete message. */
  get buffered(): number {
    return this.#buffer.length;
  }

  /** Feeds bytes; returns the complete messages, or an error for an oversize or empty frame. */
  push(chunk: Buffer): { messages: Buffer[]; error?: string } {
    if (this.#failed) return { messages: [] };
    this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
    const messages: Buffer[] = [];
    while (this.#buffer.length >= 2) {
      const length = this.#buffer.readUInt16BE(0);
      if (length === 0 || length > this.#maxMessageBytes) {
        this.#failed = true;
        this.#buffer = Buffer.alloc(0);
        return { messages, error: length === 0 ? 'empty DNS message' : `DNS message of ${length} bytes exceeds the ${this.#maxMessageBytes}-byte limit` };
      }
      if (this.#buffer.length < 2 + length) break;
      messages.push(Buffer.from(this.#buffer.subarray(2, 2 + length)));
      this.#buffer = this.#buffer.subarray(2 + length);
    }
    return { messages };
  }
}
