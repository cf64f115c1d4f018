/**
 * Doctor's check of the Sent-folder assumption. A reply whose send was interrupted after its data
 * went out is looked for in the mailbox's Sent folder once its lease (INBOXQ_REPLY_LEASE_SECONDS)
 * is over, and sent again only when it is not there (shared/reply/reply.ts). That is exactly-once
 * only if the server keeps a copy of mail submitted over SMTP in Sent, and does so within the lease.
 *
 * The check sends one mail from the mailbox to itself over the app's own SMTP path, sees it arrive,
 * and looks for its copy in Sent until the lease is over. The probe is marked auto-generated (a
 * drain that meets it first rejects it: no task, no reply) and deleted from every folder it was
 * found in afterwards.
 */
import { randomBytes } from 'node:crypto';

import type { InboxqConfig } from '../config/types';
import type { TokenSource } from '../credentials/token';
import { describeError } from '../errors';
import { MailboxSession } from '../mailbox/imap';
import { sendMail } from '../reply/smtp';
import { silentLogger } from '../telemetry/log';

export interface SentFolderResult {
  status: 'pass' | 'fail';
  detail: string;
  fix?: string;
}

const POLL_MS = 1000;

export async function checkSentFolder(
  config: InboxqConfig,
  tokens: TokenSource,
  options: { sleep?: (ms: number) => Promise<void> } = {},
): Promise<SentFolderResult> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const domain = config.mailbox.split('@')[1] ?? 'inboxq.invalid';
  const messageId = `<inboxq-doctor.${randomBytes(8).toString('hex')}@${domain}>`;
  const leaseS = Math.round(config.reply.leaseMs / 1000);
  const started = Date.now();
  await sendMail(
    config,
    tokens,
    {
      from: config.mailbox,
      to: config.mailbox,
      subject: 'inboxq doctor: Sent-folder check (delete me)',
      messageId,
      headers: { 'Auto-Submitted': 'auto-generated', 'X-Inboxq-Doctor': 'sent-folder-check' },
      text: 'inboxq doctor sent this mail to its own mailbox to check that a copy is kept in Sent. It is deleted after the check.\n',
    },
    silentLogger,
  );
  const session = await MailboxSession.open({ config, tokens, log: silentLogger, timeoutMs: 15_000 });
  try {
    const sent = await session.sentFolder();
    if (!sent) {
      await sleep(POLL_MS * 2); // the test mail's arrival, to delete it
      await cleanUp(session, ['INBOX', config.drain.processedFolder], messageId);
      return {
        status: 'fail',
        detail: `the mailbox has no Sent folder inboxq can recognise (none marked \\Sent by the server, none with a known name): a reply whose send was interrupted can't be checked there`,
        fix: 'Exchange Online marks its Sent Items folder \\Sent; check that the mailbox has one (Get-MailboxFolderStatistics -Identity <mailbox> -FolderScope SentItems)',
      };
    }
    const received = ['INBOX', config.drain.processedFolder];
    let sentAfter: number | undefined;
    let arrivedAfter: number | undefined;
    while (Date.now() - started <= config.reply.leaseMs && (sentAfter === undefined || arrivedAfter === undefined)) {
      if (sentAfter === undefined && (await has(session, sent, messageId))) sentAfter = Date.now() - started;
      if (arrivedAfter === undefined)
        for (const folder of received) if (await has(session, folder, messageId)) arrivedAfter = Date.now() - started;
      if (sentAfter === undefined || arrivedAfter === undefined) await sleep(POLL_MS);
    }
    await cleanUp(session, [sent, ...received, config.drain.quarantineFolder], messageId);
    const arrival =
      arrivedAfter === undefined
        ? `it did not arrive in INBOX within ${leaseS} s`
        : `it arrived after ${(arrivedAfter / 1000).toFixed(1)} s`;
    if (sentAfter !== undefined)
      return {
        status: 'pass',
        detail: `a test mail to itself left a copy in ${sent} after ${(sentAfter / 1000).toFixed(1)} s (the reply lease is ${leaseS} s) and ${arrival}: a reply whose send was interrupted is found there and not sent twice`,
      };
    return {
      status: 'fail',
      detail: `a test mail to itself left no copy in ${sent} within the reply lease (${leaseS} s); ${arrival}. Without the copy, a reply whose send was interrupted after its data went out is sent again: replies are at least once, not exactly once`,
      fix: `Exchange Online keeps mail sent over SMTP AUTH in Sent Items; check that ${sent} is the mailbox's Sent folder and that no rule or retention policy removes mail from it. If the copy only comes late, raise INBOXQ_REPLY_LEASE_SECONDS above the delay`,
    };
  } finally {
    await session.close();
  }
}

async function has(session: MailboxSession, folder: string, messageId: string): Promise<boolean> {
  try {
    return await session.hasMessageId(folder, messageId);
  } catch {
    return false; // a folder that does not exist (yet)
  }
}

/** Deletes the probe wherever it is; a failure to clean up is not the check's result. */
async function cleanUp(session: MailboxSession, folders: string[], messageId: string): Promise<void> {
  for (const folder of new Set(folders)) {
    try {
      await session.deleteByMessageId(folder, messageId);
    } catch (err) {
      silentLogger.warn(`Could not delete the doctor's test mail from ${folder}`, { error: describeError(err) });
    }
  }
}
