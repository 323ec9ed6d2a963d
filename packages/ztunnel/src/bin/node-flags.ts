/**
 * How ztunnel's own process is started, wherever it runs as one: the image
 * (deploy/ztunnel/Dockerfile's ENTRYPOINT and ENV; a test keeps them equal to
 * these), the quick start, the end-to-end suite and the benchmark.
 *
 * - `--max-semi-space-size=1`: a 1 MiB young generation (Node 20's default
 *   grows to 16 MiB) keeps RSS flat under load at no measured CPU cost.
 * - `--single-threaded-gc`: no GC helper threads. On Node 20 (V8 11.3) a
 *   mark-compact that falls inside a high-throughput transfer, in a process
 *   that had been idle for some seconds, left V8 restarting incremental
 *   marking after every scavenge: ~150 mark-compacts in 10 s, each freeing
 *   ~0.1 MB, with helper threads marking concurrently — a quarter of the
 *   client ztunnel's CPU, a third less throughput. Without helper threads it
 *   does not happen (3–5 mark-compacts for the same transfer), and a proxy's
 *   GC work stays on its own core budget instead of competing with the event
 *   loop for the same two vCPUs. Marking stays incremental, so pauses stay
 *   short. Figures: ARCHITECTURE.md, ztunnel benchmark.
 * - `MALLOC_ARENA_MAX=2`: two glibc malloc arenas instead of 8 per core; the
 *   memory freed after bursts is handed back by the malloc_trim timer.
 */
export const ZTUNNEL_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--single-threaded-gc'];

export const ZTUNNEL_NODE_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };
