/**
 * The ledger: what inboxq knows about every mail and every reply, in Azure Table Storage.
 *
 * It is what makes each step resumable. A mail is claimed (insert-if-absent under its task id)
 * before anything else happens, and every later step updates that row with its etag, so a re-drained
 * mail or a redelivered queue message finds the row and carries on from its state instead of
 * starting over:
 *
 *   message: claimed -> queued | rejected | quarantined, then removed = true
 *   reply:   sending -> sent, or sending -> unsent -> sending ... when the server refused an attempt
 *
 * Two more rows per mailbox in inboxqMailboxes: the run lease (one drain at a time, lease.ts) and
 * the sending pace (Exchange allows 30 messages a minute per mailbox).
 *
 * Tables: inboxqMessages and inboxqReplies (partition = mailbox), inboxqMailboxes (one row per
 * mailbox: last run, counts, last error).
 */
import type { TableClient, TableEntityResult } from '@azure/data-tables';

import { StorageError } from '../errors';
import { boundedJsonList, clip } from '../storage/bounded';
import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';

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
  /** The conversation an accepted mail belongs to; null until it is decided (and for rejected mail). */
  conversationId: string | null;
  reasons: string[];
  receivedAt: string;
  claimedAt: string;
  updatedAt: string;
  /** Set when a later run found the mail gone from INBOX while the row said otherwise (a crash between the MOVE and its record). */
  reconciledAt?: string;
  etag?: string;
}

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
} as const;

type Entity = Record<string, unknown> & { partitionKey: string; rowKey: string };

function toMessageEntity(r: MessageRecord): Entity {
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
    conversationId: r.conversationId ?? '',
    reasons: boundedJsonList(r.reasons, ROW_BOUNDS.reasonsJson, ROW_BOUNDS.reason, 'first'),
    receivedAt: r.receivedAt,
    claimedAt: r.claimedAt,
    updatedAt: r.updatedAt,
    ...(r.reconciledAt ? { reconciledAt: r.reconciledAt } : {}),
  };
}

function fromMessageEntity(e: TableEntityResult<Record<string, unknown>>): MessageRecord {
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
    conversationId: s('conversationId') || null,
    reasons: JSON.parse(s('reasons') || '[]') as string[],
    receivedAt: s('receivedAt'),
    claimedAt: s('claimedAt'),
    updatedAt: s('updatedAt'),
    ...(s('reconciledAt') ? { reconciledAt: s('reconciledAt') } : {}),
    etag: e.etag,
  };
}

function toReplyEntity(r: ReplyRecord): Entity {
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
  };
}

function fromReplyEntity(e: TableEntityResult<Record<string, unknown>>): ReplyRecord {
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
    etag: e.etag,
  };
}

export type ClaimResult<T> = { created: true; record: T } | { created: false; record: T };
/** A row Storage refused to write for what it holds (StorageError.refusedThisRequest): that mail's problem alone. */
export interface RowRefused {
  refused: StorageError;
}
export type ClaimOutcome = ClaimResult<MessageRecord> | RowRefused;
export type UpdateOutcome = MessageRecord | RowRefused;

/** Runs a write of one row; a refusal of that row alone is returned, anything else thrown. */
async function perRow<T>(write: () => Promise<T>): Promise<T | RowRefused> {
  try {
    return await write();
  } catch (err) {
    if (err instanceof StorageError && err.refusedThisRequest) return { refused: err };
    throw err;
  }
}

export function isRefused(outcome: unknown): outcome is RowRefused {
  return typeof outcome === 'object' && outcome !== null && 'refused' in outcome;
}

export class Ledger {
  constructor(
    private readonly storage: StorageClients,
    private readonly mailboxForErrors?: string,
  ) {}

  private async table(name: string): Promise<TableClient> {
    return this.storage.table(name);
  }

  private async op<T>(what: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw storageError(`Ledger ${what} failed`, err, this.mailboxForErrors);
    }
  }

  /** Inserts the record if no row has its task id; otherwise returns the row that is there. */
  async claimMessage(record: MessageRecord): Promise<ClaimResult<MessageRecord>> {
    const table = await this.table(MESSAGES_TABLE);
    try {
      const res = await table.createEntity(toMessageEntity(record));
      return { created: true, record: { ...record, etag: res.etag } };
    } catch (err) {
      if (tableErrorCode(err) !== 'EntityAlreadyExists')
        throw storageError('Ledger claim of a mail failed', err, this.mailboxForErrors);
    }
    const existing = await this.getMessage(record.mailbox, record.taskId);
    if (!existing)
      throw storageError(
        'Ledger claim found a row that then vanished',
        new Error('EntityVanished'),
        this.mailboxForErrors,
      );
    return { created: false, record: existing };
  }

  /**
   * Claims several mails of one mailbox: one table transaction of inserts per 100 rows. When any row
   * already exists, or Storage refuses one row, the transaction commits nothing, and those mails are
   * claimed one by one: a row Storage refuses is that mail's outcome, not the batch's.
   */
  async claimMessages(records: MessageRecord[]): Promise<ClaimOutcome[]> {
    if (records.length === 0) return [];
    const table = await this.table(MESSAGES_TABLE);
    const out: ClaimOutcome[] = [];
    for (let i = 0; i < records.length; i += 100) {
      const chunk = records.slice(i, i + 100);
      try {
        const res = await table.submitTransaction(chunk.map((r) => ['create', toMessageEntity(r)] as const) as never);
        const etags = new Map(res.subResponses.map((sub) => [sub.rowKey, sub.etag]));
        for (const r of chunk) out.push({ created: true, record: { ...r, etag: etags.get(r.taskId) ?? '*' } });
      } catch (err) {
        const failure = storageError('Ledger claim of a batch of mails failed', err, this.mailboxForErrors);
        // A row that exists, or one Storage refuses for what it holds: the rows are claimed one by one.
        if (tableErrorCode(err) !== 'EntityAlreadyExists' && failure.status !== 409 && !failure.refusedThisRequest)
          throw failure;
        for (const r of chunk) out.push(await perRow(() => this.claimMessage(r)));
      }
    }
    return out;
  }

  /**
   * Applies changes to several claimed rows of one mailbox, each guarded by its etag, in table
   * transactions of up to 100. If a transaction fails, the rows are updated one by one, so the row
   * at fault is the one whose error is reported.
   */
  async updateMessages(changes: { record: MessageRecord; patch: Partial<MessageRecord> }[]): Promise<UpdateOutcome[]> {
    if (changes.length === 0) return [];
    const table = await this.table(MESSAGES_TABLE);
    const updatedAt = new Date().toISOString();
    const out: UpdateOutcome[] = [];
    for (let i = 0; i < changes.length; i += 100) {
      const chunk = changes
        .slice(i, i + 100)
        .map(({ record, patch }) => ({ record, next: { ...record, ...patch, updatedAt } }));
      try {
        const res = await table.submitTransaction(
          chunk.map(
            ({ record, next }) => ['update', toMessageEntity(next), 'Replace', { etag: record.etag ?? '*' }] as const,
          ) as never,
        );
        const etags = new Map(res.subResponses.map((sub) => [sub.rowKey, sub.etag]));
        for (const { next } of chunk) out.push({ ...next, etag: etags.get(next.taskId) ?? '*' });
      } catch {
        for (const { record, next } of chunk) out.push(await perRow(() => this.updateMessage(record, next)));
      }
    }
    return out;
  }

  async getMessage(mailbox: string, taskId: string): Promise<MessageRecord | undefined> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op('read of a mail', async () => {
      try {
        return fromMessageEntity(await table.getEntity(partitionKey(mailbox), taskId));
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) return undefined;
        throw err;
      }
    });
  }

  /** Updates a claimed row; fails (UpdateConditionNotSatisfied) if someone else changed it since it was read. */
  async updateMessage(record: MessageRecord, patch: Partial<MessageRecord>): Promise<MessageRecord> {
    const table = await this.table(MESSAGES_TABLE);
    const next: MessageRecord = { ...record, ...patch, updatedAt: new Date().toISOString() };
    return this.op(`update of task ${record.taskId}`, async () => {
      const res = await table.updateEntity(toMessageEntity(next), 'Replace', { etag: record.etag ?? '*' });
      return { ...next, etag: res.etag };
    });
  }

  /**
   * Marks several rows removed (and where the mail was when it left) in table transactions of up
   * to 100 rows: one request instead of one per mail. Merge, so nothing else in the row changes.
   */
  async markRemoved(
    mailbox: string,
    rows: { taskId: string; uid: number; uidValidity: string }[],
    options: { reconciled?: boolean } = {},
  ): Promise<void> {
    if (rows.length === 0) return;
    const table = await this.table(MESSAGES_TABLE);
    const pk = partitionKey(mailbox);
    const updatedAt = new Date().toISOString();
    const extra = options.reconciled ? { reconciledAt: updatedAt } : {};
    await this.op(`marking ${rows.length} mails removed`, async () => {
      for (let i = 0; i < rows.length; i += 100) {
        const actions = rows.slice(i, i + 100).map(
          (r) =>
            [
              'update',
              {
                partitionKey: pk,
                rowKey: r.taskId,
                removed: true,
                uid: r.uid,
                uidValidity: r.uidValidity,
                updatedAt,
                ...extra,
              },
              'Merge',
            ] as const,
        );
        await table.submitTransaction(actions as never);
      }
    });
  }

  async listMessages(mailbox: string): Promise<MessageRecord[]> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op('listing of mails', async () => {
      const out: MessageRecord[] = [];
      const filter = `PartitionKey eq '${partitionKey(mailbox).replace(/'/g, "''")}'`;
      for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } }))
        out.push(fromMessageEntity(e));
      return out;
    });
  }

  /**
   * Rows whose mail the ledger still believes in INBOX (`removed = false`), at most `max`. A
   * partition scan: the drain runs it only after a run that did not end cleanly.
   */
  async listUnremoved(mailbox: string, max: number): Promise<MessageRecord[]> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op('listing of mails not marked removed', async () => {
      const out: MessageRecord[] = [];
      const filter = `PartitionKey eq '${partitionKey(mailbox).replace(/'/g, "''")}' and removed eq false`;
      for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
        out.push(fromMessageEntity(e));
        if (out.length >= max) break;
      }
      return out;
    });
  }

  /** The row of the mail numbered `uid` under `uidValidity`, if one was claimed (a partition scan: for rare paths only). */
  async findByUid(mailbox: string, uidValidity: string, uid: number): Promise<MessageRecord | undefined> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op('lookup of a mail by UID', async () => {
      const filter = `PartitionKey eq '${partitionKey(mailbox).replace(/'/g, "''")}' and uid eq ${Math.trunc(uid)} and uidValidity eq '${uidValidity.replace(/'/g, "''")}'`;
      for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } }))
        return fromMessageEntity(e);
      return undefined;
    });
  }

  /** Mails claimed before `cutoff` (ISO date) and finished, oldest first, at most `max`. */
  async listMessagesClaimedBefore(mailbox: string, cutoff: string, max: number): Promise<MessageRecord[]> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op('listing of expired mails', async () => {
      const out: MessageRecord[] = [];
      const pk = partitionKey(mailbox).replace(/'/g, "''");
      const filter = `PartitionKey eq '${pk}' and claimedAt lt '${cutoff}' and removed eq true`;
      for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
        out.push(fromMessageEntity(e));
        if (out.length >= max) break;
      }
      return out;
    });
  }

  async deleteMessage(record: MessageRecord): Promise<void> {
    const table = await this.table(MESSAGES_TABLE);
    await this.op(`deletion of task ${record.taskId}`, async () => {
      try {
        await table.deleteEntity(partitionKey(record.mailbox), record.taskId);
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw err;
      }
    });
  }

  async claimReply(record: ReplyRecord): Promise<ClaimResult<ReplyRecord>> {
    const table = await this.table(REPLIES_TABLE);
    try {
      const res = await table.createEntity(toReplyEntity(record));
      return { created: true, record: { ...record, etag: res.etag } };
    } catch (err) {
      if (tableErrorCode(err) !== 'EntityAlreadyExists')
        throw storageError('Ledger claim of a reply failed', err, this.mailboxForErrors);
    }
    const existing = await this.getReply(record.mailbox, record.taskId, record.replyId);
    if (!existing)
      throw storageError(
        'Ledger claim found a reply row that then vanished',
        new Error('EntityVanished'),
        this.mailboxForErrors,
      );
    return { created: false, record: existing };
  }

  async getReply(mailbox: string, taskId: string, replyId: string): Promise<ReplyRecord | undefined> {
    const table = await this.table(REPLIES_TABLE);
    return this.op('read of a reply', async () => {
      try {
        return fromReplyEntity(await table.getEntity(partitionKey(mailbox), `${taskId}.${replyId}`));
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) return undefined;
        throw err;
      }
    });
  }

  async updateReply(record: ReplyRecord, patch: Partial<ReplyRecord>): Promise<ReplyRecord> {
    const table = await this.table(REPLIES_TABLE);
    const next: ReplyRecord = { ...record, ...patch };
    return this.op(`update of reply ${record.taskId}.${record.replyId}`, async () => {
      const res = await table.updateEntity(toReplyEntity(next), 'Replace', { etag: record.etag ?? '*' });
      return { ...next, etag: res.etag };
    });
  }

  /** Records the last run of a mailbox and adds its counts to the mailbox's totals. */
  async recordRun(mailbox: string, run: RunRecord): Promise<void> {
    const table = await this.table(MAILBOXES_TABLE);
    await this.op('record of the run', async () => {
      let totals: Record<string, number> = {};
      try {
        const current = await table.getEntity<Record<string, unknown>>('mailbox', partitionKey(mailbox));
        totals = JSON.parse(typeof current['totals'] === 'string' ? current['totals'] : '{}') as Record<string, number>;
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw err;
      }
      for (const [k, v] of Object.entries(run.counts)) totals[k] = (totals[k] ?? 0) + v;
      await table.upsertEntity(
        {
          partitionKey: 'mailbox',
          rowKey: partitionKey(mailbox),
          mailbox,
          lastRunId: run.runId,
          lastRunStartedAt: run.startedAt,
          lastRunFinishedAt: run.finishedAt,
          lastRunOutcome: run.outcome,
          lastRunCounts: JSON.stringify(run.counts),
          lastError: clip(run.error ?? '', 2000),
          ...(run.outcome === 'ok' ? { lastSuccessAt: run.finishedAt } : {}),
          totals: JSON.stringify(totals),
        },
        'Merge',
      );
    });
  }

  async getMailboxState(mailbox: string): Promise<Record<string, unknown> | undefined> {
    const table = await this.table(MAILBOXES_TABLE);
    return this.op('read of the mailbox state', async () => {
      try {
        return await table.getEntity<Record<string, unknown>>('mailbox', partitionKey(mailbox));
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) return undefined;
        throw err;
      }
    });
  }
}

const PACE_PARTITION = 'pace';

/**
 * Exchange Online accepts 30 messages a minute per mailbox over SMTP. A reply takes a slot in the
 * current minute before it is sent; when the minute is full the caller defers the reply.
 * Returns 0 when a slot was taken, otherwise the milliseconds until the next minute starts.
 */
export async function takeSendingSlot(
  storage: StorageClients,
  mailbox: string,
  perMinute: number,
  now: () => number = Date.now,
): Promise<number> {
  if (perMinute <= 0) return 0;
  const table = await storage.table(MAILBOXES_TABLE);
  const key = partitionKey(mailbox);
  for (let attempt = 0; attempt < 10; attempt++) {
    const t = now();
    const minute = Math.floor(t / 60_000);
    let row: { minute: number; count: number; etag?: string } | undefined;
    try {
      const e = await table.getEntity<{ minute: number; count: number }>(PACE_PARTITION, key);
      row = { minute: Number(e.minute), count: Number(e.count), etag: e.etag };
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404)
        throw storageError('Reading the sending pace failed', err, mailbox);
    }
    const count = row && row.minute === minute ? row.count : 0;
    if (count >= perMinute) return (minute + 1) * 60_000 - t;
    const entity = { partitionKey: PACE_PARTITION, rowKey: key, minute, count: count + 1 };
    try {
      if (row) await table.updateEntity(entity, 'Replace', { etag: row.etag ?? '*' });
      else await table.createEntity(entity);
      return 0;
    } catch (err) {
      const code = tableErrorCode(err);
      if (code === 'UpdateConditionNotSatisfied' || code === 'EntityAlreadyExists') continue;
      throw storageError('Taking a sending slot failed', err, mailbox);
    }
  }
  return 1000;
}
