/**
 * Poisoned replies, kept for `inboxq replay`. The replies-poison handler consumes each message of
 * the poison queue (it marks the task failed and tells the sender); the reply's text would be lost
 * with it, so the handler first keeps the message as a blob: container inboxq-poisoned-replies,
 * `<mailbox partition key>/<taskId>.<replyId>.json`. Replaying one puts it back on the replies
 * queue and deletes the blob; the reply ledger keeps a reply sent in the meantime from going twice.
 */
import { partitionKey } from '../ledger/rows';
import { type StorageClients, storageError } from '../storage/clients';

export const POISONED_REPLIES_CONTAINER = 'inboxq-poisoned-replies';

export interface ParkedReply {
  /** The blob's name. */
  name: string;
  mailbox: string;
  taskId: string;
  replyId: string;
}

function blobName(mailbox: string, taskId: string, replyId: string): string {
  return `${partitionKey(mailbox)}/${taskId}.${replyId}.json`;
}

/** Keeps a poisoned reply message (its JSON, as the worker wrote it) for a replay. */
export async function parkPoisonedReply(
  storage: StorageClients,
  reply: { mailbox: string; taskId: string; replyId: string },
  message: unknown,
): Promise<void> {
  const container = await storage.container(POISONED_REPLIES_CONTAINER);
  const name = blobName(reply.mailbox, reply.taskId, reply.replyId);
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  try {
    await container.getBlockBlobClient(name).uploadData(body, {
      blobHTTPHeaders: { blobContentType: 'application/json' },
    });
  } catch (err) {
    throw storageError(`Can't keep the poisoned reply ${reply.taskId}.${reply.replyId}`, err, reply.mailbox);
  }
}

/** The poisoned replies kept for a mailbox, at most `max`. */
export async function listParkedReplies(storage: StorageClients, mailbox: string, max = 1000): Promise<ParkedReply[]> {
  const container = await storage.container(POISONED_REPLIES_CONTAINER);
  const out: ParkedReply[] = [];
  try {
    for await (const blob of container.listBlobsFlat({ prefix: `${partitionKey(mailbox)}/` })) {
      const m = /\/([0-9a-f]{32})\.(.+)\.json$/.exec(blob.name);
      if (m) out.push({ name: blob.name, mailbox, taskId: m[1]!, replyId: m[2]! });
      if (out.length >= max) break;
    }
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return [];
    throw storageError('Listing the poisoned replies failed', err, mailbox);
  }
  return out;
}

export async function readParkedReply(storage: StorageClients, parked: ParkedReply): Promise<unknown> {
  const container = await storage.container(POISONED_REPLIES_CONTAINER);
  try {
    return JSON.parse((await container.getBlockBlobClient(parked.name).downloadToBuffer()).toString('utf8'));
  } catch (err) {
    throw storageError(`Can't read the poisoned reply ${parked.taskId}.${parked.replyId}`, err, parked.mailbox);
  }
}

export async function deleteParkedReply(storage: StorageClients, parked: ParkedReply): Promise<void> {
  const container = await storage.container(POISONED_REPLIES_CONTAINER);
  try {
    await container.deleteBlob(parked.name);
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode !== 404)
      throw storageError(`Can't delete the poisoned reply ${parked.taskId}.${parked.replyId}`, err, parked.mailbox);
  }
}
