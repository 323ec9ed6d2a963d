// Root config for local watch mode only (`npm run test:watch`); CI runs each
// package's own `vitest run` through turbo.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: { projects: ['packages/*'] },
});
