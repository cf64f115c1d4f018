/**
 * inboxq's local Functions host: runs an app as `func start` would where Core Tools and the .NET
 * host can't be installed. It is the real programming model (@azure/functions, loaded by the app
 * itself, driven through `@azure/functions-core` and its invocation model) and host.json's queue
 * and timer rules, re-implemented. It is not the .NET host: no HTTP triggers, no other bindings,
 * no scale controller, no timer lease across instances, no Application Insights of its own.
 *
 *   start: settings (local.settings.json `Values` under the environment) -> the app's settings in
 *          process.env -> every entry file of package.json `main` loaded -> each registered
 *          function's bindings checked (queue names, connections, `%SETTING%`, schedules), every
 *          problem refused at once in the host's words -> appStart hooks -> triggers started
 *   stop:  triggers stopped, invocations in flight awaited -> appTerminate hooks
 */
import { globSync, readFileSync } from 'node:fs';
import path from 'node:path';

import type { QueueServiceClient } from '@azure/storage-queue';

import { connectionProblem, queueServiceFor } from './connections';
import { type BindingInfo, CoreApi, provideCoreApi, type RegisteredFunction } from './core-api';
import { invokeFunction, typedValue } from './invoke';
import { InvocationMeter, type LoggedLine } from './meter';
import { type QueueRun, QueueTrigger } from './queue-trigger';
import {
  type AppSettings,
  type HostJson,
  HostStartError,
  loadAppSettings,
  readHostJson,
  resolveSetting,
} from './settings';
import { ncrontabProblem, TimerTrigger } from './timer-trigger';

export type HostLog = (level: 'info' | 'warn' | 'error', message: string) => void;

export interface LocalHostOptions {
  appRoot: string;
  /** The environment the settings file is read under (default process.env). */
  env?: AppSettings;
  /** Another settings file than `<appRoot>/local.settings.json`. */
  settingsFile?: string | null;
  /** Entry files instead of package.json `main` (a glob relative to appRoot). */
  main?: string;
  log?: HostLog;
  /**
   * 'run' (default): triggers poll and fire on their own. 'manual': nothing runs until a tool
   * calls runTimer or runQueue (the demo's and the end-to-end tests' step-by-step use).
   */
  triggers?: 'run' | 'manual';
}

const QUEUE_NAME = /^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$/;

export class LocalHost {
  readonly api: CoreApi;
  readonly functions: RegisteredFunction[] = [];
  /** Every invocation's start, end and outcome, and the levels it logged at (what the platform bills and counts by). */
  readonly meter: InvocationMeter;
  #triggers = new Map<string, QueueTrigger | TimerTrigger>();
  #manual = false;
  #appHookData: Record<string, unknown> = {};
  #restore: () => void;

  private constructor(
    readonly appRoot: string,
    readonly settings: AppSettings,
    readonly hostJson: HostJson,
    private readonly log: HostLog,
  ) {
    this.api = new CoreApi((level, message) => log(level === 'error' ? 'error' : 'info', message));
    this.#restore = provideCoreApi(this.api);
    this.meter = new InvocationMeter(settings['LOCALHOST_INVOCATION_LOG'] || undefined);
  }

  static async start(options: LocalHostOptions): Promise<LocalHost> {
    const appRoot = path.resolve(options.appRoot);
    const log = options.log ?? defaultLog;
    const settings = loadAppSettings(appRoot, options.env ?? process.env, options.settingsFile);
    // The worker runs the app with its settings as environment variables.
    for (const [k, v] of Object.entries(settings)) if (v !== undefined) process.env[k] = v;
    const host = new LocalHost(appRoot, settings, readHostJson(appRoot, settings), log);
    host.#manual = options.triggers === 'manual';
    try {
      host.load(options.main);
      host.check();
      await host.runHooks('appStart', { functionAppDirectory: appRoot });
      await host.startTriggers();
    } catch (err) {
      await host.stop().catch(() => undefined);
      throw err;
    }
    return host;
  }

  /** package.json `main` (a file or a glob), every matching file required, as the worker does. */
  private load(mainOverride?: string): void {
    const pkg = JSON.parse(readFileSync(path.join(this.appRoot, 'package.json'), 'utf8')) as { main?: string };
    const main = mainOverride ?? pkg.main ?? 'index.js';
    const files = globSync(main, { cwd: this.appRoot }).sort();
    if (files.length === 0)
      throw new HostStartError([
        `No entry files match package.json main '${main}' in ${this.appRoot}: build the app first`,
      ]);
    for (const file of files) {
      try {
        // The worker loads each entry file with require, in the order of the glob.
        // eslint-disable-next-line @typescript-eslint/no-require-imports
        require(path.join(this.appRoot, file));
      } catch (err) {
        throw new HostStartError([
          `Worker was unable to load entry point "${file}": ${err instanceof Error ? err.message : String(err)}`,
        ]);
      }
    }
    this.functions.push(...this.api.functions.values());
    if (this.functions.length === 0) throw new HostStartError(['No job functions found.']);
  }

  /** Every binding checked before anything starts: all problems together, each naming its function. */
  private check(): void {
    const problems: string[] = [];
    // The host itself needs Storage for every trigger but HTTP (the only kinds it runs here).
    if (connectionProblem('AzureWebJobsStorage', this.settings))
      problems.push('Missing value for AzureWebJobsStorage: it is required for all triggers other than HTTP.');
    for (const fn of this.functions) {
      for (const [name, binding] of Object.entries(fn.metadata.bindings)) {
        try {
          this.checkBinding(binding);
        } catch (err) {
          const detail = err instanceof HostStartError ? err.message : String(err);
          problems.push(
            `The '${fn.metadata.name}' function is in error: Error indexing method 'Functions.${fn.metadata.name}' (binding '${name}'). ${detail}`,
          );
        }
      }
    }
    if (problems.length > 0) throw new HostStartError(problems);
  }

  private checkBinding(binding: BindingInfo): void {
    const type = binding.type.toLowerCase();
    if (type === 'queuetrigger' || type === 'queue') {
      const queueName = resolveSetting(text(binding['queueName']), this.settings);
      if (!QUEUE_NAME.test(queueName))
        throw new HostStartError([
          `Invalid queue name: '${queueName}'. A queue name is 3-63 lower-case letters, digits and single dashes, starting and ending with a letter or digit.`,
        ]);
      const problem = connectionProblem(text(binding['connection'], 'AzureWebJobsStorage'), this.settings);
      if (problem) throw new HostStartError([problem]);
    } else if (type === 'timertrigger') {
      const problem = ncrontabProblem(resolveSetting(text(binding['schedule']), this.settings));
      if (problem) throw new HostStartError([problem]);
    } else {
      throw new HostStartError([
        `The binding type '${binding.type}' is not supported by inboxq's local host (queue and timer triggers, queue outputs).`,
      ]);
    }
  }

  private async startTriggers(): Promise<void> {
    const services = new Map<string, QueueServiceClient>();
    const serviceFor = (connection: string) => {
      let s = services.get(connection);
      if (!s) services.set(connection, (s = queueServiceFor(connection, this.settings)));
      return s;
    };
    const visibility = Number(this.settings['LOCALHOST_QUEUE_VISIBILITY_SECONDS'] ?? 600);
    for (const fn of this.functions) {
      const [bindingName, trigger] = Object.entries(fn.metadata.bindings).find(([, b]) => /trigger$/i.test(b.type))!;
      const invoke = (request: Parameters<typeof invokeFunction>[2]) => this.invoke(fn, request, serviceFor);
      if (trigger.type.toLowerCase() === 'queuetrigger') {
        const queueName = resolveSetting(text(trigger['queueName']), this.settings);
        const service = serviceFor(text(trigger['connection'], 'AzureWebJobsStorage'));
        const t = new QueueTrigger({
          ...this.hostJson.queues,
          functionName: fn.metadata.name,
          bindingName,
          queue: service.getQueueClient(queueName),
          poisonQueue: service.getQueueClient(`${queueName}-poison`),
          receiveVisibilitySeconds: visibility,
          invoke,
          log: this.log,
        });
        await (this.#manual ? t.prepare() : t.start());
        this.#triggers.set(fn.metadata.name, t);
        this.log('info', `  ${fn.metadata.name}: queueTrigger (${queueName})`);
      } else {
        const t = new TimerTrigger({
          functionName: fn.metadata.name,
          bindingName,
          schedule: resolveSetting(text(trigger['schedule']), this.settings),
          runOnStartup: trigger['runOnStartup'] === true,
          invoke,
          log: this.log,
        });
        if (!this.#manual) t.start();
        this.#triggers.set(fn.metadata.name, t);
        this.log('info', `  ${fn.metadata.name}: timerTrigger (${t.next().toISOString()} next)`);
      }
    }
  }

  /** One invocation, logged as the host logs it, with its queue outputs sent, and metered. */
  private async invoke(
    fn: RegisteredFunction,
    request: Parameters<typeof invokeFunction>[2],
    serviceFor: (connection: string) => QueueServiceClient,
  ) {
    const name = fn.metadata.name;
    this.log('info', `Executing 'Functions.${name}'`);
    const started = Date.now();
    const logs: LoggedLine[] = [];
    let succeeded = false;
    try {
      const invoked = await invokeFunction(this.api, fn, request, this.#appHookData, (level, category, message) => {
        logs.push({ category, level: String(level) });
        this.log(
          /error|critical/i.test(String(level)) ? 'error' : /warn/i.test(String(level)) ? 'warn' : 'info',
          `${name}: ${message}`,
        );
      });
      await this.sendOutputs(fn, invoked.response, serviceFor);
      succeeded = true;
      this.log('info', `Executed 'Functions.${name}' (Succeeded, Duration=${Date.now() - started}ms)`);
      return invoked;
    } finally {
      const trigger = Object.values(fn.metadata.bindings).some((b) => /^timertrigger$/i.test(b.type))
        ? 'timer'
        : 'queue';
      this.meter.add({ function: name, trigger, start: started, end: Date.now(), succeeded, logs });
    }
  }

  /** The queue output bindings' data and the return value bound to a queue, sent as the host sends them. */
  private async sendOutputs(
    fn: RegisteredFunction,
    response: Awaited<ReturnType<typeof invokeFunction>>['response'],
    serviceFor: (connection: string) => QueueServiceClient,
  ): Promise<void> {
    const outputs = [
      ...(response.outputData ?? []),
      ...(response.returnValue !== undefined && response.returnValue !== null && fn.metadata.bindings['$return']
        ? [{ name: '$return', data: response.returnValue }]
        : []),
    ];
    for (const { name: bindingName, data } of outputs) {
      const binding = fn.metadata.bindings[bindingName];
      if (binding?.type.toLowerCase() !== 'queue') continue;
      const value = typedValue(data);
      const items = Array.isArray(value) ? value : [value];
      const queue = serviceFor(text(binding['connection'], 'AzureWebJobsStorage')).getQueueClient(
        resolveSetting(text(binding['queueName']), this.settings),
      );
      await queue.createIfNotExists();
      for (const item of items) {
        const text = typeof item === 'string' ? item : JSON.stringify(item);
        await queue.sendMessage(
          this.hostJson.queues.messageEncoding === 'base64' ? Buffer.from(text).toString('base64') : text,
        );
      }
    }
  }

  /** One occurrence of a timer function now; its handler's value, or its failure thrown. */
  async runTimer(functionName: string): Promise<unknown> {
    const t = this.#triggers.get(functionName);
    if (!(t instanceof TimerTrigger)) throw new Error(`no timer function ${functionName}`);
    return t.fireNow();
  }

  /** Every message on a queue function's queue handled now, as its trigger would. */
  async runQueue(functionName: string): Promise<QueueRun> {
    const t = this.#triggers.get(functionName);
    if (!(t instanceof QueueTrigger)) throw new Error(`no queue function ${functionName}`);
    return t.drainOnce();
  }

  private async runHooks(name: 'appStart' | 'appTerminate', extra: Record<string, unknown>): Promise<void> {
    // App hooks share one hookData from appStart to appTerminate; each invocation has its own (invoke.ts).
    for (const hook of this.api.hooks[name]) await hook({ hookData: this.#appHookData, ...extra });
  }

  async stop(): Promise<void> {
    const triggers = [...this.#triggers.values()];
    this.#triggers.clear();
    await Promise.all(triggers.map((t) => t.stop()));
    await this.runHooks('appTerminate', { functionAppDirectory: this.appRoot });
    this.#restore();
  }
}

/** A binding property that should be a string; anything else counts as unset. */
function text(value: unknown, fallback = ''): string {
  return typeof value === 'string' && value !== '' ? value : fallback;
}

function defaultLog(level: 'info' | 'warn' | 'error', message: string): void {
  const line = `[${new Date().toISOString()}] ${message}\n`;
  (level === 'error' ? process.stderr : process.stdout).write(line);
}
