/**
 * `npm run bench`: inboxq against the least the protocols allow, on the same local servers, in one
 * run. Every figure is the median of RUNS runs; every ratio is computed pair by pair (inboxq and
 * its baseline back to back, alternating which goes first) and the median of those ratios is
 * reported: absolute times on a shared machine drift, ratios within a pair hold.
 *
 * Writes docs/benchmarks.md and prints, as its last line, one JSON object:
 *   {"drainRatio", "emptyRunRatio", "tokenEndpointCalls", "replyRatio", "largeMailRssFactor",
 *    "largeDrainRatio", "drainCpuRatio", "drainCpuRatioBare", "replyCpuRatio", "arrivalToTaskP50Ms", "arrivalToTaskP95Ms", "replyDeliveredP50Ms",
 *    "idleUsdPerMonth", "idleUsdPerMonth10Mailboxes", "usdPer1000Mails", "idleTelemetryRecordsPerHour", "peakRssMb",
 *    "rttDrainRatio20", "rttReplyRatio20", "rttDrainRatio80", "rttReplyRatio80"}
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { InvocationContext, type Timer } from '@azure/functions';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { QueueClient } from '@azure/storage-queue';
import type { ImapFlow } from 'imapflow';
import nodemailer from 'nodemailer';

import { EXCHANGE_ROLES, exitOnSignals, LocalStack } from '../localstack';
import { EXCHANGE_AUDIENCE } from '../localstack/idp';
import { runQueueTrigger } from '../localstack/queue-runner';
import { runtimeFor } from '../localstack/runtime';
import { benchMail, largeMail } from '../localstack/sample-mail';
import { encodeQueueMessage, MAIL_CONTAINER, REPLIES_QUEUE, TASKS_QUEUE } from '../shared/contract/messages';
import { CONVERSATIONS_TABLE } from '../shared/conversation/conversations';
import { drainMailbox } from '../shared/drain/drain';
import { createHandlers } from '../shared/host/handlers';
import { deploymentFor, type Runtime } from '../shared/host/runtime';
import { Ledger } from '../shared/ledger/ledger';
import { MESSAGES_TABLE } from '../shared/ledger/rows';
import { composeReply } from '../shared/reply/compose';
import { closeSmtpPools } from '../shared/reply/smtp';
import type { StorageClients } from '../shared/storage/clients';
import { silentLogger } from '../shared/telemetry/log';
import { DEFAULT_IDLE_SECONDS, measureBill } from './bench-bill';
import { measureLatency } from './bench-latency';
import { measureMemory } from './bench-memory';
import { bareDrainWithRows, createLedgerTables, ledgerTables } from './bench-rows';
import { measureRtt, rttKeys, rttSection } from './bench-rtt';

const RUNS = Number(process.env['BENCH_RUNS'] ?? 5);
const SMALL_MAILS = Number(process.env['BENCH_SMALL_MAILS'] ?? 1000);
const LARGE_MAILS = Number(process.env['BENCH_LARGE_MAILS'] ?? 100);
const REPLIES = Number(process.env['BENCH_REPLIES'] ?? 200);
const EMPTY_RUNS = 20;
/** The latency measurement: mails arriving at random times over this window, on the default schedule. */
const LATENCY_MAILS = Number(process.env['BENCH_LATENCY_MAILS'] ?? 30);
const LATENCY_SECONDS = Number(process.env['BENCH_LATENCY_SECONDS'] ?? 90);
/** The default INBOXQ_DRAIN_SCHEDULE's period (every 5 seconds). */
const DEFAULT_SCHEDULE_SECONDS = 5;
/** The idle deployment's window (s) and the mail bill's mails and window (s). */
const IDLE_SECONDS = Number(process.env['BENCH_IDLE_SECONDS'] ?? DEFAULT_IDLE_SECONDS);
const BILL_MAILS = Number(process.env['BENCH_BILL_MAILS'] ?? 20);
const BILL_SECONDS = Number(process.env['BENCH_BILL_SECONDS'] ?? 90);
const billOptions = { idleSeconds: IDLE_SECONDS, mails: BILL_MAILS, mailSeconds: BILL_SECONDS };
/** The round-trip benchmark: mails per drain, replies per round, rounds per round-trip profile. */
const rttOptions = {
  mails: Number(process.env['BENCH_RTT_MAILS'] ?? 100),
  replies: Number(process.env['BENCH_RTT_REPLIES'] ?? 60),
  rounds: Number(process.env['BENCH_RTT_ROUNDS'] ?? 3),
};

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const log = (line: string) => process.stderr.write(`${line}\n`);

async function seed(stack: LocalStack, mailbox: string, count: number, bodyBytes: number): Promise<void> {
  const batch: Buffer[] = [];
  for (let i = 0; i < count; i++) batch.push(benchMail(i, mailbox, bodyBytes));
  await stack.dropIntoMaildir(mailbox, batch);
}

/** The baselines' IMAP session, on the token they minted before they are timed. */
const bareImap = (stack: LocalStack, mailbox: string, token: string): Promise<ImapFlow> =>
  stack.imap(mailbox, { accessToken: token });

async function withBareImap<T>(
  stack: LocalStack,
  mailbox: string,
  token: string,
  work: (client: ImapFlow) => Promise<T>,
): Promise<T> {
  const client = await bareImap(stack, mailbox, token);
  try {
    return await work(client);
  } finally {
    await client.logout();
  }
}

/**
 * The least a drain can do: fetch every source, one queue send per mail, delete. With `blobs`
 * (large mails, which no queue message holds), each source is stored as a blob first, as inboxq
 * stores it.
 */
async function bareDrain(
  stack: LocalStack,
  mailbox: string,
  token: string,
  queue: QueueClient,
  blobs?: ContainerClient,
): Promise<number> {
  const client = await bareImap(stack, mailbox, token);
  await client.mailboxOpen('INBOX');
  let n = 0;
  for await (const m of client.fetch('1:*', { uid: true, source: true })) {
    const source = m.source ?? Buffer.alloc(0);
    const blob = blobs ? `${mailbox}/${randomUUID()}.eml` : null;
    if (blob) await blobs!.getBlockBlobClient(blob).uploadData(source);
    await queue.sendMessage(encodeQueueMessage({ uid: m.uid, size: source.length, blob }));
    n++;
  }
  await client.messageDelete('1:*');
  await client.logout();
  return n;
}

/**
 * Drains until every mail is queued, as the timer would: a run that fails (an IMAP or Storage
 * fault) leaves its mail for the next run, and the time that costs counts. Failures are counted
 * and reported, with what Dovecot logged.
 */
async function drainAll(
  stack: LocalStack,
  rt: ReturnType<typeof runtimeFor>,
  count: number,
  failures: string[],
): Promise<number> {
  for (let attempt = 0; attempt < 5; attempt++) {
    try {
      // After a failed run its lease may still stand: the next run looks from past its expiry.
      const summary = await drainMailbox({
        ...rt,
        log: silentLogger,
        ...(attempt > 0 ? { now: () => Date.now() + 10 * 60_000 } : {}),
      });
      // Done when a run ends with the inbox empty: every mail was queued by this run or an earlier one.
      if (summary.stoppedBecause === 'empty') return count;
    } catch (err) {
      failures.push((err as Error).message.slice(0, 300));
      const dovecot = stack.dovecot
        .log()
        .split('\n')
        .filter((l) => /error|fatal|panic|killed/i.test(l))
        .slice(-5);
      log(
        `  a run failed: ${(err as Error).message.slice(0, 200)}${dovecot.length ? `\n    dovecot: ${dovecot.join('\n    dovecot: ')}` : ''}`,
      );
    }
  }
  return 0;
}

async function measureDrain(
  stack: LocalStack,
  count: number,
  bodyBytes: number,
  label: string,
  failures: string[] = [],
  variant: (rt: Runtime) => Runtime = (rt) => rt,
  /** Also the same-rows baseline (bareDrainWithRows), for the fair CPU ratio. */
  withRows = false,
) {
  const token = await stack.idp.mint({ roles: EXCHANGE_ROLES }, { audience: EXCHANGE_AUDIENCE });
  const queue = new QueueClient(stack.azurite.connectionString, TASKS_QUEUE);
  await queue.createIfNotExists();
  const settings = stack.settings(`bench-${label}@company.test`, {
    INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
    INBOXQ_MAX_MESSAGES_PER_RUN: String(count * 2),
    INBOXQ_RUN_BUDGET_SECONDS: '3600',
    INBOXQ_MAIL_RETENTION_DAYS: '0',
    // The baseline deletes what it drained: so does inboxq here (its default is to move).
    INBOXQ_PROCESSED_ACTION: 'delete',
  });
  const rt = variant(runtimeFor(settings));
  await drainMailbox({ ...rt, log: silentLogger }); // warm: token, tables, queue, container
  // Large mails: the baseline stores each source in Blob Storage too, like for like.
  const blobs =
    bodyBytes > 0
      ? BlobServiceClient.fromConnectionString(stack.azurite.connectionString).getContainerClient('bench-baseline')
      : undefined;
  await blobs?.createIfNotExists();
  // Azurite keeps every blob in memory: each side starts its round with no blob of earlier rounds,
  // as a storage account would not slow down with what it holds (inboxq stores twice the bytes).
  const service = BlobServiceClient.fromConnectionString(stack.azurite.connectionString);
  const dropBlobs = async () => {
    for (const container of blobs ? [blobs, service.getContainerClient(MAIL_CONTAINER)] : []) {
      if (!(await container.exists())) continue;
      for await (const b of container.listBlobsFlat()) await container.deleteBlob(b.name);
    }
  };
  const ratios: number[] = [];
  const rates = { inboxq: [] as number[], baseline: [] as number[] };
  /** This process's CPU time (user + system) per mail, in microseconds, and its ratio per pair. */
  const cpuPerMail = { inboxq: [] as number[], baseline: [] as number[] };
  const cpuRatios: number[] = [];
  const cpuRatiosRows: number[] = [];
  const cpuPerMailRows: number[] = [];
  const tables = ledgerTables(stack.azurite.connectionString, 'benchRows');
  if (withRows) await createLedgerTables(tables);
  // Run -1 is a warm-up pair (JIT, Azurite's and Dovecot's caches), measured but not counted.
  for (let run = -1; run < RUNS; run++) {
    const pair = run % 2 === 0 ? (['baseline', 'inboxq'] as const) : (['inboxq', 'baseline'] as const);
    // The same-rows baseline right after inboxq, or right before it, in turn.
    const sides: ('inboxq' | 'baseline' | 'rows')[] = withRows
      ? run % 2 === 0
        ? ['baseline', 'rows', 'inboxq']
        : ['inboxq', 'rows', 'baseline']
      : [...pair];
    const rate: Record<string, number> = {};
    const cpu: Record<string, number> = {};
    for (const side of sides) {
      const mailbox =
        side === 'inboxq'
          ? settings['INBOXQ_MAILBOX']!
          : side === 'rows'
            ? `rows-${label}@company.test`
            : `bare-${label}@company.test`;
      await dropBlobs();
      await seed(stack, mailbox, count, bodyBytes);
      await queue.clearMessages();
      const cpuBefore = process.cpuUsage();
      const started = process.hrtime.bigint();
      const n =
        side === 'inboxq'
          ? await drainAll(stack, rt, count, failures)
          : side === 'rows'
            ? await withBareImap(stack, mailbox, token, (client) => bareDrainWithRows(client, mailbox, queue, tables))
            : await bareDrain(stack, mailbox, token, queue, blobs);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const used = process.cpuUsage(cpuBefore);
      if (n !== count) throw new Error(`${side} drained ${n} of ${count} mails`);
      rate[side] = n / seconds;
      cpu[side] = (used.user + used.system) / n;
    }
    if (run < 0) {
      log(`  ${label} warm-up: inboxq ${rate['inboxq']!.toFixed(1)}/s, baseline ${rate['baseline']!.toFixed(1)}/s`);
      continue;
    }
    rates.inboxq.push(rate['inboxq']!);
    rates.baseline.push(rate['baseline']!);
    ratios.push(rate['inboxq']! / rate['baseline']!);
    cpuPerMail.inboxq.push(cpu['inboxq']!);
    cpuPerMail.baseline.push(cpu['baseline']!);
    cpuRatios.push(cpu['inboxq']! / cpu['baseline']!);
    if (withRows) {
      cpuPerMailRows.push(cpu['rows']!);
      cpuRatiosRows.push(cpu['inboxq']! / cpu['rows']!);
    }
    log(
      `  ${label} run ${run + 1}: inboxq ${rate['inboxq']!.toFixed(1)}/s, baseline ${rate['baseline']!.toFixed(1)}/s, ratio ${(rate['inboxq']! / rate['baseline']!).toFixed(2)}; CPU per mail ${(cpu['inboxq']! / 1000).toFixed(2)} ms vs ${(cpu['baseline']! / 1000).toFixed(2)} ms${withRows ? ` (with the same rows ${(cpu['rows']! / 1000).toFixed(2)} ms, ratio ${(cpu['inboxq']! / cpu['rows']!).toFixed(2)})` : ''}`,
    );
  }
  await queue.clearMessages();
  return {
    ratio: median(ratios),
    inboxq: median(rates.inboxq),
    baseline: median(rates.baseline),
    failures,
    cpuRatio: median(cpuRatios),
    cpuMsPer1000: { inboxq: median(cpuPerMail.inboxq), baseline: median(cpuPerMail.baseline) },
    ...(withRows ? { cpuRatioRows: median(cpuRatiosRows), cpuMsPer1000Rows: median(cpuPerMailRows) } : {}),
  };
}

/**
 * The drain with the table transactions of its mail rows and conversation rows not sent (answered
 * as if Storage had taken them), for \`BENCH_ONLY=ledger-cost\`: what those writes cost the process.
 * An experiment, never a product: such a drain keeps none of the guarantees the rows carry. The run
 * lease and the run record are still written.
 */
function withoutRowTransactions(rt: Runtime): Runtime {
  const real = rt.storage;
  const skipped = new Set([MESSAGES_TABLE, CONVERSATIONS_TABLE]);
  const storage: StorageClients = {
    table: async (name) => {
      const table = await real.table(name);
      if (!skipped.has(name)) return table;
      return new Proxy(table, {
        get: (target, prop, receiver) =>
          prop === 'submitTransaction'
            ? () => Promise.resolve({ status: 202, subResponses: [], getResponseForEntity: () => undefined })
            : (Reflect.get(target, prop, receiver) as unknown),
      });
    },
    queue: (name) => real.queue(name),
    container: (name) => real.container(name),
    describe: () => real.describe(),
  };
  return { ...rt, storage, ledger: new Ledger(storage, rt.config.mailbox) };
}

/** What the drain schedule puts on the queue for this mailbox: the bench invokes the queue-triggered drain with it. */
function drainRequest(settings: Record<string, string | undefined>) {
  return {
    type: 'inboxq.drain-request',
    version: 1,
    key: 'default',
    mailbox: settings['INBOXQ_MAILBOX'],
    requestedAt: new Date().toISOString(),
  };
}

/**
 * An idle tick of the schedule on an empty inbox, as the timer runs it (the first tick's run done,
 * the session kept), against the least a look can be without a kept session: connect, log in,
 * SELECT INBOX, log out.
 */
async function measureEmptyRun(stack: LocalStack) {
  const settings = stack.settings('bench-empty@company.test', { INBOXQ_MAIL_RETENTION_DAYS: '30' });
  const handlers = createHandlers(() => deploymentFor(settings));
  const ctx = () =>
    new InvocationContext({ functionName: 'drainSchedule', invocationId: randomUUID(), logHandler: () => {} });
  const timer = { isPastDue: false, schedule: { adjustForDST: true }, scheduleStatus: undefined } as unknown as Timer;
  const token = await stack.idp.mint({ roles: EXCHANGE_ROLES }, { audience: EXCHANGE_AUDIENCE });
  await handlers.schedule(timer, ctx()); // the first tick of an instance runs a drain
  const ratios: number[] = [];
  const times = { inboxq: [] as number[], baseline: [] as number[] };
  for (let i = 0; i < EMPTY_RUNS; i++) {
    let t = process.hrtime.bigint();
    const [outcome] = await handlers.schedule(timer, ctx());
    if (outcome?.action !== 'idle') throw new Error(`an idle tick was expected, got ${outcome?.action}`);
    const inboxq = Number(process.hrtime.bigint() - t) / 1e6;
    t = process.hrtime.bigint();
    const client = await bareImap(stack, 'bench-empty@company.test', token);
    await client.mailboxOpen('INBOX');
    await client.logout();
    const baseline = Number(process.hrtime.bigint() - t) / 1e6;
    times.inboxq.push(inboxq);
    times.baseline.push(baseline);
    ratios.push(inboxq / baseline);
  }
  return { ratio: median(ratios), inboxqMs: median(times.inboxq), baselineMs: median(times.baseline) };
}

async function measureTokenCalls(stack: LocalStack) {
  const app = stack.registerApp();
  const settings = stack.settings('bench-token@company.test', app.settings);
  const handlers = createHandlers(() => deploymentFor(settings));
  for (let i = 0; i < 100; i++) {
    await handlers.drain(
      drainRequest(settings),
      new InvocationContext({ functionName: 'drain', invocationId: randomUUID(), logHandler: () => {} }),
    );
  }
  return stack.idp.requests.filter((r) => r.clientId === app.clientId && r.scope.startsWith(EXCHANGE_AUDIENCE)).length;
}

async function measureReplies(stack: LocalStack) {
  const mailbox = 'bench-reply@company.test';
  const settings = stack.settings(mailbox, {
    INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
    INBOXQ_SMTP_MAX_PER_MINUTE: '0',
    INBOXQ_MAX_MESSAGES_PER_RUN: '100000',
  });
  const rt = runtimeFor(settings);
  const handlers = createHandlers(() => deploymentFor(settings));
  const token = await stack.idp.mint({ roles: EXCHANGE_ROLES }, { audience: EXCHANGE_AUDIENCE });
  const replies = new QueueClient(stack.azurite.connectionString, REPLIES_QUEUE);
  await replies.createIfNotExists();
  await seed(stack, mailbox, REPLIES * RUNS, 0);
  const summary = await drainMailbox({ ...rt, log: silentLogger });
  const taskIds = summary.outcomes.map((o) => o.taskId!);
  const ratios: number[] = [];
  const rates = { inboxq: [] as number[], baseline: [] as number[] };
  const cpuPerReply = { inboxq: [] as number[], baseline: [] as number[] };
  const cpuRatios: number[] = [];
  for (let run = 0; run < RUNS; run++) {
    const ids = taskIds.slice(run * REPLIES, (run + 1) * REPLIES);
    const rate: Record<string, number> = {};
    const cpu: Record<string, number> = {};
    const sides = run % 2 === 0 ? (['baseline', 'inboxq'] as const) : (['inboxq', 'baseline'] as const);
    for (const side of sides) {
      if (side === 'inboxq') {
        await replies.clearMessages();
        for (const taskId of ids)
          await replies.sendMessage(
            encodeQueueMessage({ type: 'inboxq.reply', version: 1, taskId, mailbox, text: `Answer to ${taskId}` }),
          );
        const cpuBefore = process.cpuUsage();
        const started = process.hrtime.bigint();
        const result = await runQueueTrigger({
          queue: replies,
          poisonQueue: new QueueClient(stack.azurite.connectionString, `${REPLIES_QUEUE}-poison`),
          functionName: 'reply',
          handler: (m, c) => handlers.reply(m, c),
        });
        if (result.succeeded !== ids.length)
          throw new Error(`inboxq sent ${result.succeeded} of ${ids.length} replies`);
        rate[side] = ids.length / (Number(process.hrtime.bigint() - started) / 1e9);
        const used = process.cpuUsage(cpuBefore);
        cpu[side] = (used.user + used.system) / ids.length;
      } else {
        // inboxq's connections closed first: an instance alone sends on all 3 of the mailbox's, and
        // the server refuses a fourth (432), as Exchange does.
        await closeSmtpPools();
        const transport = nodemailer.createTransport({
          pool: true,
          maxConnections: 1,
          host: '127.0.0.1',
          port: stack.smtp.port,
          secure: false,
          requireTLS: true,
          tls: { ca: stack.certs.ca },
          auth: { type: 'OAuth2', user: mailbox, accessToken: token },
        });
        const rows = await Promise.all(ids.map((id) => rt.ledger.getMessage(mailbox, id)));
        const cpuBefore = process.cpuUsage();
        const started = process.hrtime.bigint();
        for (const row of rows) {
          await transport.sendMail({
            ...composeReply(
              row!,
              {
                type: 'inboxq.reply',
                version: 1,
                taskId: row!.taskId,
                mailbox,
                replyId: `bare-${run}`,
                text: `Answer to ${row!.taskId}`,
                attachments: [],
              },
              [],
            ),
          });
        }
        rate[side] = ids.length / (Number(process.hrtime.bigint() - started) / 1e9);
        const used = process.cpuUsage(cpuBefore);
        cpu[side] = (used.user + used.system) / ids.length;
        transport.close();
      }
    }
    rates.inboxq.push(rate['inboxq']!);
    rates.baseline.push(rate['baseline']!);
    ratios.push(rate['inboxq']! / rate['baseline']!);
    cpuPerReply.inboxq.push(cpu['inboxq']!);
    cpuPerReply.baseline.push(cpu['baseline']!);
    cpuRatios.push(cpu['inboxq']! / cpu['baseline']!);
    log(
      `  replies run ${run + 1}: inboxq ${rate['inboxq']!.toFixed(1)}/s, baseline ${rate['baseline']!.toFixed(1)}/s, ratio ${(rate['inboxq']! / rate['baseline']!).toFixed(2)}; CPU per reply ${(cpu['inboxq']! / 1000).toFixed(2)} ms vs ${(cpu['baseline']! / 1000).toFixed(2)} ms`,
    );
  }
  return {
    ratio: median(ratios),
    inboxq: median(rates.inboxq),
    baseline: median(rates.baseline),
    cpuRatio: median(cpuRatios),
    cpuMsPer100: { inboxq: median(cpuPerReply.inboxq) / 10, baseline: median(cpuPerReply.baseline) / 10 },
  };
}

async function seedLargeMail(stack: LocalStack, mailbox: string): Promise<number> {
  const raw = largeMail('big@partner.test', mailbox, 50 * 1024 * 1024);
  await stack.dropIntoMaildir(mailbox, raw);
  return raw.length;
}

/** In a child process of its own, so its RSS is the drain's: peak growth while draining one mail with a 50 MB attachment. */
async function measureLargeMail(stack: LocalStack) {
  const factors: number[] = [];
  const details: string[] = [];
  for (let run = 0; run < RUNS; run++) {
    const mailbox = `bench-large-${run}@company.test`;
    const settings = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' });
    const size = await seedLargeMail(stack, mailbox);
    const result = await new Promise<{ peakGrowth: number; size: number }>((resolve, reject) => {
      const child = spawn(
        process.execPath,
        ['--expose-gc', path.join(__dirname, 'bench-large-mail.js'), JSON.stringify({ settings, size })],
        {
          env: process.env,
          stdio: ['ignore', 'pipe', 'inherit'],
        },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.on('exit', (code) =>
        code === 0
          ? resolve(JSON.parse(out.trim().split('\n').pop()!) as { peakGrowth: number; size: number })
          : reject(new Error(`large-mail child exited ${code}`)),
      );
    });
    factors.push(result.peakGrowth / result.size);
    details.push(`${(result.peakGrowth / 1048576).toFixed(0)} MB for ${(result.size / 1048576).toFixed(0)} MB`);
    log(
      `  large mail run ${run + 1}: peak RSS growth ${(result.peakGrowth / 1048576).toFixed(1)} MB for a ${(result.size / 1048576).toFixed(1)} MB mail`,
    );
  }
  return { factor: median(factors), details };
}

function latency(stack: LocalStack) {
  return measureLatency(stack, {
    scheduleSeconds: DEFAULT_SCHEDULE_SECONDS,
    mails: LATENCY_MAILS,
    seconds: LATENCY_SECONDS,
  }).then(({ arrivalToTaskMs: _a, replyDeliveredMs: _r, ...summary }) => summary);
}

async function main(): Promise<void> {
  exitOnSignals();
  const started = Date.now();
  log('bench: starting the local stack');
  const stack = await LocalStack.start();
  try {
    // BENCH_ONLY=replies (or drain, large, empty, token, memory, latency, ledger-cost, bill, peak-memory): one measurement, printed, docs untouched.
    const only = process.env['BENCH_ONLY'];
    if (only) {
      const parts: Record<string, () => Promise<unknown>> = {
        drain: () => measureDrain(stack, SMALL_MAILS, 0, 'small', [], undefined, true),
        // The drain's CPU with and without its row transactions (withoutRowTransactions).
        'ledger-cost': async () => {
          const full = await measureDrain(stack, SMALL_MAILS, 0, 'small');
          const without = await measureDrain(stack, SMALL_MAILS, 0, 'no-rows', [], withoutRowTransactions);
          return {
            drainCpuRatio: full.cpuRatio,
            cpuMsPer1000: full.cpuMsPer1000,
            withoutRowTransactions: { drainCpuRatio: without.cpuRatio, cpuMsPer1000: without.cpuMsPer1000 },
          };
        },
        large: () => measureDrain(stack, LARGE_MAILS, 1024 * 1024, 'large'),
        empty: () => measureEmptyRun(stack),
        token: () => measureTokenCalls(stack),
        replies: () => measureReplies(stack),
        memory: () => measureLargeMail(stack),
        latency: () => latency(stack),
        bill: () => measureBill(stack, log, billOptions),
        'peak-memory': () => measureMemory(stack, log),
        rtt: () => measureRtt(stack, log, rttOptions),
      };
      if (!parts[only]) throw new Error(`BENCH_ONLY must be one of ${Object.keys(parts).join(', ')}`);
      process.stdout.write(`${JSON.stringify(await parts[only]())}\n`);
      return;
    }
    log('bench: drain, 1,000 small mails');
    const drainSmall = await measureDrain(stack, SMALL_MAILS, 0, 'small', [], undefined, true);
    log('bench: drain, 1,000 small mails, their row transactions not sent (what the ledger costs)');
    const drainNoRows = await measureDrain(stack, SMALL_MAILS, 0, 'no-rows', [], withoutRowTransactions);
    log('bench: drain, 100 mails of 1 MB');
    const drainLarge = await measureDrain(stack, LARGE_MAILS, 1024 * 1024, 'large');
    log('bench: empty runs');
    const empty = await measureEmptyRun(stack);
    log('bench: token endpoint calls over 100 warm invocations');
    const tokenCalls = await measureTokenCalls(stack);
    log('bench: replies');
    const reply = await measureReplies(stack);
    log('bench: one mail with a 50 MB attachment');
    const large = await measureLargeMail(stack);
    log(`bench: latency, ${LATENCY_MAILS} mails at random times over ${LATENCY_SECONDS} s, through the local host`);
    const lat = await latency(stack);
    log(`bench: the bill, idle ${IDLE_SECONDS} s with one mailbox and with ten, and ${BILL_MAILS} mails answered`);
    const bill = await measureBill(stack, log, billOptions);
    log('bench: peak memory of the app, scenario by scenario');
    const memory = await measureMemory(stack, log);
    log('bench: round trips, through a delay proxy');
    const rtt = await measureRtt(stack, log, rttOptions);
    const idleRecords = (t: { requests: number; traces: number; metrics: number }) => t.requests + t.traces + t.metrics;

    const result = {
      drainRatio: Number(drainSmall.ratio.toFixed(3)),
      emptyRunRatio: Number(empty.ratio.toFixed(3)),
      tokenEndpointCalls: tokenCalls,
      replyRatio: Number(reply.ratio.toFixed(3)),
      largeMailRssFactor: Number(large.factor.toFixed(3)),
      largeDrainRatio: Number(drainLarge.ratio.toFixed(3)),
      // Against the same-rows baseline (issue 27); against the bare client, without a goal.
      drainCpuRatio: Number((drainSmall.cpuRatioRows ?? Number.NaN).toFixed(3)),
      drainCpuRatioBare: Number(drainSmall.cpuRatio.toFixed(3)),
      drainCpuRatioWithoutRowTransactions: Number(drainNoRows.cpuRatio.toFixed(3)),
      replyCpuRatio: Number(reply.cpuRatio.toFixed(3)),
      arrivalToTaskP50Ms: lat.arrivalToTaskP50Ms,
      arrivalToTaskP95Ms: lat.arrivalToTaskP95Ms,
      replyDeliveredP50Ms: lat.replyDeliveredP50Ms,
      idleUsdPerMonth: Number(bill.one.usdPerMonth.toFixed(2)),
      idleUsdPerMonth10Mailboxes: Number(bill.ten.usdPerMonth.toFixed(2)),
      usdPer1000Mails: Number(bill.mail.usdPer1000Mails.toFixed(4)),
      idleTelemetryRecordsPerHour: idleRecords(bill.one.telemetryPerHour),
      peakRssMb: memory.peakRssMb,
      ...rttKeys(rtt),
    };
    const goal = (ok: boolean) => (ok ? 'met' : '**missed**');
    const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
    const md = `# Benchmarks

inboxq against the least the protocols allow, on the same local servers (Dovecot, Azurite, the
local SMTP server and identity provider), in one run. Each figure is the median of ${RUNS} runs; each
ratio is computed pair by pair (inboxq and its baseline back to back, alternating which goes first)
and the median of the ratios is reported. Absolute rates depend on the machine and its neighbours;
the ratios are what to compare.

Reproduce: \`npm run bench\` (about ${Math.round((Date.now() - started) / 60000)} minutes). Machine: ${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.

| measure | inboxq | baseline | ratio | goal | |
|---|---|---|---|---|---|
| drain, ${SMALL_MAILS} small mails (mails/s) | ${drainSmall.inboxq.toFixed(1)} | ${drainSmall.baseline.toFixed(1)} | **${result.drainRatio}** | ≥ 0.8 | ${goal(result.drainRatio >= 0.8)} |
| drain, ${LARGE_MAILS} mails of 1 MB, each stored as a blob (mails/s) | ${drainLarge.inboxq.toFixed(1)} | ${drainLarge.baseline.toFixed(1)} | **${result.largeDrainRatio}** | ≥ 0.6 | ${goal(result.largeDrainRatio >= 0.6)} |
| drain runs that failed and were continued by the next run | ${drainSmall.failures.length + drainNoRows.failures.length + drainLarge.failures.length} | | | | ${[...drainSmall.failures, ...drainNoRows.failures, ...drainLarge.failures].map((f) => f.replace(/\|/g, '/').slice(0, 120)).join('; ')} |
| an idle tick of the schedule on an empty inbox (ms) | ${empty.inboxqMs.toFixed(1)} | ${empty.baselineMs.toFixed(1)} | **${result.emptyRunRatio}** | ≤ 1.5 | ${goal(result.emptyRunRatio <= 1.5)} |
| token endpoint calls, 100 warm invocations | ${tokenCalls} | | | 1 | ${goal(tokenCalls === 1)} |
| replies through SMTP (replies/s) | ${reply.inboxq.toFixed(1)} | ${reply.baseline.toFixed(1)} | **${result.replyRatio}** | ≥ 0.8 | ${goal(result.replyRatio >= 0.8)} |
| peak RSS growth / mail size, one 50 MB attachment | ${large.details[Math.floor(large.details.length / 2)]} | | **${result.largeMailRssFactor}** | ≤ 3 | ${goal(result.largeMailRssFactor <= 3)} |
| drain CPU time of the process, per 1,000 small mails (ms), against the baseline with the same ledger rows (\`drainCpuRatio\`) | ${drainSmall.cpuMsPer1000.inboxq.toFixed(0)} | ${(drainSmall.cpuMsPer1000Rows ?? Number.NaN).toFixed(0)} | **${result.drainCpuRatio}** | ≤ 1.3 | ${goal(result.drainCpuRatio <= 1.3)} |
| the same against the bare client (\`drainCpuRatioBare\`) | ${drainSmall.cpuMsPer1000.inboxq.toFixed(0)} | ${drainSmall.cpuMsPer1000.baseline.toFixed(0)} | **${result.drainCpuRatioBare}** | | |
| the same, the mail and conversation rows' table transactions not sent (an experiment, below) | ${drainNoRows.cpuMsPer1000.inboxq.toFixed(0)} | ${drainNoRows.cpuMsPer1000.baseline.toFixed(0)} | **${result.drainCpuRatioWithoutRowTransactions}** | | |
| reply CPU time of the process, per 100 replies (ms) | ${reply.cpuMsPer100.inboxq.toFixed(0)} | ${reply.cpuMsPer100.baseline.toFixed(0)} | **${result.replyCpuRatio}** | ≤ 1.5 | ${goal(result.replyCpuRatio <= 1.5)} |
| arrival → task, p50 / p95 (ms), schedule every ${DEFAULT_SCHEDULE_SECONDS} s | ${lat.arrivalToTaskP50Ms} / ${lat.arrivalToTaskP95Ms} | | | ≤ 5000 / ≤ 15000 | ${goal(lat.arrivalToTaskP50Ms <= 5000 && lat.arrivalToTaskP95Ms <= 15000)} |
| reply queued → delivered, p50 / p95 (ms) | ${lat.replyDeliveredP50Ms} / ${lat.replyDeliveredP95Ms} | | | p50 ≤ 3000 | ${goal(lat.replyDeliveredP50Ms <= 3000)} |

Baselines, with the same libraries: **drain**: imapflow fetching every message's source in one
FETCH, one queue send per mail, one delete; no parsing, no checks, no ledger; for the 1 MB mails,
each source stored as a blob before its queue send (as inboxq stores it), and every blob of earlier
rounds deleted before each side's round (Azurite keeps blobs in memory). **Drain CPU with the same
rows** (issue 27: the goal counts the ledger): the bare client plus the rows inboxq's guarantees
rest on, through the same SDK in the same transactions per 100 mails: each mail claimed (insert),
its conversation started (insert), recorded as queued after the queue sends (replace, on the
claim's etag), marked removed after the delete (merge) (\`bareDrainWithRows\`). **Idle
tick**: imapflow connect + XOAUTH2 login + SELECT INBOX + logout, against the schedule's idle tick as
the timer runs it (a NOOP on the IMAP session the instance kept, after the instance's first tick). **CPU**: the benchmark process's own user +
system time (\`process.cpuUsage\`) over each side's timed part; Azurite, Dovecot and the SMTP server
are other processes, not counted. **Replies**: nodemailer with one
pooled connection sending the same threaded mails one after another; inboxq's pacing for Exchange's
limit is off for this measurement, and the replies go through the reply function as the Functions
host would call it. **Large mail**: the growth of the drain process's resident memory above its
level before the run, sampled every 10 ms, divided by the mail's size. **Latency**
(scripts/bench-latency.ts): the app served by the local host on its timer and queue triggers with
the product's host.json, ${LATENCY_MAILS} mails put into INBOX at random times over ${LATENCY_SECONDS} s, a worker
polling the tasks queue every 50 ms and answering each task at once; arrival is the APPEND's answer,
delivered is the reply row's sentAt (the local SMTP server answers once the mail is in the
recipient's mailbox). No baseline: these are absolute figures, against the goals.

${rttSection(rtt, rttOptions)}
## The bill: what the app makes the platform bill

scripts/bench-bill.ts runs the app on the local host as a process of its own, with the product's
host.json and the default deployment's schedule (\`${bill.defaults.schedule}\`) and instance size
(${bill.defaults.instanceMemoryMB} MB), both read from infra/; it records every invocation's start and end and bills
them by Flex Consumption's published rules (each function on instances of its own, overlapping
executions on an instance billed once, each activity period at least 1,000 ms and rounded up to
100 ms, US$0.000026 per GB-s and US$0.40 per million executions, no free grant:
localstack/host/flex-billing.ts, docs/operations.md). Idle: ${bill.one.windowSeconds} s after the first tick's run and
the first metric export, a window that holds each mailbox's periodic run. Application Insights: the
host's records under host.json's log levels (localstack/host/app-insights.ts) and the app's own
metric records as its exporter posts them to an ingestion endpoint on loopback.

| measure | value | goal | |
|---|---|---|---|
| idle, one mailbox: US$ a month (\`idleUsdPerMonth\`) | **${result.idleUsdPerMonth}** (${bill.one.invocations} executions in ${bill.one.windowSeconds} s, a tick ${bill.one.tickMs} ms, ${bill.one.billedSeconds} s billed) | ≤ 7.50 | ${goal(result.idleUsdPerMonth <= 7.5)} |
| idle, ten mailboxes: US$ a month (\`idleUsdPerMonth10Mailboxes\`) | **${result.idleUsdPerMonth10Mailboxes}** (${bill.ten.invocations} executions, a tick ${bill.ten.tickMs} ms, ${bill.ten.billedSeconds} s billed) | ≤ 10 | ${goal(result.idleUsdPerMonth10Mailboxes <= 10)} |
| mail: US$ per 1,000 mails, each a task, an acknowledgement and an answer (\`usdPer1000Mails\`) | **${result.usdPer1000Mails}** (${bill.mail.mails} mails, ${bill.mail.replies} replies in ${bill.mail.windowSeconds} s: ${Object.entries(
      bill.mail.byFunction,
    )
      .map(([f, b]) => `${f} ${b.executions} executions, ${b.billedMs / 1000} s billed`)
      .join('; ')}) | | |
| idle Application Insights records an hour, one mailbox (\`idleTelemetryRecordsPerHour\`): requests / traces / metrics | **${result.idleTelemetryRecordsPerHour}**: ${bill.one.telemetryPerHour.requests} / ${bill.one.telemetryPerHour.traces} / ${bill.one.telemetryPerHour.metrics} (${Object.entries(
      bill.one.telemetryPerHour.metricsByName ?? {},
    )
      .map(([n, v]) => `${n} ${v}`)
      .join(
        ', ',
      )}) | requests + traces ≤ 100 | ${goal(bill.one.telemetryPerHour.requests + bill.one.telemetryPerHour.traces <= 100)} |
| the same, ten mailboxes | ${bill.ten.telemetryPerHour.requests} / ${bill.ten.telemetryPerHour.traces} / ${bill.ten.telemetryPerHour.metrics} | | |
| mail: Application Insights records per 1,000 mails: requests / traces | ${bill.mail.telemetryPer1000Mails.requests} / ${bill.mail.telemetryPer1000Mails.traces} | | |
| peak memory of the app's process, the worst scenario below (\`peakRssMb\`) | **${result.peakRssMb} MB** | ≤ ${bill.defaults.instanceMemoryMB * 0.75} MB (a quarter of the ${bill.defaults.instanceMemoryMB}-MB instance left) | ${goal(result.peakRssMb <= bill.defaults.instanceMemoryMB * 0.75)} |

Peak memory by scenario (scripts/bench-memory.ts: each a fresh local host process serving the app,
its peak resident set, VmHWM, read when the work is done; every function runs in that one process,
where Flex Consumption gives each its own instances, so each figure is an upper bound for one):

| scenario | peak (MB) | at start (MB) | the work |
|---|---|---|---|
${memory.scenarios.map((m) => `| ${m.name} | ${m.peakRssMb} | ${m.startRssMb} | ${m.work} |`).join('\n')}

## What the measurements led to

The first run of this benchmark (same machine, 2026-11-23) gave drainRatio 0.15 and replyRatio
0.18. A CPU profile of the drain showed the benchmark process idle 60% of the time, waiting on
Azurite and Dovecot, and both cores busy between them: inboxq made three IMAP round trips and five
Storage writes per mail, one after the other, where the baseline makes one queue send. What changed:

- **Batches.** The drain takes up to 100 mails at a time: one FETCH for the small mails' sources (judged
  and parsed once), one FETCH of headers for the large ones, one MOVE (or EXPUNGE) for the batch.
  Claims and records are written as table transactions of up to 100 rows, the \`removed\` flags too;
  queue sends and blob writes run 8 at a time. Each mail still goes claim → task → record → removal
  in that order (docs/delivery-guarantees.md); a crash in the middle of a batch can now leave
  several tasks queued twice rather than one, each under its own task id.
- **Small mails inline.** A mail up to 32 KiB travels in its task message (\`rawInline\`) instead of
  costing a blob write; larger ones are blobs, as the contract said of anything too big for a queue
  message.
- **Pooled SMTP.** A warm instance keeps two authenticated connections per mailbox and token
  instead of paying TLS, STARTTLS and AUTH for every reply.

drainRatio went 0.15 → 0.38 (batches) → 0.70 (transactions, inline mail) → 0.84 (one fetch and
one parse per small mail); replyRatio 0.18 → about 0.9. The remaining gap on the drain is work the
baseline skips on purpose: the sender verdict, the ledger, the task contract. The large-mail memory
was within its goal from the start (streamed), and the empty run and token figures needed no change.

Issue 6 (conversations, acknowledgements, several mailboxes) added work to every drain, measured
the same way before it was kept:

- **Acknowledgements** first went out as one queue message per accepted mail: the drain of 1,000
  small mails took about 40% longer with them on than off (3.8 s against 2.4 s, then 2.8 s against
  2.0 s, in paired runs on the local stack). They now travel as one message per batch of up to 100
  mails, which the reply function expands: with them on, 1.76 s; off, 1.75 s.
- **Conversations** cost one table transaction per batch (the conversation rows): 130-175 ms per
  1,000 mails, about 5%. An index of Message-IDs would have cost another transaction per batch and
  a write per reply; it was dropped, because a referenced Message-ID leads to its task's ledger row
  without one (the task id is derived from it, or written in inboxq's own Message-IDs).
- The drain of the commit before issue 6, built and run beside the current one on the same stack
  (1,000 small mails, 4 rounds): 2.6-2.8 s per round for both. The drain ratio moves by much more
  than that from run to run of this benchmark (0.41 to 1.21 within one run of five pairs), because
  the baseline's own rate varies by a factor of two on this 2-core machine.
- The reply ratio was 0.765 in the full run written above and 0.81 in a run of that measurement
  alone (\`BENCH_ONLY=replies npm run bench\`); before issue 6 it was 0.76-0.87 over several runs.
  The reply path did not gain a Storage call (the Message-ID index would have added one). Both
  sides are bound by the local SMTP server, which delivers each mail into Dovecot, on 2 cores
  shared with Azurite and the benchmark itself.

Issue 11 (per-mail isolation: the drain as named steps, the verdict from the header section alone,
the body parsed only for accepted mail, bounded rows, the run lease carrying the batch in flight)
was measured before and after on the same quiet machine: the commit before it (efab580) built and
run from a clone beside the new one.

| measure | before (full run) | after (full run, the table above) | run-to-run spread of the pairs |
|---|---|---|---|
| drainRatio | 0.714 | 0.692 | 0.65-1.04 before, 0.61-0.92 after |
| emptyRunRatio | 1.657 | 1.678 | one figure per run: 1.657-1.736 before, 1.678-1.734 after |
| replyRatio | 0.802 | 0.800 | 0.76-0.83 before, 0.70-0.97 after |
| largeMailRssFactor | 1.161 | 1.103 | 1.15-1.22 before, 1.07-1.19 after |

- **Drain, alone and alternating** (\`BENCH_ONLY=drain\`, old, new, old, new): a first version of the
  change gave 0.831 and 0.705 (old) against 0.630 and 0.664 (new). The cause: an accepted small mail
  was parsed twice, its header section for the verdict and then the whole mail, and \`simpleParser\`
  costs about as much on a header section as on a small mail (its parsing stream). The verdict now
  runs mailparser's own header decoding on mailsplit's header lines, without the stream (5x faster,
  checked equal to \`simpleParser\` by a unit test); then 0.708 and 0.811 (old) against 0.726 and
  0.800 (new).
- **Replies, alone and alternating** (\`BENCH_ONLY=replies\`): 0.725 and 0.733 (old) against 0.757
  and 0.811 (new). The reply path gained no Storage call: the reply row also names the queue message
  delivering it.
- The empty run is one table write more than before only after an unclean run (the lease row is
  then taken over instead of created). The emptyRunRatio goal of 1.5 was missed by the old code on
  this machine today as well.
- Three other full runs of the new code were taken while the machine was busy (a type check, the
  old code's benchmark) and are not used: drainRatio 0.759, 0.636, 0.627; replyRatio 0.713, 0.72,
  0.725. One run of the old code had the unexplained 1 MB-mail crawl of issue 16 (0.5 mails/s in one
  round) and another an IMAP drop during UID EXPUNGE.

Issue 16, first part (2026-11-28):

- **The warm IMAP session** (\`INBOXQ_IMAP_KEEP_WARM_SECONDS\`): the empty run is now a NOOP on the
  session the last run kept, and costs 0.54 of the baseline's connect, login and SELECT (it cost 1.68
  with a session per run).
- **Latency**: every 5 seconds, the new default schedule, gives arrival → task p50 2.6-3.8 s and p95
  4.7-4.8 s, replies delivered p50 0.3-0.9 s; every 10 seconds p50 4.9 s, p95 10.4 s (docs/operations.md
  has the cost of each). Locally a login costs Dovecot about 20 ms, so the warm session does not
  show in these figures: a run with it off gave the same spread. Against Exchange Online it saves the
  TLS handshake and the XOAUTH2 login of every tick.
- **CPU per mail** is 2.0-2.4 times the baseline's for small mails over this session's runs
  (0.7-1.3 ms against 0.4-0.8 ms): the goal of 1.5 is missed. A profile of a
  1,000-mail drain: inboxq makes 1,064 Storage requests where the baseline makes 1,000 (the tasks,
  then 40 table transactions and 10 acknowledgement messages), so the difference is not round trips
  but the work per mail: mailparser (about 130 ms per 1,000 mails), the task's schema check (26 ms),
  table-transaction serialization, bigger queue messages (the mail inline), and the garbage they
  leave. For 1 MB mails inboxq spends 23-28 ms of CPU per mail against 8-11 ms for the baseline
  that stores each source as a blob (largeDrainRatio 0.5-0.55): the large-mail drain is bound by
  its own CPU (parsing the body with mailsplit and mailparser, hashing each blob, copying the text),
  which is where the next part of issue 16 starts.
- **The reply path's CPU** was 2.2-2.4 times the baseline's because the benchmark's handlers (and
  \`runtimeFor\`) validated the settings at every invocation, 1.5 ms each; the Functions entry point
  looked them up by key. \`deploymentFor\` now validates a set of settings once; the reply CPU ratio
  went to 1.52-1.75. What is left is the exactly-once ledger per reply (the task row read, the reply row
  written twice, the pace row, the queue message deleted), which the baseline does not do.
- **Beside a busy core** (\`node -e "for(;;){}"\` running through a whole run, before the two changes
  above): drainRatio 0.50, replyRatio 0.60, drainCpuRatio 2.6, replyCpuRatio 2.4; latency held
  (2.6 s / 4.7 s). inboxq loses more than its baselines when CPU is short: the goal that the ratios
  hold on a loaded machine is not met yet.
- **The broken IMAP connection** after a large FETCH did not happen in this session's full runs
  (0 failed drain runs in each).

Issue 16, second part (2026-11-28):

- **1 MB mails.** A profile of 100 of them: a third of inboxq's CPU was mailsplit and mailparser
  splitting 1 MB of text/plain line by line through streams, then the garbage of that. A
  single-part UTF-8 (or ASCII) text/plain mail with an identity or quoted-printable transfer
  encoding, most plain mail, is now decoded directly (shared/mail/parse.ts \`plainTextBody\`): its header read by mailsplit's own
  MimeNode, the CR of each CR LF dropped from the bytes, one decode; the bytes are stored as the text
  blob as they are. It gives the very string mailparser gives: test/unit/plain-text.test.ts compares
  the two on 800 generated mails (header forms that decide the path, bodies of CR, LF, invalid and
  multi-byte UTF-8, NUL, boundary-like lines). \`splitQuoted\` also stopped copying a long text to
  see whether it is blank (\`trim()\` and a regular expression each copied 1 MB). inboxq's CPU per
  1 MB mail went from 22-24 ms to 11-14 ms (the baseline's: 7-10 ms).
- **The next batch fetched ahead.** A drain alternated between IMAP (a FETCH of up to 32 MiB) and
  Storage (the blobs), each leaving a core idle. The next batch's sources are now fetched while the
  current batch is stored (shared/drain/steps/read.ts \`SourceReader\`); test/e2e/prefetch.test.ts
  checks the order of the commands, a connection cut during that FETCH, and a run that stops at its
  budget. 100 mails of 1 MB: 2.5 s a round before, 1.6-1.8 s after.
- largeDrainRatio went 0.51 to 0.60-0.78 over six full runs (0.64-0.68 in runs of that measurement
  alone); drainRatio 0.69-0.74 to 0.66-0.80 (the small mails take the direct path too; within one
  run the baseline's own rate ranges from 710 to 1,040 mails/s, inboxq's from 570 to 740). What is
  left on the 1 MB mails is mostly Azurite's: inboxq stores each mail twice (the raw mail and its
  text, as the task contract wants), and single-threaded Azurite spends about 5 ms of CPU per stored
  MB; with the blobs of earlier rounds deleted between rounds, both sides ran faster, the ratio
  stayed where it was.
- **CPU per small mail is still 1.8-2.4 times the baseline's, per reply 1.4-1.7 times.** A queue
  send through the SDK costs the process about 0.5 ms, nearly all the baseline does per mail. inboxq
  adds the ledger: measured alone on the local stack, a table transaction costs 60-65 µs per claimed
  row, as much per recorded row and about 50 µs per row marked removed (\`@azure/data-tables\`
  serializes each operation of a transaction through its full request pipeline, about 40 µs each),
  and the conversation rows are a fourth transaction: about 0.25 ms per mail, most of the
  difference. Each of those writes is a guarantee (a mail claimed before its task is queued,
  recorded before it leaves INBOX, where it went for \`inboxq trace\` and for telling a mail a
  person moved back from one inboxq moved). A reply reads the task row, writes the reply row twice
  and reads the pace row, where the baseline only sends.
- **Beside a busy core** (\`node -e "for(;;){}"\` through a whole run): drainRatio 0.55, replyRatio
  0.72, largeDrainRatio 0.60, latency held (2.5 s / 4.7 s). Where inboxq spends twice the CPU of its
  baseline, it loses more than the baseline when CPU is short: the ratios hold for the large mails
  and the latency, not for small mails and replies.
- **The broken IMAP connection**: 0 failed drain runs in six full runs in a row on this code, one
  of them beside the busy core (and 0 in the five of the first part). Never reproduced; not explained.

The six full runs of the second part's code (run 3 beside the busy core; runs 1-5 before the blobs
of earlier rounds were deleted between rounds):

| run | drain | empty run | reply | 1 MB | RSS factor | drain CPU | reply CPU | arrival → task p50 / p95 | delivered p50 | failed drain runs |
|---|---|---|---|---|---|---|---|---|---|---|
| 1 | 0.719 | 0.442 | 0.828 | 0.776 | 1.137 | 2.359 | 1.694 | 2.3 s / 4.8 s | 1.5 s | 0 |
| 2 | 0.794 | 0.420 | 0.866 | 0.603 | 1.151 | 1.764 | 1.432 | 1.9 s / 3.7 s | 0.8 s | 0 |
| 3, busy core | 0.547 | 0.436 | 0.721 | 0.604 | 1.122 | 2.258 | 1.663 | 2.5 s / 4.7 s | 1.5 s | 0 |
| 4 | 0.800 | 0.447 | 0.878 | 0.698 | 1.113 | 1.768 | 1.445 | 3.6 s / 5.0 s | 0.5 s | 0 |
| 5 | 0.776 | 0.413 | 0.838 | 0.784 | 1.132 | 2.025 | 1.549 | 3.0 s / 4.9 s | 0.8 s | 0 |
| 6 | 0.661 | 0.434 | 0.855 | 0.684 | 1.130 | 2.059 | 1.405 | 1.8 s / 5.8 s | 1.2 s | 0 |

Issue 16, third part (2026-11-28): what the ledger costs.

- **The drain without its row transactions** (\`withoutRowTransactions\` in scripts/bench.ts; alone:
  \`BENCH_ONLY=ledger-cost npm run bench\`): the same drain, with the table transactions of its mail
  rows (claimed, recorded, removed) and of its conversation rows answered as if Storage had taken
  them, never sent. It is an experiment, never a product: such a drain keeps none of the guarantees
  those rows carry. In this run it spent ${drainNoRows.cpuMsPer1000.inboxq.toFixed(0)} ms of CPU per 1,000 mails against the baseline's
  ${drainNoRows.cpuMsPer1000.baseline.toFixed(0)} (**${result.drainCpuRatioWithoutRowTransactions}**), where the drain with its rows spent ${drainSmall.cpuMsPer1000.inboxq.toFixed(0)} (**${result.drainCpuRatio}**), and it drained at
  ${drainNoRows.ratio.toFixed(2)} of the baseline's rate (it fetches the next batch while it stores this one, and sends 16 at
  a time; the baseline sends one after the other).
- The four row writes per mail cost the process about ${((drainSmall.cpuMsPer1000.inboxq - drainNoRows.cpuMsPer1000.inboxq) / 1000).toFixed(2)} ms per mail. \`@azure/data-tables\`
  puts each operation of a transaction through the client's whole request pipeline (core-client's
  serializer, a URL and headers per sub-request), as it would a request of its own: 40-80 µs per
  row in a transaction of 100 creates measured alone against Azurite, more in the drain, whose
  garbage it adds to.
- So drainCpuRatio ≤ 1.5 can't be met while the rows go through the SDK: they alone cost
  ${((drainSmall.cpuMsPer1000.inboxq - drainNoRows.cpuMsPer1000.inboxq) / drainSmall.cpuMsPer1000.baseline).toFixed(2)} of the baseline's whole CPU per mail, on top of the queue send that is all the baseline does
  and that every task needs too. Without them the drain was at 1.15-1.67 over this part's runs of
  the experiment (the table below, and four runs of it alone). What is left is a decision: fewer rows per mail (a change to the delivery
  guarantees), a transaction path leaner than the SDK's, or a goal that counts the ledger.
- **The stalls were Azurite's.** The first full run with that experiment (about 26,000 queue
  messages in two minutes) froze Azurite for more than ten minutes at 100% CPU, until the server
  closed the baseline's IMAP connection and the run failed. A CPU profile of Azurite during the
  freeze: 98.5% in LokiJS, under the queue GC's \`deleteExtents\`. Azurite keeps each queue message
  as an extent, and its GC (every minute for queues) deletes the unreferenced ones one by one,
  each time rebuilding the index of every extent, without yielding: after n messages a sweep sorts
  n entries n times, and Azurite answers nothing meanwhile (2 s after 2,000 messages sent and
  cleared, 9.5 s after 4,000, 42 s after 8,000). Past about 10,000 such a freeze outlasts the
  60-s socket timeout of inboxq's IMAP session while a batch waits on a table transaction: the
  session is closed, the batch's next IMAP command (UID EXPUNGE: the bench deletes) fails, and the
  run that continues finds Azurite still frozen. That is the likely cause of the broken connections
  and the slow continued runs the issue reported; the reply round that crawled at 0.7 replies/s was
  probably a sweep too. The local stack now starts Azurite
  through localstack/azurite-main.ts, which deletes a sweep's extents in one batch
  (localstack/azurite-gc.ts, tested against Azurite's own classes in test/e2e/azurite-gc.test.ts):
  the longest answer during the sweep after 8,000 messages went from 42 s to 6 ms, after 16,000 it
  is 46 ms. A full run now takes about 5 minutes, where those of the second part took 8.5 to 9:
  they were probably waiting on sweeps too, which also blurs their ratios.
- **A batch's Storage steps keep the IMAP session alive.** The NOOP that kept a quiet session alive
  covered only the building and queueing of tasks; a claim, conversation or record transaction
  that Storage answered slowly for longer than the socket timeout cost the session and failed the
  run (nothing was lost: the next run resumed). The NOOPs now cover all of them
  (test/e2e/faults.test.ts, a 65-s pause after the claim: the run finishes; without the change its
  next IMAP command fails on the closed connection).

The full runs of this part's code (run 8 beside \`node -e "for(;;){}"\`; run 7 is the table above):

| run | drain | empty run | reply | 1 MB | RSS factor | drain CPU | drain CPU, no rows | reply CPU | arrival → task p50 / p95 | delivered p50 | failed drain runs |
|---|---|---|---|---|---|---|---|---|---|---|---|
| 7 | 0.749 | 0.435 | 0.881 | 0.668 | 1.126 | 1.991 | 1.352 | 1.443 | 2.5 s / 4.8 s | 1.6 s | 0 |
| 8, busy core | 0.555 | 0.381 | 0.750 | 0.719 | 1.129 | 2.022 | 1.582 | 1.576 | 2.8 s / 5.1 s | 1.3 s | 0 |
| 9 | 0.772 | 0.432 | 0.915 | 0.666 | 1.149 | 2.154 | 1.519 | 1.371 | 2.5 s / 4.9 s | 0.5 s | 0 |
| 10 | 0.822 | 0.426 | 0.922 | 0.689 | 1.145 | 1.778 | 1.145 | 1.280 | 3.0 s / 5.1 s | 0.5 s | 0 |

Beside the busy core the 1 MB ratio and the latency hold; the small-mail drain (0.555) and the
replies (0.750) do not: where inboxq spends twice its baseline's CPU per mail, it loses more than
the baseline when CPU is short.

Issue 25 (2026-12-07): the bill.

- **Before**, each 5-s tick was two executions on two instances: the timer (about 9 ms) put a drain
  request per mailbox on a queue, and the drain function (about 22 ms on an empty inbox) took it.
  Flex Consumption bills each instance's activity period for 1,000 ms at least, so an idle month of
  one mailbox was 35 billed seconds every 90 s at 2,048 MB: US$52.82 (the unit test
  test/unit/bill.test.ts reproduces that figure from the same rules), and about US$280 with ten
  mailboxes (a drain invocation per mailbox per tick). Every execution was also a request record and
  two traces in Application Insights, and the timer's schedule monitor wrote a blob every tick.
- **Now** the tick looks at every mailbox itself, on the IMAP session its instance keeps (a NOOP,
  which also reports new mail), drains what it finds a share at a time, and leaves bursts, large
  mail and failing mailboxes to the drain function (shared/drain/tick.ts). An idle tick takes 1-6 ms
  and is one billed second of one instance, at 512 MB: **US$6.95 a month, with one mailbox or ten**
  (the 10-mailbox tick, all looked at at once, took 6 ms). The idle tick against a fresh connect,
  login and SELECT: **0.027** (it was 0.43 for the warm drain run it replaces).
- **Idle telemetry**: host.json turns off Host.Results (a request per execution) and Host.Aggregator,
  keeps Function.<name> at Warning and Function.<name>.User at Information; an idle tick logs
  nothing. An idle hour sends **0 requests and 0 traces**; its 88 metric records are the heartbeat
  (one a minute) and the metrics of the periodic run every 5-6 minutes; ten mailboxes, 876.
- **Mail** adds about US$0.01 per 1,000 mails: the ticks are billed anyway, and each reply
  invocation that does not overlap another is a billed second of the reply function's instance.
- **Memory**, to choose the instance size: the first measurement of eight answers with a 20 MB
  attachment each (host.json's batchSize runs eight at once) peaked at 563 MB, over a 512-MB
  instance: each attachment was read into memory before the send. Attachments are now streamed from
  Blob Storage as the mail goes out: 190-195 MB. Ten mailboxes drained in one tick peaked at 354 MB;
  a tick now drains four at once (291-301 MB), and the drain function two per instance. The worst
  scenario is the hostile corpus, 318-345 MB over two runs: a third of a 512-MB instance left.
- **Latency** holds: arrival → task p50 ${(lat.arrivalToTaskP50Ms / 1000).toFixed(1)} s, p95 ${(lat.arrivalToTaskP95Ms / 1000).toFixed(1)} s in the run above. A mail is drained
  by the tick itself, with no queue hop to the drain function.
- Two full runs of this code (2026-12-07). The first had type checks and linting on the same two
  cores during its drain and reply parts: drainRatio 0.771, largeDrainRatio 0.606, replyRatio 0.82,
  drainCpuRatio 1.816, replyCpuRatio 1.509, arrival → task 3.6 s / 5.0 s. The second, on a quiet
  machine, is the table above: drainRatio 0.88, largeDrainRatio 0.676, replyRatio 1.034, drainCpuRatio
  1.685 (the ledger's cost, issue 27), replyCpuRatio 1.40, arrival → task 2.2 s / 4.8 s. The bill was
  the same in both: US$6.95 a month idle with one mailbox or ten, 0 requests and 0 traces an idle
  hour; US$0.009 and US$0.0115 per 1,000 mails; peak memory 345 MB in both.

Issue 27 (2026-12-07): round trips, and the drain's CPU counted fairly.

- **Round trips** (the section above, scripts/bench-rtt.ts). Measured alone before any change:
  drain 0.436 (20/4 ms) and 0.545 (80/10 ms) of the pipelined client; replies 0.593 and 0.676 of
  the pooled one. Three traps of the measurement were fixed first: the pooled client's connections
  left open made the local SMTP server (3 per mailbox, as Exchange) refuse inboxq's with 432, so
  inboxq reconnected for every reply (ratio 0.27 before the fix); the benchmarks' queue runner
  waited for a whole batch of 8 where the host takes the next once 4 are left; the same-rows
  baseline wrote into inboxq's own tables, which slows Azurite's inserts for inboxq.
- **Changed**: the drain lists INBOX with one FETCH 1:* instead of UID SEARCH ALL and a FETCH
  (IMAP 6 → 5 round trips per batch; none at all when the server's last EXISTS said INBOX is empty).
  Not changed, on purpose: the reply function's 2 SMTP connections per instance (two instances
  share the mailbox's 3, a tested property); with 3 it measured 0.69 / 0.71.
- **Where the drain's time goes** (a step timeline of 100 mails): at 0 ms added they take about
  290 ms, 240 ms of it the process's CPU (the task build, header parse and sender policy, the SDK's
  per-request work); at 20/4 ms the drain is CPU-bound, at 80/10 ms the round trips and the CPU
  add up, and one batch leaves nothing for the fetch-ahead to overlap.
- **The fair CPU baseline**: \`drainCpuRatio\` is now against the bare client plus the same rows in
  the same transactions (\`bareDrainWithRows\`): 1.162 in that session's full run, against 1.312 for
  the bare client (\`drainCpuRatioBare\`, no goal). This machine was noisy during that run: the bare
  client's rate went from 318 to 737 mails/s between rounds, and the drain ratio's five pairs were
  0.52 to 1.35 (median 0.774; the last full run before, 0.88). Measured again right after, alone
  (\`BENCH_ONLY=drain\`, 5 pairs): drainRatio 0.805, drainCpuRatio 1.437 (pairs 0.98 to 1.50), 1.928
  against the bare client. So the fair CPU goal is met in one run and missed in the next: not
  reliably met on this machine.
- **Second session on it** (figures from \`BENCH_ONLY=rtt\`, 3 rounds, before the full run above):
  - *The measurement*: each delay proxy now runs in a process of its own. In the measured process
    a proxy's timers fired only once the client's synchronous work was done, so CPU time and round
    trips added up where a network lets them overlap, against the side doing more CPU work. The
    figures moved little (drain 0.50 / 0.65 after, replies 0.67 / 0.69). \`BENCH_RTT_STEPS=1\`
    prints each drain's wall time, CPU time and step timeline.
  - *The listing brings small mails*: in a folder of at most 100 mails the listing asks for each
    mail's first 64 KB too, and a mail shorter than that needs no FETCH of its own (at most 6.4 MB;
    the reported size is not trusted for it). IMAP 5 → 4 round trips per run of a few small mails.
  - *Replies on all 3 connections*: an instance alone now sends on all 3 of the mailbox's SMTP
    connections; past 2 it holds a slot only while no other instance has said it found none free,
    and gives the third back within half a second of being asked (tested with two instances and
    on the slots themselves). Replies went from 0.67 / 0.69 to **0.82 / 0.97**; the loopback reply
    ratio 0.957 and replyCpuRatio 1.499 (\`BENCH_ONLY=replies\`), at its goal's edge. In the full run
    above: 0.740 / 0.916, its three rounds at 20/4 ms 0.74, 0.63 and 0.85, and replyCpuRatio 1.315.
    At 20/4 ms the reply goal is met in one run and missed in the next on this machine; at
    80/10 ms it is met in both.
  - *After the full run*: the reply reads the mailbox's pace row while it reads the task row and
    claims the reply, not after (one Storage round trip fewer in turn per reply). Two runs of
    \`BENCH_ONLY=rtt\`: replies **0.92 / 0.95** and **0.85 / 0.94** (a round whose pool is warm
    0.99-1.02, one that opens its 3 connections 0.83-0.92). Then the connection slots are taken
    with one read of the mailbox's slot rows and the writes together (two round trips, where each
    slot was a read and a write in turn): **0.96 / 0.97**, the rounds that open connections 0.90-0.97.
    Not in the table above.
  - *The drain with inboxq's default action* (\`BENCH_RTT_PROCESSED_ACTION=move\`: one UID MOVE
    where the client's delete is STORE and EXPUNGE): 0.55 (20/4 ms) and **0.85** (80/10 ms). The
    table keeps the like-for-like delete.
  - *Tried and dropped*: the warm session's listing as its check, with no NOOP before it. Dovecot
    answered UID FETCH 1:* with INBOX as the session last saw it: mail delivered since was not in
    it (a server shows new mail when a command lets it, and the NOOP is that command); the
    warm-session test caught it. 32 and 64 queue sends in flight instead of 16: no change beyond the
    noise. That phase is CPU: 100 \`sendMessage\` calls cost about 100 ms of CPU in the Storage SDK
    alone (a bare QueueClient against Azurite, the same for 40-byte and 16-KB messages), and the
    client pays them too.
  - *The loopback drain in the full run above* (0.723, missed): its five pairs were 1.13, 1.20,
    0.72, 0.63 and 0.69, the baseline going from 700 to 1,100 mails/s between pairs. This session's
    changes don't touch that path (a 1,000-mail inbox is listed without sources); alone
    (\`BENCH_ONLY=drain\`) just before, it measured 0.99, and drainCpuRatio 1.20.
  - *Where 20/4 ms stands*: 100 mails take inboxq 380-480 ms against the client's 210-270 ms, and
    inboxq's CPU alone is 195-370 ms of it (the client's 100-290 ms): the goal would need the
    drain's CPU about halved, and no single part of it is more than a fifth (task build, header
    and sender judgement, the four row transactions, the SDK's per-request work, the GC).
- **Third session on it: where the drain's gap is.** The round-trip bench now also drains against
  the pipelined client writing the same ledger rows in the same transactions (scripts/bench-rows.ts:
  the claims, the conversations, the records after the sends, the marks after the delete; the
  lease and the run record are inboxq's alone). First run, 3 rounds: inboxq is **0.83-0.99** of it
  at 20/4 ms and **1.01-1.04** at 80/10 ms, where it is 0.58-0.68 and 0.63-0.69 of the bare
  pipelined client. So the gap to the bare client is the ledger: a 100-row table transaction costs
  its round trip plus 15-20 ms (the SDK's serialization and the server's work, measured alone
  through the proxy: 15-27 ms at 4 ms, 22-39 ms at 10 ms, where a point read costs its round trip
  plus 4-5 ms), four of them per batch, each where the guarantees put it (claimed before queued,
  recorded before removed, marked after). inboxq's own work (the parse, the sender verdict, the
  task, the lease, the run record) is the rest: up to a sixth at 20/4 ms, nothing measurable at
  80/10 ms.
  - *Tried and dropped*: the batch's Storage steps pipelined in chunks of 25 (every chunk's claim
    at once, the conversations in order, each chunk's record as soon as its tasks were queued, so
    the transactions overlap the sends of other chunks; the removal still one command after every
    record). Slower: 400-456 ms per 100 mails at 20/4 ms against 366-440, 721-762 at 80/10 ms
    against 655-735 (4 rounds each, step timelines). The sends are CPU-bound, so a transaction in
    flight beside them doesn't shorten them, and 12 transactions cost more than 4.
  - *Follow-ups*: the bench now also drains 100 follow-ups of the mails inboxq just drained (each
    answers one, from its sender, so each continues a conversation), against the same pipelined
    client (\`rttFollowUpDrainRatio20\`, \`rttFollowUpDrainRatio80\`, no goal). With the code before
    this session they measured **0.10-0.12** (20/4 ms) and **0.14-0.15** (80/10 ms): each mail's
    thread lookup was two table reads awaited in turn (the referenced mail's task row, then its
    conversation), 200 of them per 100 mails, 1.65 s of a 2.1-s batch at 20/4 ms. The batch now
    reads them together, 16 at a time, before deciding its mails in order
    (shared/conversation/conversations.ts, \`prefetch\`): **0.39 / 0.53-0.57** (\`BENCH_ONLY=rtt\`, 3
    rounds). What is left is the SDK's CPU for 200 point reads; fresh mails need none.
  - *Two full runs of this session's code* (the table above is the second, with the follow-ups
    and the batched lookups; the reply changes of the second session are in both): drain 0.531 and
    0.520 (20/4 ms), 0.635 and 0.688 (80/10 ms) of the bare pipelined client; **0.922 and 0.843,
    0.924 and 0.961** of the same-rows one (rounds 0.74-1.11); replies **0.846 and 0.847, 0.942
    and 0.947**, met in both. On loopback, drainRatio 0.72 and 0.687, drainCpuRatio 1.49 and
    1.396, all missed; alone right after the first (\`BENCH_ONLY=drain\`, 5 pairs): 0.79 and 1.29.
    The drain's CPU per mail is what it was in the run where they were 0.723 and 1.203 (inboxq
    0.98 and 1.04 ms per mail against 0.974, the same-rows client 0.71 and 0.73 against 0.685):
    the ratio of the medians is about 1.4 in all three, and the median of the five pairs' ratios
    (the figure) moves 1.2-1.5 with how the pairs fall. So drainCpuRatio ≤ 1.3 is not met on this
    machine, reliably or otherwise; the earlier "met" was how one run's pairs fell.
  - *The loopback drain over 12 pairs* (\`BENCH_RUNS=12 BENCH_ONLY=drain\`, after the second full
    run): drainRatio median 0.78, drainCpuRatio 1.24; the first five pairs' CPU ratios have a median
    of 1.35, the last seven 1.21, inboxq's CPU per mail falling from 1.10-1.81 ms to 0.88-1.13 ms
    while the baseline's stays at 0.49-0.75 ms. One warm-up pair may leave inboxq's larger code
    still warming when the five measured pairs start. A longer warm-up would be a change of method
    made while the goal is missed; I leave it to the owner, with the round-trip goal (issue 27).
`;
    writeFileSync(path.join(__dirname, '..', '..', 'docs', 'benchmarks.md'), md);
    log('bench: wrote docs/benchmarks.md');
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await stack.stop();
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    log(`bench failed: ${err.stack ?? err.message}`);
    process.exit(1);
  },
);
