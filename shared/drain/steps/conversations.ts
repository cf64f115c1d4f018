/**
 * Step 4, conversations: each accepted mail's conversation, decided in order (a mail may continue
 * one started earlier in the batch) and recorded before any of their tasks is queued. The rows the
 * decisions look up first are read together beforehand. A new
 * conversation is written insert-if-absent (shared/conversation/conversations.ts).
 */
import { ConversationBatch, ConversationStore, type MailForConversation } from '../../conversation/conversations';
import type { TaskIds } from '../../identity/task-key';
import type { Ledger } from '../../ledger/ledger';
import type { StorageClients } from '../../storage/clients';
import type { Logger } from '../../telemetry/log';
import type { ClaimedMail, ConversedMail } from '../mail';

export async function decideConversations(
  deps: { storage: StorageClients; ledger: Ledger; log: Logger },
  taskIds: TaskIds,
  mails: ClaimedMail[],
): Promise<ConversedMail[]> {
  if (mails.length === 0) return [];
  const { ledger, log } = deps;
  const mailbox = taskIds.mailbox;
  const batch = new ConversationBatch(
    new ConversationStore(deps.storage, mailbox),
    async (taskId) => (await ledger.getMessage(mailbox, taskId))?.conversationId ?? null,
    (messageId) => taskIds.ofMessageId(messageId),
  );
  const asked = mails.flatMap((mail) => {
    if (mail.judged.kind !== 'mail') return [];
    const parsed = mail.judged.parsed;
    const question: MailForConversation = {
      taskId: mail.taskId,
      sender: (mail.judged.verdict.sender ?? '').toLowerCase(),
      subject: parsed.subject,
      messageId: parsed.messageId,
      inReplyTo: parsed.inReplyTo,
      references: parsed.references,
      receivedAt: mail.record.receivedAt,
      firstAttempt: !mail.resumed,
    };
    return [{ mail, question }];
  });
  // The rows the decisions look up first, read together; then each mail in order.
  await batch.prefetch(asked.map((a) => a.question));
  const out: ConversedMail[] = [];
  for (const { mail, question } of asked) {
    const conversation = await batch.decide(question);
    if (conversation.refusedConversationId) {
      log.warn('Mail points at a conversation of other participants; it starts a new one', {
        mailbox,
        taskId: mail.taskId,
        uid: mail.entry.uid,
        conversationId: conversation.conversation.id,
        refusedConversationId: conversation.refusedConversationId,
      });
    }
    out.push({ ...mail, conversation });
  }
  await batch.commit();
  return out;
}
