/**
 * What setupTelemetry really sends: the Azure Monitor metric exporter posting over HTTPS to an
 * ingestion endpoint on loopback (its certificate from a throw-away CA this process trusts), as it
 * would to Application Insights (Entra ID authentication aside: the
 * component's local auth is off in Azure, and no Entra ID token endpoint for it runs here). The
 * alerts count custom metrics as deltas per export, per mailbox: checked on the envelopes.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import type { IncomingMessage } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { getCACertificates, setDefaultCACertificates } from 'node:tls';
import { gunzipSync } from 'node:zlib';

import { metrics } from '@opentelemetry/api';
import type { MeterProvider } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { makeCertificates } from '../../localstack/certs';
import { inboxqMetrics, METRIC_NAMES } from '../../shared/telemetry/metrics';
import { setupTelemetry } from '../../shared/telemetry/setup';

interface Envelope {
  name: string;
  iKey: string;
  tags: Record<string, string>;
  data: {
    baseType: string;
    baseData: { metrics: { name: string; value: number; count?: number }[]; properties?: Record<string, string> };
  };
}

const IKEY = '0d4b2a8c-3f1e-4c6b-9a7d-5e2f1b3c4d5e';
let server: Server;
let certDir: string;
const received: Envelope[] = [];
const paths: string[] = [];

function body(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

beforeAll(async () => {
  certDir = mkdtempSync(path.join(tmpdir(), 'inboxq-ingestion-'));
  const certs = makeCertificates(certDir);
  setDefaultCACertificates([...getCACertificates('default'), certs.ca.toString()]);
  server = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    void body(req).then((raw) => {
      paths.push(req.url ?? '');
      const text = (req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8');
      const items = JSON.parse(text) as Envelope | Envelope[];
      received.push(...(Array.isArray(items) ? items : [items]));
      res.writeHead(200, { 'content-type': 'application/json' });
      const count = Array.isArray(items) ? items.length : 1;
      res.end(JSON.stringify({ itemsReceived: count, itemsAccepted: count, errors: [] }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  // The SDK's own usage reports (statsbeat) would go to Microsoft's endpoints: not from a test.
  process.env['APPLICATION_INSIGHTS_NO_STATSBEAT'] = 'true';
  process.env['APPLICATIONINSIGHTS_SDKSTATS_DISABLED'] = 'true';
});
afterAll(async () => {
  await (metrics.getMeterProvider() as MeterProvider).shutdown?.();
  metrics.disable();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  rmSync(certDir, { recursive: true, force: true });
});

async function exported(): Promise<Envelope[]> {
  received.length = 0;
  await (metrics.getMeterProvider() as MeterProvider).forceFlush();
  return received.filter((e) => e.data.baseType === 'MetricData');
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
    const port = (server.address() as AddressInfo).port;
    const started = setupTelemetry({
      APPLICATIONINSIGHTS_CONNECTION_STRING: `InstrumentationKey=${IKEY};IngestionEndpoint=https://127.0.0.1:${port}/`,
      WEBSITE_SITE_NAME: 'func-inboxq-test',
    });
    expect(started).toBe(true);
    inboxqMetrics.reply('sales@company.test', 'failed');
    inboxqMetrics.reply('sales@company.test', 'failed');
    inboxqMetrics.authFailure('support@company.test', 'smtp');
    inboxqMetrics.heartbeat('sales@company.test', 'sales', 3);

    const first = await exported();
    expect(paths.some((p) => p.startsWith('/v2.1/track'))).toBe(true);
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
