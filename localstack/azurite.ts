/** Azurite (queues, tables, blobs) in memory on free loopback ports, one instance per stack. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';

import { GC_FIX_APPLIED } from './azurite-main';

/** Azurite's well-known development account (public, documented by Microsoft; not a secret). */
const ACCOUNT = 'devstoreaccount1';
const ACCOUNT_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

/**
 * Azurite's launcher (azurite-main.ts), compiled: the tests run this file from its source, and
 * their global setup compiles build/ first.
 */
function launcher(): string {
  const dir =
    path.basename(path.dirname(__dirname)) === 'build' ? __dirname : path.join(__dirname, '..', 'build', 'localstack');
  const file = path.join(dir, 'azurite-main.js');
  if (!existsSync(file)) throw new Error(`${file} is missing: compile the local stack first (npm run build:tools)`);
  return file;
}

export class LocalAzurite {
  blobPort = 0;
  queuePort = 0;
  tablePort = 0;
  /** Whether Azurite runs with its extent GC's deletions batched (azurite-gc.ts), as its launcher said. */
  gcFixApplied = false;
  private child: ChildProcess | undefined;
  private output = '';

  constructor(private readonly dir: string) {}

  get connectionString(): string {
    const host = 'http://127.0.0.1';
    return [
      'DefaultEndpointsProtocol=http',
      `AccountName=${ACCOUNT}`,
      `AccountKey=${ACCOUNT_KEY}`,
      `BlobEndpoint=${host}:${this.blobPort}/${ACCOUNT}`,
      `QueueEndpoint=${host}:${this.queuePort}/${ACCOUNT}`,
      `TableEndpoint=${host}:${this.tablePort}/${ACCOUNT}`,
    ].join(';');
  }

  async start(): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    await this.spawn();
  }

  private async spawn(): Promise<void> {
    const args = [
      launcher(),
      '--inMemoryPersistence',
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--silent',
      // Port 0: each service binds a port the kernel gives it, and says which. Ports picked
      // beforehand could be taken by another test process before Azurite binds them.
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      '0',
      '--queueHost',
      '127.0.0.1',
      '--queuePort',
      '0',
      '--tableHost',
      '127.0.0.1',
      '--tablePort',
      '0',
    ];
    const child = spawn(process.execPath, args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    // Azurite would outlive a test process that dies: stop it with ours.
    const kill = () => child.kill('SIGKILL');
    process.once('exit', kill);
    child.once('exit', () => process.removeListener('exit', kill));
    const keep = (c: Buffer) => (this.output = (this.output + c.toString()).slice(-10_000));
    this.child.stdout!.on('data', keep);
    this.child.stderr!.on('data', keep);
    const exited = new Promise<never>((_, reject) =>
      this.child!.once('exit', (code) =>
        reject(new Error(`Azurite exited at start (code ${code}):\n${this.output.slice(-2000)}`)),
      ),
    );
    // "Azurite Blob service is successfully listening at http://127.0.0.1:38429", one per service.
    const listening = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`Azurite did not start within 30 s:\n${this.output.slice(-2000)}`)),
        30_000,
      );
      const check = () => {
        const port = (service: string) =>
          Number(
            new RegExp(`Azurite ${service} service is successfully listening at http://127\\.0\\.0\\.1:(\\d+)`).exec(
              this.output,
            )?.[1] ?? 0,
          );
        [this.blobPort, this.queuePort, this.tablePort] = [port('Blob'), port('Queue'), port('Table')];
        if (this.blobPort && this.queuePort && this.tablePort) {
          this.gcFixApplied = this.output.includes(GC_FIX_APPLIED);
          clearTimeout(timer);
          child.stdout.off('data', check);
          resolve();
        }
      };
      child.stdout.on('data', check);
    });
    await Promise.race([listening, exited]);
    exited.catch(() => undefined);
    // An Azurite that dies under a test would only show as ECONNREFUSED: say that it died, and how.
    child.once('exit', (code, signal) => {
      if (this.child === child)
        process.stderr.write(
          `local stack: Azurite (ports ${this.blobPort}/${this.queuePort}/${this.tablePort}) exited unexpectedly (code ${code}, signal ${signal}):\n${this.output.slice(-3000)}\n`,
        );
    });
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    this.child = undefined;
    const done = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(timer);
  }

  get location(): string {
    return path.resolve(this.dir);
  }
}
