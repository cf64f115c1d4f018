/**
 * Drives one queue-triggered handler directly, without its registration: what the benchmarks use
 * to time the reply path alone. Everything else (the demo, the tests, `npm start`) runs the app on
 * the local host (localstack/host), which goes through the registrations, bindings and hooks.
 * It does what the host does for a queue: receive a batch (host.json batchSize), decode base64
 * (messageEncoding), parse JSON when it is JSON, call the handler for each message of the batch at
 * the same time with an InvocationContext carrying dequeueCount, delete on success; on failure leave the message to reappear, and after maxDequeueCount deliveries move it
 * to `<queue>-poison`. Settings come from host.json so the two can't drift apart.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { InvocationContext } from '@azure/functions';
import type { QueueClient } from '@azure/storage-queue';

export interface HostQueueSettings {
  maxDequeueCount: number;
  messageEncoding: 'base64' | 'none';
  batchSize: number;
}

/** The nearest host.json above this file: the repository root, from source or from build/. */
function findHostJson(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'host.json');
    if (existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new Error('host.json not found above ' + __dirname);
  }
}

export function hostQueueSettings(hostJsonPath = findHostJson()): HostQueueSettings {
  const host = JSON.parse(readFileSync(hostJsonPath, 'utf8')) as {
    extensions?: { queues?: Partial<HostQueueSettings> };
  };
  const q = host.extensions?.queues ?? {};
  return {
    maxDequeueCount: q.maxDequeueCount ?? 5,
    messageEncoding: q.messageEncoding ?? 'base64',
    batchSize: q.batchSize ?? 16,
  };
}

export interface QueueRunResult {
  succeeded: number;
  failed: number;
  poisoned: number;
  logs: string[];
}

export async function runQueueTrigger(options: {
  queue: QueueClient;
  poisonQueue: QueueClient;
  functionName: string;
  handler: (message: unknown, context: InvocationContext) => Promise<unknown>;
  settings?: HostQueueSettings;
  /** Seconds before a failed message reappears (the host uses visibilityTimeout from host.json). */
  retryDelaySeconds?: number;
  /** Stop after this many deliveries in all. */
  maxDeliveries?: number;
}): Promise<QueueRunResult> {
  const settings = options.settings ?? hostQueueSettings();
  const result: QueueRunResult = { succeeded: 0, failed: 0, poisoned: 0, logs: [] };
  await options.poisonQueue.createIfNotExists();
  let deliveries = 0;
  for (;;) {
    const { receivedMessageItems: items } = await options.queue.receiveMessages({
      numberOfMessages: settings.batchSize,
      visibilityTimeout: 30,
    });
    if (items.length === 0) break;
    // Like the host: the messages of a batch are handled at the same time.
    await Promise.all(
      items.map(async (item) => {
        deliveries++;
        let payload: unknown;
        const text =
          settings.messageEncoding === 'base64'
            ? Buffer.from(item.messageText, 'base64').toString('utf8')
            : item.messageText;
        try {
          payload = JSON.parse(text);
        } catch {
          payload = text;
        }
        const context = new InvocationContext({
          functionName: options.functionName,
          invocationId: randomUUID(),
          logHandler: (level, ...args) => result.logs.push(`${level}: ${args.map(String).join(' ')}`),
          triggerMetadata: {
            id: item.messageId,
            popReceipt: item.popReceipt,
            dequeueCount: item.dequeueCount,
            insertionTime: item.insertedOn.toISOString(),
            expirationTime: item.expiresOn.toISOString(),
          },
        });
        try {
          await options.handler(payload, context);
          await options.queue.deleteMessage(item.messageId, item.popReceipt);
          result.succeeded++;
        } catch {
          result.failed++;
          if (item.dequeueCount >= settings.maxDequeueCount) {
            await options.poisonQueue.sendMessage(item.messageText);
            await options.queue.deleteMessage(item.messageId, item.popReceipt);
            result.poisoned++;
            result.logs.push(
              `host: message ${item.messageId} moved to ${options.poisonQueue.name} after ${item.dequeueCount} deliveries`,
            );
          } else {
            await options.queue.updateMessage(
              item.messageId,
              item.popReceipt,
              undefined,
              options.retryDelaySeconds ?? 0,
            );
          }
        }
      }),
    );
    if (options.maxDeliveries !== undefined && deliveries >= options.maxDeliveries) break;
  }
  return result;
}
