/**
 * The contract between inboxq and the workers that process tasks: one task message per accepted
 * mail on the `tasks` queue, one reply message per answer on the `replies` queue.
 *
 * Versioned JSON (`type` + `version`), validated here at every boundary with zod. JSON Schemas for
 * workers in other languages are generated from these (docs/contract.md, schemas/). Queue
 * messages are base64 of the UTF-8 JSON, which is what the Functions queue trigger reads by default.
 */
import { z } from 'zod';

/** Where tasks go in a deployment of one mailbox; with several, each has its own (`tasks-<key>` by default). */
export const TASKS_QUEUE = 'tasks';
export const REPLIES_QUEUE = 'replies';
/** inboxq's own: the schedule puts one request per mailbox here, and each is drained on its own. */
export const DRAIN_REQUESTS_QUEUE = 'drain-requests';
/** Where raw mail, bodies too big for a queue message, and attachments are stored. */
export const MAIL_CONTAINER = 'inboxq-mail';
/** Where a TypeScript worker (TaskWorker) records the task ids it has completed. */
export const WORKER_DONE_TABLE = 'inboxqWorkerDone';

/**
 * What belongs to one mailbox, and so to its workers: where its tasks go, where its replies come
 * from, where its mail and its replies' attachments are stored, where its worker records what it
 * did. A deployment of one mailbox has today's names; with several, every name carries the
 * mailbox's key, so Azure RBAC can scope a worker's roles to its own mailbox (docs/mailboxes.md).
 */
export interface MailboxResources {
  tasksQueue: string;
  repliesQueue: string;
  container: string;
  workerDoneTable: string;
}

/** The names of a mailbox's resources: `key` null for a deployment of one mailbox. */
export function mailboxResources(key: string | null): MailboxResources {
  if (key === null)
    return {
      tasksQueue: TASKS_QUEUE,
      repliesQueue: REPLIES_QUEUE,
      container: MAIL_CONTAINER,
      workerDoneTable: WORKER_DONE_TABLE,
    };
  return {
    tasksQueue: `${TASKS_QUEUE}-${key}`,
    repliesQueue: `${REPLIES_QUEUE}-${key}`,
    container: `${MAIL_CONTAINER}-${key}`,
    workerDoneTable: `${WORKER_DONE_TABLE}${key}`,
  };
}

/** Reply ids inboxq keeps for itself (the acknowledgement, the failure notice); a worker's reply may not use them. */
export const RESERVED_REPLY_ID_PREFIX = 'inboxq-';

/** Where a reply may attach blobs from: `replies/<taskId>/` (TaskWorker.putReplyAttachment writes there). */
export function replyAttachmentPrefix(taskId: string): string {
  return `replies/${taskId}/`;
}

/** Azure Storage queue messages are at most 64 KiB of (base64) text. */
export const MAX_QUEUE_MESSAGE_CHARS = 64 * 1024;

const isoDate = z.string().refine((v) => !Number.isNaN(Date.parse(v)), 'must be an ISO 8601 date');
const email = z.string().regex(/^[^\s@]+@[^\s@]+$/, 'must be an e-mail address');
export const taskIdSchema = z
  .string()
  .regex(/^[0-9a-f]{32}$/, 'must be 32 lower-case hex digits (a task id from a task message)');

export const conversationIdSchema = z
  .string()
  .regex(/^[0-9a-f]{24}$/, 'must be 24 lower-case hex digits (a conversation id)');

export const blobRefSchema = z.object({
  container: z.string().min(3),
  name: z.string().min(1).max(1024),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type BlobRef = z.infer<typeof blobRefSchema>;

export const attachmentRefSchema = z.object({
  filename: z.string(),
  contentType: z.string(),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  blob: blobRefSchema,
});
export type AttachmentRef = z.infer<typeof attachmentRefSchema>;

export const taskMessageSchema = z
  .object({
    type: z.literal('inboxq.task'),
    version: z.literal(1),
    taskId: taskIdSchema,
    mailbox: email,
    receivedAt: isoDate,
    queuedAt: isoDate,
    from: z.object({ address: email, name: z.string() }),
    to: z.array(z.string()),
    cc: z.array(z.string()),
    subject: z.string(),
    messageId: z.string().nullable(),
    inReplyTo: z.string().nullable(),
    references: z.array(z.string()),
    /** The conversation the mail belongs to (docs/conversations.md). */
    conversation: z.object({
      id: conversationIdSchema,
      /** True for the first mail of a conversation. */
      isNew: z.boolean(),
      /** How the mail was tied to an existing conversation; null when it started one. */
      continuedBy: z.enum(['in-reply-to', 'references', 'subject-tag']).nullable(),
      /** The conversation's earlier tasks, oldest first (the 50 most recent). */
      previousTaskIds: z.array(taskIdSchema).max(50),
    }),
    body: z.object({
      /** The plain-text body, inline when it fits; null when only `textBlob` has it. */
      text: z.string().nullable(),
      textBlob: blobRefSchema.nullable(),
      htmlBlob: blobRefSchema.nullable(),
      /** What the sender wrote in this mail: the text without the quoted history below it. Inline when it fits, else in `newTextBlob`. */
      newText: z.string().nullable(),
      newTextBlob: blobRefSchema.nullable(),
      /** The quoted history ("On ... wrote:", "From: ... Sent: ...", "> " lines); "" when there is none. Inline when it fits, else in `quotedTextBlob`. */
      quotedText: z.string().nullable(),
      quotedTextBlob: blobRefSchema.nullable(),
    }),
    /** Inline when the list fits the queue message; otherwise in `attachmentsBlob` as a JSON array. */
    attachments: z.array(attachmentRefSchema),
    attachmentsBlob: blobRefSchema.nullable(),
    /** The whole message as received (RFC 5322), in Blob Storage; null when it is inline. */
    raw: blobRefSchema.nullable(),
    /** The whole message, base64, when it is small enough to travel in the task (up to 32 KiB); otherwise null. */
    rawInline: z.string().nullable(),
  })
  .refine((t) => (t.raw === null) !== (t.rawInline === null), {
    message: 'exactly one of raw and rawInline is set',
    path: ['raw'],
  });
export type TaskMessage = z.infer<typeof taskMessageSchema>;

export const replyAttachmentSchema = z.object({
  filename: z.string().min(1).max(255),
  contentType: z.string().min(1).default('application/octet-stream'),
  /**
   * A blob of the mailbox's container (`inboxq-mail`, or `inboxq-mail-<key>` with several mailboxes):
   * one the worker wrote under `replies/<taskId>/`, or one of the task's own attachments.
   */
  blob: z.object({ container: z.string().min(3).max(63), name: z.string().min(1).max(1024) }),
});

export const replyMessageSchema = z
  .object({
    type: z.literal('inboxq.reply'),
    version: z.literal(1),
    taskId: taskIdSchema,
    mailbox: email,
    /** Tells several replies to one task apart; the same replyId is sent once, however often it is queued. */
    replyId: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be 1-64 letters, digits, dots, dashes or underscores')
      .default('reply'),
    /** The answer as plain text; the mail's text/plain part (and its only part unless `html` is given). */
    text: z.string().min(1, 'must not be empty').optional(),
    /**
     * The answer as Markdown (CommonMark with tables): the mail's text/plain part is the Markdown
     * itself, its text/html part the Markdown rendered, sanitized and styled inline for Outlook.
     */
    markdown: z.string().min(1, 'must not be empty').max(200_000).optional(),
    /** Ready-made HTML for the text/html part, with `text`; sent as given. */
    html: z.string().optional(),
    attachments: z.array(replyAttachmentSchema).max(100).default([]),
  })
  .refine((r) => (r.text === undefined) !== (r.markdown === undefined), {
    message: 'give exactly one of text and markdown',
    path: ['text'],
  })
  .refine((r) => r.markdown === undefined || r.html === undefined, {
    message: 'html goes with text; markdown is rendered to HTML by inboxq',
    path: ['html'],
  });
export type ReplyMessage = z.infer<typeof replyMessageSchema>;
export type ReplyMessageInput = z.input<typeof replyMessageSchema>;

/**
 * inboxq's own message on the replies queue: acknowledge these tasks (the first mails of new
 * conversations). One per drain batch instead of one per mail; each acknowledgement is then sent
 * as a reply with the id `inboxq-ack`, once. Workers never write it.
 */
export const acknowledgementsSchema = z.object({
  type: z.literal('inboxq.acknowledgements'),
  version: z.literal(1),
  mailbox: email,
  taskIds: z.array(taskIdSchema).min(1).max(100),
});
export type AcknowledgementsMessage = z.infer<typeof acknowledgementsSchema>;

/**
 * inboxq's own message on a replies queue: tell the sender of this task that the answer to their
 * mail could not be delivered (INBOXQ_FAILURE_NOTICE). What a failure notice deferred (paced,
 * connections busy) goes back on the queue as; workers never write it.
 */
export const failureNoticeSchema = z.object({
  type: z.literal('inboxq.failure-notice'),
  version: z.literal(1),
  mailbox: email,
  taskId: taskIdSchema,
});
export type FailureNoticeMessage = z.infer<typeof failureNoticeSchema>;

/** "Drain this mailbox now": what the schedule puts on the drain-requests queue for each mailbox. */
export const drainRequestSchema = z.object({
  type: z.literal('inboxq.drain-request'),
  version: z.literal(1),
  /** The mailbox's key in the deployment's settings (`default` with one mailbox). */
  key: z.string().min(1).max(64),
  mailbox: email,
  requestedAt: isoDate,
});
export type DrainRequest = z.infer<typeof drainRequestSchema>;

/** Human-readable problems of a failed validation, each naming the field. */
export function describeIssues(error: z.ZodError): string[] {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'message'}: ${i.message}`);
}

/** base64 of the UTF-8 JSON, as the Functions queue trigger expects by default. */
export function encodeQueueMessage(message: unknown): string {
  return Buffer.from(JSON.stringify(message), 'utf8').toString('base64');
}

/** Decodes a queue message's text: base64 JSON, or plain JSON for senders that don't encode. */
export function decodeQueueMessage(text: string): unknown {
  const trimmed = text.trim();
  if (trimmed.startsWith('{')) return JSON.parse(trimmed);
  return JSON.parse(Buffer.from(trimmed, 'base64').toString('utf8'));
}
