import { app } from '@azure/functions';

import { describeError } from '../shared/errors';
import { processDeployment } from '../shared/host/runtime';
import { setupTelemetry } from '../shared/telemetry/setup';

// Loaded with the other entry files at start: registers Azure Monitor for inboxq's custom
// metrics when Application Insights is configured (docs/operations.md).
setupTelemetry(process.env);

// Validates every mailbox's settings when the app starts, so a mistake shows in the log at once
// (naming the mailbox and the app setting) rather than at the first tick of the schedule.
app.hook.appStart(() => {
  try {
    const { mailboxes } = processDeployment();
    console.info(`inboxq: serving ${mailboxes.map((m) => `${m.config.key} (${m.config.mailbox})`).join(', ')}`);
  } catch (err) {
    console.error(`inboxq: ${describeError(err)}`);
  }
});
