/**
 * One batch of a drain run, as named steps (each in steps/):
 *
 *   read -> judge -> claim -> conversations -> task -> queue -> record -> acknowledge -> remove
 *
 * Each mail keeps its own order of steps (claim, then task, then record, then removal); across mails
 * the IMAP commands are batched (one FETCH of small sources, one of large headers, one MOVE per
 * destination) and the Storage writes run concurrently, a few at a time.
 *
 * Every step answers per mail (mail.ts): the mail goes on, or it is settled by a failure of its own
 * (set aside to the quarantine folder with its reason, or held in INBOX). Only a failure of the
 * mailbox, of Storage as a whole or of the credential is thrown, and ends the run.
 */
import pLimit from 'p-limit';

import type { TaskMessage } from '../contract/messages';
import type { MessageRecord } from '../ledger/rows';
import type { MailboxEntry, MailboxSession } from '../mailbox/imap';
import { inboxqMetrics } from '../telemetry/metrics';
import type { DrainDeps, DrainStep } from './drain';
import {
  type ClaimedMail,
  type ConversedMail,
  type Failed,
  type JudgedMail,
  type MailOutcome,
  ok,
  partition,
  perMail,
} from './mail';
import { requestAcknowledgements } from './steps/acknowledge';
import { claimBatch } from './steps/claim';
import { decideConversations } from './steps/conversations';
import { judgeOne } from './steps/judge';
import { queuedPatch, queueTask } from './steps/queue';
import { readBatch, SMALL_MAIL_BYTES } from './steps/read';
import { recordBatch } from './steps/record';
import { removeBatch } from './steps/remove';
import { buildTask } from './steps/task';

/** Storage writes in flight at once within a batch. */
const STORAGE_CONCURRENCY = 16;

export interface MailResult {
  uid: number;
  taskId: string | null;
  outcome: MailOutcome;
  reasons: string[];
  resumed: boolean;
}

/** What the batch will do with a mail once its steps are over. */
interface Settlement {
  uid: number;
  taskId: string;
  resumed: boolean;
  record: MessageRecord;
  /** The change its ledger row gets in the record step (none for a mail done before). */
  patch?: Partial<MessageRecord>;
  destination: 'processed' | 'quarantine' | 'stay';
  /** The outcome, when it is not read from the row's state. */
  outcome?: MailOutcome;
  /** When the row is another mail's (a copy with different headers): it is not marked removed. */
  foreignRow?: boolean;
  /** The verdict's code, for a rejected mail. */
  code?: string;
}

export async function drainBatch(
  deps: DrainDeps,
  session: MailboxSession,
  entries: MailboxEntry[],
): Promise<{ results: MailResult[]; deferred: MailboxEntry[] }> {
  const { config, ledger, log, storage } = deps;
  const mailbox = config.mailbox;
  const step = async (s: DrainStep, uid: number, taskId?: string) => deps.onStep?.(s, { uid, taskId });
  const results: MailResult[] = [];
  const settled: Settlement[] = [];
  const logProps = (s: { uid: number; taskId: string; record: MessageRecord }) => ({
    mailbox,
    taskId: s.taskId,
    uid: s.uid,
    messageId: s.record.messageId,
  });

  // 1. read
  const { read, gone } = await readBatch(session, entries);
  for (const uid of gone)
    results.push({
      uid,
      taskId: null,
      outcome: 'gone',
      reasons: ['the mail left the inbox before it was read'],
      resumed: false,
    });
  for (const mail of read) await step('fetched', mail.entry.uid);

  // 2. judge, from the header section alone. Two copies of one mail in a batch would share a
  // ledger row: the second waits for the next batch.
  const judged: JudgedMail[] = [];
  const deferred: MailboxEntry[] = [];
  const seen = new Set<string>();
  for (const mail of read) {
    const j = judgeOne(mail, mailbox, config.senderPolicy);
    if (seen.has(j.taskId)) deferred.push(mail.entry);
    else {
      seen.add(j.taskId);
      judged.push(j);
    }
  }

  // 3. claim
  const claims = partition(await claimBatch(ledger, judged, mailbox, session.uidValidity));
  for (const f of claims.failed) settleFailure(f);
  for (const mail of claims.going) await step('claimed', mail.entry.uid, mail.taskId);

  const toBuild: ClaimedMail[] = [];
  /** Notes of mails a person moved back to INBOX, kept in their rows' reasons. */
  const notes = new Map<number, string>();
  for (const claimed of claims.going) {
    const mail = released(claimed);
    if (mail !== claimed) notes.set(mail.entry.uid, mail.record.reasons[0]!);
    const { record, judged: j } = mail;
    const base = { uid: mail.entry.uid, taskId: mail.taskId, resumed: mail.resumed, record };
    if (mail.resumed && record.headerSha256 !== mail.headerSha256 && record.state !== 'claimed') {
      // Same Message-ID from the same accepted sender, different headers: not the mail we processed.
      // Never dropped, never run twice.
      const reason = `another mail with Message-ID ${record.messageId} was already processed as task ${mail.taskId}; this copy differs and was set aside`;
      settled.push({
        ...base,
        record: { ...record, reasons: [reason] },
        destination: 'quarantine',
        outcome: 'duplicate',
        foreignRow: true,
      });
      log.warn('Mail reuses a processed Message-ID with different headers; moved to quarantine', logProps(base));
    } else if (record.state !== 'claimed') {
      // Done before (a resumed run, or another copy of a processed mail): only its removal is left.
      settled.push({
        ...base,
        destination: record.state === 'quarantined' ? 'quarantine' : 'processed',
        ...(record.removed ? { outcome: 'duplicate' as const } : {}),
      });
    } else if (mail.accepted) {
      toBuild.push(mail);
    } else if (j.kind === 'malformed') {
      settled.push({
        ...base,
        patch: {
          state: 'quarantined',
          reasons: [`the mail is malformed: ${j.reason}; it was moved to ${config.drain.quarantineFolder}`],
        },
        destination: 'quarantine',
      });
    } else {
      settled.push({
        ...base,
        patch: { state: 'rejected', sender: j.verdict.sender, reasons: j.verdict.reasons },
        destination: 'processed',
        code: j.verdict.code,
      });
    }
  }

  // 4. conversations
  const conversed = await decideConversations(deps, mailbox, toBuild);

  // 5. task: small mails from memory, concurrently; a large one streamed over the session, which
  // carries one command at a time. 6. queue: each task as soon as it is built.
  const limit = pLimit(STORAGE_CONCURRENCY);
  const queueOne = async (mail: ConversedMail, task: TaskMessage): Promise<void> => {
    await step('blobs-written', mail.entry.uid, mail.taskId);
    const sent = await queueTask(storage, config.tasksQueue, mailbox, mail, task);
    if (!sent.ok) return settleFailure({ ...sent, record: mail.record, taskId: mail.taskId });
    await step('queued', mail.entry.uid, mail.taskId);
    const patch = queuedPatch(mail, task);
    settled.push({
      uid: mail.entry.uid,
      taskId: mail.taskId,
      resumed: mail.resumed,
      record: mail.record,
      patch,
      destination: 'processed',
    });
    log.info('Mail queued as a task', {
      mailbox,
      taskId: mail.taskId,
      uid: mail.entry.uid,
      messageId: mail.record.messageId,
      sender: patch.sender,
      attachments: task.attachments.length,
      bytes: mail.entry.size,
    });
  };
  const buildOne = async (mail: ConversedMail): Promise<void> => {
    const j = mail.judged.kind === 'mail' ? mail.judged : undefined;
    const built = await perMail(mail.entry.uid, 'storing the mail and building its task', async () =>
      ok(
        await buildTask(storage, {
          mailbox,
          taskId: mail.taskId,
          record: mail.record,
          header: j!.parsed,
          sender: j!.verdict.sender ?? '',
          conversation: mail.conversation,
          source: mail.source
            ? { kind: 'buffer', data: mail.source }
            : { kind: 'stream', stream: await session.download(mail.entry.uid) },
        }),
      ),
    );
    if (!built.ok)
      return settleFailure({ ...built, record: mail.record, taskId: mail.taskId }, j?.verdict.sender ?? null);
    await queueOne(mail, built.mail);
  };
  await session.keepAlive(async () => {
    await settleAll(
      conversed.filter((m) => m.source || m.entry.size <= SMALL_MAIL_BYTES).map((m) => limit(() => buildOne(m))),
    );
    for (const mail of conversed.filter((m) => !m.source && m.entry.size > SMALL_MAIL_BYTES)) await buildOne(mail);
  });

  // 7. record: the batch's rows in one transaction; a row Storage refuses holds its mail in INBOX.
  const patched = settled.filter((s) => s.patch);
  const withNote = (s: Settlement): Partial<MessageRecord> => {
    const note = notes.get(s.uid);
    return note ? { ...s.patch, reasons: [...(s.patch!.reasons ?? []), note] } : s.patch!;
  };
  const recorded = await recordBatch(
    ledger,
    patched.map((s) => ({ uid: s.uid, record: s.record, patch: withNote(s) })),
  );
  for (const [n, s] of patched.entries()) {
    const r = recorded[n]!;
    if (!r.ok) {
      s.destination = 'stay';
      s.outcome = 'held';
      s.record = { ...s.record, reasons: [r.failure.reason] };
      log.warn(`Mail held in the inbox: ${r.failure.reason}`, logProps(s));
      continue;
    }
    s.record = r.mail;
    const rec = r.mail;
    if (rec.state === 'rejected') {
      inboxqMetrics.rejected(mailbox, s.code ?? 'unknown');
      log.warn(`Mail rejected: ${rec.reasons.join('; ')}`, { ...logProps(s), sender: rec.sender, code: s.code });
    } else if (rec.state === 'quarantined') {
      const malformed = rec.reasons[0]?.startsWith('the mail is malformed');
      log.warn(
        malformed
          ? 'Mail is malformed; moving it to quarantine'
          : `Mail set aside; moving it to ${config.drain.quarantineFolder}`,
        { ...logProps(s), reason: rec.reasons[0] },
      );
    }
    await step('recorded', s.uid, s.taskId);
  }

  // 8. acknowledge
  if (config.acknowledgement.enabled) {
    await requestAcknowledgements(
      storage,
      mailbox,
      settled.filter((s) => s.destination !== 'stay' && !s.foreignRow).map((s) => s.record),
    );
  }

  // 9. remove
  const leaving = settled.filter((s) => s.destination !== 'stay');
  await removeBatch(
    session,
    ledger,
    config,
    leaving.map((s) => ({
      uid: s.uid,
      destination: s.destination as 'processed' | 'quarantine',
      taskId: s.record.removed || s.foreignRow ? null : s.taskId,
    })),
    async (uid, taskId) => step('moved', uid, taskId ?? undefined),
  );
  for (const s of settled) {
    if (s.outcome === 'duplicate' && s.record.removed)
      log.info('Mail was already processed; removed the copy left in the inbox', logProps(s));
    else if (!s.outcome) await step('removed', s.uid, s.taskId);
    const state = s.record.state;
    results.push({
      uid: s.uid,
      taskId: s.taskId,
      outcome: s.outcome ?? (state === 'queued' ? 'queued' : state === 'rejected' ? 'rejected' : 'quarantined'),
      reasons: s.record.reasons,
      resumed: s.resumed,
    });
  }
  return { results: results.sort((a, b) => a.uid - b.uid), deferred };

  /** A mail a step set aside (quarantine, with the reason in its row) or held. */
  function settleFailure(f: Failed, sender: string | null = null): void {
    if (!f.record || !f.taskId) throw new Error('a mail failed before it had a ledger row'); // claim is the first step that can fail per mail
    const reason =
      f.failure.kind === 'set-aside'
        ? `${f.failure.reason}; it was moved to ${config.drain.quarantineFolder}`
        : f.failure.reason;
    log.warn(`Mail ${f.failure.kind === 'set-aside' ? 'set aside' : 'held'}: ${f.failure.reason}`, {
      mailbox,
      taskId: f.taskId,
      uid: f.uid,
    });
    settled.push({
      uid: f.uid,
      taskId: f.taskId,
      resumed: false,
      record: f.record,
      ...(f.failure.kind === 'set-aside'
        ? { patch: { state: 'quarantined' as const, sender, reasons: [reason] }, destination: 'quarantine' as const }
        : { destination: 'stay' as const, outcome: 'held' as const }),
    });
  }
}

/**
 * A mail set aside earlier that a person moved back to INBOX: its row says `quarantined` and
 * removed. It is drained again from the start under the same identity (the row keeps why it was
 * set aside, and says it came back). A copy of a processed mail with other headers is not released:
 * its row is another mail's.
 */
export function released<T extends ClaimedMail>(mail: T): T {
  const { record } = mail;
  if (!mail.resumed || record.state !== 'quarantined' || !record.removed || record.headerSha256 !== mail.headerSha256)
    return mail;
  const note = `it was moved back to INBOX after being set aside, and drained again (it had been set aside because ${record.reasons[0] ?? 'of an unknown reason'})`;
  return { ...mail, record: { ...record, state: 'claimed', removed: false, reasons: [note] } };
}

/**
 * Waits for every mail's work to finish, then throws the first failure: a run never ends while
 * writes of its mails are still under way.
 */
async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
