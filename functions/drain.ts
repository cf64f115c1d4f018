import { app } from '@azure/functions';

import { DRAIN_REQUESTS_QUEUE } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// Drains the mailbox a drain request names: what the schedule's tick leaves to it (more mail than a
// tick drains, a mail larger than a tick's share, a mailbox whose look or run failed in the tick),
// on instances of its own, with a run's full budget. A failed drain is logged and recorded, not
// retried at once: the schedule asks again.
app.storageQueue('drain', {
  queueName: DRAIN_REQUESTS_QUEUE,
  connection: 'AzureWebJobsStorage',
  // The outcome is returned for tools that run the app in-process (the host itself ignores it:
  // this function has no return binding).
  handler: (message, context) => handlers.drain(message, context),
});
