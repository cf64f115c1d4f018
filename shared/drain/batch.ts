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
import { settleAll } from '../errors';
import { type TaskIds, taskIdsFor } from '../identity/task-key';
import type { MessageRecord } from '../ledger/rows';
import type { MailboxEntry, MailboxSession } from '../mailbox/imap';
import { inboxqMetrics } from '../telemetry/metrics';
import {
  type ClaimedMail,
  type ConversedMail,
  type Failed,
  type JudgedMail,
  type MailOutcome,
  ok,
  partition,
  perMail,
  type ReadMail,
} from './mail';
import { requestAcknowledgements } from './steps/acknowledge';
import { adoptIdsOfBefore, claimBatch } from './steps/claim';
import { decideConversations } from './steps/conversations';
import { judgeOne } from './steps/judge';
import { queuedPatch, queueTask } from './steps/queue';
import { readBatch, SMALL_MAIL_BYTES, type SourceReader } from './steps/read';
import { recordBatch } from './steps/record';
import { removeBatch } from './steps/remove';
import { buildTask } from './steps/task';
import type { DrainDeps, DrainStep, MailResult } from './types';

/** Storage writes in flight at once within a batch. */
const STORAGE_CONCURRENCY = 16;

export type { MailResult } from './types';

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

/**
 * One batch. `next`, when given, is the batch that follows: its sources are fetched once this
 * one's are read, while this one is stored.
 */
export async function drainBatch(
  deps: DrainDeps,
  session: MailboxSession,
  entries: MailboxEntry[],
  reader: SourceReader,
  next?: MailboxEntry[],
): Promise<{ results: MailResult[]; deferred: MailboxEntry[] }> {
  const batch = new Batch(deps, session, reader, await taskIdsFor(deps));
  const read = await batch.read(entries);
  if (next) reader.prefetch(next);
  const { judged, deferred } = batch.judge(read);
  // The Storage steps: the session, quiet meanwhile, gets a NOOP now and then, so that slow Storage
  // doesn't cost it (imapflow ends a session that stays quiet for its socket timeout).
  await session.keepAlive(async () => {
    const toBuild = batch.plan(await batch.claim(judged));
    await batch.buildAndQueue(await decideConversations(deps, batch.taskIds, toBuild));
    await batch.record();
    await batch.acknowledge();
  });
  await batch.remove();
  return { results: batch.results(), deferred };
}

/** The state of one batch between its steps: what each mail's settlement is, and the results so far. */
class Batch {
  private readonly done: MailResult[] = [];
  private readonly settled: Settlement[] = [];
  /** Notes of mails a person moved back to INBOX, kept in their rows' reasons. */
  private readonly notes = new Map<number, string>();
  private readonly mailbox: string;

  constructor(
    private readonly deps: DrainDeps,
    private readonly session: MailboxSession,
    private readonly reader: SourceReader,
    readonly taskIds: TaskIds,
  ) {
    this.mailbox = deps.config.mailbox;
  }

  private async step(s: DrainStep, uid: number, taskId?: string): Promise<void> {
    await this.deps.onStep?.(s, { uid, taskId });
  }

  private logProps(s: { uid: number; taskId: string; record: MessageRecord }) {
    return { mailbox: this.mailbox, taskId: s.taskId, uid: s.uid, messageId: s.record.messageId };
  }

  /** 1. read: small sources and large headers, one FETCH each. */
  async read(entries: MailboxEntry[]): Promise<ReadMail[]> {
    const { read, gone } = await readBatch(this.reader, this.session, entries);
    for (const uid of gone) {
      const reasons = ['the mail left the inbox before it was read'];
      this.done.push({ uid, taskId: null, outcome: 'gone', reasons, resumed: false });
    }
    for (const mail of read) await this.step('fetched', mail.entry.uid);
    return read;
  }

  /**
   * 2. judge, from the header section alone. Two copies of one mail in a batch would share a
   * ledger row: the second waits for the next batch.
   */
  judge(read: ReadMail[]): { judged: JudgedMail[]; deferred: MailboxEntry[] } {
    const judged: JudgedMail[] = [];
    const deferred: MailboxEntry[] = [];
    const seen = new Set<string>();
    for (const mail of read) {
      const j = judgeOne(mail, this.taskIds, this.deps.config.senderPolicy);
      if (seen.has(j.taskId)) deferred.push(mail.entry);
      else {
        seen.add(j.taskId);
        judged.push(j);
      }
    }
    return { judged, deferred };
  }

  /** 3. claim: every mail's row, insert-if-absent, in one transaction per 100. */
  async claim(judged: JudgedMail[]): Promise<ClaimedMail[]> {
    const claims = partition(
      await claimBatch(
        this.deps.ledger,
        await adoptIdsOfBefore(this.deps.ledger, this.taskIds, judged),
        this.mailbox,
        this.session.uidValidity,
      ),
    );
    for (const f of claims.failed) this.settleFailure(f);
    for (const mail of claims.going) await this.step('claimed', mail.entry.uid, mail.taskId);
    return claims.going;
  }

  /**
   * What each claimed mail needs: a task built (accepted, new), a verdict recorded (rejected,
   * malformed), or only its removal (done before). Returns the mails whose task is to be built.
   */
  plan(claimed: ClaimedMail[]): ClaimedMail[] {
    const toBuild: ClaimedMail[] = [];
    for (const claimedMail of claimed) {
      const mail = released(claimedMail);
      if (mail !== claimedMail) this.notes.set(mail.entry.uid, mail.record.reasons[0]!);
      const { record, judged: j } = mail;
      const base = { uid: mail.entry.uid, taskId: mail.taskId, resumed: mail.resumed, record };
      if (mail.resumed && record.headerSha256 !== mail.headerSha256 && record.state !== 'claimed') {
        // Same Message-ID from the same accepted sender, different headers: not the mail we processed.
        // Never dropped, never run twice.
        const reason = `another mail with Message-ID ${record.messageId} was already processed as task ${mail.taskId}; this copy differs and was set aside`;
        this.settled.push({
          ...base,
          record: { ...record, reasons: [reason] },
          destination: 'quarantine',
          outcome: 'duplicate',
          foreignRow: true,
        });
        this.deps.log.warn(
          'Mail reuses a processed Message-ID with different headers; moved to quarantine',
          this.logProps(base),
        );
      } else if (record.state !== 'claimed') {
        // Done before (a resumed run, or another copy of a processed mail): only its removal is left.
        this.settled.push({
          ...base,
          destination: record.state === 'quarantined' ? 'quarantine' : 'processed',
          ...(record.removed ? { outcome: 'duplicate' as const } : {}),
        });
      } else if (mail.accepted) {
        toBuild.push(mail);
      } else if (j.kind === 'malformed') {
        const reasons = [
          `the mail is malformed: ${j.reason}; it was moved to ${this.deps.config.drain.quarantineFolder}`,
        ];
        this.settled.push({ ...base, patch: { state: 'quarantined', reasons }, destination: 'quarantine' });
      } else {
        this.settled.push({
          ...base,
          patch: { state: 'rejected', sender: j.verdict.sender, reasons: j.verdict.reasons },
          destination: 'processed',
          code: j.verdict.code,
        });
      }
    }
    return toBuild;
  }

  /**
   * 5. task and 6. queue: small mails from memory, concurrently; a large one streamed over the
   * session, which carries one command at a time. Each task is queued as soon as it is built.
   */
  async buildAndQueue(conversed: ConversedMail[]): Promise<void> {
    const limit = pLimit(STORAGE_CONCURRENCY);
    const streamed = (m: ConversedMail) => !m.source && m.entry.size > SMALL_MAIL_BYTES;
    // A run never ends while writes of its mails are still under way.
    await settleAll(conversed.filter((m) => !streamed(m)).map((m) => limit(() => this.buildOne(m))));
    for (const mail of conversed.filter(streamed)) await this.buildOne(mail);
  }

  private async buildOne(mail: ConversedMail): Promise<void> {
    const j = mail.judged.kind === 'mail' ? mail.judged : undefined;
    const built = await perMail(mail.entry.uid, 'storing the mail and building its task', async () =>
      ok(
        await buildTask(this.deps.storage, {
          mailbox: this.mailbox,
          container: this.deps.config.mailContainer,
          taskId: mail.taskId,
          record: mail.record,
          header: j!.parsed,
          sender: j!.verdict.sender ?? '',
          conversation: mail.conversation,
          source: mail.source
            ? { kind: 'buffer', data: mail.source }
            : { kind: 'stream', stream: await this.session.download(mail.entry.uid) },
        }),
      ),
    );
    if (!built.ok)
      return this.settleFailure({ ...built, record: mail.record, taskId: mail.taskId }, j?.verdict.sender ?? null);
    await this.queueOne(mail, built.mail);
  }

  private async queueOne(mail: ConversedMail, task: TaskMessage): Promise<void> {
    const { config, storage, log } = this.deps;
    await this.step('blobs-written', mail.entry.uid, mail.taskId);
    const sent = await queueTask(storage, config.tasksQueue, this.mailbox, mail, task);
    if (!sent.ok) return this.settleFailure({ ...sent, record: mail.record, taskId: mail.taskId });
    await this.step('queued', mail.entry.uid, mail.taskId);
    const patch = queuedPatch(mail, task);
    const { uid } = mail.entry;
    this.settled.push({
      uid,
      taskId: mail.taskId,
      resumed: mail.resumed,
      record: mail.record,
      patch,
      destination: 'processed',
    });
    inboxqMetrics.lag(this.mailbox, Date.parse(patch.queuedAt!) - Date.parse(mail.record.receivedAt));
    log.info('Mail queued as a task', {
      ...this.logProps({ uid, taskId: mail.taskId, record: mail.record }),
      sender: patch.sender,
      attachments: task.attachments.length,
      bytes: mail.entry.size,
    });
  }

  /** 7. record: the batch's rows in one transaction; a row Storage refuses holds its mail in INBOX. */
  async record(): Promise<void> {
    const patched = this.settled.filter((s) => s.patch);
    const withNote = (s: Settlement): Partial<MessageRecord> => {
      const note = this.notes.get(s.uid);
      return note ? { ...s.patch, reasons: [...(s.patch!.reasons ?? []), note] } : s.patch!;
    };
    const recorded = await recordBatch(
      this.deps.ledger,
      patched.map((s) => ({ uid: s.uid, record: s.record, patch: withNote(s) })),
    );
    for (const [n, s] of patched.entries()) {
      const r = recorded[n]!;
      if (!r.ok) {
        s.destination = 'stay';
        s.outcome = 'held';
        s.record = { ...s.record, reasons: [r.failure.reason] };
        this.deps.log.warn(`Mail held in the inbox: ${r.failure.reason}`, this.logProps(s));
        continue;
      }
      s.record = r.mail;
      this.logVerdict(s);
      await this.step('recorded', s.uid, s.taskId);
    }
  }

  private logVerdict(s: Settlement): void {
    const { record: rec } = s;
    const { log, config } = this.deps;
    if (rec.state === 'rejected') {
      inboxqMetrics.rejected(this.mailbox, s.code ?? 'unknown');
      log.warn(`Mail rejected: ${rec.reasons.join('; ')}`, { ...this.logProps(s), sender: rec.sender, code: s.code });
    } else if (rec.state === 'quarantined') {
      const malformed = rec.reasons[0]?.startsWith('the mail is malformed');
      log.warn(
        malformed
          ? 'Mail is malformed; moving it to quarantine'
          : `Mail set aside; moving it to ${config.drain.quarantineFolder}`,
        { ...this.logProps(s), reason: rec.reasons[0] },
      );
    }
  }

  /** 8. acknowledge: one message for the batch's new conversations, on the replies queue. */
  async acknowledge(): Promise<void> {
    if (!this.deps.config.acknowledgement.enabled) return;
    const leaving = this.settled.filter((s) => s.destination !== 'stay' && !s.foreignRow);
    await requestAcknowledgements(
      this.deps.storage,
      this.deps.config,
      leaving.map((s) => s.record),
    );
  }

  /** 9. remove: one MOVE per destination, then the rows say so. */
  async remove(): Promise<void> {
    const leaving = this.settled.filter((s) => s.destination !== 'stay');
    await removeBatch(
      this.session,
      this.deps.ledger,
      this.deps.config,
      leaving.map((s) => ({
        uid: s.uid,
        destination: s.destination as 'processed' | 'quarantine',
        taskId: s.record.removed || s.foreignRow ? null : s.taskId,
      })),
      async (uid, taskId) => this.step('moved', uid, taskId ?? undefined),
    );
    for (const s of this.settled) {
      if (s.outcome === 'duplicate' && s.record.removed)
        this.deps.log.info('Mail was already processed; removed the copy left in the inbox', this.logProps(s));
      else if (!s.outcome) await this.step('removed', s.uid, s.taskId);
    }
  }

  /** Every mail's result, by UID. */
  results(): MailResult[] {
    const settled = this.settled.map((s): MailResult => {
      const state = s.record.state;
      return {
        uid: s.uid,
        taskId: s.taskId,
        outcome: s.outcome ?? (state === 'queued' ? 'queued' : state === 'rejected' ? 'rejected' : 'quarantined'),
        reasons: s.record.reasons,
        resumed: s.resumed,
      };
    });
    return [...this.done, ...settled].sort((a, b) => a.uid - b.uid);
  }

  /** A mail a step set aside (quarantine, with the reason in its row) or held. */
  private settleFailure(f: Failed, sender: string | null = null): void {
    if (!f.record || !f.taskId) throw new Error('a mail failed before it had a ledger row'); // claim is the first step that can fail per mail
    const { log, config } = this.deps;
    const reason =
      f.failure.kind === 'set-aside'
        ? `${f.failure.reason}; it was moved to ${config.drain.quarantineFolder}`
        : f.failure.reason;
    log.warn(`Mail ${f.failure.kind === 'set-aside' ? 'set aside' : 'held'}: ${f.failure.reason}`, {
      mailbox: this.mailbox,
      taskId: f.taskId,
      uid: f.uid,
    });
    this.settled.push({
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
 * A mail set aside or rejected earlier that came back to INBOX (`inboxq release`, or a person who
 * moved it back in Outlook): its row says `quarantined` or `rejected`, and removed. It is drained
 * again from the start under the same identity (the row keeps why it was set aside, and says it
 * came back), so a cause fixed since (a sender policy, a bug) gives it a new verdict. A mail
 * accepted now is claimed under its Message-ID, a new row, and becomes one task. A copy of a
 * processed mail with other headers is not released: its row is another mail's.
 */
export function released<T extends ClaimedMail>(mail: T): T {
  const { record } = mail;
  const wasSetAside = record.state === 'quarantined' || record.state === 'rejected';
  if (!mail.resumed || !wasSetAside || !record.removed || record.headerSha256 !== mail.headerSha256) return mail;
  const why = record.state === 'rejected' ? 'rejected' : 'set aside';
  const note = `it was moved back to INBOX after being ${why}, and drained again (it had been ${why} because ${record.reasons[0] ?? 'of an unknown reason'})`;
  return { ...mail, record: { ...record, state: 'claimed', removed: false, reasons: [note] } };
}
