/**
 * The acknowledgement: a short answer to the first mail of a conversation, telling the sender
 * their mail arrived and which task it became. The drain puts one `inboxq.acknowledgements`
 * message per batch on the replies queue; the reply function sends each acknowledgement as a reply
 * like any other (threaded, tagged, paced, sent once) under a reply id of its own.
 */
import type { InboxqConfig } from '../config/types';
import { acknowledgementsSchema, type ReplyMessage } from '../contract/messages';
import { describeError, InboxqError } from '../errors';
import type { MessageRecord } from '../ledger/rows';
import { ACKNOWLEDGEMENT_REPLY_ID, type ReplyDeps, sendReply } from './reply';

export { ACKNOWLEDGEMENT_REPLY_ID };

/** The acknowledgement text with its placeholders filled in. */
export function acknowledgementText(
  template: string,
  values: { taskId: string; conversationId: string; subject: string; mailbox: string },
): string {
  return template.replace(
    /\{(taskId|conversationId|subject|mailbox)\}/g,
    (_m, name: keyof typeof values) => values[name],
  );
}

/** The subject as the acknowledgement quotes it: on one line, at most 200 characters. */
function shortSubject(subject: string): string {
  const s = subject.replace(/\s+/g, ' ').trim();
  if (!s) return '(no subject)';
  return s.length > 200 ? `${s.slice(0, 199)}…` : s;
}

export function acknowledgementFor(
  config: Pick<InboxqConfig, 'mailbox' | 'acknowledgement'>,
  record: MessageRecord,
): ReplyMessage {
  return {
    type: 'inboxq.reply',
    version: 1,
    taskId: record.taskId,
    mailbox: config.mailbox,
    replyId: ACKNOWLEDGEMENT_REPLY_ID,
    text: acknowledgementText(config.acknowledgement.text, {
      taskId: record.taskId,
      conversationId: record.conversationId ?? '',
      subject: shortSubject(record.subject),
      mailbox: config.mailbox,
    }),
    attachments: [],
  };
}

/** True for inboxq's own acknowledgements message (as the queue trigger hands it over: parsed JSON). */
export function isAcknowledgementsMessage(message: unknown): boolean {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === 'inboxq.acknowledgements'
  );
}

/**
 * Sends the acknowledgements a drain batch asked for, each once (a redelivery skips those already
 * sent). Every one is tried; if any failed, the first failure is thrown so the host delivers the
 * message again.
 */
export async function sendAcknowledgements(
  message: unknown,
  deps: ReplyDeps,
): Promise<{ sent: number; skipped: number }> {
  const { config, ledger, log } = deps;
  const parsed = acknowledgementsSchema.safeParse(message);
  if (!parsed.success)
    throw new InboxqError('An acknowledgements message is malformed', {
      mailbox: config.mailbox,
      hint: 'only inboxq writes it; this is a bug',
    });
  let sent = 0;
  let skipped = 0;
  const failures: unknown[] = [];
  // A task named twice in one message is acknowledged once.
  for (const taskId of new Set(parsed.data.taskIds)) {
    const record = await ledger.getMessage(config.mailbox, taskId);
    if (!record || (record.state !== 'queued' && record.state !== 'failed')) {
      // Expired, or never accepted: nothing to acknowledge.
      skipped++;
      continue;
    }
    try {
      const result = await sendReply(acknowledgementFor(config, record), deps, 'acknowledgement');
      if (result.outcome === 'sent' || result.outcome === 'found-in-sent-folder') sent++;
      else skipped++;
    } catch (err) {
      log.warn(`Acknowledgement not sent: ${describeError(err)}`, { mailbox: config.mailbox, taskId });
      failures.push(err);
    }
  }
  if (failures.length > 0) throw failures[0];
  return { sent, skipped };
}

/**
 * An acknowledgements message that ended in the poison queue: only acknowledgements were lost.
 * Their tasks go on (not marked failed, no failure notice), and their answers may still arrive.
 */
export function handlePoisonedAcknowledgements(message: unknown, deps: Pick<ReplyDeps, 'config' | 'log'>): void {
  const parsed = acknowledgementsSchema.safeParse(message);
  deps.log.error('Acknowledgements could not be delivered after their retries; their tasks are not affected', {
    mailbox: deps.config.mailbox,
    taskIds: parsed.success ? parsed.data.taskIds.join(',') : '',
  });
}
