/** Sending contract messages to Storage queues, base64-encoded for the Functions queue trigger. */
import { encodeQueueMessage, MAX_QUEUE_MESSAGE_CHARS } from '../contract/messages';
import { type StorageClients, storageError } from './clients';

export async function sendQueueMessage(
  storage: StorageClients,
  queue: string,
  message: unknown,
  options: { mailbox?: string; visibilityTimeoutSeconds?: number; timeToLiveSeconds?: number } = {},
): Promise<string> {
  const text = encodeQueueMessage(message);
  if (text.length > MAX_QUEUE_MESSAGE_CHARS) {
    throw storageError(
      `A message for queue ${queue} is ${text.length} characters encoded, over the 64 KiB limit`,
      new RangeError('MessageTooLarge'),
      options.mailbox,
    );
  }
  const client = await storage.queue(queue);
  try {
    const res = await client.sendMessage(text, {
      ...(options.visibilityTimeoutSeconds ? { visibilityTimeout: options.visibilityTimeoutSeconds } : {}),
      ...(options.timeToLiveSeconds ? { messageTimeToLive: options.timeToLiveSeconds } : {}),
    });
    return res.messageId;
  } catch (err) {
    throw storageError(`Can't send to queue ${queue}`, err, options.mailbox);
  }
}

/** The length of the message's base64 text, without building it. */
export function encodedSize(message: unknown): number {
  return 4 * Math.ceil(Buffer.byteLength(JSON.stringify(message), 'utf8') / 3);
}
