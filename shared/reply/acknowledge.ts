/**
 * The acknowledgement: a short answer to the first mail of a conversation, telling the sender
 * their mail arrived and which task it became. It is a reply like any other (threaded, tagged,
 * paced, sent once), put on the replies queue by the drain under a reply id of its own.
 */
import type { InboxqConfig } from '../config/settings';
import type { ReplyMessage } from '../contract/messages';
import type { MessageRecord } from '../ledger/ledger';

/** replyId of the acknowledgement; workers' reply ids can't start with `inboxq-`. */
export const ACKNOWLEDGEMENT_REPLY_ID = 'inboxq-ack';

/** The acknowledgement text with its placeholders filled in. */
export function acknowledgementText(template: string, values: { taskId: string; conversationId: string; subject: string; mailbox: string }): string {
  return template.replace(/\{(taskId|conversationId|subject|mailbox)\}/g, (_m, name: keyof typeof values) => values[name]);
}

/** The subject as the acknowledgement quotes it: on one line, at most 200 characters. */
function shortSubject(subject: string): string {
  const s = subject.replace(/\s+/g, ' ').trim();
  if (!s) return '(no subject)';
  return s.length > 200 ? `${s.slice(0, 199)}…` : s;
}

export function acknowledgementFor(config: Pick<InboxqConfig, 'mailbox' | 'acknowledgement'>, record: MessageRecord): ReplyMessage {
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
