/**
 * `inboxq release`: puts mail that was set aside (quarantine) or rejected back into INBOX, after
 * the cause was fixed, for the next drain run. The mail keeps its identity: the drain meets its row
 * again and drains it from the start (shared/drain/batch.ts, `released`), so it gets the verdict of
 * the policy as it is now and, when accepted, becomes one task.
 *
 * For each mail: its row is read (by task id, or by the UID it had in INBOX), the mail is found in
 * the folder the row says (by Message-ID or arrival day, confirmed by the hash of its header
 * section), moved to INBOX, and then the row records it (`releasedAt`, `location: INBOX`, a reason).
 * The move comes first: a row that says INBOX for a mail still in quarantine would be a lie, while
 * a moved mail whose row was not updated is still released by the drain.
 */
import { createHash } from 'node:crypto';

import type { InboxqConfig } from '../config/types';
import type { Ledger } from '../ledger/ledger';
import { DELETED_LOCATION, type MessageRecord, UNKNOWN_LOCATION } from '../ledger/rows';
import type { MailboxSession } from '../mailbox/imap';
import { RETENTION_DELETED, whereNow } from './trace';

export interface ReleaseOutcome {
  target: string;
  taskId: string | null;
  released: boolean;
  /** Where the mail was taken from, or why it was not released. */
  detail: string;
}

export interface ReleaseSource {
  config: Pick<InboxqConfig, 'mailbox' | 'drain'>;
  ledger: Ledger;
  /** Opens a session on the mailbox (only when there is something to move). */
  openSession: () => Promise<MailboxSession>;
  now?: () => number;
}

/** The row a target names: 32 hex digits a task id, a number the UID the mail had in INBOX. */
async function rowOf(source: ReleaseSource, target: string): Promise<MessageRecord | string> {
  const { ledger, config } = source;
  if (/^[0-9a-f]{32}$/i.test(target)) {
    return (
      (await ledger.getMessage(config.mailbox, target.toLowerCase())) ??
      `no mail of ${config.mailbox} has task id ${target}`
    );
  }
  if (/^[1-9][0-9]{0,9}$/.test(target)) {
    const rows = await ledger.findByUidAnyValidity(config.mailbox, Number(target), 3);
    if (rows.length === 1) return rows[0]!;
    if (rows.length === 0) return `no mail of ${config.mailbox} had UID ${target} in INBOX`;
    return `UID ${target} names several mails of ${config.mailbox} (the inbox was renumbered); release them by task id: ${rows.map((r) => r.taskId).join(', ')}`;
  }
  return `"${target}" is neither a task id (32 hex digits) nor a UID`;
}

/** Why a row's mail can't be released, or undefined. */
function refusal(row: MessageRecord, drain: InboxqConfig['drain']): string | undefined {
  if (row.state === 'queued' || row.state === 'failed')
    return `task ${row.taskId} was accepted and queued; there is nothing to release (to answer it again, a worker replies to the task)`;
  if (row.state === 'claimed' || !row.removed)
    return `task ${row.taskId} is still in INBOX (not finished); the next drain run takes it`;
  const where = whereNow(row, drain);
  if (where === 'INBOX')
    return `task ${row.taskId} was released already (${row.releasedAt ?? ''}); the next drain run takes it`;
  if (where === DELETED_LOCATION)
    return `task ${row.taskId} was deleted from the mailbox (INBOXQ_PROCESSED_ACTION=delete); ask the sender to send it again`;
  if (where === RETENTION_DELETED)
    return `task ${row.taskId} was deleted from the mailbox after INBOXQ_MAILBOX_RETENTION_DAYS; ask the sender to send it again`;
  if (where === UNKNOWN_LOCATION)
    return `task ${row.taskId} left INBOX without a record of where it went; move it back to INBOX by hand`;
  if (!row.headerSha256)
    return `task ${row.taskId} was set aside unread, so it can't be recognised in ${where}; move it back to INBOX by hand`;
  return undefined;
}

export async function releaseMails(source: ReleaseSource, targets: string[]): Promise<ReleaseOutcome[]> {
  const { config, ledger } = source;
  const now = source.now ?? Date.now;
  const out: ReleaseOutcome[] = [];
  let session: MailboxSession | undefined;
  try {
    for (const target of targets) {
      const row = await rowOf(source, target);
      if (typeof row === 'string') {
        out.push({ target, taskId: null, released: false, detail: row });
        continue;
      }
      const refused = refusal(row, config.drain);
      if (refused) {
        out.push({ target, taskId: row.taskId, released: false, detail: refused });
        continue;
      }
      const folder = whereNow(row, config.drain);
      session ??= await source.openSession();
      const uids = await session.findMail(folder, row, (h) => createHash('sha256').update(h).digest('hex'));
      if (uids.length === 0) {
        out.push({
          target,
          taskId: row.taskId,
          released: false,
          detail: `task ${row.taskId} is no longer in ${folder} (moved or deleted by someone); nothing was changed`,
        });
        continue;
      }
      // Copies with the same header section are one mail to the drain: one goes back.
      await session.moveBetween(folder, uids[0]!, 'INBOX');
      const at = new Date(now()).toISOString();
      await ledger.updateMessage(row, {
        releasedAt: at,
        location: 'INBOX',
        reasons: [...row.reasons, `released from ${folder} to INBOX with inboxq release (${at})`],
      });
      out.push({ target, taskId: row.taskId, released: true, detail: `moved from ${folder} back to INBOX` });
    }
  } finally {
    await session?.close();
  }
  return out;
}
