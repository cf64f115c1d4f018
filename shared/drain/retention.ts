/** Retention: the blobs and ledger rows of mail older than the retention setting, a batch per run. */
import { MAIL_CONTAINER } from '../contract/messages';
import { partitionKey } from '../ledger/rows';
import { BlobStore } from '../storage/blobs';
import type { DrainDeps } from './drain';

/** Retention clean-up handles at most this many expired mails per run. */
const RETENTION_BATCH = 100;

export async function expireOldMail(deps: DrainDeps, now: () => number): Promise<number> {
  const { config, ledger } = deps;
  const cutoff = new Date(now() - config.drain.retentionDays * 86_400_000).toISOString();
  const old = await ledger.listMessagesClaimedBefore(config.mailbox, cutoff, RETENTION_BATCH);
  const blobs = new BlobStore(deps.storage, MAIL_CONTAINER, config.mailbox);
  for (const row of old) {
    await blobs.deletePrefix(`${partitionKey(config.mailbox)}/${row.taskId}/`);
    await ledger.deleteMessage(row);
  }
  if (old.length > 0)
    deps.log.info('Expired stored mail past its retention', { mailbox: config.mailbox, count: old.length, cutoff });
  return old.length;
}
