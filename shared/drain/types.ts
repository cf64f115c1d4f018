/**
 * The types the drain's files share: what a run is given (DrainDeps), its step boundaries, a
 * share of a run, and what becomes of each mail. Their own file, so drain.ts, batch.ts, poison.ts
 * and the retention files import them from here and not from one another: no import circle.
 */
import type { MailboxContext } from '../context';
import type { MailOutcome } from './mail';

export type { MailboxEntry } from '../mailbox/imap';
export type { MailOutcome } from './mail';

/** Step boundaries, named so tests can stop a run at each one. `moved`: the mails left INBOX, their rows don't say so yet. */
export type DrainStep =
  'leased' | 'fetched' | 'claimed' | 'blobs-written' | 'queued' | 'recorded' | 'moved' | 'removed';

export interface DrainDeps extends MailboxContext {
  /** Called at each step boundary of each mail (crash and fault injection in tests). */
  onStep?: (step: DrainStep, info: { uid: number; taskId?: string }) => void | Promise<void>;
  /** A share of a run, tighter than the mailbox's settings: what the schedule's tick drains itself (tick.ts). */
  slice?: DrainSlice;
  /**
   * Log nothing at Information level for a run that found nothing to do: no mail, nothing expired,
   * reconciled or deleted, or another run holding the mailbox (the schedule's tick: an idle tick
   * sends no trace). Failures and every mail are logged all the same; the metrics count every run.
   */
  quiet?: boolean;
}

/** At most this much of the inbox, in mails and bytes (RFC822.SIZE), and no new batch after budgetMs. */
export interface DrainSlice {
  maxMessages: number;
  maxBytes: number;
  budgetMs: number;
}

/** What became of one mail in a run. */
export interface MailResult {
  uid: number;
  taskId: string | null;
  outcome: MailOutcome;
  reasons: string[];
  resumed: boolean;
}
