import { setupTelemetry } from '../shared/telemetry/setup';

// Loaded with the other entry files at start: registers Azure Monitor for inboxq's custom
// metrics when Application Insights is configured (docs/operations.md).
setupTelemetry(process.env);
