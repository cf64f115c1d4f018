/**
 * What setupTelemetry really sends: the Azure Monitor metric exporter posting over HTTPS to an
 * ingestion endpoint on loopback (its certificate from a throw-away CA this process trusts), as it
 * would to Application Insights (Entra ID authentication aside: the
 * component's local auth is off in Azure, and no Entra ID token endpoint for it runs here). The
 * alerts count custom metrics as deltas per export, per mailbox: checked on the envelopes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';

import { metrics } from '@opentelemetry/api';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { makeCertificates } from '../../localstack/certs';
import { type Envelope, IngestionEndpoint, INSTRUMENTATION_KEY as IKEY } from '../../localstack/ingestion';
import { inboxqMetrics, METRIC_NAMES } from '../../shared/telemetry/metrics';
import { setupTelemetry } from '../../shared/telemetry/setup';

const server = new IngestionEndpoint();
let certDir: string;

beforeAll(async () => {
  certDir = mkdtempSync(path.join(tmpdir(), 'inboxq-ingestion-'));
  const certs = makeCertificates(certDir);
  setDefaultCACertificates([...getCACertificates('default'), certs.ca.toString()]);
  await server.start(certs);
  // The SDK's own usage reports (statsbeat) would go to Microsoft's endpoints: not from a test.
  process.env['APPLICATION_INSIGHTS_NO_STATSBEAT'] = 'true';
  process.env['APPLICATIONINSIGHTS_SDKSTATS_DISABLED'] = 'true';
});
afterAll(async () => {
  await (metrics.getMeterProvider() as MeterProvider).shutdown?.();
  metrics.disable();
  await server.stop();
  rmSync(certDir, { recursive: true, force: true });
});

async function exported(): Promise<Envelope[]> {
  server.received.length = 0;
  await (metrics.getMeterProvider() as MeterProvider).forceFlush();
  return server.received.map((r) => r.envelope).filter((e) => e.data.baseType === 'MetricData');
}

function valuesOf(envelopes: Envelope[], name: string): { value: number; properties: Record<string, string> }[] {
  return envelopes.flatMap((e) =>
    e.data.baseData.metrics
      .filter((m) => m.name === name)
      .map((m) => ({ value: m.value, properties: e.data.baseData.properties ?? {} })),
  );
}

describe('setupTelemetry', () => {
  it("sends the custom metrics to the connection string's ingestion endpoint, with their dimensions and the app's name", async () => {
    const started = setupTelemetry({
      APPLICATIONINSIGHTS_CONNECTION_STRING: server.connectionString,
      WEBSITE_SITE_NAME: 'func-inboxq-test',
    });
    expect(started).toBe(true);
    inboxqMetrics.reply('sales@company.test', 'failed');
    inboxqMetrics.reply('sales@company.test', 'failed');
    inboxqMetrics.authFailure('support@company.test', 'smtp');
    inboxqMetrics.heartbeat('sales@company.test', 'sales', 3);

    const first = await exported();
    expect(server.paths.some((p) => p.startsWith('/v2.1/track'))).toBe(true);
    expect(first.every((e) => e.iKey === IKEY)).toBe(true);
    expect(first[0]!.tags['ai.cloud.role']).toBe('func-inboxq-test');
    expect(valuesOf(first, METRIC_NAMES.reply)).toEqual([
      { value: 2, properties: { mailbox: 'sales@company.test', outcome: 'failed' } },
    ]);
    expect(valuesOf(first, METRIC_NAMES.authFailures)).toEqual([
      { value: 1, properties: { mailbox: 'support@company.test', stage: 'smtp' } },
    ]);
    expect(valuesOf(first, METRIC_NAMES.heartbeat)).toEqual([
      { value: 1, properties: { mailbox: 'sales@company.test', key: 'sales' } },
    ]);
  });

  it('sends counters as deltas: an export after nothing happened carries no count, so a stopped app goes silent', async () => {
    inboxqMetrics.reply('sales@company.test', 'failed');
    const next = await exported();
    expect(valuesOf(next, METRIC_NAMES.reply).map((v) => v.value)).toEqual([1]);
    const quiet = await exported();
    expect(valuesOf(quiet, METRIC_NAMES.reply).reduce((sum, v) => sum + v.value, 0)).toBe(0);
    expect(valuesOf(quiet, METRIC_NAMES.heartbeat).reduce((sum, v) => sum + v.value, 0)).toBe(0);
  });
});
