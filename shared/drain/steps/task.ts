/**
 * Step 5, the task: an accepted mail's body parsed (within bounds), stored, and its task message
 * built. The raw message goes to Blob Storage as it comes from IMAP (a small mail fetched with its
 * batch, a large one in chunks), then is parsed: each attachment flows into its own blob, so memory
 * holds the text parts and a few upload blocks, never a large mail whole.
 */
import type { Readable } from 'node:stream';

import {
  type AttachmentRef,
  type BlobRef,
  MAX_QUEUE_MESSAGE_CHARS,
  type TaskMessage,
  taskMessageSchema,
} from '../../contract/messages';
import type { ConversationDecision } from '../../conversation/conversations';
import { InboxqError } from '../../errors';
import { ATTACHMENTS_FOLDER, mailBlobPrefix, type MessageRecord } from '../../ledger/rows';
import { parseBody, type ParsedHeader, parseStream } from '../../mail/parse';
import { splitQuoted } from '../../mail/quoted';
import { BlobStore, safeContentType, sanitizeFilename } from '../../storage/blobs';
import { clip } from '../../storage/bounded';
import type { StorageClients } from '../../storage/clients';
import { encodedSize } from '../../storage/queues';

/** Inline text bodies up to this size; larger ones go to Blob Storage. */
export const INLINE_TEXT_LIMIT = 16 * 1024;
/** Mails up to this size travel inline in their task (base64); larger ones go to Blob Storage. */
export const INLINE_RAW_LIMIT = 32 * 1024;

/** A small mail's whole source, or a large mail's source as a stream. */
export type MailSource = { kind: 'buffer'; data: Buffer } | { kind: 'stream'; stream: Readable };

export interface TaskInput {
  mailbox: string;
  /** The mailbox's container (config.mailContainer). */
  container: string;
  taskId: string;
  record: MessageRecord;
  header: ParsedHeader;
  sender: string;
  conversation: ConversationDecision;
  source: MailSource;
}

/**
 * Stores an accepted mail (its source, its attachments, large text parts) and returns its task
 * message, validated against the contract and within the size a queue message can carry.
 */
export async function buildTask(storage: StorageClients, input: TaskInput): Promise<TaskMessage> {
  const { mailbox, container, taskId, record, header, sender, conversation, source } = input;
  const blobs = new BlobStore(storage, container, mailbox);
  const prefix = mailBlobPrefix(mailbox, taskId);

  let raw: BlobRef | null = null;
  let rawInline: string | null = null;
  const storeAttachment = async (
    index: number,
    name: string | undefined,
    contentType: string,
    content: Buffer | Readable,
  ): Promise<AttachmentRef> => {
    const filename = sanitizeFilename(name, `attachment-${index + 1}`);
    const type = safeContentType(contentType);
    const blobName = `${prefix}${ATTACHMENTS_FOLDER}${String(index + 1).padStart(4, '0')}-${filename}`;
    const blob = Buffer.isBuffer(content)
      ? await blobs.put(blobName, content, type)
      : await blobs.putStream(blobName, content, type);
    return { filename, contentType: type, size: blob.size, sha256: blob.sha256, blob };
  };
  let body: { text: string; textBytes?: Buffer | undefined; html: string | null; attachments: AttachmentRef[] };
  if (source.kind === 'buffer') {
    // Small: parsed from memory (after the verdict, so only an accepted sender's body is parsed).
    const parsed = await parseBody(source.data);
    if (source.data.length <= INLINE_RAW_LIMIT) rawInline = source.data.toString('base64');
    else raw = await blobs.put(`${prefix}message.eml`, source.data, 'message/rfc822');
    const attachments: AttachmentRef[] = [];
    for (const [i, a] of parsed.attachments.entries())
      attachments.push(await storeAttachment(i, a.filename, a.contentType, a.content));
    body = { text: parsed.text, textBytes: parsed.textBytes, html: parsed.html, attachments };
  } else {
    raw = await blobs.putStream(`${prefix}message.eml`, source.stream, 'message/rfc822');
    body = await parseStream(await blobs.getStream(raw.name), (a) =>
      storeAttachment(a.index, a.filename, a.contentType, a.content),
    );
  }
  const attachments = body.attachments;

  // Text parts travel inline when they fit, else in Blob Storage; the new text and the quoted
  // history are told apart for workers that want only what the sender just wrote.
  const inlineOrBlob = async (name: string, text: string, bytes?: Buffer): Promise<[string | null, BlobRef | null]> =>
    (bytes?.length ?? Buffer.byteLength(text, 'utf8')) > INLINE_TEXT_LIMIT
      ? [null, await blobs.put(`${prefix}${name}`, bytes ?? text, 'text/plain; charset=utf-8')]
      : [text, null];
  const split = splitQuoted(body.text);
  const [text, textBlob] = await inlineOrBlob('body.txt', body.text, body.textBytes);
  // Nothing quoted: the new text is the whole text, and a large one is stored (and hashed) once.
  const [newText, newTextBlob] =
    split.newText === body.text && textBlob ? [null, textBlob] : await inlineOrBlob('body-new.txt', split.newText);
  const [quotedText, quotedTextBlob] = await inlineOrBlob('body-quoted.txt', split.quotedText);
  const htmlBlob: BlobRef | null = body.html
    ? await blobs.put(`${prefix}body.html`, body.html, 'text/html; charset=utf-8')
    : null;

  const task: TaskMessage = {
    type: 'inboxq.task',
    version: 1,
    taskId,
    mailbox,
    receivedAt: record.receivedAt,
    queuedAt: new Date().toISOString(),
    from: { address: sender, name: header.fromName },
    to: header.to,
    cc: header.cc,
    subject: header.subject,
    messageId: header.messageId,
    inReplyTo: header.inReplyTo,
    references: header.references,
    conversation: {
      id: conversation.conversation.id,
      isNew: conversation.isNew,
      continuedBy: conversation.continuedBy,
      previousTaskIds: conversation.previousTaskIds,
    },
    body: { text, textBlob, htmlBlob, newText, newTextBlob, quotedText, quotedTextBlob },
    attachments,
    attachmentsBlob: null,
    raw,
    rawInline,
  };
  await fitQueueMessage(task, blobs, prefix, source);
  const checked = taskMessageSchema.safeParse(task);
  if (!checked.success) {
    throw new InboxqError(
      `Task ${taskId} does not match the task contract: ${checked.error.issues.map((i) => i.path.join('.')).join(', ')}`,
      {
        mailbox,
        hint: 'this is a bug in inboxq; the mail was set aside with this reason',
      },
    );
  }
  return checked.data;
}

/** Moves what does not fit a 64 KiB queue message to Blob Storage: the raw mail, then text parts, then the attachment list. */
async function fitQueueMessage(task: TaskMessage, blobs: BlobStore, prefix: string, source: MailSource): Promise<void> {
  const limit = MAX_QUEUE_MESSAGE_CHARS - 1024;
  let size = encodedSize(task);
  if (task.rawInline !== null && size > limit && source.kind === 'buffer') {
    task.raw = await blobs.put(`${prefix}message.eml`, source.data, 'message/rfc822');
    task.rawInline = null;
    size = encodedSize(task);
  }
  // Inline text parts that together are too big move to Blob Storage, the quoted history first.
  for (const [field, blobField, name] of [
    ['quotedText', 'quotedTextBlob', 'body-quoted.txt'],
    ['text', 'textBlob', 'body.txt'],
    ['newText', 'newTextBlob', 'body-new.txt'],
  ] as const) {
    const inline = task.body[field];
    if (size <= limit || inline === null || inline === '') continue;
    task.body[blobField] = await blobs.put(`${prefix}${name}`, inline, 'text/plain; charset=utf-8');
    task.body[field] = null;
    size = encodedSize(task);
  }
  // A long attachment list (or many recipients, or a long subject) could push the message past
  // 64 KiB: the list moves to a blob, and the rest is trimmed to fit.
  if (size > limit) {
    task.attachmentsBlob = await blobs.put(
      `${prefix}attachments.json`,
      JSON.stringify(task.attachments),
      'application/json',
    );
    task.attachments = [];
    size = encodedSize(task);
  }
  // Each round halves what is left of the lists and strings a sender writes, until it fits.
  for (let round = 0; size > limit && round < 12; round++) {
    const keep = Math.max(1, 50 >> round);
    task.to = task.to.slice(0, keep).map((a) => clip(a, 320));
    task.cc = task.cc.slice(0, keep).map((a) => clip(a, 320));
    task.references = task.references.slice(-Math.min(keep, 20));
    task.subject = clip(task.subject, Math.max(80, 2000 >> round));
    task.from.name = clip(task.from.name, Math.max(40, 500 >> round));
    size = encodedSize(task);
  }
}
