import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 90_000,
    reporters: ['default', './test/summary-reporter.ts'],
    projects: [
      {
        // Pure logic: no servers, no compile. `npm run test:unit` runs these alone in seconds.
        extends: true,
        test: { name: 'unit', include: ['test/unit/**/*.test.ts'] },
      },
      {
        // Each file starts its own local stack (Dovecot, Azurite, identity provider, vault, SMTP) and
        // stops it. The global setup compiles the app and the local stack once for the crash tests.
        extends: true,
        test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'], globalSetup: ['./test/global-setup.ts'] },
      },
    ],
  },
});
