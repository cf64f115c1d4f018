/**
 * Runs inboxq's local host (localstack/host) as its own process, as `npm start` does, and collects
 * what it prints: tests see the app start, its functions run on their triggers, and its refusals.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';

const MAIN = path.resolve('build/localstack/host/main.js');

export class HostProcess {
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (c: Buffer) => (this.output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (this.output += c.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** The host on `appRoot` with these settings as its environment; `main` overrides package.json's. */
  static start(
    appRoot: string,
    settings: Record<string, string | undefined>,
    options: { main?: string; settingsFile?: string; inheritEnv?: boolean } = {},
  ): HostProcess {
    const args = [
      MAIN,
      '--app',
      appRoot,
      ...(options.main ? ['--main', options.main] : []),
      ...(options.settingsFile ? ['--settings', options.settingsFile] : []),
    ];
    // No local.settings.json is read from a test's app folder: the settings come from the environment.
    // inheritEnv false: a clean environment, as a new terminal (this test process carries its own stack's AZURE_* settings).
    const base = options.inheritEnv === false ? { PATH: process.env['PATH'], HOME: process.env['HOME'] } : process.env;
    const env = { ...base, ...settings, NO_COLOR: '1' };
    return new HostProcess(spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] }));
  }

  /** Waits until the output (from character `from` on) matches, or fails with what the host printed. */
  async waitFor(pattern: RegExp, timeoutMs = 30_000, from = 0): Promise<RegExpMatchArray> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = pattern.exec(this.output.slice(from));
      if (m) return m;
      if (this.child.exitCode !== null || Date.now() > deadline) throw this.unmatched(pattern);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A wait for `pattern` that ended unmatched, with what the host printed. */
  private unmatched(pattern: RegExp): Error {
    return new Error(`host output never matched ${pattern}:\n${this.output.slice(-4000)}`);
  }

  /** SIGTERM, then the exit. */
  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM');
    return this.exited;
  }

  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    return this.exited;
  }

  /**
   * SIGKILL the moment the output matches (checked as each chunk arrives, where waitFor polls every
   * 100 ms), then the exit: to land inside work that lasts only milliseconds after a line.
   */
  async killOn(pattern: RegExp, timeoutMs = 30_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    await new Promise<void>((resolve, reject) => {
      const streams = [this.child.stdout!, this.child.stderr!];
      const done = (err?: Error) => {
        clearTimeout(timer);
        for (const s of streams) s.off('data', check);
        if (err) reject(err);
        else resolve();
      };
      // Registered after the constructor's listeners: the output already holds the chunk.
      const check = () => {
        if (!pattern.test(this.output)) return;
        this.child.kill('SIGKILL');
        done();
      };
      const timer = setTimeout(() => done(this.unmatched(pattern)), timeoutMs);
      for (const s of streams) s.on('data', check);
      check();
    });
    return this.exited;
  }
}
