/**
 * Step 8, acknowledge: the first mails of new conversations are acknowledged with one message for
 * the batch on the mailbox's replies queue; the reply function sends each acknowledgement once, as a reply of
 * its own. Asked again for a mail that a resumed run finds queued but not yet removed (the reply
 * ledger keeps it from being sent twice).
 */
import type { InboxqConfig } from '../../config/types';
import type { AcknowledgementsMessage } from '../../contract/messages';
import { startedBy } from '../../identity/ids';
import type { MessageRecord } from '../../ledger/rows';
import type { StorageClients } from '../../storage/clients';
import { sendQueueMessage } from '../../storage/queues';

export function toAcknowledge(records: MessageRecord[]): string[] {
  return [
    ...new Set(
      records
        .filter((r) => r.state === 'queued' && !r.removed && r.conversationId && startedBy(r.conversationId, r.taskId))
        .map((r) => r.taskId),
    ),
  ];
}

export async function requestAcknowledgements(
  storage: StorageClients,
  config: Pick<InboxqConfig, 'mailbox' | 'repliesQueue'>,
  records: MessageRecord[],
): Promise<void> {
  const taskIds = toAcknowledge(records);
  if (taskIds.length === 0) return;
  const { mailbox } = config;
  const message: AcknowledgementsMessage = { type: 'inboxq.acknowledgements', version: 1, mailbox, taskIds };
  await sendQueueMessage(storage, config.repliesQueue, message, { mailbox });
}
