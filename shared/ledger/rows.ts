/**
 * The rows of the ledger: what a mail's and a reply's rows hold, their states, and how a record
 * becomes a table entity and back, every value a sender wrote bounded (ROW_BOUNDS) on the way in.
 *
 *   message: claimed -> queued | rejected | quarantined, then removed = true
 *   reply:   sending -> sent, or sending -> unsent -> sending ... when the server refused an attempt
 */
import type { TableEntityResult } from '@azure/data-tables';

import { boundedJsonList, clip } from '../storage/bounded';

export const MESSAGES_TABLE = 'inboxqMessages';
export const REPLIES_TABLE = 'inboxqReplies';
export const MAILBOXES_TABLE = 'inboxqMailboxes';

/** `failed`: the task was queued, but an answer to it ended in the poison queue. */
export type MessageState = 'claimed' | 'queued' | 'rejected' | 'quarantined' | 'failed';

export interface MessageRecord {
  mailbox: string;
  taskId: string;
  state: MessageState;
  removed: boolean;
  /** `mid:<Message-ID>` or `sha256:<hash of the header section>`: what the task id was derived from. */
  identity: string;
  messageId: string | null;
  headerSha256: string;
  uid: number;
  uidValidity: string;
  sender: string | null;
  subject: string;
  inReplyTo: string | null;
  references: string[];
  /** The mail's Thread-Index (base64, validated and bounded when parsed); extended on every reply. */
  threadIndex?: string;
  /** The conversation an accepted mail belongs to; null until it is decided (and for rejected mail). */
  conversationId: string | null;
  reasons: string[];
  receivedAt: string;
  claimedAt: string;
  updatedAt: string;
  /** Set when a later run found the mail gone from INBOX while the row said otherwise (a crash between the MOVE and its record). */
  reconciledAt?: string;
  /** When the task was queued (accepted mail). */
  queuedAt?: string;
  /**
   * Where the mail went when it left INBOX: a folder name, `(deleted)`, or `(unknown)` when a later
   * run found it gone without its record; `INBOX` again after `inboxq release`.
   */
  location?: string;
  /** When `inboxq release` put the mail back into INBOX. */
  releasedAt?: string;
  etag?: string;
}

/** `location` of a mail the drain deleted (INBOXQ_PROCESSED_ACTION=delete). */
export const DELETED_LOCATION = '(deleted)';
/** `location` of a mail a later run found gone from INBOX without a record of where it went. */
export const UNKNOWN_LOCATION = '(unknown)';

/**
 * sending: a delivery is sending it, or died doing so (then the Sent folder decides);
 * unsent:  the last attempt was refused by the server (a 4xx/5xx answer), so nothing went out;
 * sent:    done;
 * failed:  it ended in the poison queue.
 */
export type ReplyState = 'sending' | 'unsent' | 'sent' | 'failed';

export interface ReplyRecord {
  mailbox: string;
  taskId: string;
  replyId: string;
  state: ReplyState;
  messageId: string;
  attempts: number;
  sendingSince: string;
  /** The queue message whose delivery is sending it (or sent it); '' when not known. */
  deliveryId: string;
  sentAt: string | null;
  /** The SMTP server's answer to the last attempt (`250 2.0.0 OK …`, or the refusal), bounded; '' before one. */
  lastResponse?: string;
  /** What the Sent-folder check after an interrupted send found: `found` or `missing`, with when; '' when none ran. */
  sentFolderCheck?: string;
  etag?: string;
}

export interface RunRecord {
  runId: string;
  startedAt: string;
  finishedAt: string;
  outcome: 'ok' | 'partial' | 'failed';
  counts: Record<string, number>;
  error: string | null;
}

/** Table keys can't hold / \ # ? or control characters; addresses can. */
export function partitionKey(mailbox: string): string {
  return encodeURIComponent(mailbox.toLowerCase()).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/**
 * Where a task's stored mail lives in its mailbox's container, keyed like its ledger row:
 * `<partition>/<taskId>/` (its source, large text parts, and its attachments under ATTACHMENTS_FOLDER).
 */
export function mailBlobPrefix(mailbox: string, taskId: string): string {
  return `${partitionKey(mailbox)}/${taskId}/`;
}

/** The folder of a task's attachments under its mailBlobPrefix. */
export const ATTACHMENTS_FOLDER = 'attachments/';

/**
 * Bounds of what a row keeps of a mail (characters; a string property holds 32K, an entity 1 MiB):
 * every value a sender writes is cut to them, so no mail can make its row unwritable.
 */
export const ROW_BOUNDS = {
  messageId: 1000,
  identity: 1000,
  subject: 1000,
  sender: 320,
  reasonsJson: 8000,
  reason: 1000,
  referencesJson: 16_000,
  references: 30,
  location: 300,
  response: 500,
  /** Base64 of 22 + 5 x 100 bytes (MAX_CHILD_BLOCKS), which is all readThreadIndex takes. */
  threadIndex: 700,
} as const;

export type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

export function toMessageEntity(r: MessageRecord): Entity {
  return {
    partitionKey: partitionKey(r.mailbox),
    rowKey: r.taskId,
    mailbox: r.mailbox,
    state: r.state,
    removed: r.removed,
    identity: clip(r.identity, ROW_BOUNDS.identity),
    messageId: clip(r.messageId ?? '', ROW_BOUNDS.messageId),
    headerSha256: r.headerSha256,
    uid: r.uid,
    uidValidity: r.uidValidity,
    sender: clip(r.sender ?? '', ROW_BOUNDS.sender),
    subject: clip(r.subject, ROW_BOUNDS.subject),
    inReplyTo: clip(r.inReplyTo ?? '', ROW_BOUNDS.messageId),
    references: boundedJsonList(
      r.references.slice(-ROW_BOUNDS.references),
      ROW_BOUNDS.referencesJson,
      ROW_BOUNDS.messageId,
      'last',
    ),
    ...(r.threadIndex ? { threadIndex: clip(r.threadIndex, ROW_BOUNDS.threadIndex) } : {}),
    conversationId: r.conversationId ?? '',
    reasons: boundedJsonList(r.reasons, ROW_BOUNDS.reasonsJson, ROW_BOUNDS.reason, 'first'),
    receivedAt: r.receivedAt,
    claimedAt: r.claimedAt,
    updatedAt: r.updatedAt,
    ...(r.reconciledAt ? { reconciledAt: r.reconciledAt } : {}),
    ...(r.queuedAt ? { queuedAt: r.queuedAt } : {}),
    ...(r.location ? { location: clip(r.location, ROW_BOUNDS.location) } : {}),
    ...(r.releasedAt ? { releasedAt: r.releasedAt } : {}),
  };
}

export function fromMessageEntity(e: TableEntityResult<Record<string, unknown>>): MessageRecord {
  const s = (k: string) => (typeof e[k] === 'string' ? e[k] : '');
  return {
    mailbox: s('mailbox'),
    taskId: e.rowKey ?? '',
    state: s('state') as MessageState,
    removed: e['removed'] === true,
    identity: s('identity'),
    messageId: s('messageId') || null,
    headerSha256: s('headerSha256'),
    uid: Number(e['uid'] ?? 0),
    uidValidity: s('uidValidity'),
    sender: s('sender') || null,
    subject: s('subject'),
    inReplyTo: s('inReplyTo') || null,
    references: JSON.parse(s('references') || '[]') as string[],
    ...(s('threadIndex') ? { threadIndex: s('threadIndex') } : {}),
    conversationId: s('conversationId') || null,
    reasons: JSON.parse(s('reasons') || '[]') as string[],
    receivedAt: s('receivedAt'),
    claimedAt: s('claimedAt'),
    updatedAt: s('updatedAt'),
    ...(s('reconciledAt') ? { reconciledAt: s('reconciledAt') } : {}),
    ...(s('queuedAt') ? { queuedAt: s('queuedAt') } : {}),
    ...(s('location') ? { location: s('location') } : {}),
    ...(s('releasedAt') ? { releasedAt: s('releasedAt') } : {}),
    etag: e.etag,
  };
}

export function toReplyEntity(r: ReplyRecord): Entity {
  return {
    partitionKey: partitionKey(r.mailbox),
    rowKey: `${r.taskId}.${r.replyId}`,
    mailbox: r.mailbox,
    taskId: r.taskId,
    replyId: r.replyId,
    state: r.state,
    messageId: r.messageId,
    attempts: r.attempts,
    sendingSince: r.sendingSince,
    deliveryId: r.deliveryId,
    sentAt: r.sentAt ?? '',
    lastResponse: clip(r.lastResponse ?? '', ROW_BOUNDS.response),
    sentFolderCheck: r.sentFolderCheck ?? '',
  };
}

export function fromReplyEntity(e: TableEntityResult<Record<string, unknown>>): ReplyRecord {
  const s = (k: string) => (typeof e[k] === 'string' ? e[k] : '');
  return {
    mailbox: s('mailbox'),
    taskId: s('taskId'),
    replyId: s('replyId'),
    state: s('state') as ReplyState,
    messageId: s('messageId'),
    attempts: Number(e['attempts'] ?? 0),
    sendingSince: s('sendingSince'),
    deliveryId: s('deliveryId'),
    sentAt: s('sentAt') || null,
    lastResponse: s('lastResponse'),
    sentFolderCheck: s('sentFolderCheck'),
    etag: e.etag,
  };
}
