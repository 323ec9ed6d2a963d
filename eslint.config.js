// Lint rules that keep the architecture honest: no console in packages (use the
// injected logger), time only through the Clock, generated protobuf only inside
// the control package's edges.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '**/src/gen/**', '**/.turbo/**', '**/coverage/**'] },
  ...tseslint.configs.recommended,
  {
    files: ['packages/*/src/**/*.ts'],
    rules: {
      'no-console': 'error',
      'no-restricted-globals': [
        'error',
        { name: 'setTimeout', message: 'Use the injected Clock (platform/clock.ts).' },
        { name: 'setInterval', message: 'Use the injected Clock (platform/clock.ts).' },
      ],
      'no-restricted-properties': [
        'error',
        { object: 'Date', property: 'now', message: 'Use the injected Clock (platform/clock.ts).' },
      ],
    },
  },
  {
    files: ['packages/*/src/platform/clock.ts', 'packages/*/src/bin/**/*.ts', 'packages/*/src/testing/**/*.ts'],
    rules: { 'no-restricted-globals': 'off', 'no-restricted-properties': 'off' },
  },
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
);
