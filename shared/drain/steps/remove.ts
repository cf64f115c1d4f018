/**
 * Step 9, remove: every mail of the batch is recorded, so now it leaves INBOX (one command per
 * destination), and its row says where it was when it left. A crash between the two leaves rows
 * that say `removed = false` for mail that is gone: the next run reconciles them (reconcile.ts).
 */
import type { InboxqConfig } from '../../config/types';
import type { Ledger } from '../../ledger/ledger';
import { DELETED_LOCATION } from '../../ledger/rows';
import type { MailboxSession } from '../../mailbox/imap';

export interface Leaving {
  uid: number;
  destination: 'processed' | 'quarantine';
  /** The row to mark removed; null when the row is not this mail's to mark (a copy of a mail done before). */
  taskId: string | null;
}

export async function removeBatch(
  session: MailboxSession,
  ledger: Ledger,
  config: Pick<InboxqConfig, 'mailbox' | 'drain'>,
  leaving: Leaving[],
  moved: (uid: number, taskId: string | null) => Promise<void>,
): Promise<void> {
  await session.remove(
    leaving.filter((l) => l.destination === 'processed').map((l) => l.uid),
    config.drain.processedAction,
    config.drain.processedFolder,
  );
  await session.remove(
    leaving.filter((l) => l.destination === 'quarantine').map((l) => l.uid),
    'move',
    config.drain.quarantineFolder,
  );
  for (const l of leaving) await moved(l.uid, l.taskId);
  // Where each mail was when it left: after a renumbering (UIDVALIDITY change) it differs from the claim.
  const uidValidity = session.uidValidity.toString();
  await ledger.markRemoved(
    config.mailbox,
    leaving
      .filter((l) => l.taskId !== null)
      .map((l) => ({ taskId: l.taskId!, uid: l.uid, uidValidity, location: locationOf(l.destination, config.drain) })),
  );
}

/** Where a mail sent to `destination` is now, as its row says it (`location`). */
export function locationOf(destination: 'processed' | 'quarantine', drain: InboxqConfig['drain']): string {
  if (destination === 'quarantine') return drain.quarantineFolder;
  return drain.processedAction === 'delete' ? DELETED_LOCATION : drain.processedFolder;
}
