import type { Readable } from 'node:stream';

import type Mail from 'nodemailer/lib/mailer';

import type { ReplyMessage } from '../contract/messages';
import { replyMessageId, withSubjectTag } from '../identity/ids';
import type { MessageRecord } from '../ledger/rows';
import { replyThreadIndex, threadTopic } from '../mail/thread-index';
import { renderMarkdown } from './markdown';

export { replyMessageId };

export function replySubject(subject: string): string {
  const s = subject.trim();
  if (/^(re|aw|sv|antw)\s*:/i.test(s)) return s;
  return s ? `Re: ${s}` : 'Re: your message';
}

export interface ComposedAttachment {
  filename: string;
  contentType: string;
  /** The bytes, or a stream of them read as the mail goes out (a large attachment costs no memory). */
  content: Buffer | Readable;
}

/**
 * The reply as a mail: From the mailbox, To the task's verified sender, threaded on the original
 * (In-Reply-To, References; Thread-Index and Thread-Topic for Outlook and Exchange, which group
 * by those and would split a thread whose subject gained a tag) and tagged with its conversation in
 * the subject. Markdown becomes the text/plain part as written and a rendered text/html part.
 */
export function composeReply(
  task: MessageRecord,
  reply: ReplyMessage,
  attachments: ComposedAttachment[],
  now: Date = new Date(),
): Mail.Options {
  const topic = threadTopic(task.subject);
  const references = [...task.references, ...(task.messageId ? [task.messageId] : [])].slice(-30);
  const subject = replySubject(task.subject);
  const body =
    reply.markdown !== undefined
      ? { text: reply.markdown, html: renderMarkdown(reply.markdown) }
      : { text: reply.text ?? '', ...(reply.html ? { html: reply.html } : {}) };
  return {
    from: task.mailbox,
    to: task.sender ?? undefined,
    subject: task.conversationId ? withSubjectTag(subject, task.conversationId) : subject,
    messageId: replyMessageId(task.mailbox, task.taskId, reply.replyId),
    ...(task.messageId ? { inReplyTo: task.messageId } : {}),
    ...(references.length ? { references } : {}),
    ...body,
    attachments: attachments.map((a) => ({ filename: a.filename, contentType: a.contentType, content: a.content })),
    headers: {
      // RFC 3834: a machine's answer. Keeps other autoresponders (and inboxq itself) from answering it.
      'Auto-Submitted': 'auto-replied',
      // Asks Exchange not to send out-of-office and similar replies to it.
      'X-Auto-Response-Suppress': 'All',
      'Thread-Index': replyThreadIndex(task.threadIndex, {
        arrivedAt: new Date(task.receivedAt),
        threadKey: task.conversationId ?? task.taskId,
        replyKey: `${task.taskId}.${reply.replyId}`,
        at: now,
      }),
      ...(topic ? { 'Thread-Topic': topic } : {}),
    },
  };
}
