import { app } from '@azure/functions';
import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// Drains the mailbox on the schedule in the app setting INBOXQ_DRAIN_SCHEDULE (NCRONTAB, UTC).
// The host runs one instance of a timer at a time across the app.
app.timer('drain', {
  schedule: '%INBOXQ_DRAIN_SCHEDULE%',
  useMonitor: true,
  runOnStartup: false,
  handler: async (timer, context) => {
    await handlers.drain(timer, context);
  },
});
