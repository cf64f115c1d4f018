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
  // The outcome is returned for tools that run the app in-process (the host itself ignores it:
  // this function has no return binding).
  handler: (message, context) => handlers.drain(message, context),
});
