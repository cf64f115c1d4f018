/**
 * Sends one reply from the replies queue, exactly once.
 *
 * The queue delivers at least once, so the ledger decides:
 *   no row         -> claim it as `sending`, send, mark `sent`
 *   `sent`         -> a redelivery: nothing is sent
 *   `sending`, new -> another delivery is sending it right now: retry later (ReplyInProgressError)
 *   `sending`, old -> a crash after SMTP may or may not have sent it: look for its Message-ID in the
 *                     mailbox's Sent folder (Exchange keeps a copy of mail submitted over SMTP AUTH)
 *                     and send only if it is not there.
 * Only a task that was accepted and queued can be answered: a rejected sender never gets mail.
 */
import type { InboxqConfig } from '../config/settings';
import { describeIssues, MAIL_CONTAINER, replyMessageSchema, type ReplyMessage } from '../contract/messages';
import type { TokenSource } from '../credentials/token';
import { InvalidMessageError, ReplyInProgressError, UnknownTaskError } from '../errors';
import type { Ledger, ReplyRecord } from '../ledger/ledger';
import { MailboxSession } from '../mailbox/imap';
import { BlobStore } from '../storage/blobs';
import type { StorageClients } from '../storage/clients';
import type { Logger } from '../telemetry/log';
import { composeReply, replyMessageId, type ComposedAttachment } from './compose';
import { sendMail } from './smtp';

/** How long a `sending` row is taken to mean "another delivery is on it" before the Sent folder is checked. */
export const REPLY_LEASE_MS = 60_000;

export type ReplyStep = 'claimed' | 'smtp-accepted' | 'recorded';

export interface ReplyDeps {
  config: InboxqConfig;
  tokens: TokenSource;
  ledger: Ledger;
  storage: StorageClients;
  log: Logger;
  onStep?: (step: ReplyStep, info: { taskId: string; replyId: string }) => void | Promise<void>;
  now?: () => number;
}

export type ReplyOutcome = 'sent' | 'already-sent' | 'found-in-sent-folder';

export function parseReplyMessage(input: unknown, mailbox: string): ReplyMessage {
  let value = input;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      throw new InvalidMessageError('The reply message is not JSON', ['message: expected a JSON object as in docs/contract.md'], { mailbox });
    }
  }
  const parsed = replyMessageSchema.safeParse(value);
  if (!parsed.success) throw new InvalidMessageError('The reply message does not follow the contract (docs/contract.md)', describeIssues(parsed.error), { mailbox });
  return parsed.data;
}

export async function sendReply(input: unknown, deps: ReplyDeps): Promise<{ outcome: ReplyOutcome; taskId: string; replyId: string; messageId: string }> {
  const { config, ledger, log } = deps;
  const now = deps.now ?? Date.now;
  const reply = parseReplyMessage(input, config.mailbox);
  if (reply.mailbox.toLowerCase() !== config.mailbox) {
    throw new InvalidMessageError('The reply names another mailbox', [`mailbox: ${reply.mailbox} is not served here (${config.mailbox})`], { mailbox: config.mailbox });
  }
  const { taskId, replyId } = reply;
  const ids = { mailbox: config.mailbox, taskId, replyId };
  const task = await ledger.getMessage(config.mailbox, taskId);
  if (!task) {
    throw new UnknownTaskError(`Reply ${replyId} names task ${taskId}, which this mailbox never queued`, {
      mailbox: config.mailbox,
      hint: 'a worker must answer with the taskId of a task message it received',
    });
  }
  if (task.state !== 'queued' || !task.sender) {
    throw new InvalidMessageError('The reply answers a mail that was not accepted', [`taskId: task ${taskId} is ${task.state}; only accepted mail is answered`], {
      mailbox: config.mailbox,
    });
  }

  const messageId = replyMessageId(config.mailbox, taskId, replyId);
  const claim = await ledger.claimReply({
    mailbox: config.mailbox,
    taskId,
    replyId,
    state: 'sending',
    messageId,
    attempts: 1,
    sendingSince: new Date(now()).toISOString(),
    sentAt: null,
  });
  let record: ReplyRecord = claim.record;

  if (!claim.created) {
    if (record.state === 'sent') {
      log.info('Reply was already sent; this delivery is a duplicate', ids);
      return { outcome: 'already-sent', taskId, replyId, messageId };
    }
    const age = now() - Date.parse(record.sendingSince);
    if (age < REPLY_LEASE_MS) {
      throw new ReplyInProgressError(`Reply ${replyId} to task ${taskId} is being sent by another delivery (since ${Math.round(age / 1000)} s)`, {
        mailbox: config.mailbox,
        retryable: true,
        hint: 'nothing to do: this delivery is retried after the queue visibility timeout',
      });
    }
    if (await foundInSentFolder(deps, messageId)) {
      await ledger.updateReply(record, { state: 'sent', sentAt: new Date(now()).toISOString() });
      log.info('Reply found in the Sent folder after an interrupted send; not sending it again', ids);
      return { outcome: 'found-in-sent-folder', taskId, replyId, messageId };
    }
    // Claims the retry; a concurrent delivery doing the same loses on the etag.
    try {
      record = await ledger.updateReply(record, { attempts: record.attempts + 1, sendingSince: new Date(now()).toISOString() });
    } catch (err) {
      throw new ReplyInProgressError(`Reply ${replyId} to task ${taskId} was taken over by another delivery`, { mailbox: config.mailbox, retryable: true, cause: err });
    }
  }
  await deps.onStep?.('claimed', { taskId, replyId });

  const attachments = await loadAttachments(deps, reply);
  const mail = composeReply(task, reply, attachments);
  const result = await sendMail(config, deps.tokens, mail, log);
  await deps.onStep?.('smtp-accepted', { taskId, replyId });
  await ledger.updateReply(record, { state: 'sent', sentAt: new Date(now()).toISOString() });
  await deps.onStep?.('recorded', { taskId, replyId });
  log.info('Reply sent', { ...ids, messageId, attempts: record.attempts });
  return { outcome: 'sent', taskId, replyId, messageId: result.messageId || messageId };
}

async function loadAttachments(deps: ReplyDeps, reply: ReplyMessage): Promise<ComposedAttachment[]> {
  if (reply.attachments.length === 0) return [];
  const blobs = new BlobStore(deps.storage, MAIL_CONTAINER, deps.config.mailbox);
  const out: ComposedAttachment[] = [];
  for (const a of reply.attachments) {
    out.push({ filename: a.filename, contentType: a.contentType, content: await blobs.get(a.blob.name) });
  }
  return out;
}

async function foundInSentFolder(deps: ReplyDeps, messageId: string): Promise<boolean> {
  const session = await MailboxSession.open({ config: deps.config, tokens: deps.tokens, log: deps.log });
  try {
    const sent = (await session.specialFolder('\\Sent')) ?? 'Sent Items';
    return await session.hasMessageId(sent, messageId);
  } finally {
    await session.close();
  }
}
