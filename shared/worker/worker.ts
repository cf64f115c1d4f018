/**
 * What a worker in TypeScript needs to take tasks and give answers: receive task messages from the
 * `tasks` queue (decoded and validated), read their blobs, put replies on the `replies` queue.
 * Workers in other languages do the same with their Storage SDK: docs/contract.md.
 *
 * Delivery is at least once: the same task id may arrive twice (a drain interrupted between
 * queuing and recording queues it again under the same id). A reply with the same taskId and
 * replyId is sent once however often it is posted, so the simplest worker is already safe.
 */
import { createStorageClients, type StorageClients } from '../storage/clients';
import {
  describeIssues,
  MAIL_CONTAINER,
  REPLIES_QUEUE,
  replyMessageSchema,
  TASKS_QUEUE,
  taskMessageSchema,
  decodeQueueMessage,
  type BlobRef,
  type ReplyMessageInput,
  type TaskMessage,
} from '../contract/messages';
import { InvalidMessageError } from '../errors';
import { BlobStore } from '../storage/blobs';
import { sendQueueMessage } from '../storage/queues';

export interface ReceivedTask {
  task: TaskMessage;
  dequeueCount: number;
  /** Deletes the task message: call it once the reply is posted. */
  complete(): Promise<void>;
}

export class TaskWorker {
  private readonly blobs: BlobStore;

  constructor(private readonly storage: StorageClients) {
    this.blobs = new BlobStore(storage, MAIL_CONTAINER);
  }

  static fromConnectionString(connectionString: string): TaskWorker {
    return new TaskWorker(createStorageClients({ kind: 'connection-string', connectionString }));
  }

  /**
   * Up to `max` tasks, hidden from other workers for `visibilitySeconds`. A message that is not a
   * valid task is left alone and reported through `onInvalid`.
   */
  async receive(options: { max?: number; visibilitySeconds?: number; onInvalid?: (err: InvalidMessageError) => void } = {}): Promise<ReceivedTask[]> {
    const queue = await this.storage.queue(TASKS_QUEUE);
    const { receivedMessageItems } = await queue.receiveMessages({ numberOfMessages: options.max ?? 16, visibilityTimeout: options.visibilitySeconds ?? 300 });
    const out: ReceivedTask[] = [];
    for (const item of receivedMessageItems) {
      let parsed;
      try {
        parsed = taskMessageSchema.safeParse(decodeQueueMessage(item.messageText));
      } catch {
        options.onInvalid?.(new InvalidMessageError('A task message is not base64 JSON', [`message ${item.messageId}`]));
        continue;
      }
      if (!parsed.success) {
        options.onInvalid?.(new InvalidMessageError('A task message does not follow the contract', describeIssues(parsed.error)));
        continue;
      }
      out.push({
        task: parsed.data,
        dequeueCount: item.dequeueCount,
        complete: async () => {
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

  /** The plain-text body, inline or from its blob. */
  async bodyText(task: TaskMessage): Promise<string> {
    if (task.body.text !== null) return task.body.text;
    return task.body.textBlob ? (await this.readBlob(task.body.textBlob)).toString('utf8') : '';
  }

  /** Stores a file for a reply's attachment and returns the reference to put in the reply. */
  async putReplyAttachment(task: TaskMessage, filename: string, content: Buffer, contentType = 'application/octet-stream') {
    const name = `replies/${task.taskId}/${filename.replace(/[^\w.-]+/g, '_')}`;
    await this.blobs.put(name, content, contentType);
    return { filename, contentType, blob: { container: MAIL_CONTAINER as typeof MAIL_CONTAINER, name } };
  }

  /** Validates and queues a reply. */
  async reply(reply: Omit<ReplyMessageInput, 'type' | 'version'>): Promise<void> {
    const message = replyMessageSchema.safeParse({ type: 'inboxq.reply', version: 1, ...reply });
    if (!message.success) throw new InvalidMessageError('The reply does not follow the contract', describeIssues(message.error));
    await sendQueueMessage(this.storage, REPLIES_QUEUE, message.data);
  }
}
