/**
 * The end-to-end path on real local servers: a mail in Dovecot becomes a task on the Azurite queue,
 * leaves the inbox, and a reply put on the replies queue lands threaded in the sender's mailbox.
 */
import { createHash } from 'node:crypto';

import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage } from '../../shared/contract/messages';
import { TaskWorker } from '../../shared/worker/worker';
import { runQueueFunction } from '../helpers/app';
import { buildMail, eopFail } from '../helpers/mail';
import { drainNow, peekTasks, queue, REPLIES_QUEUE, table } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

describe('drain and reply, end to end', () => {
  it('turns an authorized mail into a task and answers it threaded', async () => {
    const mailbox = 'agent@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test' });
    const raw = buildMail({
      from: 'Alice <alice@partner.test>',
      to: mailbox,
      subject: 'Quarterly numbers',
      body: 'Please check the attached figures.',
      messageId: '<q3-numbers@partner.test>',
      attachments: [{ filename: 'figures.csv', contentType: 'text/csv', content: Buffer.from('q,revenue\nQ3,42\n') }],
    });
    await stack.appendMail(mailbox, raw);

    const logs: string[] = [];
    const summary = await drainNow(stack, env, logs);
    expect(summary?.counts.queued).toBe(1);

    const tasks = await peekTasks(stack);
    expect(tasks).toHaveLength(1);
    const task = tasks[0]!;
    expect(task.from.address).toBe('alice@partner.test');
    expect(task.subject).toBe('Quarterly numbers');
    expect(task.body.text?.trim()).toBe('Please check the attached figures.');
    expect(task.messageId).toBe('<q3-numbers@partner.test>');
    expect(task.attachments).toHaveLength(1);
    expect(task.attachments[0]).toMatchObject({ filename: 'figures.csv', contentType: 'text/csv', size: 16 });
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
    expect((await worker.readBlob(task.attachments[0]!.blob)).toString()).toBe('q,revenue\nQ3,42\n');
    // A small mail travels inline in its task.
    expect(task.raw).toBeNull();
    expect((await worker.raw(task)).toString()).toContain('Message-ID: <q3-numbers@partner.test>');
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    expect(await stack.readFolder(mailbox, 'inboxq-processed')).toHaveLength(1);

    await queue(stack, REPLIES_QUEUE).createIfNotExists();
    await queue(stack, REPLIES_QUEUE).sendMessage(
      encodeQueueMessage({
        type: 'inboxq.reply',
        version: 1,
        taskId: task.taskId,
        mailbox,
        text: 'Revenue was 42 in Q3.',
        html: '<p>Revenue was <b>42</b> in Q3.</p>',
      }),
    );
    const run = await runQueueFunction(stack, env, 'reply');
    // The acknowledgement the drain queued, and the worker's answer.
    expect(run).toMatchObject({ succeeded: 2, failed: 0 });

    const received = await Promise.all(
      (await stack.readFolder('alice@partner.test', 'INBOX')).map((m) => simpleParser(m.source)),
    );
    expect(received).toHaveLength(2);
    const ack = received.find((m) => m.messageId === `<inboxq.${task.taskId}.inboxq-ack@company.test>`)!;
    expect(ack.text).toContain(`as task ${task.taskId}`);
    expect(ack.inReplyTo).toBe('<q3-numbers@partner.test>');
    const reply = received.find((m) => m !== ack)!;
    expect(reply.subject).toBe(`Re: Quarterly numbers [#${task.conversation.id}]`);
    expect(reply.inReplyTo).toBe('<q3-numbers@partner.test>');
    expect(reply.references).toContain('<q3-numbers@partner.test>');
    expect(reply.from?.value[0]?.address).toBe(mailbox);
    expect(reply.text?.trim()).toBe('Revenue was 42 in Q3.');
    expect(reply.html).toContain('<b>42</b>');
    expect(reply.headers.get('auto-submitted')).toBe('auto-replied');
    expect(reply.headers.get('x-auto-response-suppress')).toBe('All');
  });

  it('removes and records a forged sender, with no task and no reply', async () => {
    const mailbox = 'forged@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'ceo@company.test' });
    const body = 'Wire 50,000 EUR to the account below today.';
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'ceo@company.test',
        to: mailbox,
        authResults: eopFail('company.test'),
        messageId: '<forged-1@evil.test>',
        subject: 'Urgent payment',
        body,
      }),
    );
    const before = (await peekTasks(stack)).length;
    const logs: string[] = [];
    const summary = await drainNow(stack, env, logs);
    const rejection = logs.find((l) => l.includes('Mail rejected'))!;
    expect(rejection).toContain('<forged-1@evil.test>');
    expect(rejection).toContain('DMARC result for company.test is fail');
    expect(logs.join('\n')).not.toContain(body);
    expect(logs.join('\n')).not.toContain('Urgent payment');
    expect(summary?.counts).toMatchObject({ rejected: 1, queued: 0 });
    expect((await peekTasks(stack)).length).toBe(before);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    const rows = [];
    for await (const e of table(stack, 'inboxqMessages').listEntities<{
      state: string;
      reasons: string;
      mailbox: string;
    }>())
      if (e.mailbox === mailbox) rows.push(e);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.state).toBe('rejected');
    expect(JSON.parse(rows[0]!.reasons).join(' ')).toContain('DMARC result for company.test is fail');
  });

  it('puts a body too big for a queue message in Blob Storage and references it', async () => {
    const mailbox = 'big-body@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test' });
    const body = 'Lorem ipsum dolor sit amet. '.repeat(4000);
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox, body }));
    await drainNow(stack, env, []);
    const task = (await peekTasks(stack)).find((t) => t.mailbox === mailbox)!;
    expect(task.body.text).toBeNull();
    expect(task.body.textBlob!.size).toBeGreaterThan(100_000);
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
    // Too big to travel inline: the whole mail is in Blob Storage, its hash in the reference.
    expect(task.rawInline).toBeNull();
    expect(task.raw!.sha256).toBe(
      createHash('sha256')
        .update(await worker.raw(task))
        .digest('hex'),
    );
    expect((await worker.bodyText(task)).trim()).toBe(body.trim());
  });

  it('keeps a checkpoint per mailbox: last run, counts, last error', async () => {
    const mailbox = 'checkpoint@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test' });
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox }));
    await stack.appendMail(mailbox, buildMail({ from: 'eve@elsewhere.test', to: mailbox }));
    await drainNow(stack, env, []);
    const state = (await runtimeFor(env).ledger.getMailboxState(mailbox))!;
    expect(state).toMatchObject({ mailbox, lastRunOutcome: 'ok', lastError: '' });
    expect(JSON.parse(state['lastRunCounts'] as string)).toMatchObject({ seen: 2, queued: 1, rejected: 1 });

    const broken = stack.settings(mailbox, { INBOXQ_IMAP_PORT: '1' });
    await expect(drainNow(stack, broken, [])).rejects.toThrow();
    const after = (await runtimeFor(env).ledger.getMailboxState(mailbox))!;
    expect(after['lastRunOutcome']).toBe('failed');
    expect(after['lastError']).toContain('127.0.0.1:1');
    expect(after['lastSuccessAt']).toBe(state['lastSuccessAt']);
    expect(JSON.parse(after['totals'] as string)).toMatchObject({ seen: 2, queued: 1, rejected: 1, failedRuns: 1 });
  });
});
