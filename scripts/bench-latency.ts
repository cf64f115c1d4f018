/**
 * Latency as a sender lives it, with the app run as the Functions runtime runs it: the local host
 * (localstack/host) serves the compiled app on its timer and queue triggers with the product's
 * host.json, mails arrive at random times, a worker answers each task at once, and
 *
 *   arrival -> task:      from the moment a mail is in INBOX (its APPEND answered) to the moment
 *                         the worker, polling the tasks queue every 50 ms, receives its task;
 *   reply -> delivered:   from the worker's putting the answer on the replies queue to the moment
 *                         the local SMTP server accepted it (its row's sentAt; the server answers
 *                         only once the mail is in the recipient's mailbox).
 *
 *   node build/scripts/bench-latency.js [--schedule 5] [--mails 24] [--seconds 90] [--warm 300]
 *
 * bench.ts runs it with the default schedule; this entry point compares schedules.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

import { TableClient } from '@azure/data-tables';

import { exitOnSignals, LocalStack } from '../localstack';
import { partitionKey, REPLIES_TABLE } from '../shared/ledger/rows';
import { TaskWorker } from '../shared/worker/worker';

export interface LatencyResult {
  scheduleSeconds: number;
  mails: number;
  arrivalToTaskMs: number[];
  replyDeliveredMs: number[];
  arrivalToTaskP50Ms: number;
  arrivalToTaskP95Ms: number;
  replyDeliveredP50Ms: number;
  replyDeliveredP95Ms: number;
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

const ROOT = path.join(__dirname, '..', '..');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function measureLatency(
  stack: LocalStack,
  options: {
    scheduleSeconds: number;
    mails: number;
    seconds: number;
    keepWarmSeconds?: number;
    log?: (l: string) => void;
  },
): Promise<LatencyResult> {
  const say = options.log ?? (() => undefined);
  const mailbox = `latency-${options.scheduleSeconds}s-${Date.now()}@company.test`;
  const sender = 'lena@partner.test';
  const tasksQueue = `tasks-latency-${Date.now()}`;
  const settings = stack.settings(mailbox, {
    INBOXQ_AUTHORIZED_SENDERS: sender,
    INBOXQ_DRAIN_SCHEDULE: `*/${options.scheduleSeconds} * * * * *`,
    INBOXQ_TASKS_QUEUE: tasksQueue,
    // The answer's latency, not the acknowledgement's: acknowledgements would share the sending pace.
    INBOXQ_ACKNOWLEDGE: 'false',
    INBOXQ_IMAP_KEEP_WARM_SECONDS: String(options.keepWarmSeconds ?? 300),
  });
  const host = spawn(
    process.execPath,
    [path.join(ROOT, 'build/localstack/host/main.js'), '--app', ROOT, '--main', 'build/functions/*.js'],
    { env: { ...process.env, ...settings, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  host.stdout.on('data', (c: Buffer) => (output += c.toString()));
  host.stderr.on('data', (c: Buffer) => (output += c.toString()));
  try {
    for (const deadline = Date.now() + 60_000; !/functions running/.test(output); await sleep(100))
      if (Date.now() > deadline || host.exitCode !== null)
        throw new Error(`the host did not start:\n${output.slice(-2000)}`);

    const arrivals = new Map<string, number>();
    const replyQueued = new Map<string, number>();
    const arrivalToTask: number[] = [];
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, { tasksQueue });
    let working = true;
    let stopBy = Number.POSITIVE_INFINITY;
    const work = (async () => {
      while (working || replyQueued.size < arrivals.size) {
        const got = await worker.receive({ max: 16 });
        const at = Date.now();
        for (const { task, complete } of got) {
          const arrived = arrivals.get(task.subject);
          if (arrived !== undefined) arrivalToTask.push(at - arrived);
          replyQueued.set(task.taskId, Date.now());
          await worker.reply({ taskId: task.taskId, mailbox, text: `Answer to ${task.subject}` });
          await complete();
        }
        if (got.length === 0) await sleep(50);
        if (!working && Date.now() > stopBy) break;
      }
    })();

    // Arrivals at random times over the window, as people write.
    const offsets = Array.from({ length: options.mails }, () => Math.random() * options.seconds * 1000).sort(
      (a, b) => a - b,
    );
    const start = Date.now();
    for (const [i, offset] of offsets.entries()) {
      const wait = start + offset - Date.now();
      if (wait > 0) await sleep(wait);
      const subject = `Latency ${i}`;
      await stack.appendMail(
        mailbox,
        Buffer.from(
          `From: ${sender}\r\nTo: ${mailbox}\r\nSubject: ${subject}\r\nMessage-ID: <lat-${i}-${Date.now()}@partner.test>\r\n` +
            `Date: ${new Date().toUTCString()}\r\nAuthentication-Results: mx.company.test; dmarc=pass header.from=partner.test\r\n` +
            `\r\nWhen will it be ready?\r\n`,
        ),
      );
      arrivals.set(subject, Date.now());
      say(`  latency: mail ${i + 1}/${options.mails} in INBOX`);
    }
    working = false;
    stopBy = Date.now() + options.scheduleSeconds * 1000 * 3 + 30_000;
    await work;

    // Delivered: the reply rows' sentAt, once every answer has one.
    const replies = TableClient.fromConnectionString(stack.azurite.connectionString, REPLIES_TABLE, {
      allowInsecureConnection: true,
    });
    const replyDelivered: number[] = [];
    for (const deadline = Date.now() + 60_000; Date.now() < deadline; await sleep(500)) {
      replyDelivered.length = 0;
      for await (const row of replies.listEntities<{ sentAt?: string }>({
        queryOptions: { filter: `PartitionKey eq '${partitionKey(mailbox)}'` },
      })) {
        const taskId = String(row.rowKey).split('.')[0]!;
        const queued = replyQueued.get(taskId);
        if (queued !== undefined && row.sentAt) replyDelivered.push(Date.parse(row.sentAt) - queued);
      }
      if (replyDelivered.length >= replyQueued.size) break;
    }
    return {
      scheduleSeconds: options.scheduleSeconds,
      mails: options.mails,
      arrivalToTaskMs: arrivalToTask,
      replyDeliveredMs: replyDelivered,
      arrivalToTaskP50Ms: Math.round(percentile(arrivalToTask, 50)),
      arrivalToTaskP95Ms: Math.round(percentile(arrivalToTask, 95)),
      replyDeliveredP50Ms: Math.round(percentile(replyDelivered, 50)),
      replyDeliveredP95Ms: Math.round(percentile(replyDelivered, 95)),
    };
  } finally {
    host.kill('SIGTERM');
    await new Promise((r) => host.once('exit', r));
  }
}

if (require.main === module) {
  const arg = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i > 0 ? Number(process.argv[i + 1]) : fallback;
  };
  exitOnSignals();
  void (async () => {
    const stack = await LocalStack.start();
    try {
      const result = await measureLatency(stack, {
        scheduleSeconds: arg('schedule', 5),
        mails: arg('mails', 24),
        seconds: arg('seconds', 90),
        keepWarmSeconds: arg('warm', 300),
        log: (l) => process.stderr.write(`${l}\n`),
      });
      const { arrivalToTaskMs, replyDeliveredMs, ...summary } = result;
      process.stderr.write(
        `arrival->task ms: ${arrivalToTaskMs.join(' ')}\nreply->delivered ms: ${replyDeliveredMs.join(' ')}\n`,
      );
      process.stdout.write(`${JSON.stringify(summary)}\n`);
    } finally {
      await stack.stop();
    }
  })();
}
