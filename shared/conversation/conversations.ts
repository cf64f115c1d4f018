/**
 * Conversations: the mails of one thread, kept together so a worker sees a follow-up as part of
 * the task it continues.
 *
 * A mail continues a conversation when
 *   1. its In-Reply-To or References name a Message-ID inboxq received or sent in that
 *      conversation (most recent reference first), or else
 *   2. its subject carries the conversation's tag, `[#<id>]`, which inboxq puts on every mail it sends;
 * and only when its verified sender is a participant of that conversation. Anyone else (another
 * authorized sender who copied the tag or answers a thread they were copied on) starts a new
 * conversation: a conversation's context never reaches someone who did not start it.
 *
 * A Message-ID needs no index of its own: a received mail's task id is derived from its Message-ID
 * (`deriveTaskId`), and a sent one carries its task id (`<inboxq.<taskId>.<replyId>@domain>`), so
 * either leads to the mail's ledger row, which has its conversation id.
 *
 * Stored in Table Storage (table inboxqConversations, partition = mailbox, row `c.<id>`): the
 * participants, the subject, and the task ids in order of arrival.
 *
 * A conversation's id is derived from the task id of its first mail, so a drain that resumes after
 * a crash decides the same way, and writes are upserts that can be repeated.
 */
import type { TableClient, TableEntityResult } from '@azure/data-tables';
import { deriveTaskId, partitionKey } from '../ledger/ledger';
import { storageError, type StorageClients } from '../storage/clients';

export const CONVERSATIONS_TABLE = 'inboxqConversations';
/** The task ids a conversation row keeps (the oldest are dropped past it; a table property holds 64 KiB). */
export const MAX_TASKS_PER_CONVERSATION = 500;
/** The previous task ids a task carries, the most recent ones. */
export const MAX_PREVIOUS_TASK_IDS = 50;
/** References looked up per mail, the most recent first. */
const MAX_REFERENCES_LOOKED_UP = 20;
/** Subject tags looked up per mail, the first ones (a hostile subject may carry thousands). */
const MAX_TAGS_LOOKED_UP = 5;

export interface Conversation {
  id: string;
  /** Verified sender addresses, lower-case, that may continue the conversation. */
  participants: string[];
  subject: string;
  createdAt: string;
  updatedAt: string;
  /** Task ids in order of arrival. */
  taskIds: string[];
}

export type ContinuedBy = 'in-reply-to' | 'references' | 'subject-tag';

export interface ConversationDecision {
  conversation: Conversation;
  isNew: boolean;
  continuedBy: ContinuedBy | null;
  /** Task ids of the conversation before this mail, oldest first, at most MAX_PREVIOUS_TASK_IDS. */
  previousTaskIds: string[];
  /** Set when the mail pointed at a conversation of other participants, which it may not join. */
  refusedConversationId: string | null;
}

/** The id of the conversation a mail starts: 12 hex digits of its task id. */
export function conversationIdFor(taskId: string): string {
  return taskId.slice(0, 12);
}

export function subjectTag(conversationId: string): string {
  return `[#${conversationId}]`;
}

/** Conversation ids tagged in a subject, in order. */
export function subjectTags(subject: string): string[] {
  return [...subject.matchAll(/\[#([0-9a-f]{12})\]/gi)].map((m) => m[1]!.toLowerCase());
}

/** The subject with the conversation's tag at its end, and no other conversation's tag. */
export function withSubjectTag(subject: string, conversationId: string): string {
  const others = subject.replace(/\s*\[#([0-9a-f]{12})\]/gi, (tag, id: string) => (id.toLowerCase() === conversationId ? tag : ''));
  return subjectTags(others).includes(conversationId) ? others.trim() : `${others} ${subjectTag(conversationId)}`.trim();
}

/**
 * The task a Message-ID belongs to: one inboxq sent (`<inboxq.<taskId>.<replyId>@domain>`) names
 * it; one it received derived it.
 */
export function taskIdOfMessageId(mailbox: string, messageId: string): string {
  const sent = /^<inboxq\.([0-9a-f]{32})\.[A-Za-z0-9._-]+@[^>]+>$/.exec(messageId.trim());
  return sent ? sent[1]! : deriveTaskId(mailbox, `mid:${messageId.trim()}`);
}

type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

function toConversationEntity(mailbox: string, c: Conversation): Entity {
  return {
    partitionKey: partitionKey(mailbox),
    rowKey: `c.${c.id}`,
    conversationId: c.id,
    participants: JSON.stringify(c.participants),
    subject: c.subject.slice(0, 1000),
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
    taskIds: JSON.stringify(c.taskIds.slice(-MAX_TASKS_PER_CONVERSATION)),
  };
}

function fromConversationEntity(e: TableEntityResult<Record<string, unknown>>): Conversation {
  const s = (k: string) => (typeof e[k] === 'string' ? (e[k] as string) : '');
  return {
    id: s('conversationId'),
    participants: JSON.parse(s('participants') || '[]') as string[],
    subject: s('subject'),
    createdAt: s('createdAt'),
    updatedAt: s('updatedAt'),
    taskIds: JSON.parse(s('taskIds') || '[]') as string[],
  };
}

/** Reads and writes one mailbox's conversations. */
export class ConversationStore {
  constructor(
    private readonly storage: StorageClients,
    readonly mailbox: string,
  ) {}

  private async table(): Promise<TableClient> {
    return this.storage.table(CONVERSATIONS_TABLE);
  }

  private async read<T>(what: string, rowKey: string, map: (e: TableEntityResult<Record<string, unknown>>) => T): Promise<T | undefined> {
    const table = await this.table();
    try {
      return map(await table.getEntity<Record<string, unknown>>(partitionKey(this.mailbox), rowKey));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return undefined;
      throw storageError(`Reading ${what} failed`, err, this.mailbox);
    }
  }

  get(conversationId: string): Promise<Conversation | undefined> {
    return this.read(`conversation ${conversationId}`, `c.${conversationId}`, fromConversationEntity);
  }

  /** Writes conversations (upserts, so a resumed run may write them again), 100 rows per transaction. */
  async save(conversations: Conversation[]): Promise<void> {
    if (conversations.length === 0) return;
    const rows = conversations.map((c) => toConversationEntity(this.mailbox, c));
    const table = await this.table();
    try {
      for (let i = 0; i < rows.length; i += 100) {
        await table.submitTransaction(rows.slice(i, i + 100).map((r) => ['upsert', r, 'Replace'] as const) as never);
      }
    } catch (err) {
      throw storageError('Recording conversations failed', err, this.mailbox);
    }
  }
}

export interface MailForConversation {
  taskId: string;
  /** The verified sender, lower-case. */
  sender: string;
  subject: string;
  messageId: string | null;
  inReplyTo: string | null;
  references: string[];
  receivedAt: string;
  /** True when the mail was claimed just now: nothing of it can have been written before, so its own conversation isn't looked up. */
  firstAttempt: boolean;
}

/**
 * Decides the conversations of a batch of accepted mails, in order, so a mail can continue a
 * conversation started earlier in the same batch; `commit` writes them all at once.
 */
export class ConversationBatch {
  private readonly conversations = new Map<string, Conversation | null>();
  /** Conversation ids of tasks, as read from the ledger or decided in this batch. */
  private readonly tasks = new Map<string, string | null>();
  private readonly dirty = new Set<string>();

  /** `conversationOfTask` reads a task's conversation id from its ledger row (null: no such task, or none yet). */
  constructor(
    private readonly store: ConversationStore,
    private readonly conversationOfTask: (taskId: string) => Promise<string | null>,
  ) {}

  private async conversation(id: string): Promise<Conversation | null> {
    if (!this.conversations.has(id)) this.conversations.set(id, (await this.store.get(id)) ?? null);
    return this.conversations.get(id)!;
  }

  /** The conversation of the mail a Message-ID names, if inboxq received or sent it. */
  private async conversationOfMessage(messageId: string): Promise<string | null> {
    const taskId = taskIdOfMessageId(this.store.mailbox, messageId);
    if (!this.tasks.has(taskId)) this.tasks.set(taskId, await this.conversationOfTask(taskId));
    return this.tasks.get(taskId)!;
  }

  async decide(mail: MailForConversation): Promise<ConversationDecision> {
    let found: { conversation: Conversation; by: ContinuedBy } | undefined;
    let refused: string | null = null;

    // 1. The thread's headers: the message it answers, then its references, the most recent first.
    const candidates: { id: string; by: ContinuedBy }[] = [];
    if (mail.inReplyTo) candidates.push({ id: mail.inReplyTo, by: 'in-reply-to' });
    for (const id of [...mail.references].reverse().slice(0, MAX_REFERENCES_LOOKED_UP)) candidates.push({ id, by: 'references' });
    for (const candidate of candidates) {
      if (mail.messageId && candidate.id.trim() === mail.messageId.trim()) continue;
      const conversationId = await this.conversationOfMessage(candidate.id);
      if (!conversationId) continue;
      const conversation = await this.conversation(conversationId);
      if (!conversation) continue;
      if (conversation.participants.includes(mail.sender)) found = { conversation, by: candidate.by };
      else refused = conversation.id;
      break;
    }
    // 2. The subject's tags, when the headers named nothing inboxq knows: the first of the sender's own.
    if (!found && refused === null) {
      for (const id of subjectTags(mail.subject).slice(0, MAX_TAGS_LOOKED_UP)) {
        const conversation = await this.conversation(id);
        if (!conversation) continue;
        if (conversation.participants.includes(mail.sender)) {
          found = { conversation, by: 'subject-tag' };
          refused = null;
          break;
        }
        refused ??= conversation.id;
      }
    }

    const ownId = conversationIdFor(mail.taskId);
    let conversation: Conversation;
    if (found && found.conversation.id !== ownId) {
      conversation = found.conversation;
    } else {
      // A new conversation (or this mail's own, when a resumed run finds what it wrote before).
      const earlier = mail.firstAttempt ? (this.conversations.get(ownId) ?? null) : await this.conversation(ownId);
      conversation = earlier ?? {
        id: ownId,
        participants: [mail.sender],
        subject: mail.subject,
        createdAt: mail.receivedAt,
        updatedAt: mail.receivedAt,
        taskIds: [],
      };
      this.conversations.set(ownId, conversation);
    }
    const isNew = conversation.id === ownId;
    const position = conversation.taskIds.indexOf(mail.taskId);
    const previousTaskIds = (position >= 0 ? conversation.taskIds.slice(0, position) : conversation.taskIds).slice(-MAX_PREVIOUS_TASK_IDS);
    if (position < 0) {
      conversation.taskIds = [...conversation.taskIds, mail.taskId].slice(-MAX_TASKS_PER_CONVERSATION);
      conversation.updatedAt = new Date().toISOString();
      this.dirty.add(conversation.id);
    }
    this.tasks.set(mail.taskId, conversation.id);
    return { conversation, isNew, continuedBy: isNew ? null : found!.by, previousTaskIds, refusedConversationId: refused };
  }

  /** Writes what the batch decided. */
  async commit(): Promise<void> {
    const changed = [...this.dirty].map((id) => this.conversations.get(id)!).filter(Boolean);
    await this.store.save(changed);
    this.dirty.clear();
  }
}
