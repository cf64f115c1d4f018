/**
 * What the app makes the platform bill, measured from outside: the app on the local host (a
 * process of its own, the product's host.json), every invocation's start and end metered
 * (LOCALHOST_INVOCATION_LOG), then priced by Flex Consumption's published rules
 * (localstack/host/flex-billing.ts) at the instance size the Bicep deploys, without the free grant;
 * and what Application Insights would receive: the host's requests, traces and aggregated metrics
 * under host.json's log levels (localstack/host/app-insights.ts), and the app's own custom metrics
 * as its exporter really posts them, to an ingestion endpoint on loopback.
 *
 *   idle        the default deployment (the schedule and memory of infra/), one mailbox or ten, no
 *               mail, for a window (past the first tick's run and metric export) that holds each
 *               mailbox's periodic run: US$ a month, records an hour
 *   mail        mails arriving at random times, each acknowledged and answered by a worker: what
 *               they add to the idle bill, per 1,000 mails
 *
 *   node build/scripts/bench-bill.js
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { TableClient } from '@azure/data-tables';

import { exitOnSignals, LocalStack } from '../localstack';
import { telemetryOf } from '../localstack/host/app-insights';
import { billOf, monthlyUsd } from '../localstack/host/flex-billing';
import type { InvocationRecord } from '../localstack/host/meter';
import { readHostJson } from '../localstack/host/settings';
import { IngestionEndpoint } from '../localstack/ingestion';
import { IDLE_RUN_PERIOD_MS } from '../shared/drain/watch';
import { partitionKey, REPLIES_TABLE } from '../shared/ledger/rows';
import { METRIC_EXPORT_INTERVAL_MS } from '../shared/telemetry/setup';
import { TaskWorker } from '../shared/worker/worker';
import { AppHost } from './bench-host';

const ROOT = path.join(__dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const HOUR_MS = 3600_000;
/**
 * The idle window: long enough to hold each mailbox's periodic run (IDLE_RUN_PERIOD_MS apart at
 * most, watch.ts), which an idle hour has too, and 10 s more.
 */
export const DEFAULT_IDLE_SECONDS = (IDLE_RUN_PERIOD_MS + 10_000) / 1000;

/** The default deployment's schedule and instance size, as infra/ deploys them. */
export function deployedDefaults(): { schedule: string; periodSeconds: number; instanceMemoryMB: number } {
  const params = readFileSync(path.join(ROOT, 'infra/main.parameters.json'), 'utf8');
  const schedule = /"\$\{INBOXQ_DRAIN_SCHEDULE=([^}]+)\}"/.exec(params)?.[1];
  const bicep = readFileSync(path.join(ROOT, 'infra/main.bicep'), 'utf8');
  const memory = /^param instanceMemoryMB int = (\d+)$/m.exec(bicep)?.[1];
  if (!schedule || !memory) throw new Error('infra/ does not say the default schedule and instanceMemoryMB');
  const seconds = /^\*\/(\d+) \* \* \* \* \*$/.exec(schedule)?.[1];
  if (!seconds) throw new Error(`the default schedule "${schedule}" is not every N seconds`);
  return { schedule, periodSeconds: Number(seconds), instanceMemoryMB: Number(memory) };
}

export interface Telemetry {
  requests: number;
  traces: number;
  /** The host's aggregated metrics plus the app's own metric records. */
  metrics: number;
  /** The app's own metric records, by metric name. */
  metricsByName?: Record<string, number>;
}

export interface IdleBill {
  mailboxes: number;
  windowSeconds: number;
  invocations: number;
  /** Time the timer spent executing per tick (ms, median). */
  tickMs: number;
  billedSeconds: number;
  usdPerMonth: number;
  telemetryPerHour: Telemetry;
}

/** The app's settings on the local stack with the default deployment's schedule, for `mailboxes` mailboxes. */
function appSettings(stack: LocalStack, mailboxes: number, schedule: string, run: string) {
  const keys = Array.from({ length: mailboxes }, (_, i) => `b${i}`);
  return mailboxes === 1
    ? stack.settings(`bill-${run}@company.test`, { INBOXQ_DRAIN_SCHEDULE: schedule })
    : stack.settings('', {
        INBOXQ_MAILBOX: undefined,
        INBOXQ_DRAIN_SCHEDULE: schedule,
        INBOXQ_MAILBOXES: keys.join(','),
        ...Object.fromEntries(keys.map((k) => [`INBOXQ_${k.toUpperCase()}__MAILBOX`, `bill-${k}-${run}@company.test`])),
      });
}

function inWindow(records: InvocationRecord[], from: number, to: number): InvocationRecord[] {
  return records.filter((r) => r.start >= from && r.start < to);
}

async function withHost<T>(
  stack: LocalStack,
  ingestion: IngestionEndpoint,
  settings: Record<string, string | undefined>,
  work: (host: AppHost) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(path.join(tmpdir(), 'inboxq-bill-'));
  const host = await AppHost.start(
    { ...settings, APPLICATIONINSIGHTS_CONNECTION_STRING: ingestion.connectionString, WEBSITE_SITE_NAME: 'bench' },
    {
      invocationLog: path.join(dir, 'invocations.jsonl'),
      env: {
        NODE_EXTRA_CA_CERTS: stack.certs.caFile,
        APPLICATION_INSIGHTS_NO_STATSBEAT: 'true',
        APPLICATIONINSIGHTS_SDKSTATS_DISABLED: 'true',
      },
    },
  );
  try {
    return await work(host);
  } finally {
    await host.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function telemetryPerHour(
  records: InvocationRecord[],
  ingestion: IngestionEndpoint,
  from: number,
  to: number,
): Telemetry {
  const host = telemetryOf(records, readHostJson(ROOT, {}).logLevel);
  const app = ingestion.received.filter((r) => r.at >= from && r.at < to && r.envelope.data.baseType === 'MetricData');
  const appMetrics = app.length;
  const byName: Record<string, number> = {};
  for (const r of app) for (const m of r.envelope.data.baseData.metrics) byName[m.name] = (byName[m.name] ?? 0) + 1;
  const perHour = (n: number) => Math.round((n * HOUR_MS) / (to - from));
  return {
    requests: perHour(host.requests),
    traces: perHour(host.traces),
    metrics: perHour(host.hostMetrics + appMetrics),
    metricsByName: Object.fromEntries(Object.entries(byName).map(([name, n]) => [name, perHour(n)])),
  };
}

/**
 * The default deployment idle for `seconds` (after a warm-up that lets the first tick's run end and
 * an export go out), one mailbox or several: what a month of it bills, what an hour of it sends.
 */
export async function measureIdleBill(
  stack: LocalStack,
  ingestion: IngestionEndpoint,
  options: { mailboxes: number; seconds: number; log?: (l: string) => void },
): Promise<IdleBill> {
  const defaults = deployedDefaults();
  const settings = appSettings(stack, options.mailboxes, defaults.schedule, randomUUID().slice(0, 8));
  return withHost(stack, ingestion, settings, async (host) => {
    // Past the first tick's run and the first metric export (a minute after start), which carries
    // that run's metrics: the window is the steady state.
    await sleep(Math.max(3 * defaults.periodSeconds * 1000, METRIC_EXPORT_INTERVAL_MS + 5000));
    const from = Date.now();
    await sleep(options.seconds * 1000);
    const to = Date.now();
    const records = inWindow(host.invocations(), from, to);
    const bill = billOf(records, defaults.instanceMemoryMB);
    const ticks = records.filter((r) => r.function === 'drainSchedule').map((r) => r.end - r.start);
    ticks.sort((a, b) => a - b);
    const result: IdleBill = {
      mailboxes: options.mailboxes,
      windowSeconds: Math.round((to - from) / 1000),
      invocations: records.length,
      tickMs: ticks[Math.floor(ticks.length / 2)] ?? 0,
      billedSeconds: bill.billedMs / 1000,
      usdPerMonth: monthlyUsd(bill, to - from),
      telemetryPerHour: telemetryPerHour(records, ingestion, from, to),
    };
    options.log?.(
      `  idle, ${options.mailboxes} mailbox(es): ${records.length} invocations in ${result.windowSeconds} s (${Object.entries(
        bill.byFunction,
      )
        .map(([f, b]) => `${f} ${b.executions}`)
        .join(
          ', ',
        )}), tick ${result.tickMs} ms, ${result.billedSeconds} s billed: US$${result.usdPerMonth.toFixed(2)} a month; ${JSON.stringify(result.telemetryPerHour)} an hour`,
    );
    return result;
  });
}

export interface MailBill {
  mails: number;
  replies: number;
  windowSeconds: number;
  byFunction: Record<string, { executions: number; billedMs: number }>;
  usdPer1000Mails: number;
  telemetryPer1000Mails: Telemetry;
}

/**
 * `mails` mails arriving at random times over `seconds`, each acknowledged (a new conversation)
 * and answered by a worker at once: the bill of the window less what the same window idle bills
 * (`idle`), per 1,000 mails.
 */
export async function measureMailBill(
  stack: LocalStack,
  ingestion: IngestionEndpoint,
  idle: IdleBill,
  options: { mails: number; seconds: number; log?: (l: string) => void },
): Promise<MailBill> {
  const defaults = deployedDefaults();
  const run = randomUUID().slice(0, 8);
  const mailbox = `bill-mail-${run}@company.test`;
  const tasksQueue = `tasks-bill-${run}`;
  const settings = stack.settings(mailbox, {
    INBOXQ_DRAIN_SCHEDULE: defaults.schedule,
    INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
    INBOXQ_TASKS_QUEUE: tasksQueue,
  });
  return withHost(stack, ingestion, settings, async (host) => {
    await sleep(3 * defaults.periodSeconds * 1000);
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, { tasksQueue });
    const from = Date.now();
    let answered = 0;
    let arriving = true;
    const answering = (async () => {
      while (arriving || answered < options.mails) {
        const got = await worker.receive({ max: 16 });
        for (const { task, complete } of got) {
          await worker.reply({ taskId: task.taskId, mailbox, text: 'Here is the answer.' });
          await complete();
          answered++;
        }
        if (got.length === 0) await sleep(200);
        if (Date.now() - from > (options.seconds + 120) * 1000) break;
      }
    })();
    const offsets = Array.from({ length: options.mails }, () => Math.random() * options.seconds * 1000).sort(
      (a, b) => a - b,
    );
    for (const [i, offset] of offsets.entries()) {
      const wait = from + offset - Date.now();
      if (wait > 0) await sleep(wait);
      await stack.appendMail(
        mailbox,
        Buffer.from(
          `From: p${i}@partner.test\r\nTo: ${mailbox}\r\nSubject: Question ${i}\r\nMessage-ID: <bill-${i}-${run}@partner.test>\r\n` +
            `Authentication-Results: spf=pass smtp.mailfrom=partner.test; dkim=pass header.d=partner.test;dmarc=pass action=none header.from=partner.test\r\n` +
            `\r\nWhen will it be ready?\r\n`,
        ),
      );
    }
    arriving = false;
    await answering;
    // Every acknowledgement and answer sent.
    const replies = TableClient.fromConnectionString(stack.azurite.connectionString, REPLIES_TABLE, {
      allowInsecureConnection: true,
    });
    let sent = 0;
    for (const deadline = Date.now() + 180_000; Date.now() < deadline; await sleep(1000)) {
      sent = 0;
      for await (const row of replies.listEntities<{ sentAt?: string }>({
        queryOptions: { filter: `PartitionKey eq '${partitionKey(mailbox)}'` },
      }))
        if (row.sentAt) sent++;
      if (sent >= 2 * options.mails) break;
    }
    // The last invocations end; a tick or two more, as any window has.
    await sleep(2 * defaults.periodSeconds * 1000);
    const to = Date.now();
    const records = inWindow(host.invocations(), from, to);
    const bill = billOf(records, defaults.instanceMemoryMB);
    const idleUsd = (idle.usdPerMonth * (to - from)) / (30 * 24 * HOUR_MS);
    const usdPer1000Mails = ((bill.usd - idleUsd) / options.mails) * 1000;
    const host_ = telemetryOf(records, readHostJson(ROOT, {}).logLevel);
    const per1000 = (n: number) => Math.round((n / options.mails) * 1000);
    const result: MailBill = {
      mails: options.mails,
      replies: sent,
      windowSeconds: Math.round((to - from) / 1000),
      byFunction: Object.fromEntries(
        Object.entries(bill.byFunction).map(([f, b]) => [f, { executions: b.executions, billedMs: b.billedMs }]),
      ),
      usdPer1000Mails,
      telemetryPer1000Mails: { requests: per1000(host_.requests), traces: per1000(host_.traces), metrics: 0 },
    };
    options.log?.(
      `  mail: ${options.mails} mails, ${sent} replies in ${result.windowSeconds} s: ${JSON.stringify(result.byFunction)}; US$${usdPer1000Mails.toFixed(4)} per 1,000 mails`,
    );
    return result;
  });
}

export async function measureBill(
  stack: LocalStack,
  log: (l: string) => void,
  options: { idleSeconds: number; mails: number; mailSeconds: number },
) {
  const ingestion = new IngestionEndpoint();
  await ingestion.start(stack.certs);
  try {
    const one = await measureIdleBill(stack, ingestion, { mailboxes: 1, seconds: options.idleSeconds, log });
    const ten = await measureIdleBill(stack, ingestion, { mailboxes: 10, seconds: options.idleSeconds, log });
    const mail = await measureMailBill(stack, ingestion, one, {
      mails: options.mails,
      seconds: options.mailSeconds,
      log,
    });
    return { defaults: deployedDefaults(), one, ten, mail };
  } finally {
    await ingestion.stop();
  }
}

if (require.main === module) {
  exitOnSignals();
  void (async () => {
    const stack = await LocalStack.start();
    try {
      const result = await measureBill(stack, (l) => process.stderr.write(`${l}\n`), {
        idleSeconds: Number(process.env['BENCH_IDLE_SECONDS'] ?? DEFAULT_IDLE_SECONDS),
        mails: Number(process.env['BENCH_BILL_MAILS'] ?? 20),
        mailSeconds: Number(process.env['BENCH_BILL_SECONDS'] ?? 90),
      });
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } finally {
      await stack.stop();
    }
  })();
}
