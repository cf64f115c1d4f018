/**
 * inboxq run in the test's own process on the local host (localstack/host), step by step: the
 * compiled functions (build/functions, as package.json main loads them from dist/) register with
 * their bindings and hooks, and each timer or queue function is run when a test asks, through the
 * @azure/functions invocation model, with host.json's queue rules (a failed message is retried at
 * once here, up to maxDequeueCount, then moved to `<queue>-poison`).
 *
 * One host per test file (vitest runs each file in its own process). A test's settings are the
 * app's environment for the duration of its call, as each Function App has its own.
 */
import path from 'node:path';

import type { LocalStack } from '../../localstack';
import { LocalHost } from '../../localstack/host/host';
import type { InvocationRecord } from '../../localstack/host/meter';

const ROOT = path.resolve(__dirname, '../..');

let host: Promise<LocalHost> | undefined;
let sink: string[] | undefined;
let startSettings: ((stack: LocalStack) => Record<string, string | undefined>) | undefined;

/**
 * The settings the file's host starts with, instead of one mailbox's: what the app registers its
 * functions from (a deployment of several mailboxes has a reply function per mailbox). Call it
 * before the file's first run.
 */
export function hostStartSettings(settings: (stack: LocalStack) => Record<string, string | undefined>): void {
  if (host) throw new Error('hostStartSettings must be called before the host starts');
  startSettings = settings;
}

export interface FunctionRun {
  succeeded: number;
  failed: number;
  poisoned: number;
  /** What each successful invocation's handler returned. */
  results: unknown[];
  /** What the host and the functions logged, `<level>: <function>: <line>`. */
  logs: string[];
}

function appHost(stack: LocalStack): Promise<LocalHost> {
  if (!host) {
    host = LocalHost.start({
      appRoot: ROOT,
      main: 'build/functions/*.js',
      // No developer's local.settings.json: only the settings given here.
      settingsFile: null,
      triggers: 'manual',
      env: {
        ...process.env,
        ...(startSettings ? startSettings(stack) : stack.settings('host@company.test')),
        // Tests step through the queues: a failed message is handled again at once.
        AzureFunctionsJobHost__extensions__queues__visibilityTimeout: '00:00:00',
      },
      log: (level, line) => sink?.push(`${level}: ${line.trim()}`),
    });
  }
  return host;
}

/** The app's settings for one call: every INBOXQ_* and AzureWebJobsStorage* setting is the test's. */
async function withSettings<T>(env: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = { ...process.env };
  for (const k of Object.keys(process.env)) if (/^(INBOXQ_|AzureWebJobsStorage)/.test(k)) delete process.env[k];
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  try {
    return await fn();
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

async function logged<T>(logs: string[], fn: () => Promise<T>): Promise<T> {
  sink = logs;
  try {
    return await fn();
  } finally {
    sink = undefined;
  }
}

/** A timer function run now; what its handler returned. */
export async function runTimerFunction(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  name: string,
  logs: string[] = [],
): Promise<unknown> {
  const h = await appHost(stack);
  return logged(logs, () => withSettings(env, () => h.runTimer(name)));
}

/** Every message on a queue function's queue handled now, as its trigger would. */
export async function runQueueFunction(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  name: string,
  logs: string[] = [],
): Promise<FunctionRun> {
  const h = await appHost(stack);
  const run = await logged(logs, () => withSettings(env, () => h.runQueue(name)));
  return { ...run, logs };
}

/** The names of the functions the file's host registered. */
export async function registeredFunctions(stack: LocalStack): Promise<string[]> {
  return (await appHost(stack)).functions.map((f) => f.metadata.name);
}

/** What the file's host metered so far: every invocation's function, start, end, outcome and log levels. */
export async function hostInvocations(stack: LocalStack): Promise<InvocationRecord[]> {
  return (await appHost(stack)).meter.records;
}
