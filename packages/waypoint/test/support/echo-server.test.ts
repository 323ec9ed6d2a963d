/**
 * The echo stand-in answers byte for byte as Istio's echo server does for
 * what the conformance checker reads: status, Content-Type, the body lines in
 * order, one RequestHeader line per received value (rawHeaders, canonical
 * names, sorted, Host left out), Hostname; h2c on the same port; the query
 * parameters; WebSocket; gRPC Echo.
 */
import { once } from 'node:events';
import http2 from 'node:http2';
import { connect, type Socket } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { echoMethod, type EchoMessage } from './echo-proto.js';
import { canonicalHeaderName, parseGoDuration, pickCode, requestHeaderLines, startEchoServer, type EchoServer } from './echo-server.js';

const IP = '127.0.93.1';
const CLIENT_IP = '127.0.93.9';
let server: EchoServer;

beforeAll(async () => {
  server = await startEchoServer({ ip: IP, hostname: 'echo-v1-7c9f8d6b54-qx2lm', httpPorts: [8080], grpcPorts: [7070] });
});

afterAll(async () => {
  await server?.close();
});

/** Sends raw HTTP/1.1 bytes and reads to the end (the request asks for Connection: close). */
async function raw(request: string): Promise<{ head: string; body: string }> {
  const s = connect({ host: IP, port: 8080, localAddress: CLIENT_IP });
  await once(s, 'connect');
  const chunks: Buffer[] = [];
  s.on('data', (d: Buffer) => chunks.push(d));
  s.write(request);
  await once(s, 'end');
  s.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  const split = text.indexOf('\r\n\r\n');
  return { head: text.slice(0, split), body: text.slice(split + 4) };
}

describe('HTTP/1.1', () => {
  it('answers 200 application/text with the body fields in order and one line per received header value', async () => {
    const r = await raw(
      'GET /a/%2F/../b?x=1&x=2 HTTP/1.1\r\nHost: echo-v2\r\nx-header-add: one\r\nX-Header-Add: two\r\nsome-Other-header: val\r\nConnection: close\r\n\r\n',
    );
    expect(r.head).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(r.head).toMatch(/\r\nContent-Type: application\/text\r\n/);
    expect(r.body).toBe(
      [
        'ServiceVersion=',
        'ServicePort=8080',
        'Host=echo-v2',
        'URL=/a/%2F/../b?x=1&x=2',
        'Method=GET',
        'Proto=HTTP/1.1',
        `IP=${CLIENT_IP}`,
        'RequestHeader=Connection:close',
        'RequestHeader=Some-Other-Header:val',
        'RequestHeader=X-Header-Add:one',
        'RequestHeader=X-Header-Add:two',
        'Hostname=echo-v1-7c9f8d6b54-qx2lm',
        '',
      ].join('\n'),
    );
  });

  it('sets ?headers= response headers (Content-Type then sniffed, as Go does), picks ?codes=, waits ?delay=', async () => {
    const start = performance.now();
    const r = await raw('GET /?headers=X-Custom:v,x-lower:w&codes=418&delay=150ms HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n');
    expect(performance.now() - start).toBeGreaterThanOrEqual(140);
    expect(r.head).toMatch(/^HTTP\/1\.1 418 /);
    expect(r.head).toContain('\r\nX-Custom: v\r\n');
    expect(r.head).toContain('\r\nx-lower: w\r\n');
    expect(r.head).toContain('\r\nContent-Type: text/plain; charset=utf-8\r\n');
  });

  it('reports bad query values as the server does, first in the body, status staying 200', async () => {
    const r = await raw('GET /?delay=soon&codes=99 HTTP/1.1\r\nHost: e\r\nConnection: close\r\n\r\n');
    expect(r.head).toMatch(/^HTTP\/1\.1 200 /);
    expect(r.body.split('\n').slice(0, 3)).toEqual(['error delaying response error: time: invalid duration "soon"', 'codes error: invalid HTTP response code 99', 'ServiceVersion=']);
  });

  it('echoes a WebSocket message with the body fields and StatusCode=200', async () => {
    const s: Socket = connect({ host: IP, port: 8080 });
    await once(s, 'connect');
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.write('GET /ws HTTP/1.1\r\nHost: echo\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    const payload = Buffer.from('hello');
    const mask = Buffer.from([1, 2, 3, 4]);
    s.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, Buffer.from(payload.map((b, i) => b ^ (mask[i & 3] as number)))]));
    await once(s, 'end');
    s.destroy();
    const all = Buffer.concat(chunks);
    const headEnd = all.indexOf('\r\n\r\n');
    expect(all.subarray(0, headEnd).toString()).toContain('Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=');
    const frame = all.subarray(headEnd + 4);
    expect(frame[0]).toBe(0x81);
    const len = frame[1] === 126 ? frame.readUInt16BE(2) : (frame[1] as number);
    const text = frame.subarray(frame[1] === 126 ? 4 : 2).toString();
    expect(text.length).toBe(len);
    expect(text).toMatch(/^ServiceVersion=\nServicePort=8080\nHost=echo\nURL=\/ws\n[\s\S]*Hostname=echo-v1-7c9f8d6b54-qx2lm\nhelloStatusCode=200\n$/);
  });

  it('refuses an upgrade it does not speak', async () => {
    const r = await raw('GET / HTTP/1.1\r\nHost: e\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n');
    expect(r.head).toMatch(/^HTTP\/1\.1 400 /);
  });
});

describe('h2c on the same port', () => {
  it('answers HTTP/2 with prior knowledge: Proto=HTTP/2.0, Host from :authority, no pseudo-headers listed', async () => {
    const session = http2.connect(`http://${IP}:8080`, { createConnection: () => connect({ host: IP, port: 8080, localAddress: CLIENT_IP }) });
    session.on('error', () => {});
    try {
      const stream = session.request({ ':path': '/h2?q', ':authority': 'echo:80', 'x-b': 'z' });
      const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
      let body = '';
      stream.on('data', (d: Buffer) => (body += d.toString()));
      await once(stream, 'end');
      expect(headers[':status']).toBe(200);
      expect(headers['content-type']).toBe('application/text');
      expect(body).toBe(['ServiceVersion=', 'ServicePort=8080', 'Host=echo:80', 'URL=/h2?q', 'Method=GET', 'Proto=HTTP/2.0', `IP=${CLIENT_IP}`, 'RequestHeader=X-B:z', 'Hostname=echo-v1-7c9f8d6b54-qx2lm', ''].join('\n'));
    } finally {
      session.close();
    }
  });
});

describe('gRPC EchoTestService on 7070', () => {
  it('answers Echo with the authority, the metadata and the echoed message', async () => {
    const client = new grpc.Client(`${IP}:7070`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'echo:7070' });
    try {
      const md = new grpc.Metadata();
      md.add('x-test-case', 'set');
      md.add('x-test-case', 'again');
      md.add('trace-bin', Buffer.from([1, 2]));
      const message = await new Promise<string>((resolve, reject) =>
        client.makeUnaryRequest<EchoMessage, EchoMessage>(echoMethod.path, echoMethod.requestSerialize, echoMethod.responseDeserialize, { message: 'HelloWorld' }, md, (err, v) =>
          err ? reject(err) : resolve(v?.message ?? ''),
        ),
      );
      const lines = message.split('\n');
      expect(lines.slice(0, 2)).toEqual(['Host=echo:7070', 'RequestHeader=:authority:echo:7070']);
      expect(lines).toContain('RequestHeader=x-test-case:set');
      expect(lines).toContain('RequestHeader=x-test-case:again');
      expect(lines.some((l) => l.startsWith('RequestHeader=trace-bin'))).toBe(false);
      expect(lines.slice(-8)).toEqual(['StatusCode=200', 'ServiceVersion=', 'ServicePort=7070', 'IP=127.0.0.1', 'Proto=GRPC', 'Echo=HelloWorld', 'Hostname=echo-v1-7c9f8d6b54-qx2lm', '']);
    } finally {
      client.close();
    }
  });
});

describe('the Go rules it follows', () => {
  it('canonicalises header names as textproto does and sorts them bytewise', () => {
    expect(canonicalHeaderName('x-header-set')).toBe('X-Header-Set');
    expect(canonicalHeaderName('CONTENT-type')).toBe('Content-Type');
    expect(canonicalHeaderName('bad name')).toBe('bad name');
    expect(requestHeaderLines(['b', '1', 'Host', 'h', 'a-B', '2', 'B', '3', ':path', '/'])).toEqual([
      ['A-B', '2'],
      ['B', '1'],
      ['B', '3'],
    ]);
  });

  it('parses Go durations and refuses what Go refuses', () => {
    expect(parseGoDuration('1s')).toBe(1000);
    expect(parseGoDuration('1m30.5s')).toBe(90_500);
    expect(parseGoDuration('250ms')).toBe(250);
    expect(parseGoDuration('0')).toBe(0);
    expect(parseGoDuration('10')).toBeUndefined();
    expect(parseGoDuration('1x')).toBeUndefined();
  });

  it('picks ?codes= by the pie walk', () => {
    expect(pickCode('', () => 0)).toEqual({ code: 200 });
    expect(pickCode('500:1,200:1', () => 0)).toEqual({ code: 500 });
    expect(pickCode('500:1,200:1', () => 1)).toEqual({ code: 200 });
    expect(pickCode('500:2,200:1', () => 2)).toEqual({ code: 200 });
    expect(pickCode('500:a')).toEqual({ error: 'strconv.Atoi: parsing "a": invalid syntax' });
    expect(pickCode('1:2:3')).toEqual({ error: 'invalid "1:2:3" (want code or code:count)' });
  });
});
