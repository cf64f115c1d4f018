/** Test-side access to the local stack's Storage, and the app's functions run on the local host (app.ts). */

import { TableClient } from '@azure/data-tables';
import { QueueClient } from '@azure/storage-queue';
import { expect } from 'vitest';

import type { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { decodeQueueMessage, REPLIES_QUEUE, type TaskMessage, TASKS_QUEUE } from '../../shared/contract/messages';
import type { DrainStep, DrainSummary } from '../../shared/drain/drain';
import type { DrainOutcome, TickOutcome } from '../../shared/host/handlers';
import { type FunctionRun, registeredFunctions, runQueueFunction, runTimerFunction } from './app';

/**
 * One tick of the drain schedule, as the host runs it: the timer function looks at every mailbox,
 * drains what a tick takes itself, and leaves the rest to the drain function (drain requests),
 * which then takes each request (a batch at the same time). A drain's outcome per mailbox: the
 * tick's run, or the drain function's; a mailbox the tick found idle has none.
 */
export async function drainTick(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  logs: string[] = [],
): Promise<DrainOutcome[]> {
  const ticks = (await runTimerFunction(stack, env, 'drainSchedule', logs)) as TickOutcome[];
  if (process.env['DEBUG_TICK'])
    console.log(JSON.stringify(ticks.map((t) => ({ ...t, summary: undefined, error: String(t.error) }))));
  const outcomes: DrainOutcome[] = ticks
    .filter((t) => t.action === 'drained')
    .map((t) => ({
      key: t.key,
      mailbox: t.mailbox,
      ...(t.summary ? { summary: t.summary } : {}),
      ...(t.error ? { error: t.error } : {}),
    }));
  if (ticks.some((t) => t.request)) {
    const run = await runQueueFunction(stack, env, 'drain', logs);
    outcomes.push(...(run.results as DrainOutcome[]));
  }
  return outcomes;
}

/** Runs each of these queue functions over everything on its queue, in turn; their runs added up. */
async function runEach(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  wanted: (name: string) => boolean,
  logs: string[],
): Promise<FunctionRun> {
  const total: FunctionRun = { succeeded: 0, failed: 0, poisoned: 0, results: [], logs };
  for (const name of (await registeredFunctions(stack)).filter(wanted)) {
    const run = await runQueueFunction(stack, env, name, logs);
    total.succeeded += run.succeeded;
    total.failed += run.failed;
    total.poisoned += run.poisoned;
    total.results.push(...run.results);
  }
  return total;
}

/** Runs the reply functions (`reply`, and each mailbox's `reply-<key>`) over everything on their queues, as the host would. */
export function sendReplies(stack: LocalStack, env: Record<string, string | undefined>, logs: string[] = []) {
  return runEach(stack, env, (name) => name === 'reply' || name.startsWith('reply-'), logs);
}

/** Runs the poisoned-reply functions over everything on their poison queues. */
export function handlePoisonedReplies(stack: LocalStack, env: Record<string, string | undefined>, logs: string[] = []) {
  return runEach(stack, env, (name) => name === 'replyPoison' || name.startsWith('replyPoison-'), logs);
}

/** A tick of a one-mailbox deployment: its drain's summary, or the drain's error thrown. */
export async function drainNow(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  logs: string[] = [],
): Promise<DrainSummary> {
  const outcomes = await drainTick(stack, env, logs);
  if (outcomes.length !== 1) throw new Error(`expected one drain, got ${outcomes.length}: ${JSON.stringify(outcomes)}`);
  const [outcome] = outcomes;
  if (outcome!.error !== undefined) throw outcome!.error;
  if (!outcome!.summary) throw new Error(`the drain was skipped: ${outcome!.skipped}`);
  return outcome!.summary;
}

export function queue(stack: LocalStack, name: string): QueueClient {
  return new QueueClient(stack.azurite.connectionString, name);
}

/** Thrown at a drain's step boundary by `interruptAt`: the run stops there, as a crash would. */
export class Interrupted extends Error {}

/** A drain's onStep hook that stops the run at `step`. */
export function interruptAt(step: DrainStep): (s: DrainStep) => void {
  return (s) => {
    if (s === step) throw new Interrupted(`interrupted at ${s}`);
  };
}

/** The tasks of one mailbox on the tasks queue, peeked (left there). */
export async function peekTasksOf(stack: LocalStack, mailbox: string): Promise<TaskMessage[]> {
  return (await peekTasks(stack)).filter((t) => t.mailbox === mailbox);
}

export async function peekTasks(stack: LocalStack): Promise<TaskMessage[]> {
  const q = queue(stack, TASKS_QUEUE);
  if (!(await q.exists())) return [];
  const out: TaskMessage[] = [];
  const { peekedMessageItems } = await q.peekMessages({ numberOfMessages: 32 });
  for (const m of peekedMessageItems) out.push(decodeQueueMessage(m.messageText) as TaskMessage);
  return out;
}

export function table(stack: LocalStack, name: string): TableClient {
  return TableClient.fromConnectionString(stack.azurite.connectionString, name, { allowInsecureConnection: true });
}

export { REPLIES_QUEUE, TASKS_QUEUE };

/** Receives and deletes every task message on a tasks queue (call `clearTasks` first for a clean slate). */
export async function takeAllTasks(stack: LocalStack, name = TASKS_QUEUE): Promise<TaskMessage[]> {
  const q = queue(stack, name);
  await q.createIfNotExists();
  const out: TaskMessage[] = [];
  for (;;) {
    const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32, visibilityTimeout: 60 });
    if (receivedMessageItems.length === 0) return out;
    for (const m of receivedMessageItems) {
      out.push(decodeQueueMessage(m.messageText) as TaskMessage);
      await q.deleteMessage(m.messageId, m.popReceipt);
    }
  }
}

export async function clearTasks(stack: LocalStack): Promise<void> {
  const q = queue(stack, TASKS_QUEUE);
  await q.createIfNotExists();
  await q.clearMessages();
}

/**
 * Every mail of the mailbox ended with exactly one ledger row, queued and removed, and one task on
 * the tasks queue (taken off it), and its INBOX is empty: nothing lost, nothing queued twice.
 */
export async function expectAllQueuedOnce(
  stack: LocalStack,
  settings: Record<string, string | undefined>,
  mailbox: string,
  n: number,
): Promise<void> {
  expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
  const rows = await runtimeFor(settings).ledger.listMessages(mailbox);
  expect(rows).toHaveLength(n);
  expect(rows.every((r) => r.state === 'queued' && r.removed)).toBe(true);
  const tasks = (await takeAllTasks(stack)).filter((t) => t.mailbox === mailbox);
  expect(tasks).toHaveLength(n);
  expect(new Set(tasks.map((t) => t.taskId))).toEqual(new Set(rows.map((r) => r.taskId)));
}
