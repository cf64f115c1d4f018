/**
 * What the drain schedule's instance remembers of one mailbox between ticks, so an idle tick costs a
 * NOOP and nothing else (tick.ts): when a run last went through the mailbox here, whether it left
 * work, Exchange's back-off, and whether the mailbox's runs go to the drain function for now.
 *
 * A tick runs a drain (rather than only looking) when there is mail, or when one is due for its own
 * sake:
 *   - the first tick of this instance: what the last run anywhere left in its lease row (suspects, a
 *     reconcile, a killed batch) is taken over, and the run is recorded for `inboxq status`;
 *   - the last run here left work: it failed, or held mail back;
 *   - every FULL_RUN_INTERVAL_MS (plus up to a minute, by mailbox, so several don't all run in one
 *     tick): Storage retention, the mailbox retention, a reconcile another instance asked for, and
 *     the run record `inboxq status` judges staleness by (shared/ops/silence.ts).
 *
 * A mailbox whose look or run failed here, or whose run took far longer than a tick's share, is
 * *demoted*: for a while (doubling from a minute to MAX_DEMOTION_MS) the schedule only asks the
 * drain function for a run (another instance, at most once every REQUEST_INTERVAL_MS) instead of
 * working on it in the tick, so a slow or broken mailbox never holds up the ticks of the others. Nothing here is stored: a new instance starts with a run.
 */
import { createHash } from 'node:crypto';

import type { DrainSummary } from './drain';

/** A run goes through an idle mailbox at least this often (retention, reconcile, the run record). */
export const FULL_RUN_INTERVAL_MS = 5 * 60_000;
/** Spread of those runs across mailboxes: up to this much later, by the mailbox's key. */
const FULL_RUN_SPREAD_MS = 60_000;
/** The longest an idle mailbox goes between two of those runs (and their records in the ledger). */
export const IDLE_RUN_PERIOD_MS = FULL_RUN_INTERVAL_MS + FULL_RUN_SPREAD_MS;
/** The first demotion after a failure; each failure in a row doubles it. */
export const FIRST_DEMOTION_MS = 60_000;
export const MAX_DEMOTION_MS = 15 * 60_000;
/** A drain request for the mailbox at most this often. */
export const REQUEST_INTERVAL_MS = 60_000;
/**
 * After a request, the ticks leave the mailbox to the drain function this long (it may be starting
 * cold), so its run finds the mailbox's lease free; past it they drain their share again, which a
 * run of the drain function holding the lease makes a no-op.
 */
export const HANDOFF_GRACE_MS = 20_000;

export class MailboxWatch {
  private lastRunAt: number | undefined;
  /** Why the next tick must run a drain even on an empty inbox, or null. */
  private pending: string | null = 'the first tick of this instance';
  /** Epoch ms until which Exchange asked the mailbox's runs to stay away. */
  private backoffUntil = 0;
  private demotedUntil = 0;
  /** Looks or runs that failed here since the mailbox was last healthy (each doubles the demotion). */
  private failures = 0;
  /** Looks that failed in a row. */
  private lookFailures = 0;
  private requestedAt: number | undefined;
  private handedOffUntil = 0;
  private readonly spreadMs: number;

  constructor(key: string) {
    this.spreadMs = createHash('sha256').update(key).digest().readUInt32BE(0) % FULL_RUN_SPREAD_MS;
  }

  /** Exchange's back-off is not over: the tick makes no connection at all. */
  waiting(now: number): boolean {
    return this.backoffUntil > now;
  }

  /** The mailbox's runs go to the drain function for now (a look or run failed here). */
  demoted(now: number): boolean {
    return this.demotedUntil > now;
  }

  /** Why a run is due without mail, or null. */
  due(now: number): string | null {
    if (this.pending) return this.pending;
    if (this.lastRunAt !== undefined && now - this.lastRunAt >= FULL_RUN_INTERVAL_MS + this.spreadMs)
      return 'the periodic run (retention, reconcile, the run record)';
    return null;
  }

  /** A drain request may go out now (none within REQUEST_INTERVAL_MS); remembers that it did. */
  takeRequest(now: number): boolean {
    if (this.requestedAt !== undefined && now - this.requestedAt < REQUEST_INTERVAL_MS) return false;
    this.requestedAt = now;
    this.handedOffUntil = now + HANDOFF_GRACE_MS;
    return true;
  }

  /** The request could not be sent: the next tick tries again. */
  requestFailed(): void {
    this.requestedAt = undefined;
    this.handedOffUntil = 0;
  }

  /** A drain request went out a moment ago: the drain function's run is given the mailbox. */
  handedOff(now: number): boolean {
    return this.handedOffUntil > now;
  }

  /** The look failed or timed out. True for the first failure of a streak (the one worth a log line). */
  lookFailed(now: number): boolean {
    this.lookFailures++;
    this.demote(now);
    return this.lookFailures === 1;
  }

  /** The look worked. True when it ends a streak of failed looks (worth saying). */
  lookWorked(): boolean {
    const recovered = this.lookFailures > 0;
    this.lookFailures = 0;
    return recovered;
  }

  /** The look found nothing to do: the mailbox is healthy. */
  idle(): void {
    this.failures = 0;
  }

  /** A run here ended (not thrown): what it leaves for the next tick. */
  ran(summary: DrainSummary, now: number): void {
    if (summary.stoppedBecause === 'leased-elsewhere') return;
    if (summary.stoppedBecause === 'throttled') {
      // The throttled run left a reconcile for the next one, once Exchange's back-off is over.
      this.throttled(summary.backoffUntil ?? 0);
      return;
    }
    this.lastRunAt = now;
    this.failures = 0;
    this.pending = summary.counts.held > 0 ? 'mail was held back by the last run' : null;
  }

  /** A run here took far longer than a tick's share (a slow or throttling server): the next ones go to the drain function for a while. */
  ranSlowly(now: number): void {
    this.demote(now);
  }

  /** A run here failed (drainMailbox logged and recorded why): the next ones go to the drain function for a while. */
  runFailed(now: number): void {
    this.demote(now);
    this.pending = 'the last run failed';
  }

  /** Exchange asked the mailbox's runs to stay away until then (epoch ms). */
  throttled(until: number): void {
    this.backoffUntil = Math.max(this.backoffUntil, until);
    this.pending = 'the last run was throttled by Exchange';
  }

  private demote(now: number): void {
    this.failures++;
    this.demotedUntil = now + Math.min(FIRST_DEMOTION_MS * 2 ** (this.failures - 1), MAX_DEMOTION_MS);
  }
}
