import { app } from '@azure/functions';

import { REPLIES_QUEUE } from '../shared/contract/messages';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// Sends each reply put on the `replies` queue. Retries and the poison queue follow host.json
// (extensions.queues.maxDequeueCount); messages are base64 JSON (docs/contract.md).
app.storageQueue('reply', {
  queueName: REPLIES_QUEUE,
  connection: 'AzureWebJobsStorage',
  handler: (message, context) => handlers.reply(message, context),
});
