import { app } from '@azure/functions';

import { REPLIES_QUEUE } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// A reply that failed maxDequeueCount times lands in `replies-poison`: its task is marked failed
// and, with INBOXQ_FAILURE_NOTICE, the sender is told the answer could not be delivered.
app.storageQueue('replyPoison', {
  queueName: `${REPLIES_QUEUE}-poison`,
  connection: 'AzureWebJobsStorage',
  handler: (message, context) => handlers.replyPoison(message, context),
});
