/**
 * Step 6, queue: an accepted mail's task on its mailbox's tasks queue, and what its ledger row will
 * say once it is recorded. A message Storage refuses for what it carries sets that mail aside.
 */
import type { TaskMessage } from '../../contract/messages';
import type { MessageRecord } from '../../ledger/rows';
import type { StorageClients } from '../../storage/clients';
import { sendQueueMessage } from '../../storage/queues';
import { type ConversedMail, ok, type PerMail, perMail } from '../mail';

export async function queueTask(
  storage: StorageClients,
  queue: string,
  mailbox: string,
  mail: ConversedMail,
  task: TaskMessage,
): Promise<PerMail<ConversedMail>> {
  return perMail(mail.entry.uid, 'queueing its task', async () => {
    await sendQueueMessage(storage, queue, task, { mailbox });
    return ok(mail);
  });
}

/** The row of a queued mail: its sender, why it was accepted, and its conversation (and why not another's). */
export function queuedPatch(mail: ConversedMail, task: TaskMessage): Partial<MessageRecord> {
  const verdict = mail.judged.kind === 'mail' ? mail.judged.verdict : undefined;
  const reasons = [...(verdict?.reasons ?? [])];
  const refused = mail.conversation.refusedConversationId;
  if (refused)
    reasons.push(
      `it points at conversation ${refused} of other participants, so it started conversation ${task.conversation.id}`,
    );
  return {
    state: 'queued',
    sender: verdict?.sender ?? null,
    reasons,
    conversationId: task.conversation.id,
    queuedAt: new Date().toISOString(),
  };
}
