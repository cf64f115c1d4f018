/**
 * The end of poison-mail detection (suspects.ts): a mail that was in the batch of POISON_RUNS
 * failed or killed runs in a row is not read again.
 */
import { taskIdsFor } from '../identity/task-key';
import { isRefused } from '../ledger/ledger';
import type { MailboxSession } from '../mailbox/imap';
import { requestAcknowledgements } from './steps/acknowledge';
import { claimRecord } from './steps/claim';
import { locationOf } from './steps/remove';
import type { DrainDeps, MailResult } from './types';

/**
 * A mail that was in the batch of POISON_RUNS failed runs in a row. If its row says everything but
 * its removal was done (queued, rejected or set aside before), it is only finished: removed, and
 * acknowledged if it started a conversation. Otherwise it is set aside to the quarantine folder
 * without being read again, its row (or a new one, under an identity of its UID) saying why.
 */
export async function setAsidePoison(
  deps: DrainDeps,
  session: MailboxSession,
  uid: number,
  runs: number,
  last: string,
): Promise<MailResult> {
  const { config, ledger, log } = deps;
  const mailbox = config.mailbox;
  const uidValidity = session.uidValidity.toString();
  const existing = await ledger.findByUid(mailbox, uidValidity, uid);
  if (existing && existing.state !== 'claimed') {
    if (config.acknowledgement.enabled) await requestAcknowledgements(deps.storage, config, [existing]);
    const destination = existing.state === 'quarantined' ? 'quarantine' : 'processed';
    if (destination === 'quarantine') await session.remove([uid], 'move', config.drain.quarantineFolder);
    else await session.remove([uid], config.drain.processedAction, config.drain.processedFolder);
    const location = locationOf(destination, config.drain);
    await ledger.markRemoved(mailbox, [{ taskId: existing.taskId, uid, uidValidity, location }]);
    log.warn(`Mail in the batch of ${runs} failed drain runs was already ${existing.state}; it was only removed`, {
      mailbox,
      uid,
      taskId: existing.taskId,
    });
    const outcome = existing.state === 'queued' ? 'queued' : existing.state === 'rejected' ? 'rejected' : 'quarantined';
    return { uid, taskId: existing.taskId, outcome, reasons: existing.reasons, resumed: true };
  }
  const reason = `it was in the batch of ${runs} drain runs in a row that failed or were stopped (the last: ${last}); it was set aside unread, moved to ${config.drain.quarantineFolder}, so the rest of the inbox could drain`;
  let record;
  if (existing) {
    record = await ledger.updateMessage(existing, { state: 'quarantined', reasons: [reason] });
  } else {
    const identity = `uid:${uidValidity}:${uid}`;
    const bare = {
      ...claimRecord(
        {
          entry: { uid, size: 0, internalDate: undefined },
          header: Buffer.alloc(0),
          headerSha256: '',
          source: undefined,
          judged: { kind: 'malformed', reason },
          accepted: false,
          identity,
          taskId: (await taskIdsFor(deps)).of(identity),
        },
        mailbox,
        session.uidValidity,
        new Date().toISOString(),
      ),
      state: 'quarantined' as const,
      reasons: [reason],
    };
    const [claim] = await ledger.claimMessages([bare]);
    if (!claim || isRefused(claim)) throw claim?.refused ?? new Error('the ledger returned no claim');
    record = claim.record;
  }
  await session.remove([uid], 'move', config.drain.quarantineFolder);
  await ledger.markRemoved(mailbox, [
    { taskId: record.taskId, uid, uidValidity, location: config.drain.quarantineFolder },
  ]);
  log.warn(`Mail set aside after ${runs} failed drain runs with it in the batch`, {
    mailbox,
    uid,
    taskId: record.taskId,
  });
  return { uid, taskId: record.taskId, outcome: 'quarantined', reasons: [reason], resumed: false };
}
