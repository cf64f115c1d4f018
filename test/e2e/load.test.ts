/**
 * Load: 1,000 mails in the inbox, drained over several runs that each stop at their time budget or
 * message limit; every mail is accounted for in the ledger and on the queue. Peak memory is
 * reported, not asserted (benchmarks measure; tests check behaviour).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { drainMailbox, type DrainSummary } from '../../shared/drain/drain';
import { memoryLogger } from '../../shared/telemetry/log';
import { buildMail } from '../helpers/mail';
import { clearTasks, takeAllTasks } from '../helpers/stack';

const MAILBOX = 'load@company.test';
const COUNT = 1000;

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
  await clearTasks(stack);
  const mails = Array.from({ length: COUNT }, (_, i) =>
    Buffer.from(
      buildMail({
        from: `p${i % 50}@partner.test`,
        to: MAILBOX,
        subject: `load ${i}`,
        body: `mail number ${i}\r\n`.repeat(20),
      }).replace(/\r?\n/g, '\r\n'),
    ),
  );
  await stack.dropIntoMaildir(MAILBOX, mails);
}, 120_000);
afterAll(async () => {
  await stack?.stop();
});

describe(`${COUNT} mails`, () => {
  it('are drained over several runs within the time budget, every one accounted for', async () => {
    const settings = stack.settings(MAILBOX, {
      INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_MAX_MESSAGES_PER_RUN: '400',
      INBOXQ_RUN_BUDGET_SECONDS: '8',
    });
    const rt = runtimeFor(settings);
    let peakRss = process.memoryUsage().rss;
    const baseRss = peakRss;
    const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 20);
    const runs: DrainSummary[] = [];
    const started = Date.now();
    try {
      while (runs.length < 20) {
        const summary = await drainMailbox({ ...rt, log: memoryLogger() });
        runs.push(summary);
        if (summary.stoppedBecause === 'empty') break;
      }
    } finally {
      clearInterval(sampler);
    }
    const elapsed = Date.now() - started;

    expect(runs.length).toBeGreaterThan(1);
    expect(runs.slice(0, -1).every((r) => r.stoppedBecause === 'limit' || r.stoppedBecause === 'budget')).toBe(true);
    expect(runs.at(-1)!.stoppedBecause).toBe('empty');
    expect(runs.reduce((n, r) => n + r.counts.queued, 0)).toBe(COUNT);
    expect(await stack.readFolder(MAILBOX, 'INBOX')).toHaveLength(0);
    const rows = await rt.ledger.listMessages(MAILBOX);
    expect(rows).toHaveLength(COUNT);
    expect(rows.every((r) => r.state === 'queued' && r.removed)).toBe(true);
    const tasks = await takeAllTasks(stack);
    expect(new Set(tasks.map((t) => t.taskId))).toEqual(new Set(rows.map((r) => r.taskId)));

    const mb = (n: number) => `${(n / 1024 / 1024).toFixed(0)} MB`;
    console.log(
      `load: ${COUNT} mails in ${runs.length} runs (${runs.map((r) => `${r.counts.seen}/${r.stoppedBecause}`).join(', ')}), ` +
        `${(COUNT / (elapsed / 1000)).toFixed(0)} mails/s, peak RSS ${mb(peakRss)} (start ${mb(baseRss)}, growth ${mb(peakRss - baseRss)})`,
    );
  }, 600_000);
});
