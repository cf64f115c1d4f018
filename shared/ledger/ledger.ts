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
 * The rows themselves are in rows.ts; two more rows per mailbox in inboxqMailboxes are the run
 * lease (one drain at a time, lease.ts) and the sending pace (pacing.ts).
 *
 * Tables: inboxqMessages and inboxqReplies (partition = mailbox), inboxqMailboxes (one row per
 * mailbox: last run, counts, last error).
 */
import type { TableClient } from '@azure/data-tables';

import { StorageError } from '../errors';
import { clip } from '../storage/bounded';
import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import {
  fromMessageEntity,
  fromReplyEntity,
  MAILBOXES_TABLE,
  type MessageRecord,
  MESSAGES_TABLE,
  partitionKey,
  REPLIES_TABLE,
  type ReplyRecord,
  type RunRecord,
  toMessageEntity,
  toReplyEntity,
} from './rows';

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

/** A string as an OData literal in a table query: quoted, its quotes doubled. */
function odata(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
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
    rows: { taskId: string; uid: number; uidValidity: string; location?: string }[],
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
                ...(r.location ? { location: r.location } : {}),
                ...extra,
              },
              'Merge',
            ] as const,
        );
        await table.submitTransaction(actions as never);
      }
    });
  }

  /**
   * Rows of one mailbox's partition that meet `condition` (an OData filter; none: every row), at
   * most `max`: a scan of the partition, filtered by the service.
   */
  private async scanMessages(what: string, mailbox: string, condition: string, max: number): Promise<MessageRecord[]> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op(what, async () => {
      const out: MessageRecord[] = [];
      const filter = `PartitionKey eq ${odata(partitionKey(mailbox))}${condition ? ` and ${condition}` : ''}`;
      for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } })) {
        out.push(fromMessageEntity(e));
        if (out.length >= max) break;
      }
      return out;
    });
  }

  listMessages(mailbox: string): Promise<MessageRecord[]> {
    return this.scanMessages('listing of mails', mailbox, '', Infinity);
  }

  /**
   * Rows whose mail the ledger still believes in INBOX (`removed = false`), at most `max`. A
   * partition scan: the drain runs it only after a run that did not end cleanly.
   */
  listUnremoved(mailbox: string, max: number): Promise<MessageRecord[]> {
    return this.scanMessages('listing of mails not marked removed', mailbox, 'removed eq false', max);
  }

  /** The row of the mail numbered `uid` under `uidValidity`, if one was claimed (a partition scan: for rare paths only). */
  async findByUid(mailbox: string, uidValidity: string, uid: number): Promise<MessageRecord | undefined> {
    const condition = `uid eq ${Math.trunc(uid)} and uidValidity eq ${odata(uidValidity)}`;
    return (await this.scanMessages('lookup of a mail by UID', mailbox, condition, 1))[0];
  }

  /** Rows of mail that had UID `uid` in INBOX under any UIDVALIDITY, at most `max` (a partition scan). */
  findByUidAnyValidity(mailbox: string, uid: number, max: number): Promise<MessageRecord[]> {
    return this.scanMessages('lookup of a mail by UID', mailbox, `uid eq ${Math.trunc(uid)}`, max);
  }

  /** Mails claimed before `cutoff` (ISO date) and finished, oldest first, at most `max`. */
  listMessagesClaimedBefore(mailbox: string, cutoff: string, max: number): Promise<MessageRecord[]> {
    const condition = `claimedAt lt ${odata(cutoff)} and removed eq true`;
    return this.scanMessages('listing of expired mails', mailbox, condition, max);
  }

  /**
   * Rows of one mailbox whose property `name` equals `value` (Message-ID, sender, conversation id,
   * header hash): a scan of the mailbox's partition, filtered by the service, which returns the
   * matches page by page (a page ends after 1,000 rows or 5 s of the service's work). It stops at
   * `max` matches or at `deadline` (epoch ms) and says whether it saw the whole partition.
   */
  async findMessagesWhere(
    mailbox: string,
    name: 'messageId' | 'sender' | 'conversationId' | 'headerSha256',
    value: string,
    limits: { deadline: number; max: number },
  ): Promise<{ rows: MessageRecord[]; complete: boolean }> {
    const table = await this.table(MESSAGES_TABLE);
    return this.op(`search of mails by ${name}`, async () => {
      const rows: MessageRecord[] = [];
      const filter = `PartitionKey eq ${odata(partitionKey(mailbox))} and ${name} eq ${odata(value)}`;
      const pages = table
        .listEntities<Record<string, unknown>>({ queryOptions: { filter } })
        .byPage({ maxPageSize: 1000 });
      try {
        for await (const page of pages) {
          for (const e of page) rows.push(fromMessageEntity(e));
          if (rows.length >= limits.max || Date.now() >= limits.deadline)
            return { rows: rows.slice(0, limits.max), complete: false };
        }
      } catch (err) {
        if (tableErrorCode(err) !== 'TableNotFound') throw err; // read-only clients create nothing
      }
      return { rows, complete: true };
    });
  }

  /** Every reply row of one task (acknowledgement, answers, failure notice): a range of row keys. */
  async listReplies(mailbox: string, taskId: string): Promise<ReplyRecord[]> {
    const table = await this.table(REPLIES_TABLE);
    return this.op(`listing of the replies of task ${taskId}`, async () => {
      const out: ReplyRecord[] = [];
      // Row keys are `<taskId>.<replyId>`; '/' is the character after '.'.
      const filter = `PartitionKey eq ${odata(partitionKey(mailbox))} and RowKey ge ${odata(`${taskId}.`)} and RowKey lt ${odata(`${taskId}/`)}`;
      try {
        for await (const e of table.listEntities<Record<string, unknown>>({ queryOptions: { filter } }))
          out.push(fromReplyEntity(e));
      } catch (err) {
        if (tableErrorCode(err) !== 'TableNotFound') throw err; // read-only clients create nothing
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
          // A partial run (its budget ended with mail left) still drained: the mailbox is alive.
          ...(run.outcome !== 'failed'
            ? {
                lastSuccessAt: run.finishedAt,
                lastSuccessRunId: run.runId,
                lastSuccessOutcome: run.outcome,
                lastSuccessCounts: JSON.stringify(run.counts),
              }
            : {}),
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
