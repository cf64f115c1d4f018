/**
 * Sends inboxq's custom metrics to Application Insights with Azure Monitor OpenTelemetry, when the
 * app has APPLICATIONINSIGHTS_CONNECTION_STRING. Local auth is disabled on the component (Bicep),
 * so the exporter authenticates with the Function App's managed identity
 * (APPLICATIONINSIGHTS_AUTHENTICATION_STRING = ClientId=<uami>;Authorization=AAD).
 *
 * Logs and requests stay with the Functions host (context.log): only metrics go this way, so
 * nothing is reported twice.
 */
import { ManagedIdentityCredential } from '@azure/identity';
import { useAzureMonitor } from '@azure/monitor-opentelemetry';

import type { Env } from '../config/types';

let started = false;

export function setupTelemetry(env: Env): boolean {
  const connectionString = env['APPLICATIONINSIGHTS_CONNECTION_STRING'];
  if (started || !connectionString) return started;
  const auth = env['APPLICATIONINSIGHTS_AUTHENTICATION_STRING'] ?? '';
  const clientId = /ClientId=([^;]+)/i.exec(auth)?.[1];
  const aad = /Authorization=AAD/i.test(auth);
  useAzureMonitor({
    azureMonitorExporterOptions: {
      connectionString,
      ...(aad ? { credential: new ManagedIdentityCredential(clientId ? { clientId } : {}) } : {}),
    },
    enableLiveMetrics: false,
    enableStandardMetrics: false,
    instrumentationOptions: {
      http: { enabled: false },
      azureSdk: { enabled: false },
      mongoDb: { enabled: false },
      mySql: { enabled: false },
      postgreSql: { enabled: false },
      redis: { enabled: false },
      redis4: { enabled: false },
    },
  });
  started = true;
  return started;
}
