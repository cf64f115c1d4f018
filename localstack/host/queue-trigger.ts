/**
 * A storage queue trigger as the host runs it (host.json extensions.queues):
 *
 * - polls the queue, a batch of `batchSize` at a time, and fetches the next batch once the
 *   messages in flight are down to `newBatchThreshold`;
 * - when the queue is empty, waits longer each time (doubling from 100 ms) up to `maxPollingInterval`;
 * - decodes each message (`messageEncoding`: base64 or none) and passes it as JSON when it is JSON,
 *   with the trigger metadata the host sends (DequeueCount, Id, PopReceipt, InsertionTime,
 *   ExpirationTime, NextVisibleTime);
 * - deletes a message whose invocation succeeded; makes a failed one visible again after
 *   `visibilityTimeout`; after `maxDequeueCount` failed deliveries, moves it to `<queue>-poison`.
 *
 * A received message stays invisible to other receivers while it is handled (10 minutes, as the
 * host's listener; LOCALHOST_QUEUE_VISIBILITY_SECONDS sets it for tests), so a host killed
 * mid-invocation leaves the message to come back after that.
 */
import type { DequeuedMessageItem, QueueClient } from '@azure/storage-queue';

import type { TypedData } from './core-api';
import type { Invoke, TriggerLog } from './invoke';
import type { QueueOptions } from './settings';

export interface QueueTriggerOptions extends QueueOptions {
  functionName: string;
  /** The trigger binding's name: the input data is sent under it. */
  bindingName: string;
  queue: QueueClient;
  poisonQueue: QueueClient;
  receiveVisibilitySeconds: number;
  invoke: Invoke;
  log: TriggerLog;
}

const MIN_POLL_MS = 100;

/** What a drainOnce did: invocations that succeeded (with their handlers' values) and failed. */
export interface QueueRun {
  succeeded: number;
  failed: number;
  poisoned: number;
  results: unknown[];
}

export class QueueTrigger {
  #stopped = false;
  #inFlight = new Set<Promise<void>>();
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;

  constructor(private readonly o: QueueTriggerOptions) {}

  /** Creates the queue and its poison queue, as the host does at start. */
  async prepare(): Promise<void> {
    await this.o.queue.createIfNotExists();
    await this.o.poisonQueue.createIfNotExists();
  }

  async start(): Promise<void> {
    await this.prepare();
    this.#loop = this.run();
  }

  /**
   * For tools that step through the app (the demo's tests, the end-to-end tests): every message
   * visible now handled as the polling loop would, a batch at a time, until none is left.
   */
  async drainOnce(): Promise<QueueRun> {
    const run: QueueRun = { succeeded: 0, failed: 0, poisoned: 0, results: [] };
    for (;;) {
      const { receivedMessageItems: items } = await this.o.queue.receiveMessages({
        numberOfMessages: Math.min(32, this.o.batchSize),
        visibilityTimeout: this.o.receiveVisibilitySeconds,
      });
      if (items.length === 0) return run;
      for (const outcome of await Promise.all(items.map((item) => this.process(item)))) {
        if (outcome.ok) {
          run.succeeded++;
          run.results.push(outcome.result);
        } else {
          run.failed++;
          if (outcome.poisoned) run.poisoned++;
        }
      }
    }
  }

  /** Stops polling and waits for the invocations in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    await Promise.allSettled([...this.#inFlight]);
  }

  private async run(): Promise<void> {
    let delay = MIN_POLL_MS;
    while (!this.#stopped) {
      if (this.#inFlight.size > this.o.newBatchThreshold) {
        await Promise.race(this.#inFlight);
        continue;
      }
      let items: DequeuedMessageItem[] = [];
      try {
        const res = await this.o.queue.receiveMessages({
          numberOfMessages: Math.min(32, this.o.batchSize),
          visibilityTimeout: this.o.receiveVisibilitySeconds,
        });
        items = res.receivedMessageItems;
      } catch (err) {
        this.o.log('error', `${this.o.functionName}: polling queue ${this.o.queue.name} failed: ${String(err)}`);
      }
      if (items.length === 0) {
        await this.sleep(delay);
        delay = Math.min(delay * 2, Math.max(MIN_POLL_MS, this.o.maxPollingIntervalMs));
        continue;
      }
      delay = MIN_POLL_MS;
      for (const item of items) {
        const work = this.process(item).then(
          () => undefined,
          () => undefined,
        );
        void work.finally(() => this.#inFlight.delete(work));
        this.#inFlight.add(work);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private async process(
    item: DequeuedMessageItem,
  ): Promise<{ ok: true; result: unknown } | { ok: false; poisoned: boolean }> {
    const { functionName, queue, poisonQueue, maxDequeueCount, log } = this.o;
    try {
      const text = this.decode(item.messageText);
      const { result } = await this.o.invoke({
        inputData: [{ name: this.o.bindingName, data: asTypedData(text) }],
        triggerMetadata: triggerMetadata(item),
      });
      await queue.deleteMessage(item.messageId, item.popReceipt);
      return { ok: true, result };
    } catch (err) {
      const last = item.dequeueCount >= maxDequeueCount;
      log(
        'error',
        `Executed 'Functions.${functionName}' (Failed, Id=${item.messageId}, DequeueCount=${item.dequeueCount}): ${describe(err)}`,
      );
      try {
        if (last) {
          await poisonQueue.sendMessage(item.messageText);
          await queue.deleteMessage(item.messageId, item.popReceipt);
          log(
            'warn',
            `Message ${item.messageId} has reached MaxDequeueCount of ${maxDequeueCount}. Moving message to queue '${poisonQueue.name}'.`,
          );
        } else {
          await queue.updateMessage(
            item.messageId,
            item.popReceipt,
            undefined,
            Math.round(this.o.visibilityTimeoutMs / 1000),
          );
        }
      } catch (settleErr) {
        log('error', `${functionName}: settling message ${item.messageId} failed: ${describe(settleErr)}`);
      }
      return { ok: false, poisoned: last };
    }
  }

  private decode(text: string): string {
    if (this.o.messageEncoding === 'none') return text;
    const bytes = Buffer.from(text, 'base64');
    if (bytes.toString('base64').replace(/=+$/, '') !== text.trim().replace(/=+$/, ''))
      throw new Error('Message decoding has failed! Check MessageEncoding settings.');
    return bytes.toString('utf8');
  }
}

/** JSON arrives as json, anything else as a string, as the host sends a queue message. */
function asTypedData(text: string): TypedData {
  try {
    JSON.parse(text);
    return { json: text };
  } catch {
    return { string: text };
  }
}

function triggerMetadata(item: DequeuedMessageItem): Record<string, TypedData> {
  const iso = (d: Date | undefined) => ({ json: JSON.stringify(d?.toISOString() ?? null) });
  return {
    DequeueCount: { json: String(item.dequeueCount) },
    Id: { string: item.messageId },
    PopReceipt: { string: item.popReceipt },
    InsertionTime: iso(item.insertedOn),
    ExpirationTime: iso(item.expiresOn),
    NextVisibleTime: iso(item.nextVisibleOn),
  };
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}
