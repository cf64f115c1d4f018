/**
 * Drives one queue-triggered handler directly, without its registration: what the benchmarks use
 * to time the reply path alone. Everything else (the demo, the tests, `npm start`) runs the app on
 * the local host (localstack/host), which goes through the registrations, bindings and hooks.
 * It does what the host does for a queue: receive a batch (host.json batchSize), the next one once
 * the messages in flight are down to newBatchThreshold, decode base64 (messageEncoding), parse JSON
 * when it is JSON, call the handler for each message with an InvocationContext carrying
 * dequeueCount, delete on success; on failure leave the message to reappear, and after maxDequeueCount deliveries move it
 * to `<queue>-poison`. Settings come from host.json, read by the local host's own reader.
 */
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { InvocationContext } from '@azure/functions';
import type { DequeuedMessageItem, QueueClient } from '@azure/storage-queue';

import { type QueueOptions, readHostJson } from './host/settings';

/** The nearest folder above this file with a host.json: the repository root, from source or from build/. */
function appRoot(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'host.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error('host.json not found above ' + __dirname);
  }
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
  settings?: QueueOptions;
  /** Seconds before a failed message reappears (the host uses visibilityTimeout from host.json). */
  retryDelaySeconds?: number;
  /** Stop after this many deliveries in all. */
  maxDeliveries?: number;
}): Promise<QueueRunResult> {
  // host.json read as the local host reads it (one reader for both).
  const settings = options.settings ?? readHostJson(appRoot(), {}).queues;
  const result: QueueRunResult = { succeeded: 0, failed: 0, poisoned: 0, logs: [] };
  await options.poisonQueue.createIfNotExists();
  let deliveries = 0;
  const inFlight = new Set<Promise<void>>();
  const handle = async (item: DequeuedMessageItem) => {
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
        await options.queue.updateMessage(item.messageId, item.popReceipt, undefined, options.retryDelaySeconds ?? 0);
      }
    }
  };
  // Like the host: a batch at a time, the next one fetched once the messages in flight are down to
  // newBatchThreshold; done when the queue has nothing visible and nothing is in flight.
  for (;;) {
    if (inFlight.size > settings.newBatchThreshold) {
      await Promise.race(inFlight);
      continue;
    }
    if (options.maxDeliveries !== undefined && deliveries >= options.maxDeliveries) break;
    const { receivedMessageItems: items } = await options.queue.receiveMessages({
      numberOfMessages: settings.batchSize,
      visibilityTimeout: 30,
    });
    if (items.length === 0) {
      if (inFlight.size === 0) break;
      await Promise.race(inFlight);
      continue;
    }
    for (const item of items) {
      const work = handle(item);
      inFlight.add(work);
      // A failure is seen by the race or the Promise.all below; this chain only keeps the set current.
      work.finally(() => inFlight.delete(work)).catch(() => undefined);
    }
  }
  await Promise.all(inFlight);
  return result;
}
