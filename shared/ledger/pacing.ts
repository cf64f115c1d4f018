/**
 * The sending pace of a mailbox: one row per mailbox in inboxqMailboxes (partition `pace`) counts
 * the replies sent in the current minute, shared by every instance that sends for the mailbox.
 */
import type { TableClient } from '@azure/data-tables';

import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import { MAILBOXES_TABLE, partitionKey } from './rows';

const PACE_PARTITION = 'pace';

interface PaceRow {
  minute: number;
  count: number;
  /** Epoch ms until which Exchange stopped the mailbox sending (0: not stopped). */
  blockedUntil: number;
  etag?: string;
}

/** The mailbox's pace row, or undefined when none was written yet. */
async function readPaceRow(table: TableClient, mailbox: string): Promise<PaceRow | undefined> {
  try {
    const e = await table.getEntity<{ minute: number; count: number; blockedUntil?: number }>(
      PACE_PARTITION,
      partitionKey(mailbox),
    );
    return {
      minute: Number(e.minute),
      count: Number(e.count),
      blockedUntil: Number(e.blockedUntil ?? 0),
      etag: e.etag,
    };
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return undefined;
    throw storageError('Reading the sending pace failed', err, mailbox);
  }
}

/** The pace row, read while the caller does its other reads (the reply's task row and claim). */
export interface PaceRead {
  row: Promise<PaceRow | undefined>;
}

/** Starts reading the mailbox's pace row for `takeSendingSlot`; a failure is thrown there, if it is ever asked for. */
export function readPaceAhead(storage: StorageClients, mailbox: string): PaceRead {
  const row = storage.table(MAILBOXES_TABLE).then((table) => readPaceRow(table, mailbox));
  row.catch(() => undefined);
  return { row };
}

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
  ahead?: PaceRead,
): Promise<number> {
  const table = await storage.table(MAILBOXES_TABLE);
  const key = partitionKey(mailbox);
  for (let attempt = 0; attempt < 10; attempt++) {
    // The row read ahead is as good as a read now: a write on an older etag is refused, and read again.
    const row = attempt === 0 && ahead ? await ahead.row : await readPaceRow(table, mailbox);
    const t = now();
    const minute = Math.floor(t / 60_000);
    if (row && row.blockedUntil > t) return row.blockedUntil - t;
    if (perMinute <= 0) return 0;
    const count = row && row.minute === minute ? row.count : 0;
    if (count >= perMinute) return (minute + 1) * 60_000 - t;
    const entity = {
      partitionKey: PACE_PARTITION,
      rowKey: key,
      minute,
      count: count + 1,
      blockedUntil: row?.blockedUntil ?? 0,
    };
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

/**
 * Stops every instance sending for the mailbox until `until` (epoch ms): Exchange said it won't take
 * mail from it for a while (throttling, the daily quota, a full mailbox). `takeSendingSlot` answers
 * with the wait, so replies are deferred without connecting.
 */
export async function blockSending(storage: StorageClients, mailbox: string, until: number): Promise<void> {
  const table = await storage.table(MAILBOXES_TABLE);
  try {
    await table.upsertEntity(
      { partitionKey: PACE_PARTITION, rowKey: partitionKey(mailbox), blockedUntil: until },
      'Merge',
    );
  } catch (err) {
    throw storageError('Recording that sending is blocked failed', err, mailbox);
  }
}

/** Replies sent in the current minute, as the pace row counts them (for `inboxq status`). */
export async function readPace(
  storage: StorageClients,
  mailbox: string,
  now: () => number = Date.now,
): Promise<{ sentThisMinute: number; blockedUntil: number }> {
  const row = await readPaceRow(await storage.table(MAILBOXES_TABLE), mailbox);
  const t = now();
  return {
    sentThisMinute: row && row.minute === Math.floor(t / 60_000) ? row.count : 0,
    blockedUntil: row && row.blockedUntil > t ? row.blockedUntil : 0,
  };
}
