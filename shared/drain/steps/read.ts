/**
 * Step 1, read: the batch's mails from IMAP. A small mail's whole source comes in one FETCH for
 * the batch; a large mail's header section only (its body is streamed later, once it is accepted).
 */
import { createHash } from 'node:crypto';

import { headerSection } from '../../mail/parse';
import type { MailboxEntry, MailboxSession } from '../../mailbox/imap';
import type { ReadMail } from '../mail';

/** Mails up to this size are fetched whole with their batch; larger ones are streamed in chunks. */
export const SMALL_MAIL_BYTES = 4 * 1024 * 1024;

/**
 * The batches' small sources, one FETCH per batch, with the next batch's fetched while this one is
 * stored: the transfer (the server's work and parsing its answer) then runs beside the Storage
 * writes instead of after them. A prefetch only reads (BODY.PEEK): its mails are noted on the lease
 * when their own batch begins, and sources fetched for a batch that does not come are dropped.
 */
export class SourceReader {
  private ahead: { key: string; result: Promise<Map<number, Buffer> | { error: unknown }> } | undefined;

  constructor(private readonly session: MailboxSession) {}

  /** Starts fetching these mails' small sources, for the batch that will ask for exactly them. */
  prefetch(entries: MailboxEntry[]): void {
    const uids = smallUids(entries.filter((e) => !e.source));
    if (this.ahead || uids.length === 0) return;
    // Kept as a value, never a rejected promise nobody awaits: a failure is the batch's to throw.
    this.ahead = {
      key: uids.join(','),
      result: this.session.fetchSources(uids).catch((error: unknown) => ({ error })),
    };
  }

  /**
   * The small sources of these mails: those the listing brought (taken off their entries), then
   * the prefetched ones when they were the rest, else the rest fetched now.
   */
  async sources(entries: MailboxEntry[]): Promise<Map<number, Buffer>> {
    const listed = new Map<number, Buffer>();
    for (const entry of entries) {
      if (!entry.source) continue;
      listed.set(entry.uid, entry.source);
      delete entry.source;
    }
    const uids = smallUids(entries.filter((e) => !listed.has(e.uid)));
    if (uids.length === 0) return listed;
    const ahead = this.ahead;
    let fetched: Map<number, Buffer>;
    if (!ahead || ahead.key !== uids.join(',')) fetched = await this.session.fetchSources(uids);
    else {
      this.ahead = undefined;
      const result = await ahead.result;
      if (!(result instanceof Map)) throw result.error;
      fetched = result;
    }
    for (const [uid, source] of listed) fetched.set(uid, source);
    return fetched;
  }

  /** Waits for a prefetch still under way and drops it: the session carries no command after. */
  async settle(): Promise<void> {
    const ahead = this.ahead;
    this.ahead = undefined;
    if (ahead) await ahead.result;
  }
}

const smallUids = (entries: MailboxEntry[]) => entries.filter((m) => m.size <= SMALL_MAIL_BYTES).map((m) => m.uid);

export async function readBatch(
  reader: SourceReader,
  session: MailboxSession,
  entries: MailboxEntry[],
): Promise<{ read: ReadMail[]; gone: number[] }> {
  const sources = await reader.sources(entries);
  const heads = await session.fetchHeads(entries.filter((m) => m.size > SMALL_MAIL_BYTES).map((m) => m.uid));
  const read: ReadMail[] = [];
  const gone: number[] = [];
  for (const entry of entries) {
    const source = sources.get(entry.uid);
    const header = source ? headerSection(source) : heads.get(entry.uid)?.header;
    if (!header) {
      gone.push(entry.uid);
      continue;
    }
    read.push({ entry, header, headerSha256: createHash('sha256').update(header).digest('hex'), source });
  }
  return { read, gone };
}
