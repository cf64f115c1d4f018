import { app } from '@azure/functions';

import { listedMailboxKeys } from '../shared/config/deployment';
import { mailboxResources } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// A reply refused, or failed maxDequeueCount times, lands in its queue's poison queue: its task is
// marked failed and, with INBOXQ_FAILURE_NOTICE, the sender is told the answer could not be
// delivered. One poison queue per replies queue (functions/reply.ts).
app.storageQueue('replyPoison', {
  queueName: `${mailboxResources(null).repliesQueue}-poison`,
  connection: 'AzureWebJobsStorage',
  handler: (message, context) => handlers.replyPoison(message, context),
});
for (const key of listedMailboxKeys(process.env)) {
  app.storageQueue(`replyPoison-${key}`, {
    queueName: `${mailboxResources(key).repliesQueue}-poison`,
    connection: 'AzureWebJobsStorage',
    handler: (message, context) => handlers.replyPoison(message, context, key),
  });
}
