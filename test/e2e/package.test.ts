/**
 * The deployment package holds the app and nothing else: `npm run build` writes dist/ with
 * functions/, shared/ and cli/ only, and .funcignore keeps the local stack, scripts, examples,
 * tests, sources and tool configs out of what Core Tools or azd would zip.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { beforeAll, describe, expect, it } from 'vitest';

import { deploymentPackage } from '../../scripts/package';

const ROOT = path.resolve(__dirname, '../..');

describe('the deployment package', () => {
  beforeAll(() => {
    // A stale file from an older build must not survive the build.
    mkdirSync(path.join(ROOT, 'dist', 'localstack'), { recursive: true });
    writeFileSync(path.join(ROOT, 'dist', 'localstack', 'stale.js'), '');
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, stdio: 'pipe' });
  }, 120_000);

  it('is the compiled app, host.json and package.json, beside node_modules', () => {
    const { files, nodeModules } = deploymentPackage(ROOT);
    const outside = files.filter(
      (f) =>
        !/^dist\/(functions|shared|cli)\/.+\.js(\.map)?$/.test(f) && !/^(host|package|package-lock)\.json$/.test(f),
    );
    expect(outside).toEqual([]);
    expect(files).toContain('host.json');
    expect(files).toContain('package.json');
    expect(files).toContain('dist/functions/drain.js');
    expect(files).toContain('dist/cli/inboxq.js');
    expect(nodeModules.files).toBeGreaterThan(0);
  });

  it('carries no local stack, test, script, example or TypeScript source', () => {
    const { files } = deploymentPackage(ROOT);
    expect(files.filter((f) => /(^|\/)(localstack|test|scripts|examples)\//.test(f))).toEqual([]);
    expect(files.filter((f) => f.endsWith('.ts'))).toEqual([]);
  });

  it('every function file the app registers is in it (package.json main)', () => {
    const { files } = deploymentPackage(ROOT);
    const entries = files.filter((f) => /^dist\/functions\/[^/]+\.js$/.test(f)).map((f) => path.basename(f, '.js'));
    const sources = execFileSync('git', ['ls-files', 'functions/*.ts'], { cwd: ROOT, encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((f) => path.basename(f, '.ts'));
    expect(entries.sort()).toEqual(sources.sort());
  });
});
