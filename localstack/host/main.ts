/**
 * `npm start` without Core Tools: runs the app in this folder on inboxq's local host.
 *
 *   node build/localstack/host/main.js [--app DIR] [--settings FILE] [--main GLOB]
 *
 * Reads DIR/local.settings.json (`npm run stack` writes one for the embedded local stack), loads
 * package.json `main` (build the app first: `npm run build`), and runs until Ctrl-C or SIGTERM.
 * Exits 1 when the host can't start, naming every function and setting at fault.
 */
import { parseArgs } from 'node:util';

import { LocalHost } from './host';
import { HostStartError } from './settings';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { app: { type: 'string' }, settings: { type: 'string' }, main: { type: 'string' } },
  });
  const appRoot = values.app ?? process.cwd();
  process.stdout.write(
    `inboxq local host: the app in ${appRoot} on @azure/functions' own programming model, with host.json's queue and timer rules (not the Azure Functions host)\n`,
  );
  let host: LocalHost;
  try {
    host = await LocalHost.start({
      appRoot,
      ...(values.settings ? { settingsFile: values.settings } : {}),
      ...(values.main ? { main: values.main } : {}),
    });
  } catch (err) {
    const lines = err instanceof HostStartError ? err.problems : [err instanceof Error ? err.message : String(err)];
    for (const line of lines) process.stderr.write(`inboxq local host: ${line}\n`);
    process.exit(1);
  }
  process.stdout.write(`inboxq local host: ${host.functions.length} functions running; Ctrl-C stops\n`);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`inboxq local host: ${signal}, stopping\n`);
    host.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`inboxq local host: stopping failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

void main();
