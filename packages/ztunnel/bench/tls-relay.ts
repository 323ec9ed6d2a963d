/**
 * The Node.js floor: the least a Node process can do for the same job, so the
 * benchmark can tell what the runtime costs from what ztunnel's HBONE work
 * (HTTP/2 framing, CONNECT, policy, metrics) costs. One side of a mutual TLS
 * 1.3 relay pair built from node:net and node:tls only, with the HAProxy
 * pair's certificates and cipher suites:
 *
 *   client: plain TCP on <listenIp>:<port> → TLS 1.3 with a client certificate → <targetIp>:<port>
 *   server: TLS 1.3 on <listenIp>:<port>, client certificate required → plain TCP to <targetIp>:<port>
 *
 * Nothing else: no HTTP/2, no identity check beyond chain verification, no
 * metrics, no logging per connection; bytes are relayed with stream.pipe
 * (back-pressure, half-close in both directions) and an error on either side
 * destroys both.
 * It runs with the node flags and environment ztunnel ships with (the
 * benchmark passes them), so RSS and CPU compare like for like.
 *
 * Usage: node tls-relay.js <client|server> <listenIp> <targetIp> <certPem> <keyPem> <rootsPem> <port>...
 * Exits on SIGTERM or when stdin closes.
 */
import { readFileSync } from 'node:fs';
import { createServer as createTcpServer, connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, createServer as createTlsServer } from 'node:tls';

const CIPHERSUITES = 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256';

function relay(a: Socket, b: Socket): void {
  a.setNoDelay(true);
  b.setNoDelay(true);
  a.pipe(b);
  b.pipe(a);
  // A half-close travels through (pipe ends the other side); a failure on either side ends both.
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
}

function main(): void {
  const [role, listenIp, targetIp, certPath, keyPath, rootsPath, ...portTexts] = process.argv.slice(2);
  const ports = portTexts.map(Number);
  if ((role !== 'client' && role !== 'server') || listenIp === undefined || targetIp === undefined || certPath === undefined ||
    keyPath === undefined || rootsPath === undefined || ports.length === 0 || !ports.every((p) => Number.isInteger(p) && p > 0 && p < 65536)) {
    process.stderr.write('usage: tls-relay <client|server> <listenIp> <targetIp> <certPem> <keyPem> <rootsPem> <port>...\n');
    process.exit(2);
  }
  const tlsOptions = {
    cert: readFileSync(certPath),
    key: readFileSync(keyPath),
    ca: readFileSync(rootsPath),
    minVersion: 'TLSv1.3',
    ciphersuites: CIPHERSUITES,
  } as const;
  // One context for every upstream connection, as ztunnel keeps one per identity.
  const context = createSecureContext(tlsOptions);
  const servers = ports.map((port) => {
    const server = role === 'client'
      ? createTcpServer({ allowHalfOpen: true }, (down) => {
        // The peer's certificate is checked against the roots; its name is not (the HAProxy pair does the same).
        const up = tlsConnect({ host: targetIp, port, secureContext: context, checkServerIdentity: () => undefined });
        up.allowHalfOpen = true;
        relay(down, up);
      })
      : createTlsServer({ ...tlsOptions, requestCert: true, rejectUnauthorized: true, allowHalfOpen: true }, (down) => {
        relay(down, tcpConnect({ host: targetIp, port, allowHalfOpen: true }));
      });
    server.on('error', (err) => {
      process.stderr.write(`tls-relay ${role} ${listenIp}:${port}: ${err.message}\n`);
      process.exit(1);
    });
    server.listen(port, listenIp);
    return server;
  });
  const stop = () => {
    for (const s of servers) s.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.stdin.on('close', stop);
  process.stdin.resume();
}

main();
