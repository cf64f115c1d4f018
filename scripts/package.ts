/**
 * What the deployment package holds: the files `func azure functionapp publish` or `azd deploy`
 * would zip from this folder, by the rules of .funcignore (gitignore syntax).
 *
 *   npm run package:list          the app's files, then node_modules as a count and a size
 *
 * test/e2e/package.test.ts builds the app and holds this list to the app alone.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import ignore from 'ignore';

export interface DeploymentPackage {
  /** Files outside node_modules, repository-relative with `/`. */
  files: string[];
  /** node_modules, which the package carries whole: its file count and bytes. */
  nodeModules: { files: number; bytes: number };
}

export function deploymentPackage(root: string): DeploymentPackage {
  const rules = ignore().add(readFileSync(path.join(root, '.funcignore'), 'utf8'));
  const files: string[] = [];
  const nodeModules = { files: 0, bytes: 0 };
  const walk = (rel: string) => {
    for (const entry of readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        if (rules.ignores(`${child}/`)) continue;
        walk(child);
      } else if (!rules.ignores(child)) {
        if (child.startsWith('node_modules/')) {
          nodeModules.files++;
          nodeModules.bytes += lstatSync(path.join(root, child)).size;
        } else files.push(child);
      }
    }
  };
  walk('');
  return { files: files.sort(), nodeModules };
}

if (require.main === module) {
  const pkg = deploymentPackage(path.join(__dirname, '..', '..'));
  for (const f of pkg.files) console.log(f);
  const mb = (pkg.nodeModules.bytes / 1024 / 1024).toFixed(1);
  console.log(`node_modules/: ${pkg.nodeModules.files} files, ${mb} MiB`);
}
