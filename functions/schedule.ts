import { app } from '@azure/functions';

import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// On the schedule in the app setting INBOXQ_DRAIN_SCHEDULE (NCRONTAB, UTC), puts one drain request
// per mailbox on the `drain-requests` queue. The host runs one instance of a timer at a time.
app.timer('drainSchedule', {
  schedule: '%INBOXQ_DRAIN_SCHEDULE%',
  useMonitor: true,
  runOnStartup: false,
  // The requests are returned for tools that run the app in-process (no return binding: the host ignores them).
  handler: (timer, context) => handlers.schedule(timer, context),
});
