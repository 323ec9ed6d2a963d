import { defineConfig } from 'vitest/config';

export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'], externalConditions: ['source'] } },
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    restoreMocks: true,
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // A machine-readable summary next to the console output; .ci/run prints the totals from it.
    reporters: ['default', ['json', { outputFile: 'coverage/vitest-report.json' }]],
  },
});
