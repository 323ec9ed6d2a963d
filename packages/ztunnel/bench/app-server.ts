/**
 * The benchmark's origin, run as its own process so its CPU is never counted
 * against a proxy: an HTTP/1.1 server answering every request with a 1 KB
 * body, and a TCP sink that counts the bytes of one stream until the peer
 * half-closes, then answers with the count (8 bytes, big-endian) and ends.
 *
 * Usage: node app-server.js <ip> <httpPort> <sinkPort>. Prints one JSON line
 * `{"ready":true}` on stdout once both listen; exits when stdin closes (the
 * parent went away) or on SIGTERM.
 */
import { once } from 'node:events';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer, type Socket } from 'node:net';

const RESPONSE_BYTES = 1024;

async function main(): Promise<void> {
  const [ip, httpPortText, sinkPortText] = process.argv.slice(2);
  const httpPort = Number(httpPortText);
  const sinkPort = Number(sinkPortText);
  if (ip === undefined || !Number.isInteger(httpPort) || !Number.isInteger(sinkPort)) {
    process.stderr.write('usage: app-server <ip> <httpPort> <sinkPort>\n');
    process.exit(2);
  }
  const body = Buffer.alloc(RESPONSE_BYTES, 'x');
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };

  // noDelay defaults to true for node:http servers; the keep-alive timeout outlasts any idle gap between phases.
  const http = createHttpServer({ keepAliveTimeout: 120_000 }, (req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(RESPONSE_BYTES) });
      res.end(body);
    });
  });
  http.on('connection', track);

  const sink = createTcpServer({ allowHalfOpen: true }, (s) => {
    track(s);
    s.setNoDelay(true);
    let received = 0;
    s.on('data', (d: Buffer) => {
      received += d.length;
    });
    s.on('end', () => {
      const reply = Buffer.alloc(8);
      reply.writeBigUInt64BE(BigInt(received));
      s.end(reply);
    });
    s.on('error', () => s.destroy());
  });

  http.listen(httpPort, ip);
  sink.listen(sinkPort, ip);
  await Promise.all([once(http, 'listening'), once(sink, 'listening')]);
  process.stdout.write(`${JSON.stringify({ ready: true })}\n`);

  const stop = () => {
    for (const s of sockets) s.destroy();
    http.close();
    sink.close();
    process.exit(0);
  };
  process.stdin.on('end', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
  process.on('SIGTERM', stop);
}

void main().catch((err: unknown) => {
  process.stderr.write(`app-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
