import { app } from '@azure/functions';

import { listedMailboxKeys } from '../shared/config/deployment';
import { mailboxResources } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// Sends each reply put on a replies queue. Retries and the poison queue follow host.json
// (extensions.queues.maxDequeueCount); messages are base64 JSON (docs/contract.md).
// One mailbox: `reply` reads `replies`. Several (INBOXQ_MAILBOXES): each mailbox's worker answers on
// its own queue, `reply-<key>` reads `replies-<key>` and answers for that mailbox only; `reply`
// still reads the shared `replies` for what was put there before (docs/mailboxes.md, Moving over).
app.storageQueue('reply', {
  queueName: mailboxResources(null).repliesQueue,
  connection: 'AzureWebJobsStorage',
  handler: (message, context) => handlers.reply(message, context),
});
for (const key of listedMailboxKeys(process.env)) {
  app.storageQueue(`reply-${key}`, {
    queueName: mailboxResources(key).repliesQueue,
    connection: 'AzureWebJobsStorage',
    handler: (message, context) => handlers.reply(message, context, key),
  });
}
