/** Retention: the blobs and ledger rows of mail older than the retention setting, a batch per run. */
import { MAIL_CONTAINER } from '../contract/messages';
import { mailBlobPrefix, partitionKey } from '../ledger/rows';
import { BlobStore } from '../storage/blobs';
import type { DrainDeps } from './types';

/** Retention clean-up handles at most this many expired mails per run. */
const RETENTION_BATCH = 100;

export async function expireOldMail(deps: DrainDeps, now: () => number): Promise<number> {
  const { config, ledger } = deps;
  const cutoff = new Date(now() - config.drain.retentionDays * 86_400_000).toISOString();
  const old = await ledger.listMessagesClaimedBefore(config.mailbox, cutoff, RETENTION_BATCH);
  if (old.length === 0) return 0;
  const containers = [new BlobStore(deps.storage, config.mailContainer, config.mailbox)];
  // A mailbox of a deployment of several stored its mail in the shared container before it had
  // one of its own (docs/mailboxes.md, Moving over): that mail is expired there too, while any is left.
  const shared = new BlobStore(deps.storage, MAIL_CONTAINER, config.mailbox);
  if (config.mailContainer !== MAIL_CONTAINER && (await shared.hasAny(`${partitionKey(config.mailbox)}/`)))
    containers.push(shared);
  for (const row of old) {
    for (const blobs of containers) await blobs.deletePrefix(mailBlobPrefix(config.mailbox, row.taskId));
    await ledger.deleteMessage(row);
  }
  if (old.length > 0)
    deps.log.info('Expired stored mail past its retention', { mailbox: config.mailbox, count: old.length, cutoff });
  return old.length;
}
