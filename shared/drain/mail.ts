/**
 * One mail on its way through a drain batch, and what can happen to it.
 *
 * Every step takes the mails still in play and returns, per mail, either the mail carried one step
 * further or a `MailFailure`: that mail's outcome, never the batch's. Only a failure of the mailbox,
 * of Storage as a whole or of the credential is thrown, and ends the run (`isRunFailure`).
 */
import type { ConversationDecision } from '../conversation/conversations';
import { describeError, ImapError, InboxqError, KeyVaultError, StorageError, TokenError } from '../errors';
import { LeaseLostError } from '../ledger/lease';
import type { MessageRecord } from '../ledger/rows';
import { MailParseError } from '../mail/parse';
import type { MailboxEntry } from '../mailbox/imap';
import type { Judgement } from '../sender/judge';

export type MailOutcome = 'queued' | 'rejected' | 'quarantined' | 'duplicate' | 'gone' | 'held';

/**
 * What a step may say of one mail instead of carrying it on:
 *   set-aside  moved to the quarantine folder, the reason in its ledger row; a person decides
 *   held       left in INBOX for the next run (a transient problem of this mail alone); a mail held
 *              run after run is set aside by poison-mail detection
 */
export interface MailFailure {
  kind: 'set-aside' | 'held';
  reason: string;
}

/** A step's word on one mail: carried on, or failed (with its ledger row and task id once it has them). */
export type PerMail<T> =
  { ok: true; mail: T } | { ok: false; uid: number; failure: MailFailure; record?: MessageRecord; taskId?: string };

export function ok<T>(mail: T): PerMail<T> {
  return { ok: true, mail };
}
export function setAside(uid: number, reason: string): PerMail<never> {
  return { ok: false, uid, failure: { kind: 'set-aside', reason } };
}

export type Failed = Extract<PerMail<unknown>, { ok: false }>;

/** Splits a step's results into the mails that go on and the ones settled by a failure. */
export function partition<T>(results: PerMail<T>[]): { going: T[]; failed: Failed[] } {
  const going: T[] = [];
  const failed: Failed[] = [];
  for (const r of results) {
    if (r.ok) going.push(r.mail);
    else failed.push(r);
  }
  return { going, failed };
}

/** Read from the mailbox: the header section always, the whole source for a small mail. */
export interface ReadMail {
  entry: MailboxEntry;
  header: Buffer;
  headerSha256: string;
  source: Buffer | undefined;
}

/** Judged from its header section alone, with the identity it is claimed under. */
export interface JudgedMail extends ReadMail {
  judged: Judgement;
  accepted: boolean;
  identity: string;
  taskId: string;
}

/** Claimed in the ledger (`resumed`: the row was there already). */
export interface ClaimedMail extends JudgedMail {
  record: MessageRecord;
  resumed: boolean;
}

/** An accepted mail whose conversation is decided. */
export interface ConversedMail extends ClaimedMail {
  conversation: ConversationDecision;
}

/**
 * True when an error is not one mail's: the mailbox (IMAP), Storage as a whole, the credential,
 * or the run's lease. Anything else a step meets while handling one mail (a parser's refusal, a
 * request Storage refused for what it carried, a bug tickled by strange input) is that mail's.
 */
export function isRunFailure(err: unknown): boolean {
  if (err instanceof StorageError) return !err.refusedThisRequest;
  return (
    err instanceof ImapError ||
    err instanceof TokenError ||
    err instanceof KeyVaultError ||
    err instanceof LeaseLostError
  );
}

/**
 * The reason a mail is set aside for an error of its own: what failed, never the mail's text. Only
 * inboxq's own errors and the parser's refusals have their message quoted; of anything else, whose
 * message might quote its input, only the class and code are kept.
 */
export function failureReason(step: string, err: unknown): string {
  let what: string;
  if (err instanceof InboxqError) what = err.summary;
  else if (err instanceof MailParseError) what = describeError(err);
  else if (err instanceof Error)
    what = [err.name, (err as { code?: unknown }).code].filter((x) => typeof x === 'string' && x).join(' ');
  else what = typeof err;
  return `${step} failed for this mail alone (${what.slice(0, 300)})`;
}

/** Runs one mail's step; an error of that mail alone becomes its set-aside outcome, a run failure is thrown. */
export async function perMail<T>(uid: number, step: string, work: () => Promise<PerMail<T>>): Promise<PerMail<T>> {
  try {
    return await work();
  } catch (err) {
    if (isRunFailure(err)) throw err;
    return setAside(uid, failureReason(step, err));
  }
}
