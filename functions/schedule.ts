import { app } from '@azure/functions';

import { createHandlers } from '../shared/host/handlers';

const handlers = createHandlers();

// On the schedule in the app setting INBOXQ_DRAIN_SCHEDULE (NCRONTAB, UTC), a tick of every mailbox:
// looked at over its kept IMAP session, drained here when mail waits, or left to the drain function
// (shared/drain/tick.ts). The host runs one invocation of a timer at a time. No schedule monitor: a
// missed tick is not worth a Storage write on every one (the next comes within seconds).
app.timer('drainSchedule', {
  schedule: '%INBOXQ_DRAIN_SCHEDULE%',
  useMonitor: false,
  runOnStartup: false,
  // The outcomes are returned for tools that run the app in-process (no return binding: the host ignores them).
  handler: (timer, context) => handlers.schedule(timer, context),
});
