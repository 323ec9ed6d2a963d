/**
 * Waiting for a condition outside our process (a ztunnel becoming ready, a
 * pushed policy reaching its config dump): poll with a short interval, give
 * up at a deadline with a message saying what never happened and the last
 * reason it was not yet so.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  options: { timeoutMs?: number; intervalMs?: number; abort?: Promise<unknown> } = {},
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const intervalMs = options.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let aborted: unknown;
  let isAborted = false;
  options.abort?.then(
    (v) => {
      isAborted = true;
      aborted = v;
    },
    (e: unknown) => {
      isAborted = true;
      aborted = e;
    },
  );
  for (;;) {
    if (isAborted) throw new Error(`gave up waiting for ${what}: ${aborted instanceof Error ? aborted.message : String(aborted)}`);
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    if (Date.now() > deadline) throw new Error(`${what}: not so within ${timeoutMs} ms${last ? ` (last: ${last})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
