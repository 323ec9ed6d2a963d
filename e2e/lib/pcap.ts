/**
 * Watching the wire between nodes: tcpdump on the fabric bridge (inside the
 * fabric namespace) writing a pcap file, and a small reader for that file
 * (classic pcap, Ethernet link type) giving each IPv4 packet's addresses,
 * protocol, ports and payload.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { registerCleanup } from './cleanup.js';
import type { Netns } from './topology.js';
import { waitFor } from './wait.js';

export interface CapturedPacket {
  readonly src: string;
  readonly dst: string;
  /** 6 = TCP, 17 = UDP, ... */
  readonly protocol: number;
  readonly srcPort: number;
  readonly dstPort: number;
  readonly payload: Buffer;
}

export class Capture {
  private constructor(
    readonly file: string,
    private readonly stopFn: () => Promise<string>,
  ) {}

  /** Starts tcpdump on `iface` in `netns`; resolves once it is capturing. */
  static async start(netns: Netns, iface: string, file: string, filter: string): Promise<Capture> {
    const child = spawn('ip', ['netns', 'exec', netns.name, 'tcpdump', '-i', iface, '-n', '--immediate-mode', '-U', '-s', '0', '-w', file, filter], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
    const cleanup = registerCleanup({
      what: `tcpdump on ${iface}`,
      run: async () => {
        child.kill('SIGINT');
        await exited;
      },
      runSync: () => child.kill('SIGKILL'),
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tcpdump did not start within 10 s: ${stderr}`)), 10_000);
      child.stderr?.on('data', (d: Buffer) => {
        stderr += d.toString();
        if (stderr.includes('listening on')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tcpdump exited (${code}): ${stderr}`));
      });
    });
    return new Capture(file, async () => {
      child.kill('SIGINT');
      await exited;
      cleanup.forget();
      return stderr;
    });
  }

  /**
   * Waits until the file (written packet by packet, -U) holds a packet
   * satisfying `seen`: tcpdump may still be behind the traffic when the test
   * is done with it, and what it has not written when stopped is lost.
   */
  async waitForPacket(what: string, seen: (p: CapturedPacket) => boolean, timeoutMs = 5_000): Promise<void> {
    await waitFor(`tcpdump wrote ${what}`, async () => {
      let packets: CapturedPacket[];
      try {
        packets = this.packets();
      } catch {
        return undefined; // a record still being written
      }
      return packets.some(seen) ? true : undefined;
    }, { timeoutMs, intervalMs: 50 });
  }

  /** Stops tcpdump (it flushes the file) and returns its summary output. */
  stop(): Promise<string> {
    return this.stopFn();
  }

  packets(): CapturedPacket[] {
    return readPcap(readFileSync(this.file));
  }
}

/** Parses a classic pcap file (microsecond or nanosecond, either byte order) with Ethernet frames; IPv4 only. */
function readPcap(buf: Buffer): CapturedPacket[] {
  if (buf.length < 24) return [];
  const magic = buf.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && buf.readUInt32BE(0) !== 0xa1b2c3d4 && buf.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const linkType = u32(20);
  if (linkType !== 1) throw new Error(`pcap link type ${linkType}, expected Ethernet (1)`);
  const out: CapturedPacket[] = [];
  let off = 24;
  while (off + 16 <= buf.length) {
    const capLen = u32(off + 8);
    if (off + 16 + capLen > buf.length) break; // a record still being written
    const frame = buf.subarray(off + 16, off + 16 + capLen);
    off += 16 + capLen;
    if (frame.length < 14 + 20 || frame.readUInt16BE(12) !== 0x0800) continue;
    const ipHdr = frame.subarray(14);
    const ihl = (ipHdr[0] ?? 0) & 0x0f;
    const totalLen = ipHdr.readUInt16BE(2);
    const protocol = ipHdr[9] ?? 0;
    const src = [...ipHdr.subarray(12, 16)].join('.');
    const dst = [...ipHdr.subarray(16, 20)].join('.');
    const l4 = ipHdr.subarray(ihl * 4, totalLen);
    let srcPort = 0;
    let dstPort = 0;
    let payload: Buffer = Buffer.alloc(0);
    if (protocol === 6 && l4.length >= 20) {
      srcPort = l4.readUInt16BE(0);
      dstPort = l4.readUInt16BE(2);
      payload = l4.subarray(((l4[12] ?? 0) >> 4) * 4);
    } else if (protocol === 17 && l4.length >= 8) {
      srcPort = l4.readUInt16BE(0);
      dstPort = l4.readUInt16BE(2);
      payload = l4.subarray(8);
    }
    out.push({ src, dst, protocol, srcPort, dstPort, payload: Buffer.from(payload) });
  }
  return out;
}
