import type { ZdsRequest, ZdsWorkloadInfo } from '@ambient/control';
import { describe, expect, it } from 'vitest';
import { ManagerState, type PodNetns, type RunningProxy } from './manager-state.js';

const info = (name: string): ZdsWorkloadInfo => ({ name, namespace: 'ns', serviceAccount: 'sa' });
const add = (uid: string, fd: number): ZdsRequest => ({ kind: 'add', uid, info: info(uid), netnsFd: fd });
const keep = (uid: string): ZdsRequest => ({ kind: 'keep', uid });
const del = (uid: string): ZdsRequest => ({ kind: 'del', uid });
const snapshotSent: ZdsRequest = { kind: 'snapshot-sent' };

/** A state with recording fakes: fd N is netns "ns-<N % 100>" (so 1 and 101 are the same namespace); fd 99 is not a netns. */
function fixture(opts: { failStart?: Set<string> } = {}) {
  const closed: number[] = [];
  const started: Array<{ uid: string; netns: PodNetns }> = [];
  const drained: Array<{ uid: string; mode: string }> = [];
  const counts: Array<[number, number]> = [];
  let stops = 0;
  const state = new ManagerState({
    identifyNetns: (fd) => {
      if (fd === 99) throw new Error('ENOTNETNS: not a network namespace');
      return `ns-${fd % 100}`;
    },
    closeFd: (fd) => {
      if (closed.includes(fd)) throw new Error(`fd ${fd} closed twice`);
      closed.push(fd);
    },
    startProxy: async (uid, _info, netns): Promise<RunningProxy> => {
      if (opts.failStart?.has(uid)) throw new Error('EADDRINUSE: 15008 is taken');
      started.push({ uid, netns });
      return { drain: async (mode) => void drained.push({ uid, mode }), connections: () => ({ inbound: [], outbound: [] }) };
    },
    log: { info: () => {}, warn: () => {}, debug: () => {} },
    onCountsChanged: (a, p) => void counts.push([a, p]),
    onProxyStopped: () => void stops++,
  });
  return { state, closed, started, drained, counts, stops: () => stops };
}

describe('in-pod manager state (ztunnel statemanager rules)', () => {
  it('starts a proxy per Add and is ready only after SnapshotSent', async () => {
    const f = fixture();
    expect(await f.state.process(add('a', 1))).toBeUndefined();
    expect(f.state.ready()).toBe(false);
    expect(await f.state.process(snapshotSent)).toBeUndefined();
    expect(f.state.ready()).toBe(true);
    expect(f.started.map((s) => s.uid)).toEqual(['a']);
    expect(f.state.dump()).toEqual({ a: { state: 'Up', connections: { inbound: [], outbound: [] }, info: info('a') } });
    expect(f.counts.at(-1)).toEqual([1, 0]);
  });

  it('treats an Add of a known pod with the same netns as a no-op and closes the duplicate fd', async () => {
    const f = fixture();
    await f.state.process(add('a', 1));
    expect(await f.state.process(add('a', 101))).toBeUndefined();
    expect(f.started).toHaveLength(1);
    expect(f.closed).toEqual([101]);
  });

  it('replaces the proxy when the pod comes back with a different netns (sandbox re-created)', async () => {
    const f = fixture();
    await f.state.process(add('a', 1));
    await f.state.process(add('a', 2));
    await f.state.drainAll('immediate');
    expect(f.started.map((s) => s.netns.id)).toEqual(['ns-1', 'ns-2']);
    expect(f.drained[0]).toEqual({ uid: 'a', mode: 'immediate' });
    expect(f.closed).toContain(1);
  });

  it('Del drains the pod immediately and closes its netns fd; Del of an unknown pod after the snapshot is refused', async () => {
    const f = fixture();
    await f.state.process(add('a', 1));
    await f.state.process(snapshotSent);
    expect(await f.state.process(del('a'))).toBeUndefined();
    await f.state.drainAll('graceful');
    expect(f.drained).toEqual([{ uid: 'a', mode: 'immediate' }]);
    expect(f.closed).toEqual([1]);
    expect(f.stops()).toBe(1);
    expect(await f.state.process(del('ghost'))).toMatch(/Del for pod ghost, which this ztunnel does not know/);
  });

  it('on SnapshotSent drains every proxy the new snapshot does not name (Add or Keep)', async () => {
    const f = fixture();
    await f.state.process(add('a', 1));
    await f.state.process(add('b', 2));
    await f.state.process(add('c', 3));
    await f.state.process(snapshotSent);
    // The node agent reconnects (ztunnel restarted its connection): a new snapshot keeps a and b only.
    f.state.resetSnapshot();
    expect(f.state.ready()).toBe(false);
    await f.state.process(add('a', 101));
    expect(await f.state.process(keep('b'))).toBeUndefined();
    await f.state.process(snapshotSent);
    await f.state.drainAll('immediate');
    expect(f.drained.slice(0, 1)).toEqual([{ uid: 'c', mode: 'immediate' }]);
    expect(f.started.map((s) => s.uid)).toEqual(['a', 'b', 'c']);
  });

  it('refuses Keep after SnapshotSent and a second SnapshotSent', async () => {
    const f = fixture();
    await f.state.process(snapshotSent);
    expect(await f.state.process(keep('a'))).toMatch(/Keep received after SnapshotSent/);
    expect(await f.state.process(snapshotSent)).toMatch(/SnapshotSent received twice/);
  });

  it('NACKs an fd that is not a network namespace and closes it', async () => {
    const f = fixture();
    expect(await f.state.process(add('a', 99))).toMatch(/not a network namespace.*ENOTNETNS/);
    expect(f.closed).toEqual([99]);
    expect(f.started).toHaveLength(0);
  });

  it('keeps a pod whose proxy cannot start pending (not ready), retries it, and becomes ready when it starts', async () => {
    const failing = new Set(['a']);
    const f = fixture({ failStart: failing });
    expect(await f.state.process(add('a', 1))).toMatch(/starting the proxy for pod ns\/a \(a\) failed: EADDRINUSE/);
    await f.state.process(snapshotSent);
    expect(f.state.ready()).toBe(false);
    expect(f.state.dump()['a']?.state).toBe('Pending');
    expect(f.counts.at(-1)).toEqual([0, 1]);
    await f.state.retryPending();
    expect(f.state.hasPending()).toBe(true);
    failing.clear();
    await f.state.retryPending();
    expect(f.state.ready()).toBe(true);
    expect(f.started.map((s) => s.netns.fd)).toEqual([1]);
    expect(f.closed).toEqual([]);
  });

  it('Del of a pending pod drops it and closes its fd; a new connection drops pending pods too', async () => {
    const f = fixture({ failStart: new Set(['a', 'b']) });
    await f.state.process(add('a', 1));
    await f.state.process(add('b', 2));
    await f.state.process(snapshotSent);
    expect(await f.state.process(del('a'))).toBeUndefined();
    expect(f.closed).toEqual([1]);
    f.state.resetSnapshot();
    expect(f.closed).toEqual([1, 2]);
    expect(f.state.hasPending()).toBe(false);
  });

  it('drainAll drains running proxies in the requested mode and closes every fd exactly once', async () => {
    const f = fixture();
    await f.state.process(add('a', 1));
    await f.state.process(add('b', 2));
    await f.state.drainAll('graceful');
    expect(f.drained.map((d) => d.mode)).toEqual(['graceful', 'graceful']);
    expect(f.closed.sort()).toEqual([1, 2]);
    expect(f.counts.at(-1)).toEqual([0, 0]);
  });
});
