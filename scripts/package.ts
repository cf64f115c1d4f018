/**
 * The deployment package: what azd zips and Flex Consumption runs (azure.yaml's `dist`). It is
 * assembled in build/deploy from the compiled app and its production dependencies only:
 *
 *   build/deploy/
 *     dist/functions, dist/shared, dist/cli   the app (`npm run build`), with source maps
 *     host.json, package.json, package-lock.json
 *     node_modules/                           `npm ci --omit=dev`: no devDependencies, no Node binary;
 *                                             without type declarations and source maps, which
 *                                             Node never loads (over half its bytes)
 *
 *   npm run package              builds it (azd's prepackage hook runs this), then prints its size
 *   npm run package -- --list    also lists every file outside node_modules
 *
 * test/e2e/package.test.ts builds it and holds it to this: nothing else in it, and under a size bound.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { deflateRawSync } from 'node:zlib';

export const PACKAGE_DIR = path.join('build', 'deploy');

/** The app's folders in dist/ (package.json `main` loads dist/functions/*.js, which loads the rest). */
const APP_DIRS = ['functions', 'shared', 'cli'];

export interface PackageSize {
  /** Files outside node_modules, relative, with `/`. */
  files: string[];
  /** node_modules: its files and their bytes. */
  nodeModules: { files: number; bytes: number };
  /** Every file's bytes. */
  bytes: number;
  /** The size of the zip azd uploads: each file deflated as zip does, plus its zip headers. */
  zipBytes: number;
}

/** What the dependencies ship for editors and debuggers, never loaded at run time. */
const NOT_LOADED = /\.(d\.[cm]?ts|[cm]?js\.map|css\.map)$/;

/**
 * Assembles the package in `out` (default `root`/build/deploy) from a fresh `npm run build` of
 * `root`. npm ci runs offline-first from the cache the development install filled.
 */
export function buildDeploymentPackage(root: string, out = path.join(root, PACKAGE_DIR)): string {
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'pipe' });
  for (const dir of APP_DIRS) cpSync(path.join(root, 'dist', dir), path.join(out, 'dist', dir), { recursive: true });
  cpSync(path.join(root, 'host.json'), path.join(out, 'host.json'));
  // The package's own ignore file: azd and Core Tools read the one at the root of what they zip,
  // and this package leaves nothing out (the repository's .funcignore is for the repository).
  writeFileSync(
    path.join(out, '.funcignore'),
    '# The deployment package as scripts/package.ts built it: nothing is left out.\n',
  );
  cpSync(path.join(root, 'package-lock.json'), path.join(out, 'package-lock.json'));
  // package.json as npm ci needs it to match the lock file, without scripts: nothing of the
  // development workflow runs at install or on the host.
  const manifest = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as Record<string, unknown>;
  delete manifest['scripts'];
  writeFileSync(path.join(out, 'package.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  execFileSync(
    'npm',
    ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error'],
    { cwd: out, stdio: 'pipe' },
  );
  prune(path.join(out, 'node_modules'));
  return out;
}

function prune(dir: string): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) prune(full);
    else if (NOT_LOADED.test(entry.name)) rmSync(full);
  }
}

/** Walks a built package and measures it. */
export function measurePackage(dir: string): PackageSize {
  const size: PackageSize = { files: [], nodeModules: { files: 0, bytes: 0 }, bytes: 0, zipBytes: 22 };
  const walk = (rel: string) => {
    for (const entry of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        walk(child);
        continue;
      }
      if (!entry.isFile()) continue;
      const full = path.join(dir, child);
      const bytes = statSync(full).size;
      size.bytes += bytes;
      // Local header (30) and central directory entry (46), each with the name, then the data:
      // deflated, or stored when deflating doesn't make it smaller.
      const deflated = bytes === 0 ? 0 : deflateRawSync(readFileSync(full)).length;
      size.zipBytes += 76 + 2 * Buffer.byteLength(child) + Math.min(bytes, deflated);
      if (child.startsWith('node_modules/')) {
        size.nodeModules.files++;
        size.nodeModules.bytes += bytes;
      } else size.files.push(child);
    }
  };
  walk('');
  size.files.sort();
  return size;
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

if (require.main === module) {
  const root = path.join(__dirname, '..', '..');
  const list = process.argv.includes('--list');
  const dir = buildDeploymentPackage(root);
  if (!existsSync(path.join(dir, 'dist', 'functions'))) throw new Error(`package: ${dir} has no dist/functions`);
  const size = measurePackage(dir);
  if (list) for (const f of size.files) console.log(f);
  console.log(
    `package: ${PACKAGE_DIR}: ${size.files.length} app files, node_modules ${size.nodeModules.files} files ` +
      `(${mib(size.nodeModules.bytes)}); ${mib(size.bytes)} unpacked, ${mib(size.zipBytes)} zipped`,
  );
}
