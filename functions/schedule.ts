import { app } from '@azure/functions';

import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// On the schedule in the app setting INBOXQ_DRAIN_SCHEDULE (NCRONTAB, UTC), puts one drain request
// per mailbox on the `drain-requests` queue. The host runs one instance of a timer at a time.
app.timer('drainSchedule', {
  schedule: '%INBOXQ_DRAIN_SCHEDULE%',
  useMonitor: true,
  runOnStartup: false,
  handler: async (timer, context) => {
    await handlers.schedule(timer, context);
  },
});
