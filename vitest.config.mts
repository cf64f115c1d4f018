import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Each file starts its own local stack (Dovecot, Azurite, identity provider, vault, SMTP) and stops it.
    pool: 'forks',
    globalSetup: ['./test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 90_000,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
