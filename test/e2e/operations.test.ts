/**
 * The operator's commands on the local stack, through the CLI's own entry point: trace a mail from
 * arrival to its delivered reply and a forged one to its rejection; release a rejected mail after
 * the policy changed and see it become exactly one task; replay poisoned replies and see each sent
 * once; status healthy, then stale once the schedule stops, and unhealthy with a poisoned queue.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { main } from '../../cli/inboxq';
import { LocalStack } from '../../localstack';
import { readHostJson } from '../../localstack/host/settings';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage } from '../../shared/contract/messages';
import { type MailboxStatus, mailboxStatus } from '../../shared/ops/status';
import type { TraceResult } from '../../shared/ops/trace';
import { TaskWorker } from '../../shared/worker/worker';
import { buildMail, eopFail } from '../helpers/mail';
import {
  drainNow,
  drainTick,
  handlePoisonedReplies,
  queue,
  REPLIES_QUEUE,
  sendReplies,
  takeAllTasks,
} from '../helpers/stack';

let stack: LocalStack;
let worker: TaskWorker;
beforeAll(async () => {
  stack = await LocalStack.start();
  worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
});
afterAll(async () => {
  await stack?.stop();
});

async function traceJson(query: string, env: Record<string, string | undefined>): Promise<TraceResult> {
  const r = await main(['trace', query, '--json'], env);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as TraceResult;
}

async function tasksOf(mailbox: string) {
  return (await takeAllTasks(stack)).filter((t) => t.mailbox === mailbox);
}

describe('inboxq trace', () => {
  it('follows a mail from its arrival to its delivered answer, found by Message-ID, task id, sender and conversation', async () => {
    const mailbox = 'ops-trace@company.test';
    const sender = 'alice@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender });
    await stack.appendMail(
      mailbox,
      buildMail({
        from: `Alice <${sender}>`,
        to: mailbox,
        subject: 'Where is my answer?',
        body: 'SECRET-BODY-TEXT please answer',
        messageId: '<trace-1@partner.test>',
      }),
    );
    await drainNow(stack, env);
    const [task] = await tasksOf(mailbox);
    await worker.reply({ taskId: task!.taskId, mailbox, text: 'SECRET-ANSWER-TEXT' });
    await sendReplies(stack, env);

    const result = await traceJson('<trace-1@partner.test>', env);
    expect(result.complete).toBe(true);
    expect(result.mails).toHaveLength(1);
    const mail = result.mails[0]!;
    expect(mail).toMatchObject({
      mailbox,
      taskId: task!.taskId,
      verdict: 'accepted',
      state: 'queued',
      sender,
      subject: 'Where is my answer?',
      tasksQueue: 'tasks',
      conversationId: task!.conversation.id,
      now: 'inboxq-processed',
    });
    const replies = Object.fromEntries(mail.replies.map((r) => [r.kind, r]));
    expect(replies['acknowledgement']).toMatchObject({ state: 'sent', attempts: 1 });
    expect(replies['answer']).toMatchObject({ state: 'sent', attempts: 1, sentFolderCheck: '' });
    expect(replies['answer']!.lastResponse).toMatch(/^250 /);
    const whats = mail.events.map((e) => e.what);
    expect(whats[0]).toMatch(/^arrived in INBOX of ops-trace@company.test \(UID \d+, UIDVALIDITY \d+\)$/);
    expect(whats[1]).toBe(`claimed by a drain run as task ${task!.taskId}`);
    expect(whats[2]).toMatch(/^accepted from alice@partner.test: /);
    expect(whats[3]).toBe(`task ${task!.taskId} queued on tasks in conversation ${task!.conversation.id}`);
    expect(whats.filter((w) => / sent \(attempts 1; last answer: 250 /.test(w))).toHaveLength(2);
    expect(whats.at(-1)).toBe('now: in the folder inboxq-processed');
    const times = mail.events.slice(0, -1).map((e) => e.at);
    expect([...times].sort()).toEqual(times);

    // The same mail by its task id, its sender, its conversation (bare and as the subject tag),
    // and by the Message-ID of inboxq's answer.
    const answerId = replies['answer']!.messageId;
    for (const q of [task!.taskId, sender, task!.conversation.id, `[#${task!.conversation.id}]`, answerId]) {
      const found = await traceJson(q, env);
      expect(
        found.mails.map((m) => m.taskId),
        q,
      ).toEqual([task!.taskId]);
    }

    // As a person reads it; never the body of the mail or of the answer.
    const text = await main(['trace', task!.taskId], env);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`${mailbox}  task ${task!.taskId}  accepted`);
    expect(text.stdout).toContain('now: in the folder inboxq-processed');
    expect(text.stdout + JSON.stringify(result)).not.toMatch(/SECRET-(BODY|ANSWER)-TEXT/);
  });

  it('follows a forged mail to its rejection reasons; nothing matching exits 1; a query it cannot read exits 2', async () => {
    const mailbox = 'ops-forged@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'ceo@partner.test', INBOXQ_ACKNOWLEDGE: 'false' });
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'ceo@partner.test',
        to: mailbox,
        authResults: eopFail('partner.test'),
        messageId: '<forged-1@partner.test>',
        subject: 'Wire \u001b[31mnow\u001b[0m \u009b1m\u202eevil',
      }),
    );
    const summary = await drainNow(stack, env);
    expect(summary.counts.rejected).toBe(1);

    const result = await traceJson('<forged-1@partner.test>', env);
    expect(result.mails).toHaveLength(1);
    const mail = result.mails[0]!;
    expect(mail).toMatchObject({ verdict: 'rejected', state: 'rejected', tasksQueue: null, now: 'inboxq-processed' });
    expect(mail.replies).toEqual([]);
    expect(mail.reasons.join(' ')).toMatch(/ceo@partner.test is not authenticated/);
    expect(mail.events.map((e) => e.what)).toContainEqual(
      expect.stringMatching(/^rejected: ceo@partner.test is not authenticated/),
    );
    expect((await traceJson('ceo@partner.test', env)).mails.map((m) => m.taskId)).toEqual([mail.taskId]);
    // The subject's escape sequence never reaches the operator's terminal.
    const text = await main(['trace', '<forged-1@partner.test>'], env);
    expect(text.stdout).toContain('Wire ?[31mnow?[0m');
    expect(text.stdout).not.toContain('\u001b');
    // Nor do a C1 CSI and a bidi override through --json: escaped, and the same text once parsed.
    const json = await main(['trace', '<forged-1@partner.test>', '--json'], env);
    expect(json.stdout).not.toMatch(/[\u009b\u202e]/);
    expect(json.stdout).toContain('\\u009b1m\\u202eevil');
    expect((JSON.parse(json.stdout) as TraceResult).mails[0]!.subject).toContain('\u009b1m\u202eevil');

    const none = await main(['trace', '<never-sent@partner.test>'], env);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe(`No mail matches message-id <never-sent@partner.test> in ${mailbox}.\n`);
    const bad = await main(['trace', 'hello world'], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('is not a Message-ID (<…>), a task id (32 hex digits)');
  });
});

describe('inboxq release', () => {
  it('puts a rejected mail back after the policy changed: it is drained into exactly one task, and its rows say so', async () => {
    const mailbox = 'ops-release@company.test';
    const sender = 'bob@newpartner.test';
    const before = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_ACKNOWLEDGE: 'false',
    });
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, messageId: '<release-1@newpartner.test>' }));
    expect((await drainNow(stack, before)).counts.rejected).toBe(1);
    const [rejected] = (await traceJson('<release-1@newpartner.test>', before)).mails;
    expect(rejected).toMatchObject({ verdict: 'rejected', now: 'inboxq-processed' });

    // The sender is added to the policy, and the mail released.
    const after = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: `*@partner.test,${sender}`,
      INBOXQ_ACKNOWLEDGE: 'false',
    });
    const released = await main(['release', rejected!.taskId], after);
    expect(released.stdout).toBe(`released  ${rejected!.taskId}: moved from inboxq-processed back to INBOX\n`);
    expect(released.code).toBe(0);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
    expect(await stack.readFolder(mailbox, 'inboxq-processed')).toHaveLength(0);
    const [back] = (await traceJson(rejected!.taskId, after)).mails;
    expect(back).toMatchObject({ now: 'INBOX', releasedAt: expect.any(String) as unknown });
    expect(back!.reasons.at(-1)).toMatch(/^released from inboxq-processed to INBOX with inboxq release/);

    // The next run accepts it: one task, claimed under its Message-ID.
    const summary = await drainNow(stack, after);
    expect(summary.counts).toMatchObject({ seen: 1, queued: 1 });
    const tasks = await tasksOf(mailbox);
    expect(tasks).toHaveLength(1);
    expect(tasks[0]!.messageId).toBe('<release-1@newpartner.test>');
    const both = (await traceJson('<release-1@newpartner.test>', after)).mails;
    expect(both.map((m) => [m.taskId, m.verdict])).toEqual([
      [rejected!.taskId, 'rejected'],
      [tasks[0]!.taskId, 'accepted'],
    ]);
    expect(both[0]!.drainedAgainAs).toEqual([tasks[0]!.taskId]);
    expect(both[0]!.events.map((e) => e.what)).toContain(`drained again as task ${tasks[0]!.taskId}`);

    // Releasing either again changes nothing, and says why; nothing more is queued.
    const again = await main(['release', rejected!.taskId, tasks[0]!.taskId, '99999', 'junk', '--json'], after);
    expect(again.code).toBe(1);
    const outcomes = (JSON.parse(again.stdout) as { released: { released: boolean; detail: string }[] }).released;
    expect(outcomes.map((o) => o.released)).toEqual([false, false, false, false]);
    expect(outcomes[0]!.detail).toContain('was released already');
    expect(outcomes[1]!.detail).toContain('was accepted and queued; there is nothing to release');
    expect(outcomes[2]!.detail).toBe(`no mail of ${mailbox} had UID 99999 in INBOX`);
    expect(outcomes[3]!.detail).toContain('is neither a task id');
    // The next tick finds nothing to do.
    expect(await drainTick(stack, after)).toEqual([]);
    expect(await tasksOf(mailbox)).toHaveLength(0);
  });

  it('by the UID it had in INBOX, with the policy unchanged: judged again, rejected again, its row noting it came back', async () => {
    const mailbox = 'ops-release-uid@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' });
    await stack.appendMail(mailbox, buildMail({ from: 'eve@elsewhere.test', to: mailbox }));
    const first = await drainNow(stack, env);
    const { uid, taskId } = first.outcomes[0]!;
    const r = await main(['release', String(uid)], env);
    expect(r.code).toBe(0);
    const second = await drainNow(stack, env);
    expect(second.outcomes.map((o) => [o.taskId, o.outcome])).toEqual([[taskId, 'rejected']]);
    const [mail] = (await traceJson(taskId!, env)).mails;
    expect(mail!.now).toBe('inboxq-processed');
    expect(mail!.reasons.at(-1)).toContain('it was moved back to INBOX after being rejected, and drained again');
    expect(await tasksOf(mailbox)).toHaveLength(0);
  });

  it('a mail set aside (malformed) goes back from the quarantine folder', async () => {
    const mailbox = 'ops-release-quarantine@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' });
    await stack.appendMail(
      mailbox,
      'From: a@partner.test\r\nFrom: b@partner.test\r\nSubject: two senders\r\n\r\nhi\r\n',
    );
    const first = await drainNow(stack, env);
    expect(first.counts.quarantined + first.counts.rejected).toBe(1);
    const taskId = first.outcomes[0]!.taskId!;
    const [mail] = (await traceJson(taskId, env)).mails;
    const from = mail!.now;
    const r = await main(['release', taskId], env);
    expect(r.stdout).toBe(`released  ${taskId}: moved from ${from} back to INBOX\n`);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
  });
});

describe('inboxq replay replies-poison', () => {
  it('sends a poisoned reply once the cause is gone, once; a replayed copy of a sent reply is not sent again', async () => {
    const mailbox = 'ops-replay@company.test';
    const sender = 'carol@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender, INBOXQ_ACKNOWLEDGE: 'false' });
    // Only this test's replies on the shared queues.
    for (const q of [REPLIES_QUEUE, `${REPLIES_QUEUE}-poison`]) await queue(stack, q).clearMessages();
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, messageId: '<replay-1@partner.test>' }));
    await drainNow(stack, env);
    const [task] = await tasksOf(mailbox);
    await worker.reply({ taskId: task!.taskId, mailbox, replyId: 'answer-1', text: 'the answer' });
    const { maxDequeueCount } = readHostJson('.', {}).queues;
    for (let i = 0; i < maxDequeueCount; i++) stack.smtp.dataFaults.push({ code: 451, text: '4.4.7 Message delayed' });
    expect(await sendReplies(stack, env)).toMatchObject({ poisoned: 1, succeeded: 0 });
    await handlePoisonedReplies(stack, env); // marks the task failed, tells the sender, keeps the reply
    let [mail] = (await traceJson(task!.taskId, env)).mails;
    expect(mail!.state).toBe('failed');
    expect(mail!.replies.find((r) => r.replyId === 'answer-1')).toMatchObject({ state: 'failed', attempts: 5 });
    expect(mail!.replies.find((r) => r.replyId === 'answer-1')!.lastResponse).toContain('451 4.4.7 Message delayed');
    const status = await main(['status', '--json'], env);
    expect(status.code).toBe(1);
    expect((JSON.parse(status.stdout) as MailboxStatus).problems).toContain(
      '1 poisoned reply kept; once the cause is fixed: inboxq replay replies-poison',
    );

    const dry = await main(['replay', 'replies-poison', '--dry-run'], env);
    expect(dry.stdout).toBe(
      `1 poisoned reply would be replayed:\n  ${mailbox}  task ${task!.taskId}  reply answer-1  (kept poisoned reply, to replies)\n`,
    );
    expect((await queue(stack, REPLIES_QUEUE).getProperties()).approximateMessagesCount).toBe(0);
    const replay = await main(['replay', 'replies-poison'], env);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toContain('1 poisoned reply replayed:');
    expect(await sendReplies(stack, env)).toMatchObject({ succeeded: 1, failed: 0 });
    const answerId = `<inboxq.${task!.taskId}.answer-1@company.test>`;
    const delivered = () => stack.smtp.accepted.filter((m) => m.messageId === answerId).length;
    expect(delivered()).toBe(1);
    [mail] = (await traceJson(task!.taskId, env)).mails;
    expect(mail!.state).toBe('queued');
    expect(mail!.replies.find((r) => r.replyId === 'answer-1')).toMatchObject({ state: 'sent', attempts: 6 });
    expect((await main(['replay', 'replies-poison'], env)).stdout).toBe('No poisoned replies to replay.\n');

    // A copy of the sent reply still on replies-poison (the poisoned-reply function never ran for it).
    const poison = queue(stack, `${REPLIES_QUEUE}-poison`);
    await poison.createIfNotExists();
    await poison.sendMessage(
      encodeQueueMessage({
        type: 'inboxq.reply',
        version: 1,
        taskId: task!.taskId,
        mailbox,
        replyId: 'answer-1',
        text: 'the answer',
      }),
    );
    expect((await main(['replay', 'replies-poison'], env)).stdout).toContain('(poison queue, to replies)');
    expect((await poison.getProperties()).approximateMessagesCount).toBe(0);
    await sendReplies(stack, env);
    expect(delivered()).toBe(1);
    expect((await main(['status'], env)).code).toBe(0);
  });
});

describe('inboxq status', () => {
  it('healthy after a run; then waiting mail is counted; stale once three runs of the schedule were missed; unhealthy with a poisoned queue', async () => {
    const mailbox = 'ops-status@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' });
    await stack.appendMail(mailbox, buildMail({ from: 'dan@partner.test', to: mailbox }));
    await drainNow(stack, env);
    await takeAllTasks(stack);
    let r = await main(['status', '--json'], env);
    const healthy = JSON.parse(r.stdout) as MailboxStatus;
    expect(healthy.problems).toEqual([]);
    expect(r.code).toBe(0);
    expect(healthy).toMatchObject({
      mailbox,
      key: 'default',
      lastRun: { outcome: 'ok', counts: { seen: 1, queued: 1 } },
      lastSuccess: { outcome: 'ok', counts: { seen: 1, queued: 1 } },
      inbox: { mails: 0, oldestArrival: null },
      setAside: { folder: 'inboxq-quarantine', mails: 0 },
      staleness: { stale: false },
      pacing: { perMinute: 30 },
      poisonedReplies: 0,
    });
    expect(healthy.queues).toMatchObject({ tasks: 0, replies: expect.any(Number) as unknown, 'replies-poison': 0 });

    // Mail arrives, and the schedule stops: no run drains it.
    await stack.appendMail(mailbox, buildMail({ from: 'dan@partner.test', to: mailbox }));
    await stack.appendMail(mailbox, buildMail({ from: 'dan@partner.test', to: mailbox }));
    r = await main(['status'], env);
    expect(r.stdout).toMatch(/INBOX {13}2 waiting, oldest arrived \d+ s ago/);
    const lastSuccess = Date.parse(healthy.lastSuccess!.at);
    const rt = runtimeFor(env);
    const at = (now: number) =>
      mailboxStatus(
        { ...rt, countMailbox: () => Promise.resolve({ inbox: 2, oldestArrival: undefined, setAside: 0 }) },
        { schedule: env['INBOXQ_DRAIN_SCHEDULE'], now },
      );
    // Every minute, a run's budget and a minute of grace: two missed runs are not yet stale, three are.
    expect((await at(lastSuccess + 2 * 60_000 + rt.config.drain.runBudgetMs + 60_000)).staleness.stale).toBe(false);
    const stale = await at(lastSuccess + 4 * 60_000 + rt.config.drain.runBudgetMs + 60_000);
    expect(stale.staleness.stale).toBe(true);
    expect(stale.problems[0]).toMatch(
      /^stale: no run has drained this mailbox since .*: 3 runs of the schedule "0 \*\/1 \* \* \* \*" were due since/,
    );

    // A message on a poison queue makes it unhealthy, with the queue named.
    const poison = queue(stack, 'drain-requests-poison');
    await poison.createIfNotExists();
    await poison.sendMessage(encodeQueueMessage({ mailbox }));
    r = await main(['status', '--json'], env);
    expect(r.code).toBe(1);
    expect((JSON.parse(r.stdout) as MailboxStatus).problems).toEqual(['1 message(s) in drain-requests-poison']);
    await poison.clearMessages();
    // A mailbox that can't be read is reported, the rest still shown.
    const broken = await main(['status', '--json'], { ...env, INBOXQ_IMAP_PORT: '1' });
    expect(broken.code).toBe(1);
    const b = JSON.parse(broken.stdout) as MailboxStatus;
    expect(b.inbox).toMatchObject({
      error: expect.stringContaining("Can't reach the IMAP server 127.0.0.1:1") as unknown,
    });
    expect(b.lastSuccess).not.toBeNull();
  });

  it('reads without creating anything: a queue that does not exist yet is reported as such, and stays absent', async () => {
    const env = {
      ...stack.settings(''),
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'fresh',
      INBOXQ_FRESH__MAILBOX: 'ops-fresh@company.test',
    };
    expect((await main(['trace', 'nobody@partner.test'], env)).code).toBe(1);
    const r = await main(['status', '--json'], env);
    const status = JSON.parse(r.stdout) as MailboxStatus;
    expect(status).toMatchObject({ key: 'fresh', lastRun: null, lastSuccess: null });
    expect(status.queues['tasks-fresh']).toBeNull();
    expect(status.problems).toEqual(['stale: no run has drained this mailbox yet']);
    expect(await queue(stack, 'tasks-fresh').exists()).toBe(false);
  });
});
