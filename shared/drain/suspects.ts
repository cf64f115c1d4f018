/**
 * Poison-mail detection: even a failure nobody thought of can't stop a mailbox.
 *
 * A mail that was in the batch of a run that failed for a reason that may be the mail's (anything
 * but the credential, Storage being unavailable, throttling or a lost lease), or of a run that was
 * killed, or that was held back, becomes a suspect (the count is kept in the run lease's row,
 * shared/ledger/lease.ts). A suspect is drained in a batch of its own, so one mail can't take its
 * batch down again; a suspect of POISON_RUNS runs in a row is set aside to the quarantine folder
 * without being read again, and the mailbox goes on.
 */
import { ImapError, KeyVaultError, StorageError, TokenError } from '../errors';
import { LeaseLostError, type Suspect, suspectKey, type Suspects } from '../ledger/lease';
import type { MailboxEntry } from '../mailbox/imap';
import { SMALL_MAIL_BYTES } from './steps/read';

/** Runs in a row with a mail in its batch before that mail is set aside unread. */
export const POISON_RUNS = 3;
/** The whole sources a batch holds in memory at most; small mails past it wait for the next batch. */
const BATCH_SOURCE_BYTES = 32 * 1024 * 1024;

export type Plan =
  { kind: 'poison'; entry: MailboxEntry; suspect: Suspect } | { kind: 'batch'; entries: MailboxEntry[] };

/**
 * What to do from `index` on: set aside a mail that failed too often, drain a suspect alone, or a
 * batch of up to `max` others (stopping before the next suspect) whose small sources together stay
 * under BATCH_SOURCE_BYTES.
 */
export function nextPlan(
  mails: MailboxEntry[],
  index: number,
  max: number,
  suspects: Suspects,
  uidValidity: bigint,
): Plan {
  const first = mails[index]!;
  const suspect = suspects.get(suspectKey(uidValidity, first.uid));
  if (suspect && suspect.runs >= POISON_RUNS) return { kind: 'poison', entry: first, suspect };
  if (suspect) return { kind: 'batch', entries: [first] };
  const entries: MailboxEntry[] = [];
  let bytes = 0;
  for (let i = index; i < mails.length && entries.length < max; i++) {
    const m = mails[i]!;
    if (suspects.has(suspectKey(uidValidity, m.uid))) break;
    const cost = m.size <= SMALL_MAIL_BYTES ? m.size : 0;
    if (entries.length > 0 && bytes + cost > BATCH_SOURCE_BYTES) break;
    bytes += cost;
    entries.push(m);
  }
  return { kind: 'batch', entries };
}

/**
 * True when a run's failure may be a mail's doing, so the mails of its batch become suspects.
 * Not the credential, not Storage being unreachable or refusing access, not throttling, not a lost
 * lease: those say nothing about the mail.
 */
export function countsAgainstMails(err: unknown): boolean {
  if (err instanceof TokenError || err instanceof KeyVaultError || err instanceof LeaseLostError) return false;
  if (err instanceof StorageError) return err.refusedThisRequest;
  if (err instanceof ImapError) return err.failure === 'unreachable' || err.failure === 'protocol';
  return true;
}

/** Adds one failed run to each of these mails. */
export function suspect(suspects: Suspects, uidValidity: bigint, uids: number[], why: string): void {
  for (const uid of uids) {
    const key = suspectKey(uidValidity, uid);
    suspects.set(key, { runs: (suspects.get(key)?.runs ?? 0) + 1, last: why });
  }
}

/** Forgets suspects that are no longer in INBOX (or were numbered under another UIDVALIDITY). */
export function forgetGone(suspects: Suspects, uidValidity: bigint, inbox: Set<number>): void {
  for (const key of [...suspects.keys()]) {
    const [v, uid] = key.split(':');
    if (v !== uidValidity.toString() || !inbox.has(Number(uid))) suspects.delete(key);
  }
}
