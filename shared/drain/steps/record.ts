/**
 * Step 7, record: what the batch decided for each mail, in its ledger row (table transactions of
 * up to 100 rows, each guarded by its etag). Rows are bounded, so Storage should take them; a row
 * it refuses all the same holds its mail in INBOX for the next run (where poison-mail detection
 * sets it aside if it keeps failing).
 */
import { isRefused, type Ledger } from '../../ledger/ledger';
import type { MessageRecord } from '../../ledger/rows';
import { ok, type PerMail } from '../mail';

export async function recordBatch(
  ledger: Ledger,
  changes: { uid: number; record: MessageRecord; patch: Partial<MessageRecord> }[],
): Promise<PerMail<MessageRecord>[]> {
  const recorded = await ledger.updateMessages(changes.map((c) => ({ record: c.record, patch: c.patch })));
  return changes.map((c, n) => {
    const r = recorded[n]!;
    if (!isRefused(r)) return ok(r);
    return {
      ok: false,
      uid: c.uid,
      taskId: c.record.taskId,
      record: c.record,
      failure: {
        kind: 'held',
        reason: `its ledger row could not be recorded (${r.refused.summary}); it stays in INBOX for the next run`,
      },
    };
  });
}
