/**
 * What a worker in TypeScript needs to take tasks and give answers: receive task messages from the
 * `tasks` queue (decoded and validated), read their blobs, put replies on the `replies` queue.
 * Workers in other languages do the same with their Storage SDK: docs/contract.md.
 *
 * Delivery is at least once: the same task id may arrive twice (a drain interrupted between
 * queuing and recording queues it again under the same id). Two things make that harmless:
 * `complete()` records the task id as done (table inboxqWorkerDone), and `receive()` drops a
 * repeated message whose task id is already done; and a reply with the same taskId and replyId is
 * sent once however often it is posted, which covers two copies worked on at the same time.
 * A task id is recorded only once its reply is posted, so a worker that dies mid-task loses nothing.
 */
import type { TableClient } from '@azure/data-tables';

import {
  type BlobRef,
  decodeQueueMessage,
  describeIssues,
  MAIL_CONTAINER,
  REPLIES_QUEUE,
  type ReplyMessageInput,
  replyMessageSchema,
  type TaskMessage,
  taskMessageSchema,
  TASKS_QUEUE,
} from '../contract/messages';
import { InvalidMessageError } from '../errors';
import { partitionKey } from '../ledger/rows';
import { BlobStore } from '../storage/blobs';
import { createStorageClients, type StorageClients } from '../storage/clients';
import { sendQueueMessage } from '../storage/queues';

async function isDone(table: TableClient, pk: string, rk: string): Promise<boolean> {
  try {
    await table.getEntity(pk, rk);
    return true;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return false;
    throw err;
  }
}

export const WORKER_DONE_TABLE = 'inboxqWorkerDone';

export interface ReceivedTask {
  task: TaskMessage;
  dequeueCount: number;
  /** Records the task id as done and deletes the task message: call it once the reply is posted. */
  complete: () => Promise<void>;
}

export interface TaskWorkerOptions {
  /** The queue to take tasks from: `tasks` for a one-mailbox deployment, `tasks-<key>` (or the mailbox's INBOXQ_<KEY>__TASKS_QUEUE) with several. */
  tasksQueue?: string;
}

/** Reply ids inboxq keeps for itself (the acknowledgement, the failure notice). */
export const RESERVED_REPLY_ID_PREFIX = 'inboxq-';

export class TaskWorker {
  private readonly blobs: BlobStore;
  readonly tasksQueue: string;

  constructor(
    private readonly storage: StorageClients,
    options: TaskWorkerOptions = {},
  ) {
    this.blobs = new BlobStore(storage, MAIL_CONTAINER);
    this.tasksQueue = options.tasksQueue ?? TASKS_QUEUE;
  }

  static fromConnectionString(connectionString: string, options: TaskWorkerOptions = {}): TaskWorker {
    return new TaskWorker(createStorageClients({ kind: 'connection-string', connectionString }), options);
  }

  /**
   * Up to `max` tasks, hidden from other workers for `visibilitySeconds`. A message that is not a
   * valid task is left alone and reported through `onInvalid`.
   */
  async receive(
    options: {
      max?: number;
      visibilitySeconds?: number;
      onInvalid?: (err: InvalidMessageError) => void;
      onDuplicate?: (taskId: string) => void;
    } = {},
  ): Promise<ReceivedTask[]> {
    const queue = await this.storage.queue(this.tasksQueue);
    const done = await this.storage.table(WORKER_DONE_TABLE);
    const { receivedMessageItems } = await queue.receiveMessages({
      numberOfMessages: options.max ?? 16,
      visibilityTimeout: options.visibilitySeconds ?? 300,
    });
    const out: ReceivedTask[] = [];
    for (const item of receivedMessageItems) {
      let parsed;
      try {
        parsed = taskMessageSchema.safeParse(decodeQueueMessage(item.messageText));
      } catch {
        options.onInvalid?.(
          new InvalidMessageError('A task message is not base64 JSON', [`message ${item.messageId}`]),
        );
        continue;
      }
      if (!parsed.success) {
        options.onInvalid?.(
          new InvalidMessageError('A task message does not follow the contract', describeIssues(parsed.error)),
        );
        continue;
      }
      const task = parsed.data;
      const key = { pk: partitionKey(task.mailbox), rk: task.taskId };
      if (await isDone(done, key.pk, key.rk)) {
        options.onDuplicate?.(task.taskId);
        await queue.deleteMessage(item.messageId, item.popReceipt);
        continue;
      }
      out.push({
        task,
        dequeueCount: item.dequeueCount,
        complete: async () => {
          await done.upsertEntity(
            { partitionKey: key.pk, rowKey: key.rk, completedAt: new Date().toISOString() },
            'Replace',
          );
          await queue.deleteMessage(item.messageId, item.popReceipt);
        },
      });
    }
    return out;
  }

  /** The bytes of a blob a task refers to (raw message, body, attachment). */
  readBlob(ref: BlobRef): Promise<Buffer> {
    return this.blobs.get(ref.name);
  }

  /** The whole message as received (RFC 5322), inline or from its blob. */
  async raw(task: TaskMessage): Promise<Buffer> {
    return task.rawInline !== null ? Buffer.from(task.rawInline, 'base64') : this.readBlob(task.raw!);
  }

  /** The plain-text body, inline or from its blob. */
  async bodyText(task: TaskMessage): Promise<string> {
    if (task.body.text !== null) return task.body.text;
    return task.body.textBlob ? (await this.readBlob(task.body.textBlob)).toString('utf8') : '';
  }

  /** What the sender wrote in this mail, without the quoted history. */
  async newText(task: TaskMessage): Promise<string> {
    if (task.body.newText !== null) return task.body.newText;
    return task.body.newTextBlob ? (await this.readBlob(task.body.newTextBlob)).toString('utf8') : '';
  }

  /** The history quoted below the new text; "" when there is none. */
  async quotedText(task: TaskMessage): Promise<string> {
    if (task.body.quotedText !== null) return task.body.quotedText;
    return task.body.quotedTextBlob ? (await this.readBlob(task.body.quotedTextBlob)).toString('utf8') : '';
  }

  /** Stores a file for a reply's attachment and returns the reference to put in the reply. */
  async putReplyAttachment(
    task: TaskMessage,
    filename: string,
    content: Buffer,
    contentType = 'application/octet-stream',
  ) {
    const name = `replies/${task.taskId}/${filename.replace(/[^\w.-]+/g, '_')}`;
    await this.blobs.put(name, content, contentType);
    return { filename, contentType, blob: { container: MAIL_CONTAINER as typeof MAIL_CONTAINER, name } };
  }

  /** Validates and queues a reply (`text`, or `markdown` for a mail with a rendered HTML part). */
  async reply(reply: Omit<ReplyMessageInput, 'type' | 'version'>): Promise<void> {
    const message = replyMessageSchema.safeParse({ type: 'inboxq.reply', version: 1, ...reply });
    if (!message.success)
      throw new InvalidMessageError('The reply does not follow the contract', describeIssues(message.error));
    if (message.data.replyId.startsWith(RESERVED_REPLY_ID_PREFIX)) {
      throw new InvalidMessageError('The reply does not follow the contract', [
        `replyId: ids starting with "${RESERVED_REPLY_ID_PREFIX}" are inboxq's own`,
      ]);
    }
    await sendQueueMessage(this.storage, REPLIES_QUEUE, message.data);
  }
}
