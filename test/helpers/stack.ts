/** Test-side access to the local stack's Storage and the handlers, as the Functions host would call them. */
import { randomUUID } from 'node:crypto';

import { TableClient } from '@azure/data-tables';
import { InvocationContext, type Timer } from '@azure/functions';
import { QueueClient } from '@azure/storage-queue';

import type { LocalStack } from '../../localstack';
import { runQueueTrigger } from '../../localstack/queue-runner';
import {
  decodeQueueMessage,
  DRAIN_REQUESTS_QUEUE,
  REPLIES_QUEUE,
  type TaskMessage,
  TASKS_QUEUE,
} from '../../shared/contract/messages';
import type { DrainSummary } from '../../shared/drain/drain';
import { createHandlers, type DrainOutcome, type Handlers } from '../../shared/host/handlers';
import { deploymentFor } from '../../shared/host/runtime';

export function timer(): Timer {
  return {
    isPastDue: false,
    schedule: { adjustForDST: false },
    scheduleStatus: { last: '', next: '', lastUpdated: '' },
  };
}

export function context(
  name: string,
  logs: string[],
  triggerMetadata: Record<string, unknown> = {},
): InvocationContext {
  return new InvocationContext({
    functionName: name,
    invocationId: randomUUID(),
    logHandler: (level, ...args) => logs.push(`${level}: ${args.map(String).join(' ')}`),
    triggerMetadata,
  });
}

export function handlersFor(env: Record<string, string | undefined>): Handlers {
  return createHandlers(() => deploymentFor(env));
}

/**
 * One tick of the drain schedule, as the host runs it: the timer puts a drain request per mailbox
 * on the drain-requests queue, and the queue trigger drains each (a batch at the same time).
 */
export async function drainTick(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  logs: string[] = [],
): Promise<DrainOutcome[]> {
  const handlers = handlersFor(env);
  await handlers.schedule(timer(), context('drainSchedule', logs));
  const outcomes: DrainOutcome[] = [];
  const run = await runQueueTrigger({
    queue: queue(stack, DRAIN_REQUESTS_QUEUE),
    poisonQueue: queue(stack, `${DRAIN_REQUESTS_QUEUE}-poison`),
    functionName: 'drain',
    handler: async (m, c) => {
      outcomes.push(await handlers.drain(m, c));
    },
  });
  logs.push(...run.logs);
  return outcomes;
}

/** Runs the reply function over everything on the replies queue, as the host would. */
export async function sendReplies(stack: LocalStack, env: Record<string, string | undefined>) {
  const handlers = handlersFor(env);
  return runQueueTrigger({
    queue: queue(stack, REPLIES_QUEUE),
    poisonQueue: queue(stack, `${REPLIES_QUEUE}-poison`),
    functionName: 'reply',
    handler: (m, c) => handlers.reply(m, c),
  });
}

/** A tick of a one-mailbox deployment: its drain's summary, or the drain's error thrown. */
export async function drainNow(
  stack: LocalStack,
  env: Record<string, string | undefined>,
  logs: string[] = [],
): Promise<DrainSummary> {
  const outcomes = await drainTick(stack, env, logs);
  if (outcomes.length !== 1) throw new Error(`expected one drain, got ${outcomes.length}`);
  const [outcome] = outcomes;
  if (outcome!.error !== undefined) throw outcome!.error;
  if (!outcome!.summary) throw new Error(`the drain was skipped: ${outcome!.skipped}`);
  return outcome!.summary;
}

export function queue(stack: LocalStack, name: string): QueueClient {
  return new QueueClient(stack.azurite.connectionString, name);
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
