/**
 * Sends one reply from the replies queue, exactly once.
 *
 * The queue delivers at least once, so the ledger decides:
 *   no row           -> claim it as `sending`, send, mark `sent`
 *   `sent`           -> a redelivery: nothing is sent
 *   `unsent`         -> the last attempt was refused by the server, so nothing went out: send again
 *   `sending`, fresh -> another delivery is sending it right now. When that delivery is of another
 *                       queue message (a duplicate request: an acknowledgement asked for twice after
 *                       a crash, a worker that answered twice), this one is settled without error:
 *                       the other message stays on the queue until it has sent the reply. When it is
 *                       this same message, redelivered, retry later (ReplyInProgressError).
 *   `sending`, old   -> a delivery died after the message data may have reached the server: look for
 *                       its Message-ID in the mailbox's Sent folder (Exchange keeps a copy of mail
 *                       submitted over SMTP AUTH) and send only if it is not there.
 * Only an accepted task can be answered: a rejected sender never gets mail.
 *
 * Pacing: Exchange Online accepts 30 messages a minute per mailbox. When the minute is full, the
 * reply is put back on the queue, invisible until the next minute, instead of failing.
 */
import type { InboxqConfig } from '../config/types';
import type { MailboxContext } from '../context';
import {
  type AcknowledgementsMessage,
  describeIssues,
  type FailureNoticeMessage,
  failureNoticeSchema,
  replyAttachmentPrefix,
  type ReplyMessage,
  replyMessageSchema,
  RESERVED_REPLY_ID_PREFIX,
} from '../contract/messages';
import {
  authFailureStage,
  describeError,
  ImapError,
  InboxqError,
  InvalidMessageError,
  ReplyInProgressError,
  SmtpError,
  UnknownTaskError,
} from '../errors';
import { blockSending, readPaceAhead, takeSendingSlot } from '../ledger/pacing';
import { ATTACHMENTS_FOLDER, mailBlobPrefix, type MessageRecord, type ReplyRecord } from '../ledger/rows';
import { SmtpSlots } from '../ledger/smtp-slots';
import { MailboxSession } from '../mailbox/imap';
import { BlobStore } from '../storage/blobs';
import { sendQueueMessage } from '../storage/queues';
import { inboxqMetrics } from '../telemetry/metrics';
import { type ComposedAttachment, composeReply, replyMessageId } from './compose';
import { parkPoisonedReply } from './parked';
import { sendMail } from './smtp';

/** replyId of the notice a sender gets when the answer to their mail can't be delivered. */
export const FAILURE_NOTICE_REPLY_ID = 'inboxq-failure-notice';
/** replyId of the acknowledgement of a conversation's first mail (shared/reply/acknowledge.ts). */
export const ACKNOWLEDGEMENT_REPLY_ID = 'inboxq-ack';

export type ReplyStep = 'claimed' | 'smtp-accepted' | 'recorded';

/**
 * How long a mailbox sends nothing after Exchange throttled it (550 5.2.25x), refused it past its
 * daily quota (554 5.2.0 SubmissionQuotaExceeded) or found it full: replies wait on the queue.
 */
export const THROTTLED_SENDING_PAUSE_MS = 15 * 60_000;

export interface ReplyDeps extends MailboxContext {
  onStep?: (step: ReplyStep, info: { taskId: string; replyId: string }) => void | Promise<void>;
  /** The id of the queue message being delivered (the trigger's `id`): tells a duplicate request from a redelivery. */
  deliveryId?: string;
}

export type ReplyOutcome = 'sent' | 'already-sent' | 'found-in-sent-folder' | 'deferred' | 'in-progress-elsewhere';

/**
 * Who asked for a reply: a worker (its reply message, as it wrote it), or inboxq itself (an
 * acknowledgement, a failure notice), whose replies use the reserved `inboxq-` ids and go back on
 * the queue, when deferred, as inboxq's own message, never as a reply a worker could have written.
 */
export type ReplyOrigin = 'worker' | 'acknowledgement' | 'failure-notice';

export function parseReplyMessage(input: unknown, mailbox: string): ReplyMessage {
  let value = input;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      throw new InvalidMessageError(
        'The reply message is not JSON',
        ['message: expected a JSON object as in docs/contract.md'],
        { mailbox },
      );
    }
  }
  const parsed = replyMessageSchema.safeParse(value);
  if (!parsed.success)
    throw new InvalidMessageError(
      'The reply message does not follow the contract (docs/contract.md)',
      describeIssues(parsed.error),
      { mailbox },
    );
  return parsed.data;
}

async function answerableTask(deps: ReplyDeps, reply: ReplyMessage): Promise<MessageRecord> {
  const { config, ledger } = deps;
  if (reply.mailbox.toLowerCase() !== config.mailbox) {
    throw new InvalidMessageError(
      'The reply names another mailbox',
      [`mailbox: ${reply.mailbox} is not served here (${config.mailbox})`],
      { mailbox: config.mailbox },
    );
  }
  const task = await ledger.getMessage(config.mailbox, reply.taskId);
  if (!task) {
    throw new UnknownTaskError(
      `Reply ${reply.replyId} names task ${reply.taskId}, which this mailbox never queued (or whose mail has expired)`,
      {
        mailbox: config.mailbox,
        hint: 'a worker must answer with the taskId of a task message it received',
      },
    );
  }
  // Still being drained: the task is on its queue a moment before its row says so (sendReplyOnce defers).
  if (task.state === 'claimed') return task;
  if ((task.state !== 'queued' && task.state !== 'failed') || !task.sender) {
    throw new InvalidMessageError(
      'The reply answers a mail that was not accepted',
      [`taskId: task ${reply.taskId} is ${task.state}; only accepted mail is answered`],
      {
        mailbox: config.mailbox,
      },
    );
  }
  return task;
}

export async function sendReply(
  input: unknown,
  deps: ReplyDeps,
  origin: ReplyOrigin = 'worker',
): Promise<{ outcome: ReplyOutcome; taskId: string; replyId: string; messageId: string }> {
  const result = await sendReplyOnce(input, deps, origin);
  inboxqMetrics.reply(deps.config.mailbox, result.outcome);
  return result;
}

/** What goes back on the replies queue for a deferred reply: the worker's reply, or inboxq's own message for its own. */
function requeued(
  reply: ReplyMessage,
  origin: ReplyOrigin,
): ReplyMessage | AcknowledgementsMessage | FailureNoticeMessage {
  if (origin === 'acknowledgement')
    return { type: 'inboxq.acknowledgements', version: 1, mailbox: reply.mailbox, taskIds: [reply.taskId] };
  if (origin === 'failure-notice')
    return { type: 'inboxq.failure-notice', version: 1, mailbox: reply.mailbox, taskId: reply.taskId };
  return reply;
}

async function sendReplyOnce(
  input: unknown,
  deps: ReplyDeps,
  origin: ReplyOrigin,
): Promise<{ outcome: ReplyOutcome; taskId: string; replyId: string; messageId: string }> {
  const { config, ledger, log } = deps;
  const now = deps.now ?? Date.now;
  const reply = parseReplyMessage(input, config.mailbox);
  if (origin === 'worker' && reply.replyId.startsWith(RESERVED_REPLY_ID_PREFIX))
    throw new InvalidMessageError(
      "The reply uses a reply id of inboxq's own",
      [
        `replyId: ids starting with "${RESERVED_REPLY_ID_PREFIX}" are inboxq's acknowledgements and notices; a worker's reply needs another id`,
      ],
      { mailbox: config.mailbox },
    );
  // The pace row is read while the task row is read and the reply claimed: one round trip fewer in turn.
  const pace = readPaceAhead(deps.storage, config.mailbox);
  const task = await answerableTask(deps, reply);
  const { taskId, replyId } = reply;
  const ids = { mailbox: config.mailbox, taskId, replyId };
  // Checked before anything is claimed or sent: a reply that may not attach what it names never goes out.
  checkAttachments(config, reply);

  const messageId = replyMessageId(config.mailbox, taskId, replyId);
  if (task.state === 'claimed') return deferWhileDrained(deps, reply, task, messageId, now);
  const claim = await ledger.claimReply({
    mailbox: config.mailbox,
    taskId,
    replyId,
    state: 'sending',
    messageId,
    attempts: 1,
    sendingSince: new Date(now()).toISOString(),
    deliveryId: deps.deliveryId ?? '',
    sentAt: null,
  });
  let record: ReplyRecord = claim.record;

  if (!claim.created) {
    if (record.state === 'sent') {
      log.info('Reply was already sent; this delivery is a duplicate', ids);
      return { outcome: 'already-sent', taskId, replyId, messageId };
    }
    if (record.state === 'sending') {
      const age = now() - Date.parse(record.sendingSince);
      if (age < config.reply.leaseMs && sentByAnotherRequest(record, deps)) {
        log.info(
          'Reply is being sent by the delivery of another request for it; this duplicate request is settled',
          ids,
        );
        return { outcome: 'in-progress-elsewhere', taskId, replyId, messageId };
      }
      if (age < config.reply.leaseMs) {
        throw new ReplyInProgressError(
          `Reply ${replyId} to task ${taskId} is being sent by another delivery (since ${Math.round(age / 1000)} s)`,
          {
            mailbox: config.mailbox,
            retryable: true,
            hint: 'nothing to do: this delivery is retried after the queue visibility timeout',
          },
        );
      }
      const checkedAt = new Date(now()).toISOString();
      if (await foundInSentFolder(deps, messageId)) {
        await ledger.updateReply(record, { state: 'sent', sentAt: checkedAt, sentFolderCheck: `found ${checkedAt}` });
        log.info('Reply found in the Sent folder after an interrupted send; not sending it again', ids);
        return { outcome: 'found-in-sent-folder', taskId, replyId, messageId };
      }
      record = { ...record, sentFolderCheck: `missing ${checkedAt}` };
    }
    // `unsent`, `failed` (a worker queued it again), or an interrupted send that did not go out:
    // claim this attempt; a concurrent delivery doing the same loses on the etag.
    try {
      record = await ledger.updateReply(record, {
        state: 'sending',
        attempts: record.attempts + 1,
        sendingSince: new Date(now()).toISOString(),
        deliveryId: deps.deliveryId ?? '',
      });
    } catch (err) {
      const current = await ledger.getReply(config.mailbox, taskId, replyId);
      if (
        current &&
        (current.state === 'sent' || (current.state === 'sending' && sentByAnotherRequest(current, deps)))
      ) {
        log.info(
          'Reply was taken over by the delivery of another request for it; this duplicate request is settled',
          ids,
        );
        return {
          outcome: current.state === 'sent' ? 'already-sent' : 'in-progress-elsewhere',
          taskId,
          replyId,
          messageId,
        };
      }
      throw new ReplyInProgressError(`Reply ${replyId} to task ${taskId} was taken over by another delivery`, {
        mailbox: config.mailbox,
        retryable: true,
        cause: err,
      });
    }
  }
  await deps.onStep?.('claimed', { taskId, replyId });

  const defer = async (seconds: number, line: string, lastResponse?: string) => {
    await sendQueueMessage(deps.storage, config.repliesQueue, requeued(reply, origin), {
      mailbox: config.mailbox,
      visibilityTimeoutSeconds: seconds,
    });
    await ledger.updateReply(record, { state: 'unsent', ...(lastResponse ? { lastResponse } : {}) });
    log.info(`${line}; reply deferred by ${seconds} s`, ids);
    return { outcome: 'deferred' as const, taskId, replyId, messageId };
  };
  let response: string;
  try {
    const wait = await takeSendingSlot(deps.storage, config.mailbox, config.reply.maxPerMinute, now, pace);
    if (wait > 0) {
      const seconds = Math.ceil(wait / 1000) + Math.floor(Math.random() * 5);
      return await defer(
        seconds,
        `Sending pace reached (${config.reply.maxPerMinute} a minute), or sending paused after Exchange throttled the mailbox`,
      );
    }
    const attachments = await attachmentsOf(deps, reply);
    const mail = () => composeReply(task, reply, attachments());
    response = (await sendMail(config, deps.tokens, mail, log, new SmtpSlots(deps.storage, config.mailbox))).response;
  } catch (err) {
    if (err instanceof SmtpError && err.failure === 'busy') {
      // Every connection the mailbox may have is in use: a deferral, not a failure.
      return await defer(
        2 + Math.floor(Math.random() * 8),
        'The SMTP connections of the mailbox are all in use',
        err.message,
      );
    }
    if (err instanceof SmtpError && err.failure === 'throttled') {
      // Exchange won't take mail from the mailbox for a while: every instance waits, without connecting.
      await blockSending(deps.storage, config.mailbox, now() + THROTTLED_SENDING_PAUSE_MS);
      inboxqMetrics.reply(config.mailbox, 'throttled');
      log.warn(`Exchange stopped the mailbox from sending: ${err.summary}`, ids);
      return await defer(
        THROTTLED_SENDING_PAUSE_MS / 1000 + Math.floor(Math.random() * 30),
        'Sending paused',
        err.message,
      );
    }
    const refused = authFailureStage(err);
    if (refused) inboxqMetrics.authFailure(config.mailbox, refused);
    // Unless the message may have reached the server, this attempt certainly sent nothing: the
    // next delivery sends at once instead of waiting for the lease and the Sent folder.
    const lastResponse = err instanceof SmtpError ? err.message : describeError(err);
    if (!(err instanceof SmtpError && err.mayHaveBeenSent))
      await ledger.updateReply(record, { state: 'unsent', lastResponse }).catch(() => undefined);
    else await ledger.updateReply(record, { lastResponse }).catch(() => undefined);
    throw err;
  }
  await deps.onStep?.('smtp-accepted', { taskId, replyId });
  await ledger.updateReply(record, { state: 'sent', sentAt: new Date(now()).toISOString(), lastResponse: response });
  await deps.onStep?.('recorded', { taskId, replyId });
  log.info('Reply sent', { ...ids, messageId, attempts: record.attempts });
  if (task.state === 'failed' && replyId !== ACKNOWLEDGEMENT_REPLY_ID && replyId !== FAILURE_NOTICE_REPLY_ID) {
    // A poisoned answer replayed (inboxq replay): the task is answered after all.
    const note = `the reply ${replyId} was delivered after all (${new Date(now()).toISOString()})`;
    await ledger
      .updateMessage(task, { state: 'queued', reasons: [...task.reasons, note] })
      .catch((err: unknown) =>
        log.warn('Could not record that the task is answered after all', { ...ids, error: describeError(err) }),
      );
  }
  return { outcome: 'sent', taskId, replyId, messageId };
}

/** True when the row's sending delivery is of another queue message than this one (both known). */
function sentByAnotherRequest(record: ReplyRecord, deps: ReplyDeps): boolean {
  return Boolean(deps.deliveryId && record.deliveryId && record.deliveryId !== deps.deliveryId);
}

/**
 * A reply that ended in the poison queue: its task is marked failed, and (INBOXQ_FAILURE_NOTICE)
 * the sender is told their answer could not be delivered. Malformed messages are only logged:
 * there is no task to mark.
 */
export async function handlePoisonedReply(
  input: unknown,
  deps: ReplyDeps,
): Promise<'marked-failed' | 'notice-sent' | 'unreadable' | 'already-sent'> {
  const { config, ledger, log } = deps;
  const refused = refusalOf(input);
  const because = refused ? ` (refused: ${refused})` : '';
  let reply: ReplyMessage;
  let task: MessageRecord;
  try {
    reply = parseReplyMessage(input, config.mailbox);
    task = await answerableTask(deps, reply);
  } catch (err) {
    if (err instanceof InvalidMessageError || err instanceof UnknownTaskError) {
      log.error(`A poisoned reply can't be tied to a task of this mailbox and is dropped: ${err.message}${because}`, {
        mailbox: config.mailbox,
      });
      return 'unreadable';
    }
    throw err;
  }
  const ids = { mailbox: config.mailbox, taskId: reply.taskId, replyId: reply.replyId };
  if (refused && reply.replyId.startsWith(RESERVED_REPLY_ID_PREFIX)) {
    // A worker's reply under inboxq's own id: neither the task nor inboxq's own reply is touched.
    log.error(`A reply under a reply id of inboxq's own was refused and is dropped${because}`, ids);
    return 'unreadable';
  }
  const record = await ledger.getReply(config.mailbox, reply.taskId, reply.replyId);
  if (record?.state === 'sent') return 'already-sent';
  // Kept first, so `inboxq replay replies-poison` can send it once the cause is fixed.
  await parkPoisonedReply(deps.storage, reply, refused ? { ...reply, refused } : reply);
  if (record) await ledger.updateReply(record, { state: 'failed' });
  if (reply.replyId === ACKNOWLEDGEMENT_REPLY_ID) {
    // Only the acknowledgement was lost: the task itself goes on, and its answer may still arrive.
    inboxqMetrics.reply(config.mailbox, 'failed');
    log.error('An acknowledgement could not be delivered after its retries; the task is not affected', ids);
    return 'marked-failed';
  }
  if (task.state !== 'failed')
    await ledger.updateMessage(task, {
      state: 'failed',
      reasons: [
        ...task.reasons,
        `the reply ${reply.replyId} could not be delivered${refused ? `: refused, ${refused}` : ''}`,
      ],
    });
  inboxqMetrics.reply(config.mailbox, 'failed');
  log.error(
    refused
      ? `A reply was refused; the task is marked failed${because}`
      : 'A reply could not be delivered after its retries; the task is marked failed',
    ids,
  );
  if (!config.reply.failureNotice || reply.replyId === FAILURE_NOTICE_REPLY_ID) return 'marked-failed';
  await sendReply(failureNoticeFor(config.mailbox, task), deps, 'failure-notice');
  return 'notice-sent';
}

/** The reason a reply was refused (what the reply function wrote beside it on the poison queue), if it was. */
export function refusalOf(message: unknown): string | undefined {
  const refused =
    typeof message === 'object' && message !== null ? (message as { refused?: unknown }).refused : undefined;
  return typeof refused === 'string' ? refused.slice(0, 2000) : undefined;
}

/** The notice that tells a sender the answer to their mail could not be delivered. */
export function failureNoticeFor(mailbox: string, task: MessageRecord): ReplyMessage {
  return {
    type: 'inboxq.reply',
    version: 1,
    taskId: task.taskId,
    mailbox,
    replyId: FAILURE_NOTICE_REPLY_ID,
    text: [
      'Hello,',
      '',
      `your message "${task.subject || '(no subject)'}" was received as task ${task.taskId}, but the answer to it could not be delivered.`,
      'Please send your request again, or contact the owner of this mailbox.',
      '',
      '(This notice was sent automatically.)',
    ].join('\n'),
    attachments: [],
  };
}

/** A failure notice that was deferred (inboxq's own `inboxq.failure-notice` message): sent once, like any reply. */
export async function sendDeferredFailureNotice(message: unknown, deps: ReplyDeps): Promise<ReplyOutcome> {
  const parsed = failureNoticeSchema.safeParse(message);
  if (!parsed.success)
    throw new InboxqError('A failure-notice message is malformed', {
      mailbox: deps.config.mailbox,
      hint: 'only inboxq writes it; this is a bug',
    });
  const task = await deps.ledger.getMessage(deps.config.mailbox, parsed.data.taskId);
  if (!task || task.state !== 'failed') return 'already-sent';
  return (await sendReply(failureNoticeFor(deps.config.mailbox, task), deps, 'failure-notice')).outcome;
}

/** A reply to a task whose drain has not recorded it yet waits this long between looks. */
export const CLAIMED_DEFER_SECONDS = 15;

/**
 * A task is queued a moment before its ledger row says `queued` (the row is recorded right after the
 * send), and a drain killed in between leaves the row `claimed` until a later run, past the run
 * lease, resumes it. A fast worker's answer in that window is not a refusal: it goes back on the
 * queue for CLAIMED_DEFER_SECONDS, as a new message (never poisoned by its deliveries), for as long
 * as a drain may still record the mail: the lease and an hour more. Past that the row will not
 * change, and the reply is refused as answering a mail that was never accepted.
 */
async function deferWhileDrained(
  deps: ReplyDeps,
  reply: ReplyMessage,
  task: MessageRecord,
  messageId: string,
  now: () => number,
): Promise<{ outcome: ReplyOutcome; taskId: string; replyId: string; messageId: string }> {
  const { config, log } = deps;
  const { taskId, replyId } = reply;
  const claimedSince = Date.parse(task.claimedAt);
  if (!(now() - claimedSince <= config.drain.leaseMs + 3600_000)) {
    throw new InvalidMessageError(
      'The reply answers a mail that was never accepted',
      [`taskId: task ${taskId} was claimed at ${task.claimedAt} and no drain has recorded it since`],
      { mailbox: config.mailbox },
    );
  }
  const seconds = CLAIMED_DEFER_SECONDS + Math.floor(Math.random() * 5);
  await sendQueueMessage(deps.storage, config.repliesQueue, reply, {
    mailbox: config.mailbox,
    visibilityTimeoutSeconds: seconds,
  });
  log.info(`The reply's task is still being drained (its row says claimed); reply deferred by ${seconds} s`, {
    mailbox: config.mailbox,
    taskId,
    replyId,
  });
  return { outcome: 'deferred', taskId, replyId, messageId };
}

/** A segment of a blob name a reply may attach: not a dot segment, no separator, percent-encoding or control character. */
function isPlainSegment(segment: string): boolean {
  if (segment.length === 0 || segment.length > 255 || segment === '.' || segment === '..') return false;
  for (const ch of segment) {
    const code = ch.codePointAt(0)!;
    if (code < 0x20 || code === 0x7f || ch === '\\' || ch === '%') return false;
  }
  return true;
}

/**
 * Where a reply may attach blobs from: its mailbox's container, under `replies/<taskId>/` (what
 * TaskWorker.putReplyAttachment writes) or under the task's own attachments. Anything else (another
 * container, another mailbox's or another task's blobs, a name that climbs out with `..`, hides a
 * separator in `%2F` or `\`) is refused before anything is sent: the reply goes to the poison queue
 * with the reason.
 */
export function checkAttachments(config: Pick<InboxqConfig, 'mailbox' | 'mailContainer'>, reply: ReplyMessage): void {
  const allowed = [
    replyAttachmentPrefix(reply.taskId),
    `${mailBlobPrefix(config.mailbox, reply.taskId)}${ATTACHMENTS_FOLDER}`,
  ];
  const problems: string[] = [];
  for (const [i, a] of reply.attachments.entries()) {
    const { container, name } = a.blob;
    const prefix = allowed.find((p) => name.startsWith(p));
    const rest = prefix === undefined ? '' : name.slice(prefix.length);
    if (container !== config.mailContainer)
      problems.push(`attachments.${i}.blob: container ${container} is not this mailbox's (${config.mailContainer})`);
    else if (prefix === undefined || !rest.split('/').every(isPlainSegment))
      problems.push(
        `attachments.${i}.blob: ${JSON.stringify(name)} is not under ${allowed[0]} (where the worker puts reply attachments) or the task's own attachments, as one plain name`,
      );
  }
  if (problems.length > 0)
    throw new InvalidMessageError('The reply attaches a blob it may not', problems, {
      mailbox: config.mailbox,
      hint: "a reply may attach only what TaskWorker.putReplyAttachment stored for its task (replies/<taskId>/<name> in the mailbox's container) or the task's own attachments",
    });
}

/**
 * The reply's attachments: each blob checked to be there now (a missing one fails the reply before
 * anything is sent), then read as the mail goes out, a fresh stream per attempt. Never held in
 * memory: eight replies at once with a 20 MB attachment each would take more than a 512-MB
 * instance has (docs/operations.md, The instance size).
 */
async function attachmentsOf(deps: ReplyDeps, reply: ReplyMessage): Promise<() => ComposedAttachment[]> {
  if (reply.attachments.length === 0) return () => [];
  const blobs = new BlobStore(deps.storage, deps.config.mailContainer, deps.config.mailbox);
  for (const a of reply.attachments) await blobs.size(a.blob.name);
  return () =>
    reply.attachments.map((a) => ({
      filename: a.filename,
      contentType: a.contentType,
      content: blobs.lazyStream(a.blob.name),
    }));
}

async function foundInSentFolder(deps: ReplyDeps, messageId: string): Promise<boolean> {
  const session = await MailboxSession.open({ config: deps.config, tokens: deps.tokens, log: deps.log });
  try {
    const sent = await session.sentFolder();
    if (!sent)
      throw new ImapError(
        `The mailbox ${deps.config.mailbox} has no Sent folder inboxq can recognise (none marked \\Sent, none with a known name), so an interrupted send can't be checked`,
        'protocol',
        {
          mailbox: deps.config.mailbox,
          hint: 'the reply is retried and ends in the poison queue if this persists; `inboxq doctor` (step Sent folder) says what the mailbox has',
        },
      );
    return await session.hasMessageId(sent, messageId);
  } finally {
    await session.close();
  }
}
