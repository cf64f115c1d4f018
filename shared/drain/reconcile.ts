/**
 * The ledger tells the truth after any crash. A run that dies (or whose connection breaks) after
 * its MOVE went through but before the rows say so leaves rows at `removed = false` for mail that is
 * no longer in INBOX; no later run would meet that mail again. The run after such a run (the lease
 * row says so, shared/ledger/lease.ts) compares those rows with INBOX and marks the ones whose mail
 * is gone as removed, with `reconciledAt`.
 *
 * Only rows numbered under the current UIDVALIDITY can be compared by UID; a row of an older
 * numbering whose mail is still in INBOX is found again by its claim when the mail is drained.
 */
import type { Ledger } from '../ledger/ledger';
import { UNKNOWN_LOCATION } from '../ledger/rows';

/** Rows looked at per reconciliation (the rest wait for the next one). */
const MAX_ROWS = 5000;

export async function reconcileLedger(
  ledger: Ledger,
  mailbox: string,
  uidValidity: bigint,
  inbox: Set<number>,
): Promise<number> {
  const rows = await ledger.listUnremoved(mailbox, MAX_ROWS);
  const gone = rows.filter((r) => r.uidValidity === uidValidity.toString() && !inbox.has(r.uid));
  await ledger.markRemoved(
    mailbox,
    gone.map((r) => ({ taskId: r.taskId, uid: r.uid, uidValidity: r.uidValidity, location: UNKNOWN_LOCATION })),
    { reconciled: true },
  );
  return gone.length;
}
