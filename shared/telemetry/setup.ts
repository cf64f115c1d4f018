/**
 * Sends inboxq's custom metrics to Application Insights with the Azure Monitor metric exporter, when
 * the app has APPLICATIONINSIGHTS_CONNECTION_STRING. Local auth is disabled on the component (Bicep),
 * so the exporter authenticates with the Function App's managed identity
 * (APPLICATIONINSIGHTS_AUTHENTICATION_STRING = ClientId=<uami>;Authorization=AAD).
 *
 * Logs and requests stay with the Functions host (context.log): only metrics go this way, so
 * nothing is reported twice. That is why this is the exporter and the OpenTelemetry metrics SDK,
 * not the Azure Monitor distro (@azure/monitor-opentelemetry): the distro brings the tracing and
 * logging SDKs and a dozen instrumentations, over 100 MB of the deployment package, for nothing
 * used here. The exporter sends counters as deltas, so a stopped app reports nothing (the silence
 * alert relies on it).
 */
import { ManagedIdentityCredential } from '@azure/identity';
import { AzureMonitorMetricExporter } from '@azure/monitor-opentelemetry-exporter';
import { metrics } from '@opentelemetry/api';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';

import type { Env } from '../config/types';

/** How often the metrics go out (the distro's default). */
export const METRIC_EXPORT_INTERVAL_MS = 60_000;

let started = false;

export function setupTelemetry(env: Env): boolean {
  const connectionString = env['APPLICATIONINSIGHTS_CONNECTION_STRING'];
  if (started || !connectionString) return started;
  const auth = env['APPLICATIONINSIGHTS_AUTHENTICATION_STRING'] ?? '';
  const clientId = /ClientId=([^;]+)/i.exec(auth)?.[1];
  const aad = /Authorization=AAD/i.test(auth);
  const exporter = new AzureMonitorMetricExporter({
    connectionString,
    ...(aad ? { credential: new ManagedIdentityCredential(clientId ? { clientId } : {}) } : {}),
  });
  metrics.setGlobalMeterProvider(
    new MeterProvider({
      // The cloud role name in Application Insights: the Function App's name.
      resource: resourceFromAttributes({ 'service.name': env['WEBSITE_SITE_NAME'] || 'inboxq' }),
      readers: [new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: METRIC_EXPORT_INTERVAL_MS })],
    }),
  );
  started = true;
  return started;
}
