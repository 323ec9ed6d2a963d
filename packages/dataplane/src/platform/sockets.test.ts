import { once } from 'node:events';
import type { AddressInfo, Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { connectTcp, eventually } from '../../test/support/net-fixtures.js';
import { nodeSocketFactory, SOCKET_HIGH_WATER_MARK } from './sockets.js';

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

describe('nodeSocketFactory', () => {
  it('gives accepted and outgoing sockets 64 KiB stream buffers', async () => {
    const accepted: Socket[] = [];
    const server = await nodeSocketFactory.listen({ host: '127.0.0.1', port: 0 }, (s) => accepted.push(s));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    const out = nodeSocketFactory.connect({ ip: '127.0.0.1', port: (server.address() as AddressInfo).port });
    cleanups.push(() => out.destroy());
    await once(out, 'connect');
    await eventually(() => accepted.length === 1, 'the server accepted the connection');
    cleanups.push(() => accepted[0]?.destroy());
    expect(SOCKET_HIGH_WATER_MARK).toBe(64 * 1024);
    for (const s of [out, accepted[0] as Socket]) {
      expect(s.writableHighWaterMark).toBe(SOCKET_HIGH_WATER_MARK);
      expect(s.readableHighWaterMark).toBe(SOCKET_HIGH_WATER_MARK);
    }
  });

  it('keeps an accepted socket writable after the client half-closes only with allowHalfOpen', async () => {
    async function afterClientFin(allowHalfOpen: boolean | undefined): Promise<{ serverEnded: boolean; got: string }> {
      const accepted: Socket[] = [];
      const options = allowHalfOpen === undefined ? { host: '127.0.0.1', port: 0 } : { host: '127.0.0.1', port: 0, allowHalfOpen };
      const server = await nodeSocketFactory.listen(options, (s) => accepted.push(s));
      cleanups.push(() => new Promise((resolve) => server.close(resolve)));
      const client = await connectTcp((server.address() as AddressInfo).port);
      cleanups.push(() => client.destroy());
      let got = '';
      client.on('data', (d: Buffer) => (got += d.toString()));
      const clientEnded = once(client, 'end');
      await eventually(() => accepted.length === 1, 'the server accepted the connection');
      const s = accepted[0] as Socket;
      cleanups.push(() => s.destroy());
      s.resume();
      client.end();
      await once(s, 'end');
      // Node ends a non-half-open socket on the next tick after 'end'; a half-open one is ours to end.
      await new Promise((resolve) => setImmediate(resolve));
      const serverEnded = s.writableEnded;
      if (!serverEnded) s.end('after your FIN');
      await clientEnded;
      return { serverEnded, got };
    }
    expect(await afterClientFin(true)).toEqual({ serverEnded: false, got: 'after your FIN' });
    expect(await afterClientFin(undefined)).toEqual({ serverEnded: true, got: '' });
    expect(await afterClientFin(false)).toEqual({ serverEnded: true, got: '' });
  });
});
