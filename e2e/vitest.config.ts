// The e2e suite: one small cluster (network namespaces, control plane, ztunnels)
// per test file, files strictly one after another in one worker process (they
// share the machine's iptables lock and CPU; the istio-cni fake and the app
// sockets live in the test process). Generous timeouts: processes start here.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'], externalConditions: ['source'] } },
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    maxWorkers: 1,
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 90_000,
    teardownTimeout: 30_000,
    // A machine-readable summary next to the console output (same place as the packages').
    reporters: ['default', ['json', { outputFile: 'coverage/vitest-report.json' }]],
  },
});
