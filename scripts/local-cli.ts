/**
 * `npm run inboxq:local -- <command> …`: the inboxq command line against the local stack that
 * `npm run stack` runs, e.g. `npm run inboxq:local -- status` or `… trace alice@fabrikam.test`.
 *
 * The CLI refuses, from a settings file, what points a token at another host than Microsoft's (the
 * local vault and identity provider do); here the file is the one `npm run stack` wrote (it says so
 * in `writtenBy`), so its values are taken as the environment, which the CLI trusts.
 *
 *   --stack FILE   the settings file (default: local.settings.json or local.settings.stack.json,
 *                  whichever `npm run stack` wrote)
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { main } from '../cli/inboxq';

const ROOT = path.join(__dirname, '..', '..');
const WRITTEN_BY = 'npm run stack';

function stackSettings(file: string | undefined): Record<string, string> {
  const candidates = file
    ? [path.resolve(file)]
    : ['local.settings.json', 'local.settings.stack.json'].map((f) => path.join(ROOT, f));
  for (const candidate of candidates) {
    if (!existsSync(candidate)) continue;
    try {
      const json = JSON.parse(readFileSync(candidate, 'utf8')) as {
        writtenBy?: string;
        Values?: Record<string, string>;
      };
      if (json.writtenBy === WRITTEN_BY && json.Values) return json.Values;
    } catch {
      // not a file of the stack's
    }
  }
  throw new Error(
    `no settings written by \`npm run stack\` found (${candidates.map((c) => path.relative(process.cwd(), c)).join(', ')}): start the local stack first, or name its file with --stack FILE`,
  );
}

async function run(): Promise<number> {
  const argv = process.argv.slice(2);
  const at = argv.indexOf('--stack');
  const file = at >= 0 ? argv[at + 1] : undefined;
  if (at >= 0) argv.splice(at, 2);
  let values: Record<string, string>;
  try {
    values = stackSettings(file);
  } catch (err) {
    process.stderr.write(`inboxq:local: ${(err as Error).message}\n`);
    return 2;
  }
  // The Azure SDK reads its own settings (AZURE_*: the stack's developer identity) from process.env.
  for (const [name, value] of Object.entries(values)) process.env[name] ??= value;
  const r = await main(argv, process.env);
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  return r.code;
}

void run().then((code) => process.exit(code));
