/** The TCP options ztunnel sets, applied through Node's socket API. */
import type { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import { applyTcpSocketOptions, DEFAULT_TCP_SOCKET_OPTIONS } from './socket-options.js';

function recordingSocket(destroyed = false): { socket: Socket; calls: unknown[][] } {
  const calls: unknown[][] = [];
  const socket = {
    destroyed,
    setNoDelay: (v: boolean) => calls.push(['noDelay', v]),
    setKeepAlive: (...args: unknown[]) => calls.push(['keepAlive', ...args]),
  } as unknown as Socket;
  return { socket, calls };
}

describe('applyTcpSocketOptions', () => {
  it("defaults to ztunnel's: TCP_NODELAY and keepalive after 180 s idle", () => {
    const { socket, calls } = recordingSocket();
    applyTcpSocketOptions(socket);
    expect(DEFAULT_TCP_SOCKET_OPTIONS).toEqual({ noDelay: true, keepAlive: true, keepAliveTimeMs: 180_000 });
    expect(calls).toEqual([['noDelay', true], ['keepAlive', true, 180_000]]);
  });

  it('KEEPALIVE_ENABLED=false turns keepalive off', () => {
    const { socket, calls } = recordingSocket();
    applyTcpSocketOptions(socket, { noDelay: true, keepAlive: false, keepAliveTimeMs: 180_000 });
    expect(calls).toEqual([['noDelay', true], ['keepAlive', false]]);
  });

  it('leaves a destroyed socket alone', () => {
    const { socket, calls } = recordingSocket(true);
    applyTcpSocketOptions(socket);
    expect(calls).toEqual([]);
  });
});
