/**
 * One drain run of one mailbox: every mail in INBOX, oldest first, becomes a queued task, a
 * recorded rejection, or a mail set aside with its reason, and only then leaves the inbox.
 *
 * The order of steps is the guarantee (docs/delivery-guarantees.md); each step is a file of its own
 * under steps/, and batch.ts runs them:
 *   lease -> read -> judge (header section only) -> claim in the ledger -> conversations
 *   -> raw message and attachments to Blob Storage -> task on the queue
 *   -> ledger: queued/rejected/quarantined -> acknowledgements -> remove from INBOX -> ledger: removed
 * A crash anywhere leaves the mail in INBOX with a ledger row telling the next run where to resume
 * (or, between the MOVE and its record, a row the next run reconciles: reconcile.ts); the task id
 * is derived from the mail's identity, so a resumed mail keeps it.
 *
 * A problem of one mail is that mail's outcome, never the run's (mail.ts). Only the mailbox (IMAP),
 * Storage as a whole, the credential or a lost lease end a run; and a mail in the batch of failed
 * runs again and again is set aside by itself (suspects.ts, poison.ts).
 */
import { randomUUID } from 'node:crypto';

import { authFailureStage, describeError, ImapError } from '../errors';
import { LeaseLostError, MailboxLease, suspectKey, type Suspects } from '../ledger/lease';
import { LONG_BACKOFF_MS, type MailboxEntry, MailboxSession } from '../mailbox/imap';
import { inboxqMetrics } from '../telemetry/metrics';
import { drainBatch } from './batch';
import type { MailOutcome } from './mail';
import { expireMailboxMail, mailboxRetentionDue } from './mailbox-retention';
import { setAsidePoison } from './poison';
import { reconcileLedger } from './reconcile';
import { expireOldMail } from './retention';
import { SourceReader } from './steps/read';
import { countsAgainstMails, forgetGone, nextPlan, suspect } from './suspects';
import type { DrainDeps, DrainSlice, MailResult } from './types';

export type { MailOutcome } from './mail';
export { SMALL_MAIL_BYTES } from './steps/read';
export { INLINE_RAW_LIMIT, INLINE_TEXT_LIMIT } from './steps/task';
export type { DrainDeps, DrainSlice, DrainStep, MailResult } from './types';

export interface DrainSummary {
  runId: string;
  mailbox: string;
  startedAt: string;
  durationMs: number;
  /** Why the run ended: the inbox was empty, the time budget or message limit was reached, another run holds the lease, or an error. */
  stoppedBecause: 'empty' | 'budget' | 'limit' | 'leased-elsewhere' | 'throttled' | 'error';
  counts: Record<MailOutcome, number> & {
    seen: number;
    resumed: number;
    throttled: number;
    expired: number;
    reconciled: number;
    /** Mails deleted from the processed, quarantine and Sent folders past the mailbox retention. */
    deletedFromMailbox: number;
  };
  /** Mails left in the inbox for the next run. */
  remaining: number;
  /** With stoppedBecause `throttled`: until when (epoch ms) Exchange asked the mailbox's runs to stay away. */
  backoffUntil?: number;
  outcomes: MailResult[];
  error: string | null;
}

/** Mails fetched and handled together (one FETCH of small sources, one of large headers, one MOVE): a table transaction holds 100 rows. */
export const BATCH_SIZE = 100;

export async function drainMailbox(deps: DrainDeps): Promise<DrainSummary> {
  const { config, log } = deps;
  const now = deps.now ?? Date.now;
  const started = now();
  const summary = emptySummary(randomUUID(), config.mailbox, started);
  const lease = await acquireLease(deps, summary, now);
  if (!lease) return summary;
  await deps.onStep?.('leased', { uid: 0 });
  if (lease.state.killedBatch) {
    log.warn('The last drain run stopped in the middle of a batch; its mails are drained one by one', {
      mailbox: config.mailbox,
      runId: summary.runId,
      mails: lease.state.killedBatch.uids.length,
    });
  }

  let session: MailboxSession | undefined;
  let failure: { error: unknown } | undefined;
  let released: Promise<void> | undefined;
  try {
    const open = () => MailboxSession.open({ config, tokens: deps.tokens, log });
    session = deps.imapSession?.enabled ? await deps.imapSession.checkout(open, log) : await open();
    const budgetMs = Math.min(config.drain.runBudgetMs, deps.slice?.budgetMs ?? Number.POSITIVE_INFINITY);
    await drainInbox(deps, session, lease, summary, () => now() - started > budgetMs);
    if (config.drain.retentionDays > 0 && summary.stoppedBecause === 'empty') {
      summary.counts.expired = await expireOldMail(deps, now);
    }
    const retention = config.drain.mailboxRetentionDays > 0 && summary.stoppedBecause === 'empty';
    if (retention && mailboxRetentionDue(config.mailbox, now())) {
      const deleted = await expireMailboxMail(deps, session, now);
      summary.counts.deletedFromMailbox = deleted.processed + deleted.quarantine + deleted.sent;
    }
  } catch (err) {
    if (err instanceof ImapError && err.failure === 'throttled' && (err.backoffMs ?? 0) > LONG_BACKOFF_MS) {
      // Exchange asked for longer than a run waits: not a failure. The runs that follow wait it out.
      lease.state.backoffUntil = now() + err.backoffMs!;
      lease.state.reconcile = true;
      summary.stoppedBecause = 'throttled';
      summary.backoffUntil = lease.state.backoffUntil;
      summary.error = err.summary;
      log.warn(
        `Exchange throttled the mailbox; its runs wait until ${new Date(lease.state.backoffUntil).toISOString()}`,
        {
          mailbox: config.mailbox,
          runId: summary.runId,
        },
      );
    } else {
      failure = { error: err };
      const refused = authFailureStage(err);
      if (refused) inboxqMetrics.authFailure(config.mailbox, refused);
      summary.stoppedBecause = 'error';
      summary.error =
        err instanceof LeaseLostError
          ? 'the run lease was taken over by another run; it continues from here'
          : describeError(err);
      // The mailbox may have done more than its answers said (a MOVE whose reply was lost).
      lease.state.reconcile = true;
    }
  } finally {
    summary.counts.throttled = session?.throttled ?? 0;
    // A warm instance keeps a session that served well for the next drain; any failure closes it.
    if (session && deps.imapSession?.enabled)
      await deps.imapSession.checkin(session, failure === undefined && summary.stoppedBecause !== 'throttled');
    else await session?.close();
    // Never throws (a lease it can't release expires); the run record is written meanwhile.
    released = lease.release();
  }
  summary.durationMs = now() - started;
  await Promise.all([released, finishRun(deps, summary, failure !== undefined, now)]);
  if (failure && !(failure.error instanceof LeaseLostError)) throw failure.error;
  return summary;
}

/** A run's summary before it has done anything. */
export function emptySummary(runId: string, mailbox: string, started: number): DrainSummary {
  return {
    runId,
    mailbox,
    startedAt: new Date(started).toISOString(),
    durationMs: 0,
    stoppedBecause: 'empty',
    counts: {
      seen: 0,
      queued: 0,
      rejected: 0,
      quarantined: 0,
      duplicate: 0,
      gone: 0,
      held: 0,
      resumed: 0,
      throttled: 0,
      expired: 0,
      reconciled: 0,
      deletedFromMailbox: 0,
    },
    remaining: 0,
    outcomes: [],
    error: null,
  };
}

/** The mailbox's run lease, or null (summary says why) when another run holds it. Throws when Storage is down. */
async function acquireLease(deps: DrainDeps, summary: DrainSummary, now: () => number): Promise<MailboxLease | null> {
  const { config, log } = deps;
  const started = Date.parse(summary.startedAt);
  let lease: Awaited<ReturnType<typeof MailboxLease.acquire>>;
  try {
    lease = await MailboxLease.acquire(deps.storage, config.mailbox, summary.runId, config.drain.leaseMs, now);
  } catch (err) {
    // Storage is down: no run can start. Said here, in the words every failed run uses (alerts count them).
    inboxqMetrics.run(config.mailbox, 'failed', now() - started);
    log.error(`Drain run failed: ${describeError(err)}`, {
      mailbox: config.mailbox,
      runId: summary.runId,
      outcome: 'failed',
      stoppedBecause: 'error',
    });
    throw err;
  }
  if (lease instanceof MailboxLease) return lease;
  if ('backoffUntil' in lease) {
    summary.stoppedBecause = 'throttled';
    summary.backoffUntil = lease.backoffUntil;
    inboxqMetrics.run(config.mailbox, 'throttled-wait', now() - started);
    log.info('Exchange asked this mailbox to wait; this run does not connect', {
      mailbox: config.mailbox,
      runId: summary.runId,
      until: new Date(lease.backoffUntil).toISOString(),
    });
    return null;
  }
  summary.stoppedBecause = 'leased-elsewhere';
  inboxqMetrics.run(config.mailbox, 'leased-elsewhere', now() - started);
  if (!deps.quiet)
    log.info('Another drain run holds this mailbox; this run does nothing', {
      mailbox: config.mailbox,
      runId: summary.runId,
      heldBy: lease.heldBy,
      until: new Date(lease.until).toISOString(),
    });
  return null;
}

/**
 * The mails of INBOX, oldest first, batch after batch (a suspect of poison alone), until the inbox
 * is empty, the message limit is reached or the time budget is spent.
 */
async function drainInbox(
  deps: DrainDeps,
  session: MailboxSession,
  lease: MailboxLease,
  summary: DrainSummary,
  overBudget: () => boolean,
): Promise<void> {
  const { config, log, ledger } = deps;
  const { suspects } = lease.state;
  const mails = await session.listMails();
  const inbox = new Set(mails.map((m) => m.uid));
  if (lease.state.reconcile) {
    summary.counts.reconciled = await reconcileLedger(ledger, config.mailbox, session.uidValidity, inbox);
    lease.state.reconcile = false;
    if (summary.counts.reconciled > 0)
      log.warn('Ledger rows of mail that had left the inbox were marked removed', {
        mailbox: config.mailbox,
        runId: summary.runId,
        count: summary.counts.reconciled,
      });
  }
  forgetGone(suspects, session.uidValidity, inbox);
  const reader = new SourceReader(session);
  try {
    await drainBatches(deps, session, lease, summary, overBudget, mails, reader);
  } finally {
    // A run never returns with a FETCH of its own under way: one that failed before its batch's
    // MOVE (which queues behind the FETCH ahead) waits for it here, so its session is idle when it is given back.
    await reader.settle();
  }
}

async function drainBatches(
  deps: DrainDeps,
  session: MailboxSession,
  lease: MailboxLease,
  summary: DrainSummary,
  overBudget: () => boolean,
  mails: MailboxEntry[],
  reader: SourceReader,
): Promise<void> {
  const { config } = deps;
  const { suspects } = lease.state;
  const limit = deps.slice
    ? sliceLength(mails, deps.slice, config.drain.maxMessagesPerRun)
    : config.drain.maxMessagesPerRun;
  const planAt = (index: number) =>
    nextPlan(mails, index, Math.min(BATCH_SIZE, limit - index), suspects, session.uidValidity);
  const holdsSuspect = (entries: MailboxEntry[]) =>
    entries.some((m) => suspects.has(suspectKey(session.uidValidity, m.uid)));
  let index = 0;
  while (index < mails.length) {
    if (index >= limit) {
      summary.stoppedBecause = 'limit';
      break;
    }
    // The first batch always starts: a run whose listing alone took the budget still drains some.
    if (index > 0 && overBudget()) {
      summary.stoppedBecause = 'budget';
      break;
    }
    const plan = planAt(index);
    let results: MailResult[];
    if (plan.kind === 'poison') {
      results = [await setAsidePoison(deps, session, plan.entry.uid, plan.suspect.runs, plan.suspect.last)];
      suspects.delete(suspectKey(session.uidValidity, plan.entry.uid));
      index += 1;
    } else {
      // The batch after it, when it is one and holds no suspect, has its sources fetched ahead;
      // never while a suspect is drained alone: a failure then is the suspect's, or the fetch
      // ahead's, and a genuine mail must not be blamed for the mail behind it.
      const after = index + plan.entries.length;
      const following =
        !holdsSuspect(plan.entries) && after < mails.length && after < limit ? planAt(after) : undefined;
      const ahead = following?.kind === 'batch' && !holdsSuspect(following.entries) ? following.entries : undefined;
      results = await drainEntries(deps, session, lease, plan.entries, reader, ahead);
      index = after;
    }
    count(summary, results, suspects, session.uidValidity);
  }
  summary.remaining = mails.length - Math.min(index, mails.length) + summary.counts.held;
}

/**
 * How many of the oldest mails a slice takes: at most `maxMessages` (and the run's own limit), and
 * no more than `maxBytes` together; 0 when the oldest alone is larger (the drain function takes it).
 */
export function sliceLength(mails: MailboxEntry[], slice: DrainSlice, runLimit: number): number {
  const max = Math.min(slice.maxMessages, runLimit, mails.length);
  let bytes = 0;
  for (let i = 0; i < max; i++) {
    bytes += mails[i]!.size;
    if (bytes > slice.maxBytes) return i;
  }
  return max;
}

/**
 * A batch, with its UIDs and those of the batch fetched ahead noted on the lease while it runs (a
 * run killed mid-batch makes them suspects), and the copies it deferred in batches of their own.
 */
async function drainEntries(
  deps: DrainDeps,
  session: MailboxSession,
  lease: MailboxLease,
  entries: MailboxEntry[],
  reader: SourceReader,
  next: MailboxEntry[] | undefined,
): Promise<MailResult[]> {
  const { suspects } = lease.state;
  // The batch fetched ahead is in flight too: a failure or a kill counts against it as well (its
  // mails are then drained alone, and cleared when they drain).
  const uids = [...entries, ...(next ?? [])].map((e) => e.uid);
  await lease.beginBatch(session.uidValidity, uids);
  const results: MailResult[] = [];
  try {
    for (let queue = entries, first = true; queue.length > 0; first = false) {
      const batch = await drainBatch(deps, session, queue, reader, first ? next : undefined);
      results.push(...batch.results);
      queue = batch.deferred;
    }
  } catch (err) {
    if (countsAgainstMails(err)) suspect(suspects, session.uidValidity, uids, describeError(err));
    throw err;
  } finally {
    lease.endBatch();
  }
  return results;
}

/** Counts a batch's results; a held mail becomes a suspect, any other is cleared. */
function count(summary: DrainSummary, results: MailResult[], suspects: Suspects, uidValidity: bigint): void {
  for (const result of results) {
    inboxqMetrics.mail(summary.mailbox, result.outcome);
    summary.counts.seen++;
    summary.counts[result.outcome]++;
    if (result.resumed) summary.counts.resumed++;
    summary.outcomes.push(result);
    if (result.outcome === 'held') suspect(suspects, uidValidity, [result.uid], result.reasons[0] ?? 'held');
    else suspects.delete(suspectKey(uidValidity, result.uid));
  }
}

/** The run's metric, its row in the ledger (best effort) and its log line. */
async function finishRun(deps: DrainDeps, summary: DrainSummary, failed: boolean, now: () => number): Promise<void> {
  const { config, log, ledger } = deps;
  const { runId } = summary;
  const outcome = failed
    ? 'failed'
    : summary.remaining > 0 || summary.stoppedBecause === 'throttled'
      ? 'partial'
      : 'ok';
  inboxqMetrics.run(config.mailbox, outcome, summary.durationMs);
  if (!failed) inboxqMetrics.heartbeat(config.mailbox, config.key, summary.remaining);
  const { seen, queued, rejected, quarantined, duplicate, held, resumed, throttled, reconciled } = summary.counts;
  try {
    await ledger.recordRun(config.mailbox, {
      runId,
      startedAt: summary.startedAt,
      finishedAt: new Date(now()).toISOString(),
      outcome,
      counts: {
        ...{ seen, queued, rejected, quarantined, duplicate, held, resumed, throttled, reconciled },
        failedRuns: failed ? 1 : 0,
      },
      error: summary.error,
    });
  } catch (err) {
    log.warn('Could not record the run in the ledger', { mailbox: config.mailbox, runId, error: describeError(err) });
  }
  const props = {
    mailbox: config.mailbox,
    runId,
    outcome,
    durationMs: summary.durationMs,
    ...{ seen, queued, rejected, quarantined, duplicates: duplicate, held, throttled },
    remaining: summary.remaining,
    stoppedBecause: summary.stoppedBecause,
  };
  if (failed) log.error(`Drain run failed: ${summary.error}`, props);
  else if (!deps.quiet || !idleRun(summary)) log.info('Drain run finished', props);
}

/**
 * A run that did nothing: no mail handled, nothing expired, reconciled or deleted (an empty inbox,
 * or a slice with nothing it could take: the mail left is the drain function's, and said there).
 */
function idleRun(summary: DrainSummary): boolean {
  const { seen, expired, reconciled, deletedFromMailbox } = summary.counts;
  return seen === 0 && expired === 0 && reconciled === 0 && deletedFromMailbox === 0;
}
