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
 * (`taskIdOfReceived`), and a sent one carries its task id (`<inboxq.<taskId>.<replyId>@domain>`), so
 * either leads to the mail's ledger row, which has its conversation id.
 *
 * Stored in Table Storage (table inboxqConversations, partition = mailbox, row `c.<id>`): the
 * participants, the subject, and the task ids in order of arrival.
 *
 * A conversation's id (96 bits) is derived from the task id of its first mail, so a drain that
 * resumes after a crash decides the same way. A new conversation is written insert-if-absent: when
 * its id is already another conversation's (a collision, or someone searching for one), it takes
 * the next id of a fixed chain (shared/identity/ids.ts) and never overwrites the other row.
 */
import type { TableClient, TableEntityResult, TransactionAction } from '@azure/data-tables';
import pLimit from 'p-limit';

import { settleAll } from '../errors';
import { CONVERSATION_ID_CANDIDATES, conversationIdFor, subjectTags } from '../identity/ids';
import { partitionKey } from '../ledger/rows';
import { MAX_MESSAGE_ID_CHARS } from '../mail/parse';
import { boundedJsonList, clip } from '../storage/bounded';
import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';

export { conversationIdFor, subjectTag, subjectTags, withSubjectTag } from '../identity/ids';

export const CONVERSATIONS_TABLE = 'inboxqConversations';
/** The task ids a conversation row keeps (the oldest are dropped past it; a table property holds 64 KiB). */
export const MAX_TASKS_PER_CONVERSATION = 500;
/** The previous task ids a task carries, the most recent ones. */
export const MAX_PREVIOUS_TASK_IDS = 50;
/** References looked up per mail, the most recent first. */
const MAX_REFERENCES_LOOKED_UP = 20;
/** Subject tags looked up per mail, the first ones (a hostile subject may carry thousands). */
const MAX_TAGS_LOOKED_UP = 5;
/** Rows a batch's prefetch reads at once. */
const PREFETCH_CONCURRENCY = 16;

export interface Conversation {
  id: string;
  /** Verified sender addresses, lower-case, that may continue the conversation. */
  participants: string[];
  subject: string;
  createdAt: string;
  updatedAt: string;
  /** Task ids in order of arrival. */
  taskIds: string[];
  /** The row's etag as read; absent for a conversation this batch creates. */
  etag?: string;
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

type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

function toConversationEntity(mailbox: string, c: Conversation): Entity {
  return {
    partitionKey: partitionKey(mailbox),
    rowKey: `c.${c.id}`,
    conversationId: c.id,
    participants: boundedJsonList(c.participants, 4000, 320, 'first'),
    subject: clip(c.subject, 1000),
    createdAt: c.createdAt,
    updatedAt: c.updatedAt,
    taskIds: JSON.stringify(c.taskIds.slice(-MAX_TASKS_PER_CONVERSATION)),
  };
}

function fromConversationEntity(e: TableEntityResult<Record<string, unknown>>): Conversation {
  const s = (k: string) => (typeof e[k] === 'string' ? e[k] : '');
  return {
    id: s('conversationId'),
    participants: JSON.parse(s('participants') || '[]') as string[],
    subject: s('subject'),
    createdAt: s('createdAt'),
    updatedAt: s('updatedAt'),
    taskIds: JSON.parse(s('taskIds') || '[]') as string[],
    ...(e.etag ? { etag: e.etag } : {}),
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

  private async read<T>(
    what: string,
    rowKey: string,
    map: (e: TableEntityResult<Record<string, unknown>>) => T,
  ): Promise<T | undefined> {
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

  /**
   * Writes what a batch decided, 100 rows per transaction: a new conversation insert-if-absent, a
   * continued one guarded by the etag it was read with. When a transaction fails, the rows are
   * written one by one, so a conflict is settled for its row alone (see `saveOne`).
   */
  async save(changes: { conversation: Conversation; created: boolean }[]): Promise<void> {
    if (changes.length === 0) return;
    const table = await this.table();
    for (let i = 0; i < changes.length; i += 100) {
      const chunk = changes.slice(i, i + 100);
      try {
        const res = await table.submitTransaction(chunk.map((c) => this.action(c)));
        const etags = new Map(res.subResponses.map((sub) => [sub.rowKey, sub.etag]));
        for (const c of chunk) c.conversation.etag = etags.get(`c.${c.conversation.id}`) ?? c.conversation.etag;
      } catch (err) {
        if (!isConflict(err)) throw storageError('Recording conversations failed', err, this.mailbox);
        for (const c of chunk) await this.saveOne(c);
      }
    }
  }

  private action({ conversation, created }: { conversation: Conversation; created: boolean }): TransactionAction {
    const entity = toConversationEntity(this.mailbox, conversation);
    return created ? ['create', entity] : ['update', entity, 'Replace', { etag: conversation.etag ?? '*' }];
  }

  /**
   * One conversation. A new one whose id is taken by another conversation moves to the next id of
   * its chain (the object is changed in place, so every decision of the batch that holds it sees the
   * new id); one that a resumed run wrote before is merged. A continued one that changed since it
   * was read is read again and merged.
   */
  private async saveOne(change: { conversation: Conversation; created: boolean }): Promise<void> {
    const table = await this.table();
    const c = change.conversation;
    const first = c.taskIds[0] ?? '';
    for (let attempt = 0; attempt < CONVERSATION_ID_CANDIDATES + 2; attempt++) {
      try {
        const res = change.created
          ? await table.createEntity(toConversationEntity(this.mailbox, c))
          : await table.updateEntity(toConversationEntity(this.mailbox, c), 'Replace', { etag: c.etag ?? '*' });
        c.etag = res.etag;
        return;
      } catch (err) {
        if (!isConflict(err)) throw storageError(`Recording conversation ${c.id} failed`, err, this.mailbox);
      }
      const there = await this.get(c.id);
      if (there && (!change.created || there.taskIds.includes(first))) {
        // The same conversation, written by a resumed run or changed since it was read: merge.
        c.taskIds = [...there.taskIds, ...c.taskIds.filter((t) => !there.taskIds.includes(t))].slice(
          -MAX_TASKS_PER_CONVERSATION,
        );
        c.participants = there.participants;
        c.createdAt = there.createdAt;
        c.etag = there.etag;
        change.created = false;
        continue;
      }
      if (!change.created) {
        change.created = true;
        continue;
      }
      // Another conversation holds this id: never overwrite it, take the next one of the chain.
      const next = nextCandidate(first, c.id);
      if (next === null) break;
      c.id = next;
    }
    throw storageError(`Recording conversation ${c.id} failed`, new Error('every candidate id is taken'), this.mailbox);
  }
}

function isConflict(err: unknown): boolean {
  const code = tableErrorCode(err);
  const status = (err as { statusCode?: number }).statusCode;
  return code === 'EntityAlreadyExists' || code === 'UpdateConditionNotSatisfied' || status === 409 || status === 412;
}

/**
 * The Message-IDs a mail's thread headers name, in the order they are looked up: the message it
 * answers, then its references, the most recent first; never its own, nor one too long to be one.
 */
function candidatesOf(mail: MailForConversation): { id: string; by: ContinuedBy }[] {
  const candidates: { id: string; by: ContinuedBy }[] = [];
  if (mail.inReplyTo) candidates.push({ id: mail.inReplyTo, by: 'in-reply-to' });
  for (const id of [...mail.references].reverse().slice(0, MAX_REFERENCES_LOOKED_UP))
    candidates.push({ id, by: 'references' });
  return candidates.filter(
    (c) => c.id.length <= MAX_MESSAGE_ID_CHARS && !(mail.messageId && c.id.trim() === mail.messageId.trim()),
  );
}

function nextCandidate(taskId: string, current: string): string | null {
  for (let n = 0; n < CONVERSATION_ID_CANDIDATES - 1; n++)
    if (conversationIdFor(taskId, n) === current) return conversationIdFor(taskId, n + 1);
  return null;
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
  private readonly dirty = new Set<Conversation>();
  /** Conversations this batch starts (written insert-if-absent). */
  private readonly created = new Set<Conversation>();

  /**
   * `conversationOfTask` reads a task's conversation id from its ledger row (null: no such task, or
   * none yet); `taskIdsOf` names the tasks a Message-ID may belong to, the likeliest first (TaskIds).
   */
  constructor(
    private readonly store: ConversationStore,
    private readonly conversationOfTask: (taskId: string) => Promise<string | null>,
    private readonly taskIdsOf: (messageId: string) => string[],
  ) {}

  private async conversation(id: string): Promise<Conversation | null> {
    if (!this.conversations.has(id)) this.conversations.set(id, (await this.store.get(id)) ?? null);
    return this.conversations.get(id)!;
  }

  /** The conversation of the mail a Message-ID names, if inboxq received or sent it. */
  private async conversationOfMessage(messageId: string): Promise<string | null> {
    for (const taskId of this.taskIdsOf(messageId)) {
      if (!this.tasks.has(taskId)) this.tasks.set(taskId, await this.conversationOfTask(taskId));
      const found = this.tasks.get(taskId)!;
      if (found) return found;
    }
    return null;
  }

  /**
   * Reads at once (a few at a time) what the batch's decisions look up first, so that they don't
   * wait on Storage one after another: the ledger rows of each mail's most recent reference, then
   * the conversations those rows name, each mail's first subject tag and, for a resumed mail, the
   * first id of its own chain. `decide` finds them in hand and reads anything further (an older
   * reference, another tag) as before. A batch of follow-ups paid two reads in turn per mail.
   */
  async prefetch(mails: MailForConversation[]): Promise<void> {
    const limit = pLimit(PREFETCH_CONCURRENCY);
    const readAll = (reads: (() => Promise<void>)[]) => settleAll(reads.map((read) => limit(read)));
    // The tasks each mail's most recent reference may be.
    const referenced = mails.map((mail) => {
      const first = candidatesOf(mail)[0];
      return first ? this.taskIdsOf(first.id) : [];
    });
    const taskIds = new Set(referenced.flat().filter((taskId) => !this.tasks.has(taskId)));
    await readAll(
      [...taskIds].map((taskId) => async () => {
        this.tasks.set(taskId, await this.conversationOfTask(taskId));
      }),
    );
    const conversationIds = new Set<string>();
    for (const [n, mail] of mails.entries()) {
      const named = referenced[n]!.map((t) => this.tasks.get(t) ?? null);
      for (const id of named) if (id) conversationIds.add(id);
      if (!named.some(Boolean)) {
        const tag = subjectTags(mail.subject)[0];
        if (tag) conversationIds.add(tag);
      }
      if (!mail.firstAttempt) conversationIds.add(conversationIdFor(mail.taskId));
    }
    await readAll(
      [...conversationIds]
        .filter((id) => !this.conversations.has(id))
        .map((id) => async () => {
          this.conversations.set(id, (await this.store.get(id)) ?? null);
        }),
    );
  }

  async decide(mail: MailForConversation): Promise<ConversationDecision> {
    let found: { conversation: Conversation; by: ContinuedBy } | undefined;
    let refused: string | null = null;

    // 1. The thread's headers: the message it answers, then its references, the most recent first.
    for (const candidate of candidatesOf(mail)) {
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

    const own = found && found.conversation.taskIds[0] === mail.taskId;
    let conversation: Conversation;
    let isNew: boolean;
    if (found && !own) {
      conversation = found.conversation;
      isNew = false;
    } else {
      // A new conversation, or this mail's own when a resumed run finds what it wrote before.
      conversation =
        found?.conversation ??
        (mail.firstAttempt ? null : await this.ownConversation(mail.taskId)) ??
        this.create(mail);
      isNew = true;
    }
    const position = conversation.taskIds.indexOf(mail.taskId);
    const previousTaskIds = (position >= 0 ? conversation.taskIds.slice(0, position) : conversation.taskIds).slice(
      -MAX_PREVIOUS_TASK_IDS,
    );
    if (position < 0) {
      conversation.taskIds = [...conversation.taskIds, mail.taskId].slice(-MAX_TASKS_PER_CONVERSATION);
      conversation.updatedAt = new Date().toISOString();
      this.dirty.add(conversation);
    }
    this.tasks.set(mail.taskId, conversation.id);
    return {
      conversation,
      isNew,
      continuedBy: isNew ? null : found!.by,
      previousTaskIds,
      refusedConversationId: refused,
    };
  }

  /** The conversation a mail started in an earlier attempt, found along its id chain. */
  private async ownConversation(taskId: string): Promise<Conversation | null> {
    for (let n = 0; n < CONVERSATION_ID_CANDIDATES; n++) {
      const c = await this.conversation(conversationIdFor(taskId, n));
      if (c === null) return null;
      if (c.taskIds[0] === taskId) return c;
    }
    return null;
  }

  private create(mail: MailForConversation): Conversation {
    const conversation: Conversation = {
      id: conversationIdFor(mail.taskId),
      participants: [mail.sender],
      subject: mail.subject,
      createdAt: mail.receivedAt,
      updatedAt: mail.receivedAt,
      taskIds: [],
    };
    this.created.add(conversation);
    this.conversations.set(conversation.id, conversation);
    return conversation;
  }

  /** Writes what the batch decided: new conversations insert-if-absent, continued ones by etag. */
  async commit(): Promise<void> {
    const changed = [...this.dirty].map((c) => ({ conversation: c, created: this.created.has(c) }));
    await this.store.save(changed);
    this.dirty.clear();
    this.created.clear();
  }
}
