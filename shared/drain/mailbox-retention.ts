/**
 * Mailbox retention: Storage keeps mail for INBOXQ_MAIL_RETENTION_DAYS, and the mailbox must not
 * keep it forever either. Processed mail is moved to its folder, set-aside mail to the quarantine
 * folder, and every reply leaves a copy in Sent Items (Exchange keeps mail submitted over SMTP AUTH);
 * a full mailbox stops both delivery to it and sending from it. So after a run that emptied INBOX,
 * mail older than INBOXQ_MAILBOX_RETENTION_DAYS is deleted from those folders, a bounded batch per
 * folder per run. In Sent, only inboxq's own replies (their Message-ID is `<inboxq.…@domain>`),
 * never what a person sent from the mailbox. Exchange keeps deleted items in Recoverable Items for
 * its own retention period (14 days by default).
 */
import { ImapError } from '../errors';
import type { MailboxSession } from '../mailbox/imap';
import type { DrainDeps } from './types';

/** Mails deleted per folder per run at most. */
export const MAILBOX_RETENTION_BATCH = 500;
/**
 * A warm instance looks at the folders once an hour per mailbox, not on every run: an empty run
 * stays a handful of commands. (A new instance looks on its first run that empties INBOX.)
 */
export const MAILBOX_RETENTION_INTERVAL_MS = 3600_000;
const lastLooked = new Map<string, number>();

/** Whether this run should look at the folders (and remembers that it did). */
export function mailboxRetentionDue(mailbox: string, now: number): boolean {
  const last = lastLooked.get(mailbox);
  if (last !== undefined && now - last < MAILBOX_RETENTION_INTERVAL_MS) return false;
  lastLooked.set(mailbox, now);
  return true;
}

export interface MailboxRetentionResult {
  processed: number;
  quarantine: number;
  sent: number;
}

export async function expireMailboxMail(
  deps: DrainDeps,
  session: MailboxSession,
  now: () => number,
): Promise<MailboxRetentionResult> {
  const { config, log } = deps;
  const before = new Date(now() - config.drain.mailboxRetentionDays * 86_400_000);
  const result: MailboxRetentionResult = { processed: 0, quarantine: 0, sent: 0 };
  if (config.drain.processedAction === 'move')
    result.processed = await session.deleteOlderThan(config.drain.processedFolder, before, MAILBOX_RETENTION_BATCH);
  result.quarantine = await session.deleteOlderThan(config.drain.quarantineFolder, before, MAILBOX_RETENTION_BATCH);
  const sent = await session.sentFolder();
  if (sent) result.sent = await session.deleteOlderThan(sent, before, MAILBOX_RETENTION_BATCH, '<inboxq.');
  await session.select('INBOX').catch((err: unknown) => {
    if (!(err instanceof ImapError)) throw err;
  });
  if (result.processed + result.quarantine + result.sent > 0)
    log.info('Deleted mail past the mailbox retention', {
      mailbox: config.mailbox,
      before: before.toISOString(),
      ...result,
    });
  return result;
}
