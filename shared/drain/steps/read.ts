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

export async function readBatch(
  session: MailboxSession,
  entries: MailboxEntry[],
): Promise<{ read: ReadMail[]; gone: number[] }> {
  const sources = await session.fetchSources(entries.filter((m) => m.size <= SMALL_MAIL_BYTES).map((m) => m.uid));
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
