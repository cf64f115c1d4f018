/**
 * Crash injection: a real child process runs the compiled drain or reply and is killed with
 * SIGKILL at a step boundary (no finally, no cleanup), then runs again. Over every boundary and a
 * backlog of mails: no mail lost, every mail exactly one task id, every reply delivered once.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { conversationIdFor } from '../../shared/identity/ids';
import { buildMail, eopFail } from '../helpers/mail';
import { clearTasks, sendReplies, takeAllTasks } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

const CHILD = path.resolve('build/localstack/crash-child.js');

function runChild(
  order: Record<string, unknown>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CHILD, JSON.stringify(order)], {
      env: process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

const SENDERS = '*@partner.test';
// After a killed run its lease stays until it expires: the runs here hold a 30 s lease
// (INBOXQ_DRAIN_LEASE_SECONDS), and the next runs see a clock past it. With the default
// lease (5 minutes) they would find the mailbox still held.
const LEASE = { INBOXQ_DRAIN_LEASE_SECONDS: '30' };
const AFTER_LEASE = 31_000;

describe('a drain killed at each step boundary', () => {
  it.each(['fetched', 'claimed', 'blobs-written', 'queued', 'recorded', 'moved', 'removed'] as const)(
    'at %s',
    async (step) => {
      const mailbox = `crash-${step}@company.test`;
      const settings = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: SENDERS, ...LEASE });
      await clearTasks(stack);
      const senders = ['a', 'b', 'c', 'd'].map((s) => `${s}-${step}@partner.test`);
      const mails = [
        buildMail({ from: senders[0]!, to: mailbox, subject: 'one' }),
        buildMail({
          from: senders[1]!,
          to: mailbox,
          subject: 'two',
          attachments: [{ filename: 'x.bin', contentType: 'application/octet-stream', content: Buffer.alloc(5000, 7) }],
        }),
        buildMail({ from: 'ceo@company.test', to: mailbox, subject: 'forged', authResults: eopFail('company.test') }),
        buildMail({ from: senders[2]!, to: mailbox, subject: 'three' }),
        buildMail({ from: senders[3]!, to: mailbox, subject: 'four', messageId: null }),
      ];
      for (const m of mails) await stack.appendMail(mailbox, m);

      const killed = await runChild({ kind: 'drain', settings, dieAt: step, occurrence: 2 });
      expect(killed.signal, killed.stderr).toBe('SIGKILL');

      // At least one run after the crash (killed at `moved`, the inbox is already empty: the run that
      // follows finds the ledger behind the mailbox and reconciles it).
      for (let run = 0; run === 0 || (run < 3 && (await stack.readFolder(mailbox, 'INBOX')).length > 0); run++) {
        const again = await runChild({ kind: 'drain', settings, nowOffsetMs: AFTER_LEASE });
        expect(again.code, again.stderr).toBe(0);
      }

      expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
      expect(await stack.readFolder(mailbox, 'inboxq-processed')).toHaveLength(mails.length);
      const rows = await runtimeFor(settings).ledger.listMessages(mailbox);
      expect(rows).toHaveLength(mails.length);
      // The ledger tells the truth: every row says its mail left INBOX.
      expect(rows.every((r) => r.removed)).toBe(true);
      if (step === 'moved') expect(rows.filter((r) => r.reconciledAt)).toHaveLength(mails.length);
      expect(rows.filter((r) => r.state === 'queued')).toHaveLength(4);
      expect(rows.filter((r) => r.state === 'rejected')).toHaveLength(1);

      const tasks = (await takeAllTasks(stack)).filter((t) => t.mailbox === mailbox);
      const queuedIds = new Set(rows.filter((r) => r.state === 'queued').map((r) => r.taskId));
      expect(new Set(tasks.map((t) => t.taskId))).toEqual(queuedIds);
      // A task is queued twice only when the crash caught it between its queue send and its ledger
      // write, and then under the same id. Mails are handled a few at a time, so a crash during the
      // task phase can catch several; before it (fetched, claimed) or after it (removed), none.
      const perId = new Map<string, number>();
      for (const t of tasks) perId.set(t.taskId, (perId.get(t.taskId) ?? 0) + 1);
      const repeated = [...perId.values()].filter((n) => n > 1);
      if (step === 'fetched' || step === 'claimed' || step === 'moved' || step === 'removed')
        expect(repeated).toEqual([]);
      expect(Math.max(...perId.values())).toBeLessThanOrEqual(2);

      // Each mail started its own conversation, the same in a repeated task, and is acknowledged
      // once, however often the crash made its acknowledgement queued.
      for (const t of tasks)
        expect(t.conversation).toEqual({
          id: conversationIdFor(t.taskId),
          isNew: true,
          continuedBy: null,
          previousTaskIds: [],
        });
      const sent = await sendReplies(stack, settings);
      expect(sent.failed).toBe(0);
      for (const sender of senders) expect(await stack.readFolder(sender, 'INBOX'), sender).toHaveLength(1);
      expect(await stack.readFolder('ceo@company.test', 'INBOX')).toHaveLength(0);
    },
  );
});

describe('a drain killed at random moments', () => {
  it('leaves no mail lost, none done twice under two ids, and a ledger that tells the truth', async () => {
    const mailbox = 'crash-random@company.test';
    // No sending pace: 42 acknowledgements go out at once (Exchange's 30 a minute would defer some).
    const settings = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: SENDERS,
      INBOXQ_TASKS_QUEUE: 'tasks-crash-random',
      INBOXQ_SMTP_MAX_PER_MINUTE: '0',
      ...LEASE,
    });
    // Six rounds: new mail arrives (one forged in four), and a drain is killed wherever it happens
    // to be: at a random moment within the time a whole run of one round took (the first round,
    // not killed, measures it). Each run starts after the last one's lease has expired. Then runs
    // until the inbox is empty.
    let run = 0;
    let killed = 0;
    let roundMs = 0;
    const kills: number[] = [];
    for (let round = 0; round < 7; round++) {
      for (let i = 0; i < 8; i++) {
        const n = round * 8 + i;
        const forged = i % 4 === 3;
        const attachments =
          n % 3 === 0
            ? [{ filename: `f${n}.bin`, contentType: 'application/octet-stream', content: Buffer.alloc(40_000 + n, n) }]
            : [];
        await stack.appendMail(
          mailbox,
          buildMail(
            forged
              ? { from: `ceo${n}@company.test`, to: mailbox, subject: 'forged', authResults: eopFail('company.test') }
              : { from: `r${n}@partner.test`, to: mailbox, subject: `m${n}`, attachments },
          ),
        );
      }
      if (round === 0) {
        const calibration = await runChild({ kind: 'drain', settings, nowOffsetMs: AFTER_LEASE * run++ });
        expect(calibration.code, calibration.stderr).toBe(0);
        roundMs = (JSON.parse(calibration.stdout) as { elapsedMs: number }).elapsedMs;
        continue;
      }
      const dieAfterMs = Math.floor(roundMs * (0.2 + Math.random() * 0.7));
      kills.push(dieAfterMs);
      const child = await runChild({ kind: 'drain', settings, dieAfterMs, nowOffsetMs: AFTER_LEASE * run++ });
      if (child.signal === 'SIGKILL') killed++;
    }
    for (let left = 0; left < 6 && (left === 0 || (await stack.readFolder(mailbox, 'INBOX')).length > 0); left++) {
      const again = await runChild({ kind: 'drain', settings, nowOffsetMs: AFTER_LEASE * run++ });
      expect(again.code, again.stderr).toBe(0);
    }
    // Killed before it started, while it drained, or after it finished: only the middle proves anything.
    expect(killed, 'kills that landed before the child finished').toBeGreaterThanOrEqual(2);

    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    const processed = await stack.readFolder(mailbox, 'inboxq-processed');
    const quarantined = await stack.readFolder(mailbox, 'inboxq-quarantine');
    expect(processed.length + quarantined.length).toBe(56);
    const rows = await runtimeFor(settings).ledger.listMessages(mailbox);
    expect(
      rows.every((r) => r.removed),
      'every row says its mail left INBOX',
    ).toBe(true);
    // A mail killed in three runs in a row is set aside unread (poison-mail detection); any other
    // is a task or a rejection.
    const poisoned = rows.filter((r) => r.state === 'quarantined');
    for (const r of poisoned) expect(r.reasons[0]).toContain('drain runs in a row that failed or were stopped');
    expect(quarantined).toHaveLength(poisoned.length);
    expect(rows.filter((r) => r.state === 'rejected').length + poisoned.length).toBeGreaterThanOrEqual(14);
    expect(rows.filter((r) => r.state === 'queued').length + poisoned.length).toBeGreaterThanOrEqual(42);
    expect(rows.filter((r) => r.state === 'rejected' || r.state === 'queued').length + poisoned.length).toBe(56);

    const ids = (await takeAllTasks(stack, 'tasks-crash-random')).map((t) => t.taskId);
    // Every queued mail's task is there, under its own id; no other task exists, except (rarely) one of
    // a mail poisoned after its task went out but before its row said so (docs/delivery-guarantees.md).
    const queuedIds = new Set(rows.filter((r) => r.state === 'queued').map((r) => r.taskId));
    const poisonedIds = new Set(poisoned.map((r) => r.taskId));
    for (const id of queuedIds) expect(ids).toContain(id);
    for (const id of ids) expect(queuedIds.has(id) || poisonedIds.has(id), id).toBe(true);
    const sent = await sendReplies(stack, settings);
    expect(sent.failed).toBe(0);
    for (const r of rows.filter((x) => x.state === 'queued'))
      expect(await stack.readFolder(r.sender!, 'INBOX'), r.sender!).toHaveLength(1);
    console.log(
      `random kills at ${kills.join(', ')} ms (${killed} landed; a whole run took ${roundMs} ms): ${run} runs, ${poisoned.length} set aside as poison, ${ids.length - new Set(ids).size} tasks queued twice under their own id`,
    );
  });
});

describe('a reply killed at each step boundary', () => {
  it.each([
    ['claimed', 'sent'],
    ['smtp-accepted', 'found-in-sent-folder'],
    ['recorded', 'already-sent'],
  ] as const)("at %s, then delivered again: %s, one mail in the recipient's inbox", async (step, outcome) => {
    const mailbox = `reply-crash-${step}@company.test`;
    const sender = `sender-${step}@partner.test`;
    // A 10 s reply lease (the default is 60 s): the second delivery, 11 s later by its clock, may take over.
    const settings = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: SENDERS,
      INBOXQ_ACKNOWLEDGE: 'false',
      INBOXQ_REPLY_LEASE_SECONDS: '10',
    });
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox }));
    expect((await runChild({ kind: 'drain', settings })).code).toBe(0);
    const [row] = await runtimeFor(settings).ledger.listMessages(mailbox);
    const reply = { type: 'inboxq.reply', version: 1, taskId: row!.taskId, mailbox, text: 'The answer.' };

    const killed = await runChild({ kind: 'reply', settings, reply, dieAt: step });
    expect(killed.signal, killed.stderr).toBe('SIGKILL');
    const again = await runChild({ kind: 'reply', settings, reply, nowOffsetMs: 11_000 });
    expect(again.code, again.stderr).toBe(0);
    expect(JSON.parse(again.stdout).outcome).toBe(outcome);
    const third = await runChild({ kind: 'reply', settings, reply });
    expect(JSON.parse(third.stdout).outcome).toBe('already-sent');
    expect(await stack.readFolder(sender, 'INBOX')).toHaveLength(1);
  });
});
