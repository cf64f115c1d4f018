/**
 * Bad input gets a clear error and loses nothing: each failure named in issue 2, arranged on the
 * real local servers.
 */
import { randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { freePort } from '../../localstack/net';
import { runtimeFor } from '../../localstack/runtime';
import { decodeQueueMessage, encodeQueueMessage } from '../../shared/contract/messages';
import { drainMailbox } from '../../shared/drain/drain';
import { type ImapError, type TokenError } from '../../shared/errors';
import { sendReply } from '../../shared/reply/reply';
import { memoryLogger } from '../../shared/telemetry/log';
import { runQueueFunction } from '../helpers/app';
import { buildMail } from '../helpers/mail';
import { drainNow, peekTasks, queue, REPLIES_QUEUE } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

async function drainError(env: Record<string, string | undefined>, logs: string[] = []): Promise<Error> {
  const err = await drainNow(stack, env, logs).then(
    () => undefined,
    (e: Error) => e,
  );
  expect(err, 'the drain should have failed').toBeInstanceOf(Error);
  return err!;
}

describe('credentials', () => {
  it('a wrong client secret in Key Vault names the secret and the AADSTS code, never the secret, and removes nothing', async () => {
    const mailbox = 'wrong-secret@company.test';
    const app = stack.registerApp();
    const wrong = `wrong~${randomBytes(12).toString('hex')}`;
    stack.vault.setSecret(app.secretName, wrong);
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox }));
    const logs: string[] = [];
    const err = await drainError(
      stack.settings(mailbox, {
        ...app.settings,
        INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test',
        INBOXQ_ACKNOWLEDGE: 'false',
      }),
      logs,
    );
    // Thrown by the app as the host loaded it (compiled): checked by name and code, not by class identity.
    expect(err).toMatchObject({ name: 'TokenError', code: 'TOKEN' });
    expect(err.message).toContain('AADSTS7000215');
    expect(err.message).toContain(`Key Vault secret ${app.secretName}`);
    expect(err.message).toContain(mailbox);
    expect(err.message).not.toContain(wrong);
    expect(logs.join('\n')).not.toContain(wrong);
    expect(logs.join('\n')).toContain('AADSTS7000215');
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
  });

  it('a wrong INBOXQ_CLIENT_SECRET setting is named as the setting', async () => {
    const wrong = `wrong~${randomBytes(12).toString('hex')}`;
    const err = await drainError(
      stack.settings('setting-secret@company.test', { INBOXQ_KEYVAULT_URL: undefined, INBOXQ_CLIENT_SECRET: wrong }),
    );
    // Thrown by the app as the host loaded it (compiled): checked by name and code, not by class identity.
    expect(err).toMatchObject({ name: 'TokenError', code: 'TOKEN' });
    expect((err as TokenError).aadsts).toBe('AADSTS7000215');
    expect(err.message).toContain('the setting INBOXQ_CLIENT_SECRET');
    expect(err.message).not.toContain(wrong);
  });

  it('a missing Key Vault secret says which one and how to create it', async () => {
    const err = await drainError(
      stack.settings('no-secret@company.test', { INBOXQ_CLIENT_SECRET_NAME: 'does-not-exist' }),
    );
    expect(err.name).toBe('KeyVaultError');
    expect(err.message).toMatch(/Key Vault secret does-not-exist in https:\/\/127\.0\.0\.1:\d+ does not exist/);
    expect(err.message).toContain('az keyvault secret set');
  });

  it('an expired token refused by the IMAP server is renewed and the run retried once', async () => {
    const mailbox = 'expired@company.test';
    const app = stack.registerApp();
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox }));
    stack.idp.expiredTokensToIssue = 1;
    const issuedBefore = stack.idp.requests.filter((r) => r.clientId === app.clientId && r.outcome === 'issued').length;
    const logs: string[] = [];
    const summary = await drainNow(
      stack,
      stack.settings(mailbox, {
        ...app.settings,
        INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test',
        INBOXQ_ACKNOWLEDGE: 'false',
      }),
      logs,
    );
    expect(summary?.counts.queued).toBe(1);
    expect(stack.idp.expiredTokensToIssue).toBe(0);
    const issued = stack.idp.requests.filter(
      (r) => r.clientId === app.clientId && r.outcome === 'issued' && r.scope.includes('outlook'),
    ).length;
    expect(issued - issuedBefore).toBe(2);
    expect(logs.join('\n')).toContain('IMAP refused the cached token; retrying once with a new one');
  });
});

describe('mailbox', () => {
  it('an unreachable IMAP server fails the run with the host, port and a hint', async () => {
    const port = await freePort();
    const logs: string[] = [];
    const err = await drainError(stack.settings('unreachable@company.test', { INBOXQ_IMAP_PORT: String(port) }), logs);
    expect(err).toMatchObject({ name: 'ImapError', code: 'IMAP' });
    expect((err as ImapError).failure).toBe('unreachable');
    expect(err.message).toContain(`127.0.0.1:${port}`);
    expect(err.message).toContain('ECONNREFUSED');
    expect(err.message).toContain('unreachable@company.test');
    expect(logs.join('\n')).toContain('Drain run failed');
  });

  it('a malformed mail is recorded and set aside, and the rest of the inbox is still drained', async () => {
    const mailbox = 'malformed@company.test';
    const env = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test',
      INBOXQ_ACKNOWLEDGE: 'false',
    });
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox, subject: 'first' }));
    await stack.appendMail(mailbox, Buffer.concat([Buffer.from('\u0000\u0001 not a mail\r\n\r\n'), randomBytes(2000)]));
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox, subject: 'third' }));
    const logs: string[] = [];
    const summary = await drainNow(stack, env, logs);
    expect(summary?.counts).toMatchObject({ seen: 3, queued: 2, quarantined: 1 });
    const quarantined = summary.outcomes.find((o) => o.outcome === 'quarantined')!;
    expect(quarantined.reasons[0]).toContain('does not start with a header section');
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    expect(await stack.readFolder(mailbox, 'inboxq-quarantine')).toHaveLength(1);
    expect(logs.join('\n')).toContain('Mail is malformed; moving it to quarantine');
    const subjects = (await peekTasks(stack)).filter((t) => t.mailbox === mailbox).map((t) => t.subject);
    expect(subjects.sort()).toEqual(['first', 'third']);
  });
});

describe('queue messages', () => {
  it('a malformed reply message goes to the poison queue at its first delivery, with the reason beside it', async () => {
    const env = stack.settings('poison@company.test');
    const replies = queue(stack, REPLIES_QUEUE);
    await replies.createIfNotExists();
    await replies.sendMessage(
      encodeQueueMessage({ type: 'inboxq.reply', version: 1, mailbox: 'poison@company.test', text: '' }),
    );
    await replies.sendMessage(Buffer.from('this is not json').toString('base64'));
    const run = await runQueueFunction(stack, env, 'reply');
    // It can't succeed as it is: refused at once, not delivered maxDequeueCount times first.
    expect(run).toMatchObject({ succeeded: 2, failed: 0, poisoned: 0 });
    const poison = await queue(stack, `${REPLIES_QUEUE}-poison`).peekMessages({ numberOfMessages: 10 });
    const refused = poison.peekedMessageItems.map(
      (m) => (decodeQueueMessage(m.messageText) as { refused: string }).refused,
    );
    expect(refused.sort()).toEqual([
      expect.stringContaining('The reply message does not follow the contract'),
      expect.stringContaining('The reply message is not JSON'),
    ]);
    expect(refused.join('\n')).toContain('text: must not be empty');
    const log = run.logs.join('\n');
    expect(log).toContain('taskId: ');
    expect(log).toContain('text: must not be empty');
    expect(log).toContain('The reply message is not JSON');
    expect(log).toContain('it is moved to replies-poison and nothing is sent');
  });
});

describe('a fast worker', () => {
  const reply = (taskId: string, mailbox: string) => ({
    type: 'inboxq.reply',
    version: 1,
    taskId,
    mailbox,
    replyId: 'answer',
    text: 'Done before you knew it.',
  });

  it("answering while the task's row still says claimed: the reply is deferred, not refused, and sent once the drain records the mail", async () => {
    const mailbox = 'fast-worker@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' });
    await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox, subject: 'Quick one' }));
    const rt = runtimeFor(env);
    const log = memoryLogger();
    await queue(stack, REPLIES_QUEUE).createIfNotExists();
    const queued = (await queue(stack, REPLIES_QUEUE).getProperties()).approximateMessagesCount ?? 0;
    let early: Awaited<ReturnType<typeof sendReply>> | undefined;
    let taskId = '';
    await drainMailbox({
      ...rt,
      log,
      onStep: async (step, info) => {
        // The task is on its queue; its row says claimed until the batch's record.
        if (step !== 'queued' || early) return;
        taskId = info.taskId!;
        expect((await rt.ledger.getMessage(mailbox, taskId))?.state).toBe('claimed');
        early = await sendReply(reply(taskId, mailbox), { ...rt, log });
      },
    });
    expect(early?.outcome).toBe('deferred');
    expect(log.lines.filter((l) => l.level !== 'info')).toEqual([]);
    expect(log.lines.map((l) => l.line).join('\n')).toContain(
      "The reply's task is still being drained (its row says claimed); reply deferred by",
    );
    // The deferred copy is on the replies queue, invisible for a while.
    const replies = queue(stack, REPLIES_QUEUE);
    expect((await replies.getProperties()).approximateMessagesCount).toBe(queued + 1);
    // Once the drain has recorded the mail, the reply goes out, once.
    expect((await sendReply(reply(taskId, mailbox), { ...rt, log })).outcome).toBe('sent');
    expect((await sendReply(reply(taskId, mailbox), { ...rt, log })).outcome).toBe('already-sent');
    expect(
      await stack
        .readFolder('a@partner.test', 'INBOX')
        .then((m) => m.filter((x) => x.source.toString().includes('Quick one'))),
    ).toHaveLength(1);
  });

  it('a reply to a task claimed long ago and never recorded since is refused, saying so', async () => {
    const mailbox = 'fast-worker-stuck@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' });
    await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox }));
    const rt = runtimeFor(env);
    let taskId = '';
    // A drain killed between the queue send and the record: the row stays claimed.
    await drainMailbox({
      ...rt,
      log: memoryLogger(),
      onStep: (step, info) => {
        if (step !== 'queued') return;
        taskId = info.taskId!;
        throw new Error('killed');
      },
    }).catch(() => undefined);
    expect((await rt.ledger.getMessage(mailbox, taskId))?.state).toBe('claimed');
    const later = Date.now() + rt.config.drain.leaseMs + 3600_000 + 60_000;
    await expect(sendReply(reply(taskId, mailbox), { ...rt, log: memoryLogger(), now: () => later })).rejects.toThrow(
      /The reply answers a mail that was never accepted.*claimed at .* and no drain has recorded it since/,
    );
  });
});
