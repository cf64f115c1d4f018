/** Test-side access to the local stack's Storage and the handlers, as the Functions host would call them. */
import { randomUUID } from 'node:crypto';
import { InvocationContext, type Timer } from '@azure/functions';
import { QueueClient } from '@azure/storage-queue';
import { TableClient } from '@azure/data-tables';
import { decodeQueueMessage, REPLIES_QUEUE, TASKS_QUEUE, type TaskMessage } from '../../shared/contract/messages';
import { createHandlers } from '../../shared/host/handlers';
import { runtimeFor } from '../../shared/host/runtime';
import type { LocalStack } from '../../localstack';

export function timer(): Timer {
  return { isPastDue: false, schedule: { adjustForDST: false }, scheduleStatus: { last: '', next: '', lastUpdated: '' } };
}

export function context(name: string, logs: string[], triggerMetadata: Record<string, unknown> = {}): InvocationContext {
  return new InvocationContext({
    functionName: name,
    invocationId: randomUUID(),
    logHandler: (level, ...args) => logs.push(`${level}: ${args.map(String).join(' ')}`),
    triggerMetadata,
  });
}

export function handlersFor(env: Record<string, string | undefined>) {
  return createHandlers(() => runtimeFor(env));
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

/** Receives and deletes every task message on the queue (call `clearTasks` first for a clean slate). */
export async function takeAllTasks(stack: LocalStack): Promise<TaskMessage[]> {
  const q = queue(stack, TASKS_QUEUE);
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
