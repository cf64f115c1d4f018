/**
 * The app on the local host, as a process of its own, for the benchmarks that measure it as the
 * runtime runs it: the compiled functions, the product's host.json, its timer and queue triggers.
 * Optionally every invocation metered to a file (LOCALHOST_INVOCATION_LOG, localstack/host/meter.ts),
 * and the process's resident memory read from /proc (its peak: VmHWM).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { type InvocationRecord, readInvocationLog } from '../localstack/host/meter';

const ROOT = path.join(__dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class AppHost {
  output = '';

  private constructor(
    private readonly child: ChildProcess,
    readonly invocationLog: string | undefined,
  ) {
    child.stdout!.on('data', (c: Buffer) => (this.output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (this.output += c.toString()));
  }

  /** Started, with every function registered and its triggers running. */
  static async start(
    settings: Record<string, string | undefined>,
    options: { invocationLog?: string; env?: Record<string, string | undefined> } = {},
  ): Promise<AppHost> {
    const child = spawn(
      process.execPath,
      [path.join(ROOT, 'build/localstack/host/main.js'), '--app', ROOT, '--main', 'build/functions/*.js'],
      {
        env: {
          ...process.env,
          ...options.env,
          ...settings,
          NO_COLOR: '1',
          ...(options.invocationLog ? { LOCALHOST_INVOCATION_LOG: options.invocationLog } : {}),
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    const host = new AppHost(child, options.invocationLog);
    for (const deadline = Date.now() + 60_000; !/functions running/.test(host.output); await sleep(100))
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`the host did not start:\n${host.output.slice(-2000)}`);
    return host;
  }

  /** Waits until the output matches (from character `from` on). */
  async waitFor(pattern: RegExp, timeoutMs: number, from = 0): Promise<void> {
    for (const deadline = Date.now() + timeoutMs; !pattern.test(this.output.slice(from)); await sleep(100))
      if (Date.now() > deadline || this.child.exitCode !== null)
        throw new Error(`the host never printed ${pattern}:\n${this.output.slice(-2000)}`);
  }

  /** The process's resident memory now, and its peak since it started (bytes). */
  memory(): { rss: number; peak: number } {
    const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  }

  /** The invocations metered so far (with an invocation log). */
  invocations(): InvocationRecord[] {
    if (!this.invocationLog || !existsSync(this.invocationLog)) return [];
    return readInvocationLog(readFileSync(this.invocationLog, 'utf8'));
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await exited;
  }
}
