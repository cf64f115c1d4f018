/**
 * The app's peak memory, the figure `instanceMemoryMB` is chosen by: each scenario a fresh local
 * host process serving the compiled app with the product's host.json and its defaults, the work
 * put where a user's would be, and the process's peak resident set (VmHWM) read when it is done.
 *
 *   idle                   a minute of ticks on one mailbox
 *   largest mail           one mail of 150 MB (the largest Exchange Online can be set to accept),
 *                          most of it one attachment
 *   hostile corpus         the 46 mails of localstack/hostile-corpus.ts (a 60 MB attachment, 1,000
 *                          attachments, 6,000 MIME parts, 100,000 quoted lines, …) in one inbox
 *   ten mailboxes          ten mailboxes of 20 small mails and one of 8 MB each, ticked together
 *   bursts                 eight mailboxes of 120 mails of 250 KB each: the drain function's runs
 *   replies, attachments   8 answers at once (host.json batchSize), each with a 20 MB attachment
 *                          (Exchange sends 35 MB at most, base64 included)
 *
 * The local host runs every function in one process; on Flex Consumption each function has
 * instances of its own, so the figure is an upper bound for one instance. It is the Node.js
 * worker's memory: the Functions host's own process is not here (Microsoft adds 272 MB per instance
 * for system and host processes, not billed: flex-consumption-plan.md, Instance sizes).
 *
 *   node build/scripts/bench-memory.js      prints {"peakRssMb", "scenarios": [...]}
 */
import { randomBytes, randomUUID } from 'node:crypto';

import { TableClient } from '@azure/data-tables';

import { exitOnSignals, LocalStack } from '../localstack';
import { hostileCorpus } from '../localstack/hostile-corpus';
import { largeMail } from '../localstack/sample-mail';
import { partitionKey, REPLIES_TABLE } from '../shared/ledger/rows';
import { TaskWorker } from '../shared/worker/worker';
import { AppHost } from './bench-host';

const MB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const SENDER = 'mem@partner.test';

export interface MemoryScenario {
  name: string;
  /** Peak resident memory of the app's process (MB). */
  peakRssMb: number;
  /** Its resident memory once started, before any mail (MB). */
  startRssMb: number;
  /** What the scenario put through, for the reader. */
  work: string;
}

function mail(to: string, subject: string, body: string): Buffer {
  return Buffer.from(
    [
      'Authentication-Results: spf=pass smtp.mailfrom=partner.test; dkim=pass header.d=partner.test;dmarc=pass action=none header.from=partner.test;compauth=pass reason=100',
      `From: ${SENDER}`,
      `To: ${to}`,
      `Subject: ${subject}`,
      `Message-ID: <${randomUUID()}@partner.test>`,
      'Content-Type: text/plain; charset=utf-8',
      '',
      body,
      '',
    ].join('\r\n'),
  );
}

/** A mail of about `totalBytes`, most of it one base64 attachment. */
function mailOfSize(to: string, totalBytes: number): Buffer {
  return largeMail(SENDER, to, Math.floor((totalBytes * 3) / 4) - 4096, 'the largest mail');
}

async function untilEmpty(stack: LocalStack, mailboxes: string[], timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; await sleep(500)) {
    const left = await Promise.all(mailboxes.map((m) => stack.readFolder(m, 'INBOX').then((f) => f.length)));
    if (left.every((n) => n === 0)) return;
    if (Date.now() > deadline) throw new Error(`mail still in INBOX after ${timeoutMs / 1000} s: ${left.join(', ')}`);
  }
}

/** One scenario in a fresh host: `work` puts the load in and returns once it is done. */
async function scenario(
  name: string,
  settings: Record<string, string | undefined>,
  work: (host: AppHost) => Promise<string>,
  log: (line: string) => void,
): Promise<MemoryScenario> {
  const host = await AppHost.start(settings);
  try {
    await sleep(1000);
    const startRss = host.memory().rss;
    const done = await work(host);
    await sleep(1000);
    const { peak } = host.memory();
    const result = { name, peakRssMb: Math.round(peak / MB), startRssMb: Math.round(startRss / MB), work: done };
    log(`  memory, ${name}: peak ${result.peakRssMb} MB (${result.startRssMb} MB at start); ${done}`);
    return result;
  } finally {
    await host.stop();
  }
}

export async function measureMemory(
  stack: LocalStack,
  log: (line: string) => void = () => undefined,
): Promise<{ peakRssMb: number; scenarios: MemoryScenario[] }> {
  const run = Date.now().toString(36);
  const base = (mailbox: string, extra: Record<string, string | undefined> = {}) =>
    stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_DRAIN_SCHEDULE: '*/5 * * * * *',
      INBOXQ_TASKS_QUEUE: `mem-${run}`,
      ...extra,
    });
  /** Settings of a deployment of these mailboxes (keys and addresses), each with its own tasks queue. */
  const several = (keys: string[], addresses: string[], extra: Record<string, string | undefined> = {}) =>
    base('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_TASKS_QUEUE: undefined,
      INBOXQ_MAILBOXES: keys.join(','),
      ...Object.fromEntries(keys.map((k, i) => [`INBOXQ_${k.toUpperCase()}__MAILBOX`, addresses[i]])),
      ...extra,
    });
  const scenarios: MemoryScenario[] = [];
  // BENCH_MEMORY_ONLY=replies (a word of a scenario's name): that one alone.
  const only = process.env['BENCH_MEMORY_ONLY'];
  const wanted = (name: string) => !only || name.includes(only);

  if (wanted('idle')) {
    scenarios.push(
      await scenario(
        'idle',
        base(`mem-idle-${run}@company.test`),
        async () => {
          await sleep(60_000);
          return 'a minute of ticks, nothing in INBOX';
        },
        log,
      ),
    );
  }

  if (wanted('largest mail')) {
    const largest = `mem-largest-${run}@company.test`;
    const raw = mailOfSize(largest, 150 * MB);
    await stack.dropIntoMaildir(largest, raw);
    scenarios.push(
      await scenario(
        'largest mail',
        base(largest),
        async () => {
          await untilEmpty(stack, [largest], 300_000);
          return `one mail of ${Math.round(raw.length / MB)} MB, a ${Math.round((raw.length * 0.74) / MB)} MB attachment`;
        },
        log,
      ),
    );
  }

  if (wanted('hostile corpus')) {
    const hostile = `mem-hostile-${run}@company.test`;
    const { cases } = hostileCorpus(hostile);
    for (const c of cases) {
      if (c.maildir) await stack.dropIntoMaildir(hostile, c.raw);
      else await stack.appendMail(hostile, c.raw);
    }
    const corpusMb = Math.round(cases.reduce((sum, c) => sum + c.raw.length, 0) / MB);
    scenarios.push(
      await scenario(
        'hostile corpus',
        base(hostile),
        async () => {
          await untilEmpty(stack, [hostile], 300_000);
          return `${cases.length} mails, ${corpusMb} MB`;
        },
        log,
      ),
    );
  }

  if (wanted('ten mailboxes')) {
    const keys = Array.from({ length: 10 }, (_, i) => `m${i}`);
    const many = keys.map((k) => `mem-${k}-${run}@company.test`);
    for (const mailbox of many) {
      await stack.dropIntoMaildir(mailbox, [
        ...Array.from({ length: 20 }, (_, i) => mail(mailbox, `small ${i}`, 'hello\r\n'.repeat(200))),
        mailOfSize(mailbox, 8 * MB),
      ]);
    }
    scenarios.push(
      await scenario(
        'ten mailboxes',
        several(keys, many),
        async () => {
          await untilEmpty(stack, many, 300_000);
          return '10 mailboxes of 20 small mails and one of 8 MB each';
        },
        log,
      ),
    );
  }

  if (wanted('bursts')) {
    // Bursts the ticks leave to the drain function: its runs hold two batches of sources each.
    const keys = Array.from({ length: 8 }, (_, i) => `b${i}`);
    const bursting = keys.map((k) => `mem-burst-${k}-${run}@company.test`);
    const body = `${'x'.repeat(998)}\r\n`.repeat(250);
    for (const mailbox of bursting)
      await stack.dropIntoMaildir(
        mailbox,
        Array.from({ length: 120 }, (_, i) => mail(mailbox, `burst ${i}`, body)),
      );
    scenarios.push(
      await scenario(
        'bursts in eight mailboxes',
        several(keys, bursting, { INBOXQ_ACKNOWLEDGE: 'false' }),
        async () => {
          await untilEmpty(stack, bursting, 600_000);
          return '8 mailboxes of 120 mails of 250 KB each (30 MB a mailbox), drained by the drain function';
        },
        log,
      ),
    );
  }

  if (wanted('replies with attachments')) {
    const replying = `mem-replies-${run}@company.test`;
    const settings = base(replying, { INBOXQ_ACKNOWLEDGE: 'false', INBOXQ_TASKS_QUEUE: `mem-replies-${run}` });
    for (let i = 0; i < 8; i++) await stack.appendMail(replying, mail(replying, `Please attach ${i}`, 'the file'));
    scenarios.push(
      await scenario(
        'replies with attachments',
        settings,
        async () => {
          const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, {
            tasksQueue: `mem-replies-${run}`,
          });
          const file = randomBytes(20 * MB);
          const tasks = [];
          for (const deadline = Date.now() + 120_000; tasks.length < 8 && Date.now() < deadline; await sleep(200))
            for (const t of await worker.receive({ max: 8 })) tasks.push(t);
          // The eight answers go on the queue together, as eight workers would put them.
          await Promise.all(
            tasks.map(async ({ task, complete }) => {
              const attachment = await worker.putReplyAttachment(task, 'report.bin', file);
              await worker.reply({
                taskId: task.taskId,
                mailbox: replying,
                text: 'Attached.',
                attachments: [attachment],
              });
              await complete();
            }),
          );
          const replies = TableClient.fromConnectionString(stack.azurite.connectionString, REPLIES_TABLE, {
            allowInsecureConnection: true,
          });
          for (const deadline = Date.now() + 300_000; ; await sleep(500)) {
            let sent = 0;
            try {
              for await (const row of replies.listEntities<{ sentAt?: string }>({
                queryOptions: { filter: `PartitionKey eq '${partitionKey(replying)}'` },
              }))
                if (row.sentAt) sent++;
            } catch (err) {
              // No reply written yet: the table is made with the first.
              if ((err as { statusCode?: number }).statusCode !== 404) throw err;
            }
            if (sent >= tasks.length) break;
            if (Date.now() > deadline) throw new Error(`only ${sent} of ${tasks.length} replies sent`);
          }
          return `${tasks.length} answers, each with a 20 MB attachment`;
        },
        log,
      ),
    );
  }

  return { peakRssMb: Math.max(...scenarios.map((s) => s.peakRssMb)), scenarios };
}

if (require.main === module) {
  exitOnSignals();
  void (async () => {
    const stack = await LocalStack.start();
    try {
      const result = await measureMemory(stack, (l) => process.stderr.write(`${l}\n`));
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } finally {
      await stack.stop();
    }
  })();
}
