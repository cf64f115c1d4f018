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
  mailboxResources,
  replyAttachmentPrefix,
  type ReplyMessageInput,
  replyMessageSchema,
  RESERVED_REPLY_ID_PREFIX,
  type TaskMessage,
  taskMessageSchema,
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

export interface ReceivedTask {
  task: TaskMessage;
  dequeueCount: number;
  /** Records the task id as done and deletes the task message: call it once the reply is posted. */
  complete: () => Promise<void>;
}

export interface TaskWorkerOptions {
  /**
   * The key of the mailbox this worker serves in a deployment of several (INBOXQ_MAILBOXES): its
   * tasks come from `tasks-<key>`, its replies go to `replies-<key>`, its reply attachments to
   * `inboxq-mail-<key>`, and it records what it did in `inboxqWorkerDone<key>`, which are what
   * the mailbox's worker identity is granted (docs/mailboxes.md). Unset: a deployment of one mailbox.
   */
  mailboxKey?: string;
  /** Another tasks queue than the mailbox's own (the mailbox's INBOXQ_<KEY>__TASKS_QUEUE). */
  tasksQueue?: string;
}

export { RESERVED_REPLY_ID_PREFIX };

export class TaskWorker {
  readonly tasksQueue: string;
  readonly repliesQueue: string;
  /** The container the worker's reply attachments go to: the mailbox's own. */
  readonly container: string;
  private readonly doneTable: string;

  constructor(
    private readonly storage: StorageClients,
    options: TaskWorkerOptions = {},
  ) {
    const own = mailboxResources(options.mailboxKey ?? null);
    this.tasksQueue = options.tasksQueue ?? own.tasksQueue;
    this.repliesQueue = own.repliesQueue;
    this.container = own.container;
    this.doneTable = own.workerDoneTable;
  }

  /**
   * A worker on a connection string (an account key: Azurite, or a test). In Azure, a worker of one
   * mailbox signs in with its own identity instead, which may only use its mailbox's queues,
   * container and table: `new TaskWorker(createStorageClients(identityConnection, undefined, { createIfAllowed: true }), { mailboxKey })`.
   */
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
    const done = await this.storage.table(this.doneTable);
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

  /** The bytes of a blob a task refers to (raw message, body, attachment), from the container the task names. */
  readBlob(ref: BlobRef): Promise<Buffer> {
    return new BlobStore(this.storage, ref.container).get(ref.name);
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
    const name = `${replyAttachmentPrefix(task.taskId)}${filename.replace(/[^\w.-]+/g, '_').replace(/^\.+/, '_')}`;
    await new BlobStore(this.storage, this.container).put(name, content, contentType);
    return { filename, contentType, blob: { container: this.container, name } };
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
    await sendQueueMessage(this.storage, this.repliesQueue, message.data);
  }
}
