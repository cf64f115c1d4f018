/**
 * `inboxq trace`: the life of a mail, read from the ledger, oldest first: its arrival, its verdict
 * and reasons, its task and conversation, each reply and its state, and where the mail is now.
 *
 * How each kind of query is found (partition = mailbox in every table):
 *   task id          one point read
 *   Message-ID       one point read (an accepted mail's task id is derived from it; one of inboxq's
 *                    own Message-IDs names its task), then a partition scan filtered by the service
 *                    on `messageId` (rejected and set-aside mail is claimed under its header hash)
 *   sender           a partition scan filtered on `sender`
 *   conversation id  one point read of the conversation, then one per task of it
 * A scan stops at `max` mails or at its deadline and says so (`complete: false`). The replies of a
 * mail are one range of row keys (`<taskId>.*`).
 *
 * Nothing of a mail's body is stored, so nothing of it can be printed; the text output replaces
 * control characters in what a sender wrote (subject, addresses), so a crafted subject can't drive
 * the operator's terminal.
 */
import type { InboxqConfig } from '../config/types';
import { type ConversationStore } from '../conversation/conversations';
import { taskIdOfOwnMessageId } from '../identity/ids';
import type { TaskIds } from '../identity/task-key';
import type { Ledger } from '../ledger/ledger';
import { DELETED_LOCATION, type MessageRecord, type ReplyRecord, UNKNOWN_LOCATION } from '../ledger/rows';
import { normalizeMessageId } from '../mail/parse';
import { ACKNOWLEDGEMENT_REPLY_ID, FAILURE_NOTICE_REPLY_ID } from '../reply/reply';

export type TraceKind = 'task' | 'message-id' | 'sender' | 'conversation';

export interface TraceQuery {
  kind: TraceKind;
  value: string;
}

/**
 * What a query names: 32 hex digits a task id, 24 (or `[#…]`) a conversation id, `<…>` a
 * Message-ID, an address a sender. Anything else is refused with what is accepted.
 */
export function classifyQuery(raw: string): TraceQuery | undefined {
  const q = raw.trim();
  if (/^[0-9a-f]{32}$/i.test(q)) return { kind: 'task', value: q.toLowerCase() };
  const tag = /^\[?#?([0-9a-f]{24})\]?$/i.exec(q);
  if (tag) return { kind: 'conversation', value: tag[1]!.toLowerCase() };
  if (/^<[^<>\s]+>$/.test(q)) return { kind: 'message-id', value: q };
  if (/^[^\s@<>]+@[^\s@<>]+$/.test(q)) return { kind: 'sender', value: q.toLowerCase() };
  return undefined;
}

export interface TraceEvent {
  at: string;
  what: string;
}

export interface TracedReply {
  replyId: string;
  kind: 'acknowledgement' | 'answer' | 'failure notice';
  state: ReplyRecord['state'];
  messageId: string;
  attempts: number;
  sendingSince: string;
  sentAt: string | null;
  lastResponse: string;
  sentFolderCheck: string;
}

export interface TracedMail {
  mailbox: string;
  taskId: string;
  messageId: string | null;
  sender: string | null;
  subject: string;
  state: MessageRecord['state'];
  verdict: 'accepted' | 'rejected' | 'set aside' | 'not finished';
  reasons: string[];
  conversationId: string | null;
  tasksQueue: string | null;
  uid: number;
  uidValidity: string;
  /** Where the mail is now: INBOX, a folder, `(deleted)` or `(unknown)`. */
  now: string;
  releasedAt: string | null;
  /** Task ids of later rows of the same mail (drained again after a release under another identity). */
  drainedAgainAs: string[];
  replies: TracedReply[];
  events: TraceEvent[];
}

export interface TraceResult {
  query: TraceQuery;
  mails: TracedMail[];
  /** False when a scan stopped at its bound before it saw the whole of a mailbox's ledger. */
  complete: boolean;
  mailboxes: string[];
}

/** What trace reads of one mailbox. */
export interface TraceSource {
  config: Pick<InboxqConfig, 'mailbox' | 'tasksQueue' | 'drain'>;
  ledger: Ledger;
  conversations: ConversationStore;
  taskIds: TaskIds;
}

export interface TraceLimits {
  /** Mails returned at most, over every mailbox. */
  max: number;
  /** Epoch ms after which no further page of a scan is read. */
  deadline: number;
}

export async function traceMail(sources: TraceSource[], query: TraceQuery, limits: TraceLimits): Promise<TraceResult> {
  const mails: TracedMail[] = [];
  let complete = true;
  for (const source of sources) {
    const left = limits.max - mails.length;
    if (left <= 0) {
      complete = false;
      break;
    }
    const found = await rowsFor(source, query, { ...limits, max: left });
    complete &&= found.complete;
    for (const row of found.rows) mails.push(await traced(source, row, limits));
  }
  // Oldest first: by arrival, then by claim (a released mail claimed again arrived at the same time).
  const order = (m: TracedMail) => `${m.events[0]?.at ?? ''} ${m.events[1]?.at ?? ''}`;
  mails.sort((a, b) => order(a).localeCompare(order(b)));
  return { query, mails, complete, mailboxes: sources.map((s) => s.config.mailbox) };
}

async function rowsFor(
  source: TraceSource,
  query: TraceQuery,
  limits: TraceLimits,
): Promise<{ rows: MessageRecord[]; complete: boolean }> {
  const { ledger } = source;
  const mailbox = source.config.mailbox;
  const byTask = async (taskIds: string[]) =>
    (await Promise.all(taskIds.map((id) => ledger.getMessage(mailbox, id)))).filter((r): r is MessageRecord => !!r);
  switch (query.kind) {
    case 'task':
      return { rows: await byTask([query.value]), complete: true };
    case 'message-id': {
      const own = taskIdOfOwnMessageId(query.value);
      if (own) return { rows: await byTask([own]), complete: true };
      const messageId = normalizeMessageId(query.value) ?? query.value;
      const direct = await byTask(source.taskIds.ofMessageId(messageId));
      const scanned = await ledger.findMessagesWhere(mailbox, 'messageId', messageId, limits);
      return { rows: unique([...direct, ...scanned.rows]).slice(0, limits.max), complete: scanned.complete };
    }
    case 'sender':
      return ledger.findMessagesWhere(mailbox, 'sender', query.value, limits);
    case 'conversation': {
      const conversation = await source.conversations.get(query.value);
      if (conversation) {
        const ids = conversation.taskIds.slice(0, limits.max);
        return { rows: await byTask(ids), complete: ids.length === conversation.taskIds.length };
      }
      return ledger.findMessagesWhere(mailbox, 'conversationId', query.value, limits);
    }
  }
}

function unique(rows: MessageRecord[]): MessageRecord[] {
  const seen = new Set<string>();
  return rows.filter((r) => !seen.has(r.taskId) && seen.add(r.taskId));
}

function verdictOf(state: MessageRecord['state']): TracedMail['verdict'] {
  if (state === 'queued' || state === 'failed') return 'accepted';
  if (state === 'rejected') return 'rejected';
  if (state === 'quarantined') return 'set aside';
  return 'not finished';
}

/** Where a mail past the mailbox retention is: deleted from its folder by a drain run. */
export const RETENTION_DELETED = '(deleted after INBOXQ_MAILBOX_RETENTION_DAYS)';

/**
 * Where the mail is now, from its row (and, for rows older than `location`, the settings as they
 * are); a mail in the processed or quarantine folder past the mailbox retention has been deleted.
 */
export function whereNow(row: MessageRecord, drain: InboxqConfig['drain'], now = Date.now()): string {
  let where: string;
  if (row.location) where = row.location;
  else if (!row.removed) where = 'INBOX';
  else if (row.state === 'quarantined') where = drain.quarantineFolder;
  else where = drain.processedAction === 'delete' ? DELETED_LOCATION : drain.processedFolder;
  const inFolder = where === drain.processedFolder || where === drain.quarantineFolder;
  const expired =
    drain.mailboxRetentionDays > 0 && Date.parse(row.receivedAt) < now - drain.mailboxRetentionDays * 86_400_000;
  return inFolder && expired ? RETENTION_DELETED : where;
}

function replyKind(replyId: string): TracedReply['kind'] {
  if (replyId === ACKNOWLEDGEMENT_REPLY_ID) return 'acknowledgement';
  if (replyId === FAILURE_NOTICE_REPLY_ID) return 'failure notice';
  return 'answer';
}

async function traced(source: TraceSource, row: MessageRecord, limits: TraceLimits): Promise<TracedMail> {
  const { config, ledger } = source;
  const replies = (await ledger.listReplies(config.mailbox, row.taskId)).map((r): TracedReply => ({
    replyId: r.replyId,
    kind: replyKind(r.replyId),
    state: r.state,
    messageId: r.messageId,
    attempts: r.attempts,
    sendingSince: r.sendingSince,
    sentAt: r.sentAt,
    lastResponse: r.lastResponse ?? '',
    sentFolderCheck: r.sentFolderCheck ?? '',
  }));
  // A released mail accepted now is claimed under its Message-ID: a later row of the same header.
  let drainedAgainAs: string[] = [];
  if (row.releasedAt && row.headerSha256) {
    const same = await ledger.findMessagesWhere(config.mailbox, 'headerSha256', row.headerSha256, {
      max: 10,
      deadline: limits.deadline,
    });
    drainedAgainAs = same.rows.filter((r) => r.taskId !== row.taskId).map((r) => r.taskId);
  }
  const verdict = verdictOf(row.state);
  const now = whereNow(row, config.drain);
  const mail: TracedMail = {
    mailbox: config.mailbox,
    taskId: row.taskId,
    messageId: row.messageId,
    sender: row.sender,
    subject: row.subject,
    state: row.state,
    verdict,
    reasons: row.reasons,
    conversationId: row.conversationId,
    tasksQueue: verdict === 'accepted' ? config.tasksQueue : null,
    uid: row.uid,
    uidValidity: row.uidValidity,
    now,
    releasedAt: row.releasedAt ?? null,
    drainedAgainAs,
    replies,
    events: [],
  };
  mail.events = eventsOf(mail, row);
  return mail;
}

function eventsOf(mail: TracedMail, row: MessageRecord): TraceEvent[] {
  const events: TraceEvent[] = [
    {
      at: row.receivedAt,
      what: `arrived in INBOX of ${mail.mailbox} (UID ${row.uid}, UIDVALIDITY ${row.uidValidity})`,
    },
    { at: row.claimedAt, what: `claimed by a drain run as task ${row.taskId}` },
  ];
  const reasons = row.reasons.length > 0 ? `: ${row.reasons.join('; ')}` : '';
  if (mail.verdict === 'accepted') {
    events.push({ at: row.queuedAt ?? row.claimedAt, what: `accepted from ${row.sender ?? '?'}${reasons}` });
    events.push({
      at: row.queuedAt ?? row.claimedAt,
      what: `task ${row.taskId} queued on ${mail.tasksQueue}${row.conversationId ? ` in conversation ${row.conversationId}` : ''}`,
    });
  } else if (mail.verdict === 'rejected') {
    events.push({ at: row.claimedAt, what: `rejected${reasons}` });
  } else if (mail.verdict === 'set aside') {
    events.push({ at: row.claimedAt, what: `set aside${reasons}` });
  } else {
    events.push({
      at: row.updatedAt,
      what: 'claimed but not finished: a drain run is on it, or stopped; the next run resumes it',
    });
  }
  for (const r of mail.replies) {
    const details = [
      `attempts ${r.attempts}`,
      r.lastResponse ? `last answer: ${r.lastResponse}` : '',
      r.sentFolderCheck ? `Sent-folder check: ${r.sentFolderCheck}` : '',
    ].filter(Boolean);
    events.push({ at: r.sentAt ?? r.sendingSince, what: `${r.kind} ${r.replyId} ${r.state} (${details.join('; ')})` });
  }
  if (row.state === 'failed')
    events.push({ at: row.updatedAt, what: 'task marked failed: its answer could not be delivered' });
  if (row.releasedAt) events.push({ at: row.releasedAt, what: 'released: moved back to INBOX with `inboxq release`' });
  for (const id of mail.drainedAgainAs)
    events.push({ at: row.releasedAt ?? row.updatedAt, what: `drained again as task ${id}` });
  events.sort((a, b) => a.at.localeCompare(b.at));
  events.push({ at: new Date().toISOString(), what: `now: ${describeLocation(mail.now)}` });
  return events;
}

function describeLocation(location: string): string {
  if (location === 'INBOX') return 'in INBOX, for the next drain run';
  if (location === DELETED_LOCATION) return 'deleted from the mailbox (INBOXQ_PROCESSED_ACTION=delete)';
  if (location === UNKNOWN_LOCATION) return 'gone from INBOX; a later run found it gone before its move was recorded';
  if (location === RETENTION_DELETED)
    return 'deleted from the mailbox: it was older than INBOXQ_MAILBOX_RETENTION_DAYS';
  return `in the folder ${location}`;
}

/** Control characters of text a sender wrote, made harmless for a terminal. */
export function printable(text: string): string {
  // eslint-disable-next-line no-control-regex -- the point is to find them
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '?');
}

export function formatTrace(result: TraceResult): string {
  if (result.mails.length === 0)
    return `No mail matches ${result.query.kind} ${printable(result.query.value)} in ${result.mailboxes.join(', ')}.\n`;
  const out: string[] = [];
  for (const m of result.mails) {
    out.push(
      `${m.mailbox}  task ${m.taskId}  ${m.verdict}`,
      `  from ${printable(m.sender ?? '(no verified sender)')}  Message-ID ${printable(m.messageId ?? '(none)')}`,
      `  subject ${JSON.stringify(printable(m.subject.slice(0, 200)))}`,
    );
    for (const e of m.events) out.push(`  ${e.at}  ${printable(e.what)}`);
    out.push('');
  }
  if (!result.complete) out.push('The search stopped at its bound (--max, --timeout); narrow it, e.g. by task id.\n');
  return out.join('\n');
}
