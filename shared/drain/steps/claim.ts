/**
 * Step 3, claim: a ledger row for every mail before anything else happens to it (insert-if-absent
 * under its task id). A row that was there already means a resumed run, or another copy of a mail.
 *
 * Every value of the row is bounded (ROW_BOUNDS), so Storage should take any mail's row; if it
 * refuses one all the same, that mail is claimed with a row that keeps only its identifiers and is
 * set aside. Only a Storage failure as a whole ends the run.
 */
import type { TaskIds } from '../../identity/task-key';
import { isRefused, type Ledger } from '../../ledger/ledger';
import type { MessageRecord } from '../../ledger/rows';
import { type ClaimedMail, type JudgedMail, ok, type PerMail } from '../mail';

export function claimRecord(mail: JudgedMail, mailbox: string, uidValidity: bigint, nowIso: string): MessageRecord {
  const parsed = mail.judged.kind === 'mail' ? mail.judged.parsed : undefined;
  return {
    mailbox,
    taskId: mail.taskId,
    state: 'claimed',
    removed: false,
    identity: mail.identity,
    messageId: parsed?.messageId ?? null,
    headerSha256: mail.headerSha256,
    uid: mail.entry.uid,
    uidValidity: uidValidity.toString(),
    sender: null,
    subject: parsed?.subject ?? '',
    inReplyTo: parsed?.inReplyTo ?? null,
    references: parsed?.references ?? [],
    ...(parsed?.threadIndex ? { threadIndex: parsed.threadIndex } : {}),
    conversationId: null,
    reasons: [],
    receivedAt: (mail.entry.internalDate ?? new Date(nowIso)).toISOString(),
    claimedAt: nowIso,
    updatedAt: nowIso,
  };
}

/**
 * A mail claimed before the deployment had its task id key keeps the task id it had then: its row
 * (same identity) found under the id of before, while such rows may still be there (task-key.ts).
 * One point read per mail, at the same time, only in that window.
 */
export async function adoptIdsOfBefore(ledger: Ledger, taskIds: TaskIds, mails: JudgedMail[]): Promise<JudgedMail[]> {
  const now = Date.now();
  if (mails.every((m) => taskIds.before(m.identity, now) === null)) return mails;
  return Promise.all(
    mails.map(async (mail) => {
      const before = taskIds.before(mail.identity, now);
      if (!before) return mail;
      const row = await ledger.getMessage(taskIds.mailbox, before);
      return row && row.identity === mail.identity ? { ...mail, taskId: before } : mail;
    }),
  );
}

export async function claimBatch(
  ledger: Ledger,
  mails: JudgedMail[],
  mailbox: string,
  uidValidity: bigint,
): Promise<PerMail<ClaimedMail>[]> {
  const nowIso = new Date().toISOString();
  const records = mails.map((m) => claimRecord(m, mailbox, uidValidity, nowIso));
  const claims = await ledger.claimMessages(records);
  const out: PerMail<ClaimedMail>[] = [];
  for (const [n, mail] of mails.entries()) {
    const claim = claims[n]!;
    if (!isRefused(claim)) {
      out.push(ok({ ...mail, record: claim.record, resumed: !claim.created }));
      continue;
    }
    // Storage refused this row for what it holds: keep only what identifies the mail, and set it aside.
    const reason = `its ledger row was refused by Storage (${claim.refused.summary}); it was kept with its identifiers only and set aside`;
    const bare: MessageRecord = {
      ...records[n]!,
      messageId: null,
      subject: '',
      inReplyTo: null,
      references: [],
      threadIndex: undefined,
      reasons: [reason],
    };
    const again = (await ledger.claimMessages([bare]))[0]!;
    if (isRefused(again)) throw again.refused;
    out.push({
      ok: false,
      uid: mail.entry.uid,
      failure: { kind: 'set-aside', reason },
      record: again.record,
      taskId: mail.taskId,
    });
  }
  return out;
}
