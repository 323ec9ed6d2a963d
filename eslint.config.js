// Lint rules that keep the architecture honest:
// - no console in packages/*/src (use the injected logger);
// - time only through the Clock: no setTimeout/setInterval/Date.now in
//   packages/*/src outside platform/clock.ts, src/bin and src/testing;
// - package boundaries (no-restricted-imports): control imports no
//   dataplane/ztunnel/waypoint, dataplane no ztunnel/waypoint; nobody reaches
//   into another package by relative path or by `@ambient/<pkg>/src/...`, only
//   through its exported entry points; `@ambient/<pkg>/testing` only from test
//   files, test/, bench/ and src/testing;
// - raw sockets and randomness only through the seams: no net.connect /
//   net.createConnection / net.createServer / tls.connect / crypto.randomBytes
//   in production source (packages/*/src minus tests and src/testing) outside
//   the seam files listed in SEAMS below;
// - no import cycles inside packages/*/src (import-x/no-cycle);
// - typescript-eslint's recommended set, unused vars, consistent type imports.
// (Generated protobuf, src/gen, is ignored; unused exports/files: `npm run lint:exports`, knip, which `npm run lint` runs after eslint.)
import { createTypeScriptImportResolver } from 'eslint-import-resolver-typescript';
import { importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

const PACKAGES = ['control', 'dataplane', 'ztunnel', 'waypoint', 'ctl'];

/** Which @ambient packages each package may not import (the layering). */
const FORBIDDEN_DEPS = {
  control: ['dataplane', 'ztunnel', 'waypoint', 'ctl'],
  dataplane: ['ztunnel', 'waypoint', 'ctl'],
  ztunnel: ['waypoint', 'ctl'],
  waypoint: ['ztunnel', 'ctl'],
};

/**
 * Layering exceptions for tests only (test/, *.test.ts, bench/): the waypoint's
 * integration and conformance suites start real ztunnels (the peers it talks to
 * on both sides); its production code may not import them.
 */
const TEST_ONLY_DEPS = {
  waypoint: ['ztunnel'],
};

/** Files allowed to create raw sockets / draw raw random bytes, each with why. */
const SEAMS = {
  'packages/dataplane/src/platform/sockets.ts': 'the socket seam: nodeSocketFactory (net.createServer / net.connect)',
  'packages/dataplane/src/tls/handshake.ts': 'the TLS seam: the one tls.connect of HBONE',
  'packages/control/src/platform/crypto.ts': 'the randomness seam: systemRandomBytes',
  'packages/ztunnel/src/platform/netns-sockets.ts': 'the in-pod socket factory: listeners/connects inside a pod netns',
  'packages/ztunnel/src/bin/ambient-quickstart.ts': 'demo binary: its own demo HTTP backend and a readiness probe connect',
};

const PRODUCTION_IGNORES = ['**/*.test.ts', 'packages/*/src/testing/**'];

const boundaryPatterns = [
  {
    regex: '^@ambient/[^/]+/(src|dist|test)(/|$)',
    message: "Import another package only through its exported entry points (`@ambient/<pkg>`, `@ambient/<pkg>/testing`, ...), not its internals.",
  },
  {
    regex: `^(\\.\\./)+(packages/)?(${PACKAGES.join('|')})/(src|dist|test|bench)(/|$)`,
    message: 'Do not reach into a package by relative path: import `@ambient/<pkg>` (its exported entry point).',
  },
  {
    regex: '^(\\.\\./)+packages/',
    message: 'Do not reach into a package by relative path: import `@ambient/<pkg>` (its exported entry point).',
  },
];

const testingPattern = {
  regex: '^@ambient/[^/]+/testing(/|$)',
  message: '`@ambient/<pkg>/testing` is for test files, test/, bench/ and src/testing only.',
};

const layeringPatterns = (pkg, { tests = false } = {}) => {
  const forbidden = (FORBIDDEN_DEPS[pkg] ?? []).filter((dep) => !(tests && (TEST_ONLY_DEPS[pkg] ?? []).includes(dep)));
  return forbidden.length === 0
    ? []
    : [
        {
          regex: `^@ambient/(${forbidden.join('|')})(/|$)`,
          message: `@ambient/${pkg} may not depend on @ambient/{${forbidden.join(',')}} (package layering).`,
        },
      ];
};

const SEAM_MESSAGE = 'Raw sockets/randomness only through the seams (platform/sockets.ts, tls/handshake.ts, platform/crypto.ts, ...): inject a SocketFactory / RandomBytes.';

const socketImportPaths = [
  ...['node:net', 'net'].map((name) => ({ name, importNames: ['connect', 'createConnection', 'createServer'], message: SEAM_MESSAGE })),
  ...['node:tls', 'tls'].map((name) => ({ name, importNames: ['connect'], message: SEAM_MESSAGE })),
  ...['node:crypto', 'crypto'].map((name) => ({ name, importNames: ['randomBytes'], message: SEAM_MESSAGE })),
];

const socketProperties = [
  ...['connect', 'createConnection', 'createServer'].map((property) => ({ object: 'net', property, message: SEAM_MESSAGE })),
  { object: 'tls', property: 'connect', message: SEAM_MESSAGE },
  { object: 'crypto', property: 'randomBytes', message: SEAM_MESSAGE },
];

const clockProperties = [{ object: 'Date', property: 'now', message: 'Use the injected Clock (platform/clock.ts).' }];

const restrictedImports = ({ patterns, paths = [] }) => ['error', { paths, patterns }];

/** no-restricted-imports does not merge across config objects: each block states its full set. */
const packageBlocks = PACKAGES.flatMap((pkg) => {
  const seamFiles = Object.keys(SEAMS).filter((f) => f.startsWith(`packages/${pkg}/`));
  const production = [...boundaryPatterns, ...layeringPatterns(pkg), testingPattern];
  return [
    {
      files: [`packages/${pkg}/**/*.{ts,mts,js,mjs}`],
      rules: { 'no-restricted-imports': restrictedImports({ patterns: [...boundaryPatterns, ...layeringPatterns(pkg, { tests: true })] }) },
    },
    {
      files: [`packages/${pkg}/src/**/*.ts`],
      ignores: PRODUCTION_IGNORES,
      rules: { 'no-restricted-imports': restrictedImports({ patterns: production, paths: socketImportPaths }) },
    },
    ...(seamFiles.length === 0
      ? []
      : [{ files: seamFiles, rules: { 'no-restricted-imports': restrictedImports({ patterns: production }) } }]),
  ];
});

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
      'no-restricted-properties': ['error', ...clockProperties],
    },
  },
  {
    files: ['packages/*/src/**/*.ts'],
    ignores: PRODUCTION_IGNORES,
    rules: { 'no-restricted-properties': ['error', ...clockProperties, ...socketProperties] },
  },
  {
    // The clock seam and the binaries may use timers and Date.now, but still no raw sockets.
    files: ['packages/*/src/platform/clock.ts', 'packages/*/src/bin/**/*.ts'],
    rules: { 'no-restricted-globals': 'off', 'no-restricted-properties': ['error', ...socketProperties] },
  },
  {
    files: ['packages/*/src/testing/**/*.ts'],
    rules: { 'no-restricted-globals': 'off', 'no-restricted-properties': 'off' },
  },
  ...Object.keys(SEAMS).map((file) => ({
    // The seams may touch net/tls/crypto (and, in src/bin, the clock).
    files: [file],
    rules: { 'no-restricted-properties': file.includes('/src/bin/') ? 'off' : ['error', ...clockProperties] },
  })),
  ...packageBlocks,
  {
    files: ['e2e/**/*.{ts,mts,js,mjs}'],
    rules: { 'no-restricted-imports': restrictedImports({ patterns: boundaryPatterns }) },
  },
  {
    files: ['packages/*/src/**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      // Without these import-x parses only .js files and never sees a .ts cycle.
      'import-x/extensions': ['.ts', '.mts', '.js', '.mjs'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.mts'] },
      'import-x/resolver-next': [createTypeScriptImportResolver({ project: ['packages/*/tsconfig.json'], noWarnOnMultipleProjects: true })],
    },
    rules: { 'import-x/no-cycle': ['error', { ignoreExternal: true }] },
  },
  {
    files: ['**/*.ts'],
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
    },
  },
);
