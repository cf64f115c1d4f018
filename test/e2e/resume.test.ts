/**
 * Interrupted runs resume without a second identity, and a reply is sent once however often its
 * queue message arrives. The interruption here is an exception at a step boundary; issue 4's
 * crash tests kill a real child process at the same boundaries.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage } from '../../shared/contract/messages';
import { drainMailbox, type DrainStep } from '../../shared/drain/drain';
import { type ReplyStep, sendReply } from '../../shared/reply/reply';
import { memoryLogger } from '../../shared/telemetry/log';
import { TaskWorker } from '../../shared/worker/worker';
import { runQueueFunction } from '../helpers/app';
import { buildMail } from '../helpers/mail';
import { clearTasks, interruptAt, Interrupted, peekTasksOf, queue, REPLIES_QUEUE } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

async function drain(mailbox: string, onStep?: (s: DrainStep) => void) {
  const rt = runtimeFor(
    stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' }),
  );
  return drainMailbox({ ...rt, log: memoryLogger(), ...(onStep ? { onStep } : {}) });
}

function tasksOf(mailbox: string) {
  return peekTasksOf(stack, mailbox);
}

describe('an interrupted drain resumes', () => {
  it('after queuing, before the ledger update: the task is queued again under the same task id, never a new one', async () => {
    const mailbox = 'resume-queued@company.test';
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'bob@partner.test', to: mailbox, messageId: '<resume-1@partner.test>' }),
    );
    await expect(drain(mailbox, interruptAt('queued'))).rejects.toThrow(Interrupted);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
    const first = await tasksOf(mailbox);
    expect(first).toHaveLength(1);

    const summary = await drain(mailbox);
    expect(summary.counts).toMatchObject({ queued: 1, resumed: 1 });
    const all = await tasksOf(mailbox);
    expect(all).toHaveLength(2);
    expect(new Set(all.map((t) => t.taskId))).toEqual(new Set([first[0]!.taskId]));
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    const rows = await runtimeFor(stack.settings(mailbox)).ledger.listMessages(mailbox);
    expect(rows.map((r) => [r.taskId, r.state, r.removed])).toEqual([[first[0]!.taskId, 'queued', true]]);
  });

  it('after the ledger update, before removal: the next run only removes the mail', async () => {
    const mailbox = 'resume-recorded@company.test';
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'bob@partner.test', to: mailbox, messageId: '<resume-2@partner.test>' }),
    );
    await expect(drain(mailbox, interruptAt('recorded'))).rejects.toThrow(Interrupted);
    expect(await tasksOf(mailbox)).toHaveLength(1);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);

    const summary = await drain(mailbox);
    expect(summary.counts).toMatchObject({ seen: 1, resumed: 1, queued: 1 });
    expect(await tasksOf(mailbox)).toHaveLength(1);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
  });

  it('the same mail re-uploaded under a new UID after it was processed is removed, not queued again', async () => {
    const mailbox = 'reupload@company.test';
    const raw = buildMail({ from: 'bob@partner.test', to: mailbox, messageId: '<reupload@partner.test>' });
    await stack.appendMail(mailbox, raw);
    await drain(mailbox);
    await stack.appendMail(mailbox, raw);
    const summary = await drain(mailbox);
    expect(summary.counts).toMatchObject({ seen: 1, duplicate: 1, queued: 0 });
    expect(await tasksOf(mailbox)).toHaveLength(1);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
  });
});

describe('a reply is sent once', () => {
  async function acceptedTask(mailbox: string, sender: string) {
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox }));
    await drain(mailbox);
    return (await tasksOf(mailbox))[0]!;
  }

  it('when its queue message is delivered twice', async () => {
    const mailbox = 'twice@company.test';
    const sender = 'carol@partner.test';
    const task = await acceptedTask(mailbox, sender);
    const replies = queue(stack, REPLIES_QUEUE);
    await replies.createIfNotExists();
    const message = encodeQueueMessage({
      type: 'inboxq.reply',
      version: 1,
      taskId: task.taskId,
      mailbox,
      text: 'Done.',
    });
    await replies.sendMessage(message);
    await replies.sendMessage(message);
    const run = await runQueueFunction(
      stack,
      stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' }),
      'reply',
    );
    // Both copies arrive in one batch, handled at the same time as the host does: the second finds
    // the first sending (or done) and is settled without an error or a retry.
    expect(run).toMatchObject({ succeeded: 2, failed: 0, poisoned: 0 });
    const logs = run.logs.join('\n');
    expect(logs).toMatch(/this duplicate request is settled|Reply was already sent; this delivery is a duplicate/);
    expect(logs).not.toContain('Reply failed');
    expect(await stack.readFolder(sender, 'INBOX')).toHaveLength(1);
    expect(stack.smtp.accepted.filter((m) => m.to.includes(sender))).toHaveLength(1);
  });

  it('when a delivery stopped after SMTP accepted it: the Sent folder has it, so it is not sent again', async () => {
    const mailbox = 'interrupted-reply@company.test';
    const sender = 'dave@partner.test';
    const task = await acceptedTask(mailbox, sender);
    const rt = runtimeFor(
      stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' }),
    );
    const reply = { type: 'inboxq.reply', version: 1, taskId: task.taskId, mailbox, text: 'Here you go.' };
    const stopAfterSmtp = (s: ReplyStep) => {
      if (s === 'smtp-accepted') throw new Interrupted('interrupted after SMTP');
    };
    await expect(sendReply(reply, { ...rt, log: memoryLogger(), onStep: stopAfterSmtp })).rejects.toThrow(Interrupted);

    // Redelivered while the first delivery might still be sending: it waits.
    await expect(sendReply(reply, { ...rt, log: memoryLogger() })).rejects.toThrow(/being sent by another delivery/);
    // Redelivered after the lease: it looks in Sent and finds it.
    const later = () => Date.now() + 2 * 60_000;
    const result = await sendReply(reply, { ...rt, log: memoryLogger(), now: later });
    expect(result.outcome).toBe('found-in-sent-folder');
    expect(await stack.readFolder(sender, 'INBOX')).toHaveLength(1);
    expect((await sendReply(reply, { ...rt, log: memoryLogger() })).outcome).toBe('already-sent');
  });

  it('a reply to a rejected mail is refused', async () => {
    const mailbox = 'no-reply-to-rejected@company.test';
    await stack.appendMail(mailbox, buildMail({ from: 'mallory@elsewhere.test', to: mailbox }));
    const summary = await drain(mailbox);
    const taskId = summary.outcomes[0]!.taskId!;
    const rt = runtimeFor(stack.settings(mailbox));
    await expect(
      sendReply({ type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'hi' }, { ...rt, log: memoryLogger() }),
    ).rejects.toThrow(/task .* is rejected; only accepted mail is answered/);
    expect(await stack.readFolder('mallory@elsewhere.test', 'INBOX')).toHaveLength(0);
  });
});

describe('the worker helper', () => {
  it('drops a repeated task message whose task id is already done', async () => {
    const mailbox = 'worker-dedupe@company.test';
    await clearTasks(stack);
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'bob@partner.test', to: mailbox, messageId: '<dedupe@partner.test>' }),
    );
    // Interrupted between the queue send and the ledger write: the task is queued twice, same id.
    await expect(drain(mailbox, interruptAt('queued'))).rejects.toThrow(Interrupted);
    await drain(mailbox);
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
    const duplicates: string[] = [];
    const [first] = await worker.receive({ max: 1 });
    expect(first?.task.mailbox).toBe(mailbox);
    await worker.reply({ taskId: first!.task.taskId, mailbox, text: 'done' });
    await first!.complete();
    expect(await worker.receive({ onDuplicate: (id) => duplicates.push(id) })).toEqual([]);
    expect(duplicates).toEqual([first!.task.taskId]);
  });
});
