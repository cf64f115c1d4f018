/**
 * The deployment package azd zips (azure.yaml `dist: build/deploy`, built by `npm run package`):
 * the compiled app and its production dependencies, nothing else, under a size bound, and enough on
 * its own to run. It is built here outside the repository, so no module can quietly resolve from
 * the repository's own node_modules, and then served by the local host: a mail becomes a task and
 * its answer reaches the sender.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { buildDeploymentPackage, measurePackage, type PackageSize } from '../../scripts/package';
import { TaskWorker } from '../../shared/worker/worker';
import { HostProcess } from '../helpers/host';
import { buildMail } from '../helpers/mail';

const ROOT = path.resolve(__dirname, '../..');
const MiB = 1024 * 1024;
/**
 * The bounds. Measured 2026-11-27: 15.8 MiB zipped, 54 MiB unpacked, about 10,100 files (azd zipped
 * 295 MB before). The bounds leave room for the dependencies' patch releases; a new heavyweight
 * dependency (the Azure Monitor distro alone was 17 MiB zipped) fails here and is then a decision.
 */
const MAX_ZIP_BYTES = 20 * MiB;
const MAX_UNPACKED_BYTES = 80 * MiB;

let dir: string;
let size: PackageSize;
let stack: LocalStack;
const hosts: HostProcess[] = [];

beforeAll(async () => {
  dir = buildDeploymentPackage(ROOT, path.join(mkdtempSync(path.join(tmpdir(), 'inboxq-package-')), 'deploy'));
  size = measurePackage(dir);
  stack = await LocalStack.start();
}, 300_000);
afterAll(async () => {
  await Promise.all(hosts.map((h) => h.kill()));
  await stack?.stop();
  if (dir) rmSync(path.dirname(dir), { recursive: true, force: true });
});

/** The packages the lock file marks as development only (`dev: true`), by their node_modules path. */
function devOnlyPackages(): string[] {
  const lock = JSON.parse(readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as {
    packages: Record<string, { dev?: boolean }>;
  };
  return Object.entries(lock.packages)
    .filter(([key, entry]) => key && entry.dev)
    .map(([key]) => key);
}

describe('the deployment package', () => {
  it('is the compiled app, host.json, package.json and its lock file, beside node_modules (and an ignore file that leaves nothing out)', () => {
    const outside = size.files.filter(
      (f) =>
        !/^dist\/(functions|shared|cli)\/.+\.js(\.map)?$/.test(f) &&
        !/^(host|package|package-lock)\.json$/.test(f) &&
        f !== '.funcignore',
    );
    expect(outside).toEqual([]);
    expect(size.files).toContain('dist/functions/drain.js');
    expect(size.files).toContain('dist/cli/inboxq.js');
    expect(size.nodeModules.files).toBeGreaterThan(1000);
    expect(readFileSync(path.join(dir, '.funcignore'), 'utf8').replace(/^#.*$/gm, '').trim()).toBe('');
  });

  it('every function file the app registers is in it (package.json main)', () => {
    const main = (JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as { main: string }).main;
    expect(main).toBe('dist/functions/*.js');
    const entries = size.files
      .filter((f) => /^dist\/functions\/[^/]+\.js$/.test(f))
      .map((f) => path.basename(f, '.js'));
    const sources = readdirSync(path.join(ROOT, 'functions'))
      .filter((f) => f.endsWith('.ts'))
      .map((f) => path.basename(f, '.ts'));
    expect(entries.sort()).toEqual(sources.sort());
  });

  it('carries no devDependency, no Node binary, no local stack, test, script or TypeScript source, no install script', () => {
    const dev = devOnlyPackages();
    expect(dev.length).toBeGreaterThan(100);
    expect(dev.filter((key) => existsSync(path.join(dir, key, 'package.json')))).toEqual([]);
    for (const name of ['node', 'azurite', 'smtp-server', 'vitest', 'typescript', '@azure/monitor-opentelemetry'])
      expect(existsSync(path.join(dir, 'node_modules', name)), name).toBe(false);
    expect(size.files.filter((f) => /(^|\/)(localstack|test|scripts|examples)\//.test(f) || f.endsWith('.ts'))).toEqual(
      [],
    );
    const manifest = JSON.parse(readFileSync(path.join(dir, 'package.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest['scripts']).toBeUndefined();
  });

  it(`stays under ${MAX_ZIP_BYTES / MiB} MiB zipped and ${MAX_UNPACKED_BYTES / MiB} MiB unpacked`, () => {
    expect(size.zipBytes).toBeLessThan(MAX_ZIP_BYTES);
    expect(size.bytes).toBeLessThan(MAX_UNPACKED_BYTES);
    expect(size.zipBytes).toBeLessThan(size.bytes);
  });

  it('runs on its own: the host serves the package, and a mail becomes a task whose answer reaches the sender', async () => {
    const mailbox = 'packaged@company.test';
    const sender = 'someone@partner.test';
    const settings = {
      ...stack.settings(mailbox, {
        INBOXQ_AUTHORIZED_SENDERS: sender,
        INBOXQ_DRAIN_SCHEDULE: '*/2 * * * * *',
        INBOXQ_TASKS_QUEUE: 'tasks-packaged',
      }),
      AzureFunctionsJobHost__extensions__queues__maxPollingInterval: '00:00:01',
    };
    const host = HostProcess.start(dir, settings);
    hosts.push(host);
    await host.waitFor(/4 functions running/);
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, subject: 'Packaged', body: 'Answer me.' }));
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, { tasksQueue: 'tasks-packaged' });
    let received: Awaited<ReturnType<TaskWorker['receive']>> = [];
    for (const deadline = Date.now() + 30_000; received.length === 0 && Date.now() < deadline;)
      received = await worker.receive({ max: 1 }).then(async (r) => (r.length ? r : (await sleep(300), r)));
    expect(received).toHaveLength(1);
    await worker.reply({ taskId: received[0]!.task.taskId, mailbox, markdown: 'Done.' });
    await received[0]!.complete();
    let inbox = await stack.readFolder(sender, 'INBOX');
    for (const deadline = Date.now() + 30_000; inbox.length < 2 && Date.now() < deadline; await sleep(300))
      inbox = await stack.readFolder(sender, 'INBOX');
    expect(
      inbox.map((m) => /^Subject: (.*)$/m.exec(m.source.toString())?.[1] ?? '').filter((s) => s.includes('Packaged')),
    ).toHaveLength(2);
    expect((await host.stop()).code).toBe(0);
  });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
