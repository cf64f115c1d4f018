import { app } from '@azure/functions';

import { DRAIN_REQUESTS_QUEUE } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// Drains the mailbox a drain request names. Each request is its own invocation, so the host
// spreads mailboxes over instances and one slow or broken mailbox never holds up another. A failed
// drain is logged and recorded, not retried at once: the next tick of the schedule tries again.
app.storageQueue('drain', {
  queueName: DRAIN_REQUESTS_QUEUE,
  connection: 'AzureWebJobsStorage',
  handler: async (message, context) => {
    await handlers.drain(message, context);
  },
});
